//! The evaluation report: every method at every budget (the paper's Table V), link and
//! ensemble scores (Table III), correlations between model outputs (Table II), rendered as
//! text, Markdown, JSON and SVG plots.

use super::EvalError;
use super::drls::DrlsConfig;
use super::pixelnet::NetConfig;
use super::problem::Problem;
use super::replay::{Method, Outcome, Replay, ReplayConfig};
use super::stats::{discrete_scalar, lookup_ceiling, pearson, scalar_of};
use crate::config::SelectionPolicy;
use crate::control::hybrid::HybridSettings;
use crate::link::choose::mean_score;
use crate::link::ridge::Ridge;
use crate::output::TaskKind;
use crate::schedule::{Budget, Costs, ModelSet};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Version of the JSON report layout.
pub const REPORT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub format_version: u32,
    pub trace: TraceSummary,
    pub config: ReplayConfig,
    pub budgets: Vec<BudgetResult>,
    /// Reducto at its own operating point (the target accuracy on the training part),
    /// whatever compute that takes.
    pub reducto_at_target: Outcome,
    pub links: LinkTable,
    pub correlations: CorrelationTable,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceSummary {
    pub source: String,
    pub frames: usize,
    pub cameras: Vec<String>,
    pub models: Vec<ModelSummary>,
    pub train_frames: usize,
    pub test_frames: usize,
    pub periods: usize,
    pub profiling_frames: usize,
    pub incomplete_records: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelSummary {
    pub id: String,
    pub task: TaskKind,
    pub memory_mb: f64,
    pub ms_per_frame: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BudgetResult {
    /// E.g. `1500 MB`.
    pub label: String,
    pub budget: Budget,
    pub methods: Vec<MethodResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MethodResult {
    pub method: Method,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Table III analog: `scores[i][j]` is the link `i -> j` on the test part (diagonal: 1), and
/// `ensembles[j]` the ensemble of every other model targeting `j`. `ceilings[i][j]` is the
/// best any function of `i`'s output could score on `j` over the same frames (a lookup table
/// fitted on them), where both outputs are discrete (single counts, one-hot classes).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkTable {
    pub models: Vec<String>,
    pub scores: Vec<Vec<f64>>,
    pub ensembles: Vec<f64>,
    pub ceilings: Vec<Vec<Option<f64>>>,
    /// `view_ceilings[i][j]`: the score on the same frames of a ridge map from `i`'s link view
    /// to `j`'s output fitted on those frames (None without views, or for a sequence output):
    /// what the richer link input allows a linear link at most, by the same in-sample rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub view_ceilings: Vec<Vec<Option<f64>>>,
    /// What each link learned with (`mlink eval --links chosen`), e.g.
    /// `persons -> poses: knn(k=3):view (held out 85.7%)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learners: Vec<String>,
}

/// Table II analog: Pearson correlations between the scalar views of model outputs over the
/// whole trace (`None`: a sequence model, or a constant output).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CorrelationTable {
    pub models: Vec<String>,
    pub r: Vec<Vec<Option<f64>>>,
}

/// Default budgets: for `n` = 1 and 2 (and no more than the model count minus one), a budget
/// that holds every set of `n` models but no set of `n + 1` where the costs allow it. Memory is
/// the constrained resource, as in the paper, unless every model's memory is zero.
pub fn default_budgets(costs: &Costs) -> Vec<Budget> {
    let k = costs.n_models();
    let use_memory = costs.models.iter().any(|c| c.memory_mb > 0.0);
    let value = |set: &ModelSet| {
        let c = costs.set_cost(set);
        if use_memory {
            c.memory_mb
        } else {
            c.ms_per_frame
        }
    };
    let mut out = Vec::new();
    for n in 1..=2usize.min(k.saturating_sub(1)).max(1) {
        let sized = |size: usize| -> Vec<f64> {
            (0..(1u64 << k))
                .filter(|m| m.count_ones() as usize == size)
                .map(|m| {
                    value(&ModelSet::from_indices(
                        k,
                        (0..k).filter(|i| m >> i & 1 == 1),
                    ))
                })
                .collect()
        };
        let n_costs = sized(n);
        let max_n = n_costs.iter().copied().fold(0.0, f64::max);
        let min_n = n_costs.iter().copied().fold(f64::INFINITY, f64::min);
        let min_next = sized(n + 1).into_iter().fold(f64::INFINITY, f64::min);
        let b = if max_n < min_next {
            max_n
        } else {
            // Not every n-set fits without admitting an (n+1)-set: stop just below the
            // cheapest (n+1)-set, keeping at least the cheapest n-set.
            (min_next * (1.0 - 1e-6)).max(min_n)
        };
        let b = (b * 10.0).ceil() / 10.0;
        let budget = if use_memory {
            Budget::memory(b)
        } else {
            Budget::time(b)
        };
        if !out.contains(&budget) {
            out.push(budget);
        }
    }
    out
}

/// A short label for a budget: whole megabytes, or tenths where the budget has them (the
/// default budgets hold a set's links too: 25.3 MB is not the 25 MB that `--budget-mb 25`
/// gives).
pub fn budget_label(b: &Budget) -> String {
    let mb = |m: f64| {
        if (m - m.round()).abs() < 0.05 {
            format!("{m:.0}")
        } else {
            format!("{m:.1}")
        }
    };
    match (b.memory_mb, b.ms_per_frame) {
        (Some(m), Some(t)) => format!("{} MB, {t:.1} ms", mb(m)),
        (Some(m), None) => format!("{} MB", mb(m)),
        (None, Some(t)) => format!("{t:.1} ms"),
        (None, None) => "unbounded".into(),
    }
}

/// Runs every method at every budget.
pub fn evaluate(
    problem: &Problem,
    cfg: ReplayConfig,
    budgets: &[Budget],
) -> Result<Report, EvalError> {
    if budgets.is_empty() {
        return Err(EvalError::Invalid("no budget to evaluate".into()));
    }
    let replay = Replay::new(problem, cfg)?;
    let tuning = replay.reducto_tuning()?;
    // MTL needs pixels: only traces with thumbnails get its row. Its cost does not depend on
    // the budget (its memory fits every budget here), so one network serves every budget.
    let mtl = if problem.has_thumbnails() {
        let net = super::mtl::train(&replay, &NetConfig::multi_task(replay.config().seed))?;
        Some(super::mtl::run(&replay, &net)?)
    } else {
        None
    };
    let drls_cfg = DrlsConfig {
        seed: replay.config().seed,
        ..DrlsConfig::default()
    };
    let mut results = Vec::with_capacity(budgets.len());
    for b in budgets {
        if !b.is_valid() {
            return Err(EvalError::Invalid(format!(
                "budget {} is not valid: limits must be finite and not negative",
                budget_label(b)
            )));
        }
        let standalone = replay.run_standalone(b)?;
        let mlink = replay.run_policy(SelectionPolicy::Mlink, b)?;
        let gain = replay.run_policy(SelectionPolicy::Gain, b)?;
        let optimal = replay.run_optimal(b)?;
        let reducto = replay.run_reducto_matched(&tuning, mlink.ms_per_frame);
        let hybrid_settings = replay.settings(SelectionPolicy::Hybrid).hybrid;
        // Both at most at MLink's compute, as the unbound Reducto.
        let hybrid = replay.run_hybrid_at(b, hybrid_settings.clone(), true, mlink.ms_per_frame)?;
        let reducto_fair = replay.run_hybrid_at(
            b,
            HybridSettings {
                links: false,
                ..hybrid_settings
            },
            false,
            mlink.ms_per_frame,
        )?;
        let drls = super::drls::run(&replay, &super::drls::train(&replay, b, &drls_cfg)?);
        let methods = [(Method::Standalone, standalone)]
            .into_iter()
            .chain(mtl.clone().map(|o| (Method::Mtl, o)))
            .chain([
                (Method::Drls, drls),
                (Method::Reducto, reducto),
                (Method::ReductoFair, reducto_fair),
                (Method::Mlink, mlink),
                (Method::Gain, gain),
                (Method::Hybrid, hybrid),
                (Method::Optimal, optimal),
            ])
            .map(|(method, outcome)| MethodResult { method, outcome })
            .collect();
        results.push(BudgetResult {
            label: budget_label(b),
            budget: *b,
            methods,
        });
    }
    let reducto_at_target = replay.run_reducto_at_target(&tuning);
    let test: Vec<usize> = replay.test_range().collect();
    let links = LinkTable {
        models: problem.models.iter().map(|m| m.id.clone()).collect(),
        scores: replay.link_matrix(&test),
        ensembles: replay.full_ensembles(&test),
        ceilings: ceilings(problem, &test),
        view_ceilings: if problem.has_views {
            view_ceilings(problem, &test)
        } else {
            Vec::new()
        },
        learners: replay.link_learners(),
    };
    let correlations = correlations(problem);
    let trace = TraceSummary {
        source: problem.source.clone(),
        frames: problem.frames.len(),
        cameras: problem.cameras.clone(),
        models: problem
            .models
            .iter()
            .map(|m| ModelSummary {
                id: m.id.clone(),
                task: m.spec.task,
                memory_mb: m.cost.memory_mb,
                ms_per_frame: m.cost.ms_per_frame,
            })
            .collect(),
        train_frames: replay.train_range().len(),
        test_frames: replay.test_range().len(),
        periods: replay.n_periods(),
        profiling_frames: replay.profiling_frames(),
        incomplete_records: problem.incomplete_records,
    };
    Ok(Report {
        format_version: REPORT_VERSION,
        trace,
        config: replay.config().clone(),
        budgets: results,
        reducto_at_target,
        links,
        correlations,
    })
}

/// Ridge penalty of the view ceiling's in-sample linear map.
const VIEW_CEILING_LAMBDA: f64 = 1.0;

/// Per source and target, the in-sample ridge ceiling over the source's view (see
/// [`LinkTable`]).
fn view_ceilings(problem: &Problem, frames: &[usize]) -> Vec<Vec<Option<f64>>> {
    let k = problem.n_models();
    (0..k)
        .map(|i| {
            (0..k)
                .map(|j| {
                    let spec = &problem.models[j].spec;
                    if i == j || frames.is_empty() {
                        return None;
                    }
                    let x: Vec<&[f32]> = frames
                        .iter()
                        .map(|&t| problem.frames[t].views[i].as_slice())
                        .collect();
                    let t: Option<Vec<&[f32]>> = frames
                        .iter()
                        .map(|&t| match &problem.frames[t].outputs[j] {
                            crate::output::OutputValue::Vector(v) => Some(v.as_slice()),
                            crate::output::OutputValue::Tokens(_) => None,
                        })
                        .collect();
                    let t = t?;
                    if x.first().is_none_or(|v| v.is_empty()) {
                        return None;
                    }
                    let fit = Ridge::fit(&x, &t, VIEW_CEILING_LAMBDA, spec.task)?;
                    Some(mean_score(&fit, &x, &t, spec))
                })
                .collect()
        })
        .collect()
}

/// Per source and target, the lookup-table ceiling over `frames` (see [`LinkTable`]).
fn ceilings(problem: &Problem, frames: &[usize]) -> Vec<Vec<Option<f64>>> {
    let k = problem.n_models();
    let view = |m: usize, t: usize| {
        discrete_scalar(&problem.models[m].spec, &problem.frames[t].outputs[m])
    };
    (0..k)
        .map(|i| {
            (0..k)
                .map(|j| {
                    if i == j {
                        return None;
                    }
                    let pairs: Option<Vec<(f64, f64)>> = frames
                        .iter()
                        .map(|&t| Some((view(i, t)?, view(j, t)?)))
                        .collect();
                    pairs.and_then(|p| lookup_ceiling(&p))
                })
                .collect()
        })
        .collect()
}

fn correlations(problem: &Problem) -> CorrelationTable {
    let k = problem.n_models();
    let mut r = vec![vec![None; k]; k];
    for (i, row) in r.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            let pairs: Option<Vec<(f64, f64)>> = problem
                .frames
                .iter()
                .map(|f| {
                    Some((
                        scalar_of(&problem.models[i].spec, &f.outputs[i])?,
                        scalar_of(&problem.models[j].spec, &f.outputs[j])?,
                    ))
                })
                .collect();
            *cell = pairs.and_then(|p| pearson(&p));
        }
    }
    CorrelationTable {
        models: problem.models.iter().map(|m| m.id.clone()).collect(),
        r,
    }
}

/// The methods a report compares, in [`Method::ALL`]'s order (MTL only where the trace has
/// thumbnails).
/// One colour per method in the plots, in the order of [`Method::ALL`].
const METHOD_COLOURS: [plotters::style::RGBColor; 10] = {
    use plotters::style::RGBColor as C;
    [
        C(255, 0, 0),
        C(0, 255, 255),
        C(255, 255, 0),
        C(0, 0, 255),
        C(0, 255, 0),
        C(255, 0, 255),
        C(0, 0, 0),
        C(255, 140, 0),
        C(128, 0, 128),
        C(128, 128, 128),
    ]
};

fn methods_of(r: &Report) -> Vec<Method> {
    Method::ALL
        .into_iter()
        .filter(|m| r.budgets.iter().any(|b| outcome_of(b, *m).is_some()))
        .collect()
}

fn outcome_of(b: &BudgetResult, method: Method) -> Option<&Outcome> {
    b.methods
        .iter()
        .find(|m| m.method == method)
        .map(|m| &m.outcome)
}

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

/// The Table V analog as plain text for a terminal.
pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} frames ({} training, {} test in {} periods, {} profiling); models: {}",
        r.trace.frames,
        r.trace.train_frames,
        r.trace.test_frames,
        r.trace.periods,
        r.trace.profiling_frames,
        r.trace
            .models
            .iter()
            .map(|m| format!("{} ({:.0} MB, {:.1} ms)", m.id, m.memory_mb, m.ms_per_frame))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for b in &r.budgets {
        let _ = writeln!(s, "\nbudget {}", b.label);
        let _ = writeln!(
            s,
            "  {:<16} {:>9} {:>9} {:>10}  active",
            "method", "acc. %", "ms/frame", "saved %"
        );
        for m in &b.methods {
            let _ = writeln!(
                s,
                "  {:<16} {:>9} {:>9.1} {:>10}  {}",
                m.method.name(),
                pct(m.outcome.accuracy),
                m.outcome.ms_per_frame,
                pct(m.outcome.executions_saved),
                active_summary(&m.outcome)
            );
        }
        if let Some(m) = b.methods.iter().find(|m| m.method == Method::Mlink)
            && let Some(line) = adapted_links_line(&m.outcome, &r.trace.models)
        {
            let _ = writeln!(s, "  {line}");
        }
    }
    let t = &r.reducto_at_target;
    let _ = writeln!(
        s,
        "\nReducto at its {:.0}% training target: {}% accuracy, {:.1} ms/frame, {}% saved",
        100.0 * r.config.reducto_target,
        pct(t.accuracy),
        t.ms_per_frame,
        pct(t.executions_saved)
    );
    s
}

/// Under `--adapt`, the single links' test-frame scores once trained again for the last time.
fn adapted_links_line(o: &Outcome, models: &[ModelSummary]) -> Option<String> {
    if o.adapted_links.is_empty() {
        return None;
    }
    let mut cells = Vec::new();
    for (i, row) in o.adapted_links.iter().enumerate() {
        for (j, score) in row.iter().enumerate() {
            if i != j
                && let (Some(a), Some(b)) = (models.get(i), models.get(j))
            {
                cells.push(format!("{}->{} {}", a.id, b.id, pct(*score)));
            }
        }
    }
    Some(format!(
        "MLink's links after {} online trainings, scored on the test frames (%): {}",
        o.link_retrainings,
        cells.join(", ")
    ))
}

fn active_summary(o: &Outcome) -> String {
    let mut sets: Vec<String> = o
        .active
        .iter()
        .map(|a| format!("{{{}}}", a.join(",")))
        .collect();
    let n = sets.len();
    sets.dedup();
    let summary = if n > 1 && sets.len() == 1 {
        format!("{} every period", sets[0])
    } else {
        sets.join(" ")
    };
    match o.link_retrainings {
        0 => summary,
        r => format!("{summary} (links trained again {r}x)"),
    }
}

/// The paper's Table V (its numbers, quoted) for the comparison section.
const PAPER_TABLE_V: &str = "\
| Method | Building acc. % (5/9 GB) | Building ms | City acc. % (5/9 GB) | City ms |
|---|---|---|---|---|
| Standalone | 33.3 / 66.7 | 30 / 74 | 33.3 / 66.7 | 55 / 121 |
| MTL | 53.3 | 32.8 | 61.3 | 32.5 |
| DRLS | 45.7 / 81.3 | 58.7 / 107 | 39.5 / 77.6 | 102 / 188 |
| Reducto | 91.8 / 96.9 | 45.7 / 89 | 84.1 / 95.3 | 64 / 127 |
| MLink | 94.1 / 97.9 | 39.3 / 84 | 94 / 97.4 | 62 / 125 |
";

/// The whole report in Markdown; `plots` are file names (relative to the report) to embed.
pub fn render_markdown(r: &Report, plots: &[(&str, &str)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# mlink evaluation report\n");
    let _ = writeln!(
        s,
        "Trace: {} ({} frames, cameras: {}). Training: the first {} frames ({:.0}% of the time span) train the links; \
         test: {} frames in {} periods with {} profiling frames ({:.0}% profiling share per period, at least {} per period, \
         scores over the last {} periods' profiling frames). Link cost: {:.2} MB, {:.3} ms per link. Seed {}.{}\n",
        if r.trace.source.is_empty() {
            "(no description)"
        } else {
            &r.trace.source
        },
        r.trace.frames,
        r.trace.cameras.join(", "),
        r.trace.train_frames,
        100.0 * r.config.train_fraction,
        r.trace.test_frames,
        r.trace.periods,
        r.trace.profiling_frames,
        100.0 * r.config.profile_fraction,
        r.config.min_profile_frames,
        r.config.profile_window,
        r.config.link_cost.memory_mb,
        r.config.link_cost.ms_per_frame,
        r.config.seed,
        if r.trace.incomplete_records > 0 {
            format!(
                " {} records lacking an output were left out.",
                r.trace.incomplete_records
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "| model | task | memory MB | ms/frame |\n|---|---|---|---|"
    );
    for m in &r.trace.models {
        let _ = writeln!(
            s,
            "| {} | {:?} | {:.1} | {:.2} |",
            m.id, m.task, m.memory_mb, m.ms_per_frame
        );
    }

    let _ = writeln!(s, "\n## Table V analog: methods under budgets\n");
    let _ = writeln!(
        s,
        "Average output accuracy (each model scored against its own exact output with its task's metric; counts are \
         right when |error| < 0.5), mean inference time per frame (executed models plus links, profiling frames \
         included), and executions saved (1 - executions / (frames x models)).\n"
    );
    let _ = write!(s, "| method |");
    for b in &r.budgets {
        let _ = write!(s, " acc. % ({0}) | ms ({0}) | saved % ({0}) |", b.label);
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "|---|{}", "---|---|---|".repeat(r.budgets.len()));
    for method in methods_of(r) {
        let _ = write!(s, "| {} |", method.name());
        for b in &r.budgets {
            let Some(o) = outcome_of(b, method) else {
                let _ = write!(s, " - | - | - |");
                continue;
            };
            let _ = write!(
                s,
                " {} | {:.1} | {} |",
                pct(o.accuracy),
                o.ms_per_frame,
                pct(o.executions_saved)
            );
        }
        let _ = writeln!(s);
    }
    let t = &r.reducto_at_target;
    let _ = writeln!(
        s,
        "\nReducto at its own operating point ({:.0}% target on the training part, no budget): {}% accuracy, \
         {:.1} ms/frame, {}% executions saved ({}).\n",
        100.0 * r.config.reducto_target,
        pct(t.accuracy),
        t.ms_per_frame,
        pct(t.executions_saved),
        t.detail
    );
    let _ = writeln!(
        s,
        "How Reducto is compared at equal compute: per model, every threshold of every feature is evaluated on the \
         training part (sent share, accuracy of reusing the last sent output); per model the feature that sends the \
         fewest frames at the target accuracy is kept. One exchange rate between accuracy and model-milliseconds then \
         picks each model's threshold on its training curve; the rate is swept over a fixed grid and the allocation \
         whose test-part time per frame is the largest not above MLink's at the same budget is reported. Reducto runs \
         every model now and then, so it needs memory for all of them: memory budgets do not bind it. `Reducto (bound)` \
         is bound by the same memory budget and compute: the models the budget cannot hold run in turns (loaded, run \
         on the frames their trigger kept once the oldest has waited {:.0} s, unloaded; loads charged at {:.0} ms + \
         {:.1} ms per MB), with thresholds from the same curves and no profiling. `Hybrid` runs the engine's hybrid \
         policy: per model exact, triggered (last output or links in between) or predicted, at most at MLink's \
         compute.\n",
        r.config.latency_s,
        crate::control::hybrid::LOAD_MS_FIXED,
        r.config.load_ms_per_mb
    );
    let _ = writeln!(s, "Active sets and settings:\n");
    for b in &r.budgets {
        for m in &b.methods {
            let detail = if m.outcome.detail.is_empty() {
                active_summary(&m.outcome)
            } else {
                m.outcome.detail.clone()
            };
            let _ = writeln!(s, "- {} at {}: {}", m.method.name(), b.label, detail);
        }
    }
    for b in &r.budgets {
        if let Some(m) = b.methods.iter().find(|m| m.method == Method::Mlink)
            && let Some(line) = adapted_links_line(&m.outcome, &r.trace.models)
        {
            let _ = writeln!(s, "\nAt {}: {line}", b.label);
        }
    }
    let _ = writeln!(s, "\nPer-model accuracy (%):\n");
    let _ = write!(s, "| budget | method |");
    for m in &r.trace.models {
        let _ = write!(s, " {} |", m.id);
    }
    let _ = writeln!(s, "\n|---|---|{}", "---|".repeat(r.trace.models.len()));
    for b in &r.budgets {
        for m in &b.methods {
            let _ = write!(s, "| {} | {} |", b.label, m.method.name());
            for a in &m.outcome.model_accuracy {
                let _ = write!(s, " {} |", pct(*a));
            }
            let _ = writeln!(s);
        }
    }

    for (title, file) in plots {
        let _ = writeln!(s, "\n![{title}]({file})");
    }

    let _ = writeln!(s, "\n## Table III analog: links and ensembles\n");
    let _ = writeln!(
        s,
        "Score (%) of each link on the test part, rows are targets, columns sources; the last column is the ensemble \
         of every other model.\n"
    );
    let _ = write!(s, "| target \\ source |");
    for m in &r.links.models {
        let _ = write!(s, " {m} |");
    }
    let _ = writeln!(s, " ensemble |");
    let _ = writeln!(s, "|---|{}---|", "---|".repeat(r.links.models.len()));
    for (j, target) in r.links.models.iter().enumerate() {
        let _ = write!(s, "| {target} |");
        for i in 0..r.links.models.len() {
            if i == j {
                let _ = write!(s, " - |");
            } else {
                let _ = write!(s, " {} |", pct(r.links.scores[i][j]));
            }
        }
        let _ = writeln!(s, " {} |", pct(r.links.ensembles[j]));
    }

    if r.links.ceilings.iter().flatten().any(Option::is_some) {
        let _ = writeln!(
            s,
            "\nCeiling (%) of each link on the same frames: the best lookup table from the source's output to the \
             target's, fitted on the test frames themselves, where both are discrete (a single count or a one-hot class). \
             No function of the source scores above it; a link far below it is short of training data.\n"
        );
        let _ = write!(s, "| target \\ source |");
        for m in &r.links.models {
            let _ = write!(s, " {m} |");
        }
        let _ = writeln!(s, "\n|---|{}", "---|".repeat(r.links.models.len()));
        for (j, target) in r.links.models.iter().enumerate() {
            let _ = write!(s, "| {target} |");
            for i in 0..r.links.models.len() {
                match r.links.ceilings[i][j] {
                    Some(c) => {
                        let _ = write!(s, " {} |", pct(c));
                    }
                    None => {
                        let _ = write!(s, " - |");
                    }
                }
            }
            let _ = writeln!(s);
        }
    }

    if r.links.view_ceilings.iter().flatten().any(Option::is_some) {
        let _ = writeln!(
            s,
            "\nCeiling (%) of each link over the source's link view on the same frames: a ridge map (penalty \
             {VIEW_CEILING_LAMBDA}) from the source's view to the target's output, fitted on the test frames themselves. \
             A link from the view far below it is short of training data, or learns a non-linear map poorly.\n"
        );
        let _ = write!(s, "| target \\ source |");
        for m in &r.links.models {
            let _ = write!(s, " {m} |");
        }
        let _ = writeln!(s, "\n|---|{}", "---|".repeat(r.links.models.len()));
        for (j, target) in r.links.models.iter().enumerate() {
            let _ = write!(s, "| {target} |");
            for i in 0..r.links.models.len() {
                match r.links.view_ceilings[i][j] {
                    Some(c) => {
                        let _ = write!(s, " {} |", pct(c));
                    }
                    None => {
                        let _ = write!(s, " - |");
                    }
                }
            }
            let _ = writeln!(s);
        }
    }

    if !r.links.learners.is_empty() {
        let _ = writeln!(
            s,
            "\nLearner of each link, chosen on the last quarter of the training frames (held-out score), and how \
             several sources are combined:\n"
        );
        for l in &r.links.learners {
            let _ = writeln!(s, "- {l}");
        }
    }

    let _ = writeln!(
        s,
        "\n## Table II analog: correlations between model outputs\n"
    );
    let _ = writeln!(
        s,
        "Pearson r over the whole trace between scalar views of the outputs (arg-max class for classifiers, box \
         present for localisation, first component for counts and regressions; sequences skipped).\n"
    );
    let _ = write!(s, "| |");
    for m in &r.correlations.models {
        let _ = write!(s, " {m} |");
    }
    let _ = writeln!(s, "\n|---|{}", "---|".repeat(r.correlations.models.len()));
    for (i, m) in r.correlations.models.iter().enumerate() {
        let _ = write!(s, "| {m} |");
        for v in &r.correlations.r[i] {
            match v {
                Some(x) => {
                    let _ = write!(s, " {x:.2} |");
                }
                None => {
                    let _ = write!(s, " n/a |");
                }
            }
        }
        let _ = writeln!(s);
    }

    let _ = writeln!(s, "\n## Beside the paper\n");
    let _ = writeln!(
        s,
        "The paper's Table V (smart building and city traffic, 48 h of 58 and 10 cameras, three models each, GPU \
         memory budgets of 5 and 9 GB):\n"
    );
    let _ = writeln!(s, "{PAPER_TABLE_V}");
    let _ = writeln!(
        s,
        "Where these data differ: the footage is this trace's, not the paper's building and traffic cameras; the \
         models are the ones recorded here, not OpenPose, ResNet50 and YOLOv3; costs come from the trace header \
         (profiled on the recording machine, possibly a CPU) rather than a GPU; MTL is a small convolutional network \
         on the trace's thumbnails (not a pretrained ResNet50 on full frames) and DRLS a tabular Q-learner whose \
         unexecuted models are predicted by the same links as MLink's; \
         the profiling scores are measured over a window of periods because short traces hold few profiling frames \
         per period."
    );
    s
}

/// Accuracy (%) against budget, one line per method, as an SVG document.
pub fn plot_accuracy_vs_budget(r: &Report) -> Result<String, EvalError> {
    use super::plot::{err, percent_svg};
    use plotters::prelude::*;
    let n = r.budgets.len();
    let labels: Vec<String> = r.budgets.iter().map(|b| b.label.clone()).collect();
    percent_svg(
        (720, 440),
        "Average output accuracy vs budget",
        -0.5f64..(n as f64 - 0.5),
        |chart| {
            chart
                .configure_mesh()
                .x_labels(n.max(1))
                .x_label_formatter(&|x| {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                        labels[i as usize].clone()
                    } else {
                        String::new()
                    }
                })
                .x_desc("budget")
                .y_desc("accuracy %")
                .draw()
                .map_err(err)?;
            for (mi, method) in methods_of(r).into_iter().enumerate() {
                let colour = METHOD_COLOURS[mi % METHOD_COLOURS.len()];
                let pts: Vec<(f64, f64)> = r
                    .budgets
                    .iter()
                    .enumerate()
                    .filter_map(|(bi, b)| {
                        Some((bi as f64, 100.0 * outcome_of(b, method)?.accuracy))
                    })
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
                    .map_err(err)?
                    .label(method.name())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
                chart
                    .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, colour.filled())))
                    .map_err(err)?;
            }
            Ok(())
        },
    )
}

/// Accuracy (%) against time per frame for every method and budget, as an SVG document.
pub fn plot_accuracy_vs_time(r: &Report) -> Result<String, EvalError> {
    use super::plot::{err, percent_svg};
    use plotters::prelude::*;
    let max_ms = r
        .budgets
        .iter()
        .flat_map(|b| b.methods.iter().map(|m| m.outcome.ms_per_frame))
        .chain([r.reducto_at_target.ms_per_frame])
        .fold(1.0f64, f64::max);
    percent_svg(
        (720, 440),
        "Average output accuracy vs time per frame",
        0f64..max_ms * 1.1,
        |chart| {
            chart
                .configure_mesh()
                .x_desc("ms per frame")
                .y_desc("accuracy %")
                .draw()
                .map_err(err)?;
            for (mi, method) in methods_of(r).into_iter().enumerate() {
                let colour = METHOD_COLOURS[mi % METHOD_COLOURS.len()];
                let pts: Vec<(f64, f64)> = r
                    .budgets
                    .iter()
                    .filter_map(|b| {
                        let o = outcome_of(b, method)?;
                        Some((o.ms_per_frame, 100.0 * o.accuracy))
                    })
                    .collect();
                chart
                    .draw_series(pts.into_iter().map(|p| Circle::new(p, 5, colour.filled())))
                    .map_err(err)?
                    .label(method.name())
                    .legend(move |(x, y)| Circle::new((x + 8, y), 4, colour.filled()));
            }
            Ok(())
        },
    )
}

/// Writes `report.md`, `report.json` and the SVG plots into `dir`, each atomically; returns
/// the paths written.
pub fn write_report(r: &Report, dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let io = |p: &Path, e: std::io::Error| EvalError::Io {
        path: p.to_path_buf(),
        source: e,
    };
    let plots = [
        (
            "Accuracy vs budget",
            "accuracy_vs_budget.svg",
            plot_accuracy_vs_budget(r)?,
        ),
        (
            "Accuracy vs time per frame",
            "accuracy_vs_time.svg",
            plot_accuracy_vs_time(r)?,
        ),
    ];
    let mut written = Vec::new();
    for (_, name, svg) in &plots {
        let p = dir.join(name);
        crate::fsutil::write_atomic(&p, svg.as_bytes()).map_err(|e| io(&p, e))?;
        written.push(p);
    }
    let refs: Vec<(&str, &str)> = plots.iter().map(|(t, n, _)| (*t, *n)).collect();
    let md = render_markdown(r, &refs);
    let p = dir.join("report.md");
    crate::fsutil::write_atomic(&p, md.as_bytes()).map_err(|e| io(&p, e))?;
    written.push(p);
    let json = serde_json::to_vec_pretty(r).map_err(|e| EvalError::Invalid(e.to_string()))?;
    let p = dir.join("report.json");
    crate::fsutil::write_atomic(&p, &json).map_err(|e| io(&p, e))?;
    written.push(p);
    Ok(written)
}

/// Every method's results over several seeds of link training (the Table V analog with
/// mean and spread).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeedSummary {
    pub seeds: Vec<u64>,
    pub budgets: Vec<SeedBudget>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeedBudget {
    pub label: String,
    pub methods: Vec<SeedMethod>,
}

/// Mean and sample standard deviation (0 with one seed), and the extremes, over seeds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(xs: &[f64]) -> Spread {
        let n = xs.len().max(1) as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = if xs.len() > 1 {
            xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Spread {
            mean,
            std: var.sqrt(),
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeedMethod {
    pub method: Method,
    pub accuracy: Spread,
    pub ms_per_frame: Spread,
    pub executions_saved: Spread,
    /// Optimal's accuracy less this method's, per seed.
    pub gap_to_optimal: Spread,
}

/// Summarises reports of the same trace and budgets made with different seeds.
pub fn summarise_seeds(reports: &[Report]) -> SeedSummary {
    let seeds = reports.iter().map(|r| r.config.seed).collect();
    let budgets = match reports.first() {
        None => Vec::new(),
        Some(first) => first
            .budgets
            .iter()
            .enumerate()
            .map(|(bi, b)| SeedBudget {
                label: b.label.clone(),
                methods: b
                    .methods
                    .iter()
                    .enumerate()
                    .map(|(mi, m)| {
                        let outs: Vec<&Outcome> = reports
                            .iter()
                            .filter_map(|r| r.budgets.get(bi)?.methods.get(mi))
                            .map(|m| &m.outcome)
                            .collect();
                        let optimal: Vec<f64> = reports
                            .iter()
                            .map(|r| {
                                r.budgets.get(bi).map_or(0.0, |b| {
                                    b.methods
                                        .iter()
                                        .find(|m| m.method == Method::Optimal)
                                        .map_or(0.0, |m| m.outcome.accuracy)
                                })
                            })
                            .collect();
                        let of = |f: &dyn Fn(&Outcome) -> f64| {
                            Spread::of(&outs.iter().map(|o| f(o)).collect::<Vec<_>>())
                        };
                        SeedMethod {
                            method: m.method,
                            accuracy: of(&|o| o.accuracy),
                            ms_per_frame: of(&|o| o.ms_per_frame),
                            executions_saved: of(&|o| o.executions_saved),
                            gap_to_optimal: Spread::of(
                                &outs
                                    .iter()
                                    .zip(&optimal)
                                    .map(|(o, opt)| opt - o.accuracy)
                                    .collect::<Vec<_>>(),
                            ),
                        }
                    })
                    .collect(),
            })
            .collect(),
    };
    SeedSummary { seeds, budgets }
}

/// The seed summary as a Markdown table: accuracy mean ± standard deviation (min-max), time
/// per frame, executions saved and the gap to Optimal, per budget.
pub fn render_seeds_markdown(s: &SeedSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Over {} seeds of link training ({}): mean ± standard deviation (min-max).\n",
        s.seeds.len(),
        s.seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for b in &s.budgets {
        let _ = writeln!(out, "Budget {}:\n", b.label);
        let _ = writeln!(
            out,
            "| method | acc. % | ms/frame | saved % | gap to Optimal (points) |\n|---|---|---|---|---|"
        );
        for m in &b.methods {
            let _ = writeln!(
                out,
                "| {} | {:.1} ± {:.1} ({:.1}-{:.1}) | {:.1} | {:.1} | {:.1} |",
                m.method.name(),
                100.0 * m.accuracy.mean,
                100.0 * m.accuracy.std,
                100.0 * m.accuracy.min,
                100.0 * m.accuracy.max,
                m.ms_per_frame.mean,
                100.0 * m.executions_saved.mean,
                100.0 * m.gap_to_optimal.mean
            );
        }
        let _ = writeln!(out);
    }
    out
}

/// The seed summary for a terminal.
pub fn render_seeds_text(s: &SeedSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "over seeds {}: mean ± std (min-max)",
        s.seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for b in &s.budgets {
        let _ = writeln!(out, "\nbudget {}", b.label);
        let _ = writeln!(
            out,
            "  {:<16} {:>24} {:>9} {:>8} {:>8}",
            "method", "acc. %", "ms/frame", "saved %", "gap"
        );
        for m in &b.methods {
            let _ = writeln!(
                out,
                "  {:<16} {:>24} {:>9.1} {:>8.1} {:>8.1}",
                m.method.name(),
                format!(
                    "{:.1} ± {:.1} ({:.1}-{:.1})",
                    100.0 * m.accuracy.mean,
                    100.0 * m.accuracy.std,
                    100.0 * m.accuracy.min,
                    100.0 * m.accuracy.max
                ),
                m.ms_per_frame.mean,
                100.0 * m.executions_saved.mean,
                100.0 * m.gap_to_optimal.mean
            );
        }
    }
    out
}

/// Writes `seeds.md` and `seeds.json` into `dir`, atomically; returns the paths written.
pub fn write_seeds(s: &SeedSummary, dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let io = |p: &Path, e: std::io::Error| EvalError::Io {
        path: p.to_path_buf(),
        source: e,
    };
    let md = dir.join("seeds.md");
    crate::fsutil::write_atomic(&md, render_seeds_markdown(s).as_bytes())
        .map_err(|e| io(&md, e))?;
    let json = dir.join("seeds.json");
    let bytes = serde_json::to_vec_pretty(s).map_err(|e| EvalError::Invalid(e.to_string()))?;
    crate::fsutil::write_atomic(&json, &bytes).map_err(|e| io(&json, e))?;
    Ok(vec![md, json])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_is_the_mean_the_sample_deviation_and_the_range() {
        let s = Spread::of(&[0.8, 0.9, 1.0]);
        assert!((s.mean - 0.9).abs() < 1e-12);
        assert!((s.std - 0.1).abs() < 1e-12);
        assert_eq!((s.min, s.max), (0.8, 1.0));
        let one = Spread::of(&[0.5]);
        assert_eq!((one.mean, one.std, one.min, one.max), (0.5, 0.0, 0.5, 0.5));
    }
}
