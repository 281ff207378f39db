//! The online-training comparison of the paper's Fig. 6: one link `source -> target` served
//! over a trace cut into segments, its links first trained on the trace's first frames, then
//! kept (Offline-Init) or fine-tuned online by the engine's labelling policies: Periodic (every
//! segment's profiling frames), Uncertainty-based (frames whose prediction is uncertain) and
//! Loss-prediction-based (frames whose predicted loss is high).
//!
//! Which frames are labelled and when the links train is decided by the engine's own
//! controller ([`crate::control::Controller`] with its [`Labelling`] setting, the code
//! `mlink run` executes): the replay hands it every frame with its trace time, reports each
//! served frame's uncertainty and predicted loss as the engine does, and carries out its
//! `Train` commands as the engine's link trainer does (the batch and a reservoir of earlier
//! samples, the newest block held out, fine-tuning, then ensembles and scores refitted).
//! The budget holds the source only, so the target is always predicted; each segment is a
//! period whose first frames are profiled (labelled exactly) at the profiling share.
//! Per segment, the target's score on the frames served there is reported.

use super::EvalError;
use super::problem::Problem;
use super::stats::mean;
use crate::config::SelectionPolicy;
use crate::control::{
    self, BundleLinks, Command, Controller, Event, Labelling, PeriodLength, Purpose, Settings,
};
use crate::engine::online::FINE_TUNE_EPOCHS;
use crate::link::reservoir::Reservoir;
use crate::link::{LinkBundle, Sample};
use crate::output::OutputValue;
use crate::schedule::{Budget, Costs};
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt::Write as _;

/// A compared training policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnlinePolicy {
    OfflineInit,
    Periodic,
    Uncertainty,
    LossPrediction,
}

impl OnlinePolicy {
    pub const ALL: [OnlinePolicy; 4] = [
        OnlinePolicy::OfflineInit,
        OnlinePolicy::Periodic,
        OnlinePolicy::Uncertainty,
        OnlinePolicy::LossPrediction,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OnlinePolicy::OfflineInit => "Offline-Init",
            OnlinePolicy::Periodic => "Periodic",
            OnlinePolicy::Uncertainty => "Uncertainty",
            OnlinePolicy::LossPrediction => "Loss-prediction",
        }
    }
}

/// The comparison's knobs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OnlineConfig {
    pub source: usize,
    pub target: usize,
    pub segments: usize,
    /// Share of the frames (from the start) the links first train on (paper: 1%); at least
    /// `min_init_frames`.
    pub init_fraction: f64,
    pub min_init_frames: usize,
    /// The labelling budget as a share of each segment's frames (paper: 1%), twice over:
    /// Periodic profiles twice the share; the others profile the share and label as many
    /// frames again on demand.
    pub label_fraction: f64,
    /// Uncertainty above which a served frame is queued for labelling (the Uncertainty
    /// policy); `None`: the upper quartile of the initial training frames' uncertainties.
    pub uncertainty_threshold: Option<f64>,
    pub seed: u64,
}

/// One policy's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyResult {
    pub policy: OnlinePolicy,
    /// Per segment, the target's mean score on its served frames.
    pub segments: Vec<f64>,
    pub average: f64,
    /// Frames labelled exactly (profiled and labelled on demand), the initial frames
    /// excluded.
    pub labelled: usize,
    pub trainings: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OnlineReport {
    pub source: String,
    pub target: String,
    pub init_frames: usize,
    pub frames: usize,
    pub uncertainty_threshold: f64,
    pub policies: Vec<PolicyResult>,
}

/// Runs every policy.
pub fn compare(problem: &Problem, cfg: &OnlineConfig) -> Result<OnlineReport, EvalError> {
    let k = problem.n_models();
    if cfg.source >= k || cfg.target >= k || cfg.source == cfg.target {
        return Err(EvalError::Invalid(
            "the source and the target must be two different recorded models".into(),
        ));
    }
    if cfg.segments == 0 {
        return Err(EvalError::Invalid("at least one segment".into()));
    }
    let share = |x: f64| x > 0.0 && x < 1.0;
    if !share(cfg.init_fraction) || !share(cfg.label_fraction) {
        return Err(EvalError::Invalid(
            "the initial and labelling shares must be between 0 and 1".into(),
        ));
    }
    // The two models alone, in trace order.
    let mut pair = problem.clone();
    let ids = vec![
        problem.models[cfg.source].id.clone(),
        problem.models[cfg.target].id.clone(),
    ];
    pair.restrict(&ids)?;
    let (src, dst) = if cfg.source < cfg.target {
        (0, 1)
    } else {
        (1, 0)
    };
    let n = pair.frames.len();
    let n_init = ((cfg.init_fraction * n as f64).ceil() as usize)
        .max(cfg.min_init_frames)
        .min(n.saturating_sub(cfg.segments));
    if n_init < 2 || n - n_init < cfg.segments {
        return Err(EvalError::Invalid(format!(
            "{n} frames are too few for {} initial frames and {} segments",
            n_init, cfg.segments
        )));
    }
    let init: Vec<&[OutputValue]> = pair.frames[..n_init]
        .iter()
        .map(|f| f.outputs.as_slice())
        .collect();
    let initial = super::linker::train(&pair, &init, cfg.seed)?;
    let threshold = match cfg.uncertainty_threshold {
        Some(t) => t,
        None => {
            let mut u: Vec<f64> = pair.frames[..n_init]
                .iter()
                .filter_map(|f| {
                    initial
                        .predict(dst, &[(src, &f.outputs[src])])
                        .ok()
                        .map(|p| p.uncertainty)
                })
                .collect();
            u.sort_by(f64::total_cmp);
            u.get(u.len() * 3 / 4).copied().unwrap_or(0.0)
        }
    };
    let mut policies = Vec::new();
    for policy in OnlinePolicy::ALL {
        // Every policy starts from the same links (training is deterministic for a seed).
        let start = super::linker::train(&pair, &init, cfg.seed)?;
        policies.push(run_policy(
            &pair,
            start,
            policy,
            cfg,
            n_init,
            (src, dst),
            threshold,
        )?);
    }
    Ok(OnlineReport {
        source: ids[if src == 0 { 0 } else { 1 }].clone(),
        target: ids[if dst == 0 { 0 } else { 1 }].clone(),
        init_frames: n_init,
        frames: n,
        uncertainty_threshold: threshold,
        policies,
    })
}

fn run_policy(
    pair: &Problem,
    mut bundle: LinkBundle,
    policy: OnlinePolicy,
    cfg: &OnlineConfig,
    n_init: usize,
    (src, dst): (usize, usize),
    threshold: f64,
) -> Result<PolicyResult, EvalError> {
    let n = pair.frames.len();
    let seg_len = (n - n_init).div_ceil(cfg.segments);
    let labelling = match policy {
        OnlinePolicy::OfflineInit => Labelling::None,
        OnlinePolicy::Periodic => Labelling::Periodic,
        OnlinePolicy::Uncertainty => Labelling::Uncertainty {
            threshold: Some(threshold),
        },
        OnlinePolicy::LossPrediction => Labelling::LossPrediction { threshold: None },
    };
    let settings = Settings {
        policy: SelectionPolicy::Mlink,
        period: PeriodLength::Frames(seg_len as u64),
        // The same labelling budget for every policy: Periodic labels twice the profiling
        // share on its profiling frames; the on-demand policies profile the share and label
        // as many frames again on demand (see RunInTurns below).
        profiling_ratio: if policy == OnlinePolicy::Periodic {
            2.0 * cfg.label_fraction
        } else {
            cfg.label_fraction
        },
        min_profile_frames: 1,
        max_kept_frames: control::controller::DEFAULT_MAX_KEPT_FRAMES,
        profile_window: 1,
        fps_hint: 1.0,
        drift_margin: None,
        warmup_samples: 0,
        labelling,
        federated: false,
        hybrid: Default::default(),
    };
    let costs = pair.costs();
    // The source fits, the two together do not: the target is always predicted.
    let budget = Budget::memory(costs[src].memory_mb.max(1e-6));
    let specs: Vec<_> = pair.models.iter().map(|m| m.spec.clone()).collect();
    let err = |e: control::ControlError| EvalError::Schedule(e.to_string());
    let mut ctl = Controller::new(
        settings,
        specs,
        Costs {
            models: if costs[dst].memory_mb > 0.0 {
                costs.clone()
            } else {
                // A target without memory cost would fit beside the source.
                costs
                    .iter()
                    .enumerate()
                    .map(|(m, c)| {
                        if m == dst {
                            crate::schedule::Cost::new(
                                costs[src].memory_mb.max(1.0),
                                c.ms_per_frame,
                            )
                        } else {
                            *c
                        }
                    })
                    .collect()
            },
            link: crate::schedule::Cost::new(0.0, 0.0),
            per_link: Vec::new(),
        },
        budget,
        vec![None; 2],
        false,
    )
    .map_err(err)?;
    let identity = [0usize, 1];
    // The samples the links learned from start the reservoir, as in the engine.
    let mut reservoir = Reservoir::online(cfg.seed);
    reservoir.keep_batch(
        pair.frames[..n_init]
            .iter()
            .map(|f| f.outputs.clone())
            .collect(),
        Vec::new(),
    );
    let mut per_segment: Vec<Vec<f64>> = vec![Vec::new(); cfg.segments];
    let mut labelled = 0usize;
    let mut profiled = 0usize;
    let mut queued_labels = 0usize;
    let mut trainings = 0usize;
    let segment_of = |t: usize| ((t - n_init) / seg_len).min(cfg.segments - 1);
    let link_score = |bundle: &LinkBundle, t: usize| {
        let f = &pair.frames[t];
        bundle
            .predict(dst, &[(src, &f.outputs[src])])
            .ok()
            .map_or(0.0, |p| {
                super::score(&pair.models[dst].spec, &p.value, &f.outputs[dst])
            })
    };
    let mut pending: VecDeque<Event> = VecDeque::from([Event::LinksReady {
        cause: control::Cause::Startup,
    }]);
    let mut frames = n_init..n;
    loop {
        let event = match pending.pop_front() {
            Some(e) => e,
            None => match frames.next() {
                Some(t) => Event::Frame {
                    id: t as u64,
                    time_s: pair.frames[t].time_s,
                },
                None => break,
            },
        };
        let links = BundleLinks {
            bundle: &bundle,
            to_bundle: &identity,
        };
        let commands = ctl.handle(event, Some(&links)).map_err(err)?;
        let mut train_batches = Vec::new();
        for cmd in commands {
            match cmd {
                Command::Serve { frame, .. } => {
                    let t = frame as usize;
                    let f = &pair.frames[t];
                    let sources = [(src, &f.outputs[src])];
                    let p = bundle.predict(dst, &sources).ok();
                    per_segment[segment_of(t)].push(link_score(&bundle, t));
                    let predicted_loss = match labelling {
                        Labelling::LossPrediction { .. } => bundle.predicted_loss(dst, &sources),
                        _ => None,
                    };
                    pending.push_back(Event::Served {
                        id: frame,
                        uncertainty: p.map(|p| p.uncertainty),
                        predicted_loss,
                    });
                }
                Command::Profile { frame, purpose } => {
                    labelled += 1;
                    profiled += 1;
                    // The link is scored on every frame, profiled ones included (there its
                    // prediction is made but not served).
                    let t = frame as usize;
                    per_segment[segment_of(t)].push(link_score(&bundle, t));
                    pending.push_back(Event::Measured {
                        purpose,
                        frames: 1,
                        samples: vec![pair.frames[t].outputs.clone()],
                        views: Vec::new(),
                    });
                }
                Command::RunInTurns {
                    frames, purpose, ..
                } => {
                    // The labelling budget: frames labelled on demand never outnumber the
                    // profiled ones (the rest are reported measured without a sample).
                    let taken = if purpose == Purpose::Label {
                        let room = profiled.saturating_sub(queued_labels);
                        let taken = frames.len().min(room);
                        queued_labels += taken;
                        taken
                    } else {
                        // Profiling frames (the set and the others do not fit together).
                        profiled += frames.len();
                        frames.len()
                    };
                    labelled += taken;
                    pending.push_back(Event::Measured {
                        purpose,
                        frames: frames.len(),
                        samples: frames[..taken]
                            .iter()
                            .map(|&t| pair.frames[t as usize].outputs.clone())
                            .collect(),
                        views: Vec::new(),
                    });
                }
                Command::Train { samples, .. } => train_batches.push(samples),
                Command::Select(_)
                | Command::Keep { .. }
                | Command::Release { .. }
                | Command::StartTraining { .. } => {}
            }
        }
        for rows in train_batches {
            // What the engine's link trainer does with a batch (engine::online).
            let samples: Vec<Sample> = reservoir
                .with_batch(&rows, &[])
                .into_iter()
                .map(|k| Sample::complete(k.row))
                .collect();
            let (fit_on, held_out) = bundle.split_in_time(&samples);
            if bundle.fine_tune(fit_on, FINE_TUNE_EPOCHS).is_ok() {
                let _ = bundle.refit(fit_on, held_out);
                trainings += 1;
                pending.push_back(Event::LinksUpdated);
            }
            reservoir.keep_batch(rows, Vec::new());
        }
    }
    let segments: Vec<f64> = per_segment
        .iter()
        .map(|s| mean(s.iter().copied()))
        .collect();
    let all: Vec<f64> = per_segment.into_iter().flatten().collect();
    Ok(PolicyResult {
        policy,
        segments,
        average: mean(all),
        labelled,
        trainings,
    })
}

/// The comparison as a Markdown table (rows: policies, columns: segments).
pub fn render_markdown(r: &OnlineReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Link `{} -> {}`: score (%) per segment of the frames after the first {} (of {}); the links first train \
         on those, then are kept or fine-tuned online. Uncertainty threshold {:.4}.\n",
        r.source, r.target, r.init_frames, r.frames, r.uncertainty_threshold
    );
    let segs = r.policies.first().map_or(0, |p| p.segments.len());
    let _ = write!(s, "| policy |");
    for i in 0..segs {
        let _ = write!(s, " seg {} |", i + 1);
    }
    let _ = writeln!(s, " average | labelled | trainings |");
    let _ = writeln!(s, "|---|{}---|---|---|", "---|".repeat(segs));
    for p in &r.policies {
        let _ = write!(s, "| {} |", p.policy.name());
        for x in &p.segments {
            let _ = write!(s, " {:.1} |", 100.0 * x);
        }
        let _ = writeln!(
            s,
            " {:.1} | {} | {} |",
            100.0 * p.average,
            p.labelled,
            p.trainings
        );
    }
    s
}

/// Per-segment score of every policy, as SVG.
pub fn plot(r: &OnlineReport) -> Result<String, EvalError> {
    use super::plot::{err, percent_svg};
    use plotters::prelude::*;
    let segs = r.policies.first().map_or(1, |p| p.segments.len()).max(1);
    percent_svg(
        (720, 440),
        &format!("Online training, link {} -> {}", r.source, r.target),
        0.5f64..segs as f64 + 0.5,
        |chart| {
            chart
                .configure_mesh()
                .x_desc("segment")
                .y_desc("score %")
                .draw()
                .map_err(err)?;
            let colours = [BLACK, BLUE, RED, GREEN];
            for (i, p) in r.policies.iter().enumerate() {
                let colour = colours[i % colours.len()];
                let pts: Vec<(f64, f64)> = p
                    .segments
                    .iter()
                    .enumerate()
                    .map(|(s, x)| (s as f64 + 1.0, 100.0 * x))
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
                    .map_err(err)?
                    .label(p.policy.name())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
            }
            Ok(())
        },
    )
}
