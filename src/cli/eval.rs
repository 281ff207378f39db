//! `mlink eval`: replays scheduling methods and baselines over a recorded trace.

use crate::config::SelectionPolicy;
use crate::control::Decision;
use crate::eval::linker::LinkLearners;
use crate::eval::report::{render_seeds_text, summarise_seeds, write_seeds};
use crate::eval::{
    Method, Period, Problem, Replay, ReplayConfig, budget_label, default_budgets, evaluate,
    render_text, write_report,
};
use crate::link::LinkBundle;
use crate::link::trace::{TraceError, TraceHeader, TraceReader, TraceRecord};
use crate::schedule::{Budget, Cost, Costs};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The trace to replay (written by `mlink record`).
    pub trace: PathBuf,
    /// Memory budgets in MB, one run each (repeatable).
    #[arg(long = "budget-mb", value_name = "MB")]
    pub budget_mb: Vec<f64>,
    /// Time budgets in ms of inference per frame, one run each (repeatable).
    #[arg(long = "budget-ms", value_name = "MS")]
    pub budget_ms: Vec<f64>,
    /// Seed of link training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Repeat the evaluation with this many seeds (`--seed` and the ones after it) and report
    /// each method's mean and spread; the full report is the first seed's.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seeds: u64,
    /// Hybrid and memory-bound Reducto: video seconds a triggered frame may wait for a model
    /// run in turns.
    #[arg(long = "latency-s", default_value_t = crate::control::hybrid::DEFAULT_LATENCY_S)]
    pub latency_s: f64,
    /// Hybrid and memory-bound Reducto: load and unload milliseconds charged per MB of a
    /// model run in turns (plus a fixed 20 ms).
    #[arg(long, default_value_t = crate::control::hybrid::DEFAULT_LOAD_MS_PER_MB)]
    pub load_ms_per_mb: f64,
    /// Hybrid and memory-bound Reducto: video seconds a triggered model's last exact output
    /// is served at most before the model runs again (`inf`: only its trigger runs it).
    #[arg(long = "max-age-s", default_value_t = crate::control::hybrid::DEFAULT_MAX_AGE_S)]
    pub max_age_s: f64,
    /// Share of the trace, in time, that trains the links.
    #[arg(long, default_value_t = 0.1)]
    pub train_fraction: f64,
    /// Period length in frames (default: the test part cut into 5 periods).
    #[arg(long, value_name = "N", conflicts_with = "period_s")]
    pub period_frames: Option<usize>,
    /// Period length in seconds of trace time.
    #[arg(long = "period-s", value_name = "S")]
    pub period_s: Option<f64>,
    /// Share of each period's frames used for profiling.
    #[arg(long, default_value_t = 0.01)]
    pub profile_fraction: f64,
    /// Profiling frames per period at least.
    #[arg(long, default_value_t = 1)]
    pub min_profile_frames: usize,
    /// Periods of profiling frames a selection's scores are measured on.
    #[arg(long, default_value_t = 4)]
    pub profile_window: usize,
    /// With `--bundle`, the hybrid's frames profiled one after another for its trigger's
    /// curves: the pipeline's `links.warmup_samples`, as `mlink run --bundle` takes them
    /// (at least 8).
    #[arg(long, default_value_t = crate::config::DEFAULT_WARMUP_SAMPLES)]
    pub curve_frames: usize,
    /// Periodic adaptation, as `adaptation.policy: periodic` in the engine: MLink, Gain and
    /// the hybrid train the chosen view links again on the training frames and every
    /// period's profiling samples so far (needs `--links chosen`).
    #[arg(long)]
    pub adapt: bool,
    /// Accuracy Reducto's thresholds are tuned for on the training part.
    #[arg(long, default_value_t = 0.9)]
    pub reducto_target: f64,
    /// Cost of one link network as MB:MS (default: the trained links' mean parameter
    /// memory, as the engine charges it, and 0.05 ms).
    #[arg(long, value_name = "MB:MS")]
    pub link_cost: Option<String>,
    /// A model's cost as ID=MB:MS, overriding the trace header (repeatable).
    #[arg(long = "cost", value_name = "ID=MB:MS")]
    pub costs: Vec<String>,
    /// Which links are trained: `chosen` (per link the best of the paper's MLP and small-sample
    /// learners on the link views, chosen on a held-out block of the training part; joint
    /// multi-source links) or `paper` (the paper's MLP links on the heads and ensemble).
    #[arg(long, value_enum, default_value_t = LinkLearners::Chosen)]
    pub links: LinkLearners,
    /// Evaluate only these recorded models (comma-separated ids; default: all).
    #[arg(long, value_name = "ID,ID,...", value_delimiter = ',')]
    pub models: Vec<String>,
    /// Accept an unfinished trace (e.g. `TRACE.partial` left by an interrupted recording):
    /// its complete records are replayed.
    #[arg(long)]
    pub partial: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write report.md, report.json and SVG plots into this directory.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Replay with the links of this bundle (trained on the trace's models) instead of
    /// training them: every frame of the trace is replayed, as `mlink run --bundle` serves
    /// it, and only the methods that run on given links (MLink, Gain, Hybrid) are reported.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// Write the selections of one method (`--decisions-policy`) at the first budget here,
    /// one JSON object a line (the format of `mlink run --decisions`).
    #[arg(long, value_name = "FILE")]
    pub decisions: Option<PathBuf>,
    /// Whose selections `--decisions` writes: mlink, gain or hybrid.
    #[arg(long, value_name = "POLICY", default_value = "mlink", value_parser = parse_decisions_policy)]
    pub decisions_policy: SelectionPolicy,
}

fn parse_cost(s: &str) -> anyhow::Result<Cost> {
    let (mb, ms) = s
        .split_once(':')
        .with_context(|| format!("`{s}` is not MB:MS (e.g. 1500:30)"))?;
    let c = Cost::new(
        mb.trim()
            .parse()
            .with_context(|| format!("memory `{mb}` in `{s}` is not a number"))?,
        ms.trim()
            .parse()
            .with_context(|| format!("time `{ms}` in `{s}` is not a number"))?,
    );
    if !c.is_valid() {
        bail!("cost `{s}` must be finite and not negative");
    }
    Ok(c)
}

fn read_trace(
    path: &std::path::Path,
    partial: bool,
) -> Result<(TraceHeader, Vec<TraceRecord>), TraceError> {
    if !partial {
        return crate::link::trace::read_all(path);
    }
    let reader = TraceReader::open_partial(path)?;
    let header = reader.header().clone();
    let records = reader.collect::<Result<Vec<_>, _>>()?;
    Ok((header, records))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut overrides = BTreeMap::new();
    for c in &args.costs {
        let (id, cost) = c
            .split_once('=')
            .with_context(|| format!("`--cost {c}` is not ID=MB:MS"))?;
        overrides.insert(id.to_string(), parse_cost(cost)?);
    }
    let (header, records) = read_trace(&args.trace, args.partial)
        .with_context(|| format!("reading trace {}", args.trace.display()))?;
    let mut problem = Problem::from_trace(&header, records, &overrides)
        .with_context(|| format!("trace {}", args.trace.display()))?;
    if !args.models.is_empty() {
        problem
            .restrict(&args.models)
            .with_context(|| format!("trace {}", args.trace.display()))?;
    }
    let period = match (args.period_frames, args.period_s) {
        (Some(n), _) => Period::Frames(n),
        (None, Some(s)) => Period::Seconds(s),
        (None, None) => Period::Count(5),
    };
    let cfg = ReplayConfig {
        train_fraction: args.train_fraction,
        period,
        profile_fraction: args.profile_fraction,
        min_profile_frames: args.min_profile_frames,
        profile_window: args.profile_window,
        reducto_target: args.reducto_target,
        link_cost: match &args.link_cost {
            Some(c) => parse_cost(c).context("--link-cost")?,
            None => ReplayConfig::default().link_cost,
        },
        link_memory_from_links: args.link_cost.is_none(),
        seed: args.seed,
        links: args.links,
        latency_s: args.latency_s,
        load_ms_per_mb: args.load_ms_per_mb,
        max_age_s: args.max_age_s,
        curve_frames: args.curve_frames,
        adapt: args.adapt,
    };
    if !(args.latency_s.is_finite() && args.latency_s >= 0.0) {
        bail!("--latency-s must be a finite number of at least 0");
    }
    if !(args.load_ms_per_mb.is_finite() && args.load_ms_per_mb >= 0.0) {
        bail!("--load-ms-per-mb must be a finite number of at least 0");
    }
    if args.max_age_s.is_nan() || args.max_age_s <= 0.0 {
        bail!("--max-age-s must be more than 0 seconds (inf: never)");
    }
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let mut budgets: Vec<Budget> = args.budget_mb.iter().map(|&b| Budget::memory(b)).collect();
    budgets.extend(args.budget_ms.iter().map(|&b| Budget::time(b)));
    if budgets.is_empty() {
        budgets = default_budgets(&Costs {
            models: problem.costs(),
            link: cfg.link_cost,
            per_link: Vec::new(),
        });
    }
    if let Some(path) = &args.bundle {
        let decisions = args
            .decisions
            .as_deref()
            .map(|p| (p, args.decisions_policy));
        return run_with_bundle(&problem, cfg, &budgets, path, decisions);
    }
    let report = evaluate(&problem, cfg.clone(), &budgets)?;
    let seeds = if args.seeds > 1 {
        let mut reports = vec![report.clone()];
        for s in 1..args.seeds {
            let cfg = ReplayConfig {
                seed: args.seed + s,
                ..cfg.clone()
            };
            reports.push(evaluate(&problem, cfg, &budgets)?);
        }
        Some(summarise_seeds(&reports))
    } else {
        None
    };
    if let Some(path) = &args.decisions
        && let Some(first) = report.budgets.first()
        && let Some(m) = first
            .methods
            .iter()
            .find(|m| m.method == method_of(args.decisions_policy))
    {
        write_decisions(path, &m.outcome.decisions)?;
    }
    if args.json {
        match &seeds {
            Some(s) => println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"report": report, "seeds": s}))?
            ),
            None => println!("{}", serde_json::to_string_pretty(&report)?),
        }
    } else {
        print!("{}", render_text(&report));
        if let Some(s) = &seeds {
            print!("\n{}", render_seeds_text(s));
        }
    }
    if let Some(dir) = &args.report {
        let written = write_report(&report, dir)?;
        for p in written {
            eprintln!("wrote {}", p.display());
        }
        if let Some(s) = &seeds {
            for p in write_seeds(s, dir)? {
                eprintln!("wrote {}", p.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--decisions-policy`: a policy whose selections a replay reports.
fn parse_decisions_policy(s: &str) -> Result<SelectionPolicy, String> {
    match s {
        "mlink" => Ok(SelectionPolicy::Mlink),
        "gain" => Ok(SelectionPolicy::Gain),
        "hybrid" => Ok(SelectionPolicy::Hybrid),
        other => Err(format!("{other:?} is not mlink, gain or hybrid")),
    }
}

/// The report's method of a policy `--decisions-policy` accepts.
fn method_of(policy: SelectionPolicy) -> Method {
    match policy {
        SelectionPolicy::Gain => Method::Gain,
        SelectionPolicy::Hybrid => Method::Hybrid,
        _ => Method::Mlink,
    }
}

/// The methods that run on given links over every frame of the trace: the paper's and the
/// marginal-gain selections, and the hybrid policy with the engine's settings (its compute
/// allowance is what the paper's set costs, as `mlink run` gives it; an engine started from
/// links measures the trigger's curves on its first frames, and so does this replay).
fn run_with_bundle(
    problem: &Problem,
    cfg: ReplayConfig,
    budgets: &[Budget],
    bundle: &std::path::Path,
    decisions: Option<(&std::path::Path, SelectionPolicy)>,
) -> anyhow::Result<ExitCode> {
    let links = LinkBundle::load(bundle)
        .with_context(|| format!("loading the links {}", bundle.display()))?;
    let replay = Replay::with_links(problem, cfg, links)?;
    for (n, b) in budgets.iter().enumerate() {
        for (name, policy) in [
            ("MLink", SelectionPolicy::Mlink),
            ("Gain", SelectionPolicy::Gain),
            ("Hybrid", SelectionPolicy::Hybrid),
        ] {
            let o = match policy {
                SelectionPolicy::Hybrid => {
                    replay.run_hybrid(b, replay.settings(policy).hybrid, true)?
                }
                _ => replay.run_policy(policy, b)?,
            };
            println!(
                "{:<12} {name:<6} accuracy {:.1}%  {:.1} ms/frame  executions saved {:.1}%",
                budget_label(b),
                o.accuracy * 100.0,
                o.ms_per_frame,
                o.executions_saved * 100.0
            );
            if n == 0
                && let Some((path, of)) = decisions
                && of == policy
            {
                write_decisions(path, &o.decisions)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes decisions as JSON lines, atomically.
fn write_decisions(path: &std::path::Path, decisions: &[Decision]) -> anyhow::Result<()> {
    let mut text = String::new();
    for d in decisions {
        text.push_str(&serde_json::to_string(d)?);
        text.push('\n');
    }
    crate::fsutil::write_atomic(path, text.as_bytes())
        .with_context(|| format!("writing decisions to {}", path.display()))?;
    eprintln!("wrote {} decisions to {}", decisions.len(), path.display());
    Ok(())
}
