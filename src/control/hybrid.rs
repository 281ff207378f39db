//! The hybrid policy (beyond the paper): per model, one of three modes.
//!
//! - `Exact`: the model runs on every frame (it is in the active set).
//! - `Triggered`: the model runs on the frames a frame-difference trigger selects (Reducto's
//!   features, at the frame's own camera: a frame is selected when the feature has changed by
//!   at least a threshold since the last selected frame of that camera; a camera's first
//!   frame always is). In between, its output is its last exact output on that camera (the
//!   target's own past: what a temporal link starts from) or the links' prediction from the
//!   exact models, whichever the plan expects to score better.
//! - `Predicted`: the links predict it from the exact models on every frame.
//!
//! A triggered model's output is also refreshed once its last selected frame of the camera is
//! `max_age_s` old (video time), as if its trigger had fired: the curves measure reuse on a
//! short stretch of frames, and an output reused for longer than that stretch is reused
//! beyond what they measured (a scene that is still while the curves are measured would
//! otherwise keep its first output for the rest of the stream).
//!
//! A triggered model that fits the memory budget beside the exact models stays loaded and runs
//! on its selected frames at once. One that does not runs in turns: its selected frames are
//! kept, and once the oldest has waited the latency allowance (video time) it is loaded, run
//! on them and unloaded; when it does not fit beside the exact models they are unloaded for
//! the turn and loaded again. Loading and unloading are charged as compute, and memory never
//! goes above the budget.
//!
//! The plan is chosen from operating curves measured on consecutive exact samples (per model
//! and feature, for each candidate threshold: the share of frames selected and the accuracy
//! of reusing the last selected output) and the profiled ensemble scores: every exact set that
//! fits the memory budget with its links is tried, and for each, one exchange rate between
//! accuracy and milliseconds picks every other model's mode and threshold; the rate is swept
//! and the plan with the best expected accuracy whose expected compute stays within the
//! allowance wins. It replaces the paper's set only when it expects more by [`MIN_GAIN`] and
//! one standard error of the estimates the two differ on ([`required_gain`]).
//!
//! Without links (`HybridSettings::links` false) every model is triggered and reused in
//! between: Reducto bound by the memory budget, with its loads charged.

use super::scores::Row;
use crate::eval::reducto::{self, DiffStep, SinceSent};
use crate::output::{OutputSpec, score};
use crate::schedule::{Budget, Costs, ModelSet};

/// Video seconds a triggered frame may wait for a model run in turns, by default.
pub const DEFAULT_LATENCY_S: f64 = 10.0;
/// Video seconds a triggered model's last exact output is served at most, by default: the
/// latency allowance, so a model run in turns is refreshed at most once per turn.
pub const DEFAULT_MAX_AGE_S: f64 = DEFAULT_LATENCY_S;
/// Milliseconds of loading and unloading charged per MB of model, by default: about what
/// creating an ONNX Runtime session of the project's models takes on a CPU.
pub const DEFAULT_LOAD_MS_PER_MB: f64 = 5.0;
/// Milliseconds charged per load and unload whatever the model's size.
pub const LOAD_MS_FIXED: f64 = 20.0;
/// Expected accuracy a plan with triggers must add to the paper's set (all else predicted) to
/// replace it, beyond the estimates' uncertainty ([`required_gain`]).
pub const MIN_GAIN: f64 = 0.02;
/// Exchange rates swept between accuracy and milliseconds.
const RATE_STEPS: i32 = 160;

/// The hybrid's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct HybridSettings {
    /// Video seconds a selected frame may wait for a model run in turns.
    pub latency_s: f64,
    /// Video seconds after a triggered model's last selected frame of a camera at which the
    /// next frame is selected whatever its change (infinite: never).
    pub max_age_s: f64,
    /// Per model, milliseconds to load and unload it once (empty: estimated from its memory
    /// at `load_ms_per_mb`).
    pub load_ms: Vec<f64>,
    pub load_ms_per_mb: f64,
    /// Compute allowed per frame, ms (None: the time budget, else what the paper's
    /// selection costs under the same budget).
    pub ms_per_frame: Option<f64>,
    /// Whether exact and predicted modes (and links) may be used; false: every model is
    /// triggered and reuses its last output in between (Reducto within the memory budget).
    pub links: bool,
    /// Per model, the trigger's feature is the one that selects the fewest frames at this
    /// accuracy on the curves' samples (Reducto's choice).
    pub trigger_target: f64,
}

impl HybridSettings {
    /// Per model, its load and unload time: the given ones, else estimated from its memory.
    pub fn load_ms_for(&self, costs: &Costs) -> Vec<f64> {
        if self.load_ms.len() == costs.n_models() {
            return self.load_ms.clone();
        }
        costs
            .models
            .iter()
            .map(|c| LOAD_MS_FIXED + self.load_ms_per_mb * c.memory_mb.max(0.0))
            .collect()
    }
}

impl Default for HybridSettings {
    fn default() -> Self {
        HybridSettings {
            latency_s: DEFAULT_LATENCY_S,
            max_age_s: DEFAULT_MAX_AGE_S,
            load_ms: Vec::new(),
            load_ms_per_mb: DEFAULT_LOAD_MS_PER_MB,
            ms_per_frame: None,
            links: true,
            trigger_target: DEFAULT_TRIGGER_TARGET,
        }
    }
}

/// The accuracy on the curves' samples at which each model's trigger feature is chosen.
pub const DEFAULT_TRIGGER_TARGET: f64 = 0.9;

/// How a triggered model's output is served between its selected frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Between {
    /// Its last exact output on the frame's camera.
    Reuse,
    /// The links' prediction from the exact models.
    Link,
}

/// A model's mode under the hybrid policy.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Exact,
    Triggered {
        /// Index into the frame-difference features.
        feature: usize,
        threshold: f64,
        between: Between,
    },
    Predicted,
}

impl Mode {
    pub fn as_label(&self) -> &'static str {
        match self {
            Mode::Exact => "exact",
            Mode::Triggered { .. } => "triggered",
            Mode::Predicted => "predicted",
        }
    }
}

/// One frame with every model's exact output and its frame-difference features (the change
/// since the previous frame of the same camera).
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerSample {
    pub camera: usize,
    /// Video time of the frame (seconds).
    pub time_s: f64,
    pub diffs: Vec<f32>,
    pub row: Row,
}

/// A threshold of one feature, measured on consecutive exact samples for one model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub feature: usize,
    pub threshold: f64,
    /// Share of frames selected.
    pub sent: f64,
    /// Mean score of the output served (exact when selected, the last selected otherwise).
    pub accuracy: f64,
}

/// Per model, the operating points of every feature and candidate threshold on `samples`
/// (time order; frames of different cameras are filtered apart), with outputs refreshed at
/// `max_age_s` as the trigger does.
pub fn curves(samples: &[TriggerSample], specs: &[OutputSpec], max_age_s: f64) -> Vec<Vec<Point>> {
    let nf = samples.first().map_or(0, |s| s.diffs.len());
    if samples.len() < 2 || samples.iter().any(|s| s.diffs.len() != nf) {
        return vec![Vec::new(); specs.len()];
    }
    specs
        .iter()
        .enumerate()
        .map(|(m, spec)| {
            let mut points = Vec::new();
            for f in 0..nf {
                let steps: Vec<DiffStep> = samples
                    .iter()
                    .map(|s| DiffStep {
                        stream: s.camera,
                        time_s: s.time_s,
                        diff: s.diffs[f],
                    })
                    .collect();
                let diffs: Vec<f32> = steps.iter().map(|s| s.diff).collect();
                let cands = reducto::candidate_thresholds(&diffs);
                let mut reuse =
                    |a: usize, b: usize| score(spec, &samples[a].row[m], &samples[b].row[m]);
                for o in reducto::curve(&steps, &cands, max_age_s, &mut reuse) {
                    points.push(Point {
                        feature: f,
                        threshold: o.threshold,
                        sent: o.sent,
                        accuracy: o.accuracy,
                    });
                }
            }
            points
        })
        .collect()
}

/// Keeps, per model, the points of one feature: the one whose threshold at `target`
/// accuracy selects the fewest frames (the first feature on a tie). A feature fitted on few
/// samples otherwise wins on a threshold that never fires later.
pub fn one_feature(curves: Vec<Vec<Point>>, target: f64) -> Vec<Vec<Point>> {
    curves
        .into_iter()
        .map(|points| {
            let mut best: Option<(usize, f64)> = None;
            let mut features: Vec<usize> = points.iter().map(|p| p.feature).collect();
            features.dedup();
            for f in features {
                let sent = points
                    .iter()
                    .filter(|p| p.feature == f && p.accuracy + 1e-12 >= target)
                    .map(|p| p.sent)
                    .fold(1.0, f64::min);
                if best.is_none_or(|(_, s)| sent < s - 1e-12) {
                    best = Some((f, sent));
                }
            }
            match best {
                Some((f, _)) => points.into_iter().filter(|p| p.feature == f).collect(),
                None => points,
            }
        })
        .collect()
}

/// The chosen modes and what the plan expects of them.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Plan {
    pub modes: Vec<Mode>,
    /// The exact models (the active set).
    pub exact: ModelSet,
    /// Triggered models that stay loaded beside the exact ones.
    pub resident: ModelSet,
    /// Triggered models that run in turns.
    pub in_turns: ModelSet,
    /// Expected mean accuracy over every model.
    pub expected: f64,
    /// Expected compute per frame (ms), loads included.
    pub ms_per_frame: f64,
    /// Per model, the expected accuracy of its mode (1 for an exact model).
    pub accuracy: Vec<f64>,
    /// Per model, the share of frames it runs on exactly (1 exact, 0 predicted).
    pub sent: Vec<f64>,
}

impl Plan {
    /// Every model exact or predicted as `exact` says (no triggers): the paper's shape. The
    /// predicted models' expected accuracy is 0 until the caller fills in their scores.
    pub fn exact_only(exact: ModelSet) -> Self {
        let k = exact.capacity();
        let exact_share: Vec<f64> = (0..k)
            .map(|m| if exact.contains(m) { 1.0 } else { 0.0 })
            .collect();
        Plan {
            modes: (0..k)
                .map(|m| {
                    if exact.contains(m) {
                        Mode::Exact
                    } else {
                        Mode::Predicted
                    }
                })
                .collect(),
            resident: ModelSet::empty(k),
            in_turns: ModelSet::empty(k),
            accuracy: exact_share.clone(),
            sent: exact_share,
            exact,
            expected: 0.0,
            ms_per_frame: 0.0,
        }
    }

    /// A one-line summary, e.g. `exact {0}; triggered 1 (pixel >= 0.02, reuse, in turns); predicted 2`.
    pub fn summary(&self, ids: &[String], features: &[String]) -> String {
        let name = |m: usize| ids.get(m).cloned().unwrap_or_else(|| m.to_string());
        let mut parts = Vec::new();
        for (m, mode) in self.modes.iter().enumerate() {
            parts.push(match mode {
                Mode::Exact => format!("{} exact", name(m)),
                Mode::Predicted => format!("{} predicted", name(m)),
                Mode::Triggered {
                    feature,
                    threshold,
                    between,
                } => format!(
                    "{} on {} >= {:.4} ({}, {})",
                    name(m),
                    features
                        .get(*feature)
                        .cloned()
                        .unwrap_or_else(|| format!("feature {feature}")),
                    threshold,
                    match between {
                        Between::Reuse => "reuse between",
                        Between::Link => "links between",
                    },
                    if self.in_turns.contains(m) {
                        "in turns"
                    } else {
                        "loaded"
                    }
                ),
            });
        }
        parts.join("; ")
    }
}

/// What the planner needs.
pub struct PlanInput<'a> {
    pub costs: &'a Costs,
    pub budget: &'a Budget,
    /// Compute allowed per frame (ms).
    pub cap_ms: f64,
    /// Per model, its operating points ([`curves`]); empty: the model cannot be triggered.
    pub curves: &'a [Vec<Point>],
    /// The score of predicting `target` from the exact set (0 for an empty set).
    pub ensemble: &'a dyn Fn(&ModelSet, usize) -> f64,
    pub load_ms: &'a [f64],
    /// Frames per second over all cameras (how often a latency allowance passes).
    pub fps: f64,
    pub latency_s: f64,
    pub links: bool,
    /// `parents[m]`: the model whose boxes `m` crops; such a model is never triggered.
    pub parents: &'a [Option<usize>],
    /// The most a model's reused output is expected to score between selected frames.
    pub reuse_at_most: f64,
}

/// One model's option for a given exact set.
#[derive(Clone, Copy, Debug)]
struct Option_ {
    mode: Mode,
    accuracy: f64,
    ms: f64,
    memory_mb: f64,
    /// Share of frames selected (triggered modes).
    sent: f64,
    /// Runs in turns (charged its loads).
    turns: bool,
}

/// Memory of the exact models and the links predicting the others from them.
fn exact_memory(costs: &Costs, exact: &ModelSet) -> f64 {
    if exact.is_empty() {
        0.0
    } else {
        costs.set_cost(exact).memory_mb
    }
}

fn memory_limit(budget: &Budget) -> f64 {
    budget.memory_mb.unwrap_or(f64::INFINITY)
}

/// Flushes per frame of a model run in turns that selects `sent` of the frames: at most one
/// per latency allowance, at most one per selected frame.
fn flushes_per_frame(sent: f64, fps: f64, latency_s: f64) -> f64 {
    let per_allowance = if latency_s > 0.0 && fps > 0.0 {
        1.0 / (latency_s * fps)
    } else {
        1.0
    };
    sent.min(per_allowance).max(0.0)
}

/// The milliseconds one turn of `m` costs in loads: its own load and unload, and the exact
/// models' when `m` does not fit beside them.
pub fn turn_load_ms(
    m: usize,
    exact: &ModelSet,
    costs: &Costs,
    budget: &Budget,
    load_ms: &[f64],
) -> f64 {
    let own = load_ms.get(m).copied().unwrap_or(0.0);
    let beside = exact_memory(costs, exact) + costs.models[m].memory_mb;
    if beside <= memory_limit(budget) * (1.0 + 1e-9) {
        own
    } else {
        own + exact
            .iter()
            .map(|e| load_ms.get(e).copied().unwrap_or(0.0))
            .sum::<f64>()
    }
}

fn options(input: &PlanInput<'_>, exact: &ModelSet, j: usize) -> Vec<Option_> {
    let c = input.costs.models[j];
    let predicted = if input.links && !exact.is_empty() {
        (input.ensemble)(exact, j).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mut out = vec![Option_ {
        mode: Mode::Predicted,
        accuracy: predicted,
        ms: 0.0,
        memory_mb: 0.0,
        sent: 0.0,
        turns: false,
    }];
    if input.parents.get(j).copied().flatten().is_some() {
        return out;
    }
    let left = memory_limit(input.budget) - exact_memory(input.costs, exact);
    let fits_beside = c.memory_mb <= left * (1.0 + 1e-9);
    let fits_alone = c.memory_mb <= memory_limit(input.budget) * (1.0 + 1e-9);
    if !fits_alone {
        return out;
    }
    let turn_ms = turn_load_ms(j, exact, input.costs, input.budget, input.load_ms);
    for p in input.curves.get(j).map_or(&[][..], Vec::as_slice) {
        // The curves come from a short stretch of consecutive frames and are optimistic where
        // the scene changes later: reuse is expected at most at the accuracy the trigger's
        // feature was chosen for.
        let reuse_between = if p.sent < 1.0 {
            ((p.accuracy - p.sent) / (1.0 - p.sent)).clamp(0.0, input.reuse_at_most)
        } else {
            1.0
        };
        let (between, between_acc) = if input.links && predicted >= reuse_between {
            (Between::Link, predicted)
        } else {
            (Between::Reuse, reuse_between)
        };
        let accuracy = p.sent + (1.0 - p.sent) * between_acc;
        let mode = Mode::Triggered {
            feature: p.feature,
            threshold: p.threshold,
            between,
        };
        if fits_beside {
            out.push(Option_ {
                mode,
                accuracy,
                ms: p.sent * c.ms_per_frame,
                memory_mb: c.memory_mb,
                sent: p.sent,
                turns: false,
            });
        }
        out.push(Option_ {
            mode,
            accuracy,
            ms: p.sent * c.ms_per_frame
                + flushes_per_frame(p.sent, input.fps, input.latency_s) * turn_ms,
            memory_mb: c.memory_mb,
            sent: p.sent,
            turns: true,
        });
    }
    out
}

/// The best plan within the compute allowance (see the module's rule); None when no exact
/// set fits the memory budget with its links.
pub fn plan(input: &PlanInput<'_>) -> Option<Plan> {
    let k = input.costs.n_models();
    let limit = memory_limit(input.budget);
    let mut best: Option<Plan> = None;
    let sets: Vec<u64> = if input.links {
        (0..(1u64 << k)).collect()
    } else {
        vec![0]
    };
    for mask in sets {
        let exact = ModelSet::from_indices(k, (0..k).filter(|i| mask >> i & 1 == 1));
        let cost = input.costs.set_cost(&exact);
        if !input
            .budget
            .fits(crate::schedule::Cost::new(cost.memory_mb, 0.0))
        {
            continue;
        }
        // A model that crops another's boxes runs only with it.
        if exact
            .iter()
            .any(|m| input.parents[m].is_some_and(|p| !exact.contains(p)))
        {
            continue;
        }
        let opts: Vec<Vec<Option_>> = (0..k)
            .map(|j| {
                if exact.contains(j) {
                    Vec::new()
                } else {
                    options(input, &exact, j)
                }
            })
            .collect();
        let ms_scale: f64 = input
            .costs
            .models
            .iter()
            .map(|c| c.ms_per_frame)
            .fold(1e-6, f64::max);
        for step in 0..=RATE_STEPS {
            let rate = if step == 0 {
                0.0
            } else {
                1e-4 * 10f64.powf(f64::from(step - 1) / 20.0) / ms_scale
            };
            let mut chosen: Vec<Option<Option_>> = opts
                .iter()
                .map(|o| {
                    o.iter().copied().max_by(|a, b| {
                        (a.accuracy - rate * a.ms)
                            .total_cmp(&(b.accuracy - rate * b.ms))
                            .then(b.ms.total_cmp(&a.ms))
                    })
                })
                .collect();
            // Loaded triggered models must fit beside the exact ones together: the ones
            // that do not move to turns (the largest first).
            let mut resident_mb = 0.0;
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&a, &b| {
                input.costs.models[a]
                    .memory_mb
                    .total_cmp(&input.costs.models[b].memory_mb)
            });
            for &j in &order {
                if let Some(o) = chosen[j]
                    && matches!(o.mode, Mode::Triggered { .. })
                    && !o.turns
                {
                    if cost.memory_mb + resident_mb + o.memory_mb <= limit * (1.0 + 1e-9) {
                        resident_mb += o.memory_mb;
                    } else {
                        chosen[j] = opts[j]
                            .iter()
                            .copied()
                            .find(|x| x.turns && x.mode == o.mode);
                    }
                }
            }
            // A turn unloads the loaded triggered models too when it does not fit beside
            // them: charge each turn with what stays loaded.
            let loaded = ModelSet::from_indices(
                k,
                (0..k).filter(|&j| {
                    exact.contains(j)
                        || chosen[j]
                            .is_some_and(|o| matches!(o.mode, Mode::Triggered { .. }) && !o.turns)
                }),
            );
            for (j, o) in chosen.iter_mut().enumerate() {
                if let Some(o) = o
                    && o.turns
                {
                    let c = input.costs.models[j];
                    o.ms = o.sent * c.ms_per_frame
                        + flushes_per_frame(o.sent, input.fps, input.latency_s)
                            * turn_load_ms(j, &loaded, input.costs, input.budget, input.load_ms);
                }
            }
            let ms = cost.ms_per_frame + chosen.iter().flatten().map(|o| o.ms).sum::<f64>();
            if ms > input.cap_ms + 1e-9 {
                continue;
            }
            let acc = (0..k)
                .map(|j| {
                    if exact.contains(j) {
                        1.0
                    } else {
                        chosen[j].map_or(0.0, |o| o.accuracy)
                    }
                })
                .sum::<f64>()
                / k.max(1) as f64;
            let better = best.as_ref().is_none_or(|b| {
                acc > b.expected + 1e-9 || (acc > b.expected - 1e-9 && ms < b.ms_per_frame - 1e-9)
            });
            if better {
                let mut resident = ModelSet::empty(k);
                let mut in_turns = ModelSet::empty(k);
                let modes = (0..k)
                    .map(|j| {
                        if exact.contains(j) {
                            return Mode::Exact;
                        }
                        match chosen[j] {
                            Some(o) => {
                                if matches!(o.mode, Mode::Triggered { .. }) {
                                    if o.turns {
                                        in_turns.insert(j);
                                    } else {
                                        resident.insert(j);
                                    }
                                }
                                o.mode
                            }
                            None => Mode::Predicted,
                        }
                    })
                    .collect();
                let of = |j: usize, exact_value: f64, f: fn(&Option_) -> f64| {
                    if exact.contains(j) {
                        exact_value
                    } else {
                        chosen[j].as_ref().map_or(0.0, f)
                    }
                };
                best = Some(Plan {
                    modes,
                    exact: exact.clone(),
                    resident,
                    in_turns,
                    expected: acc,
                    ms_per_frame: ms,
                    accuracy: (0..k).map(|j| of(j, 1.0, |o| o.accuracy)).collect(),
                    sent: (0..k).map(|j| of(j, 1.0, |o| o.sent)).collect(),
                });
            }
        }
    }
    best
}

/// Sampling variance of a mean score `p` measured on `n` samples, with one hit and one miss
/// added (a score of 1 on two samples is not a certainty).
fn score_variance(p: f64, n: usize) -> f64 {
    let n = n as f64;
    let p = (p.clamp(0.0, 1.0) * n + 1.0) / (n + 2.0);
    p * (1.0 - p) / (n + 2.0)
}

/// Sampling variance of a plan's expected accuracy for model `j`: a predicted model's score
/// was profiled on `profiled` samples; a triggered one's between-frames accuracy on `curve`
/// consecutive samples (reuse) or `profiled` (links), on the share of frames not selected.
fn model_variance(plan: &Plan, j: usize, profiled: usize, curve: usize) -> f64 {
    let acc = plan.accuracy.get(j).copied().unwrap_or(0.0);
    let sent = plan.sent.get(j).copied().unwrap_or(0.0).clamp(0.0, 1.0);
    match plan.modes.get(j) {
        Some(Mode::Exact) | None => 0.0,
        Some(Mode::Predicted) => score_variance(acc, profiled),
        Some(Mode::Triggered { between, .. }) => {
            if sent >= 1.0 {
                return 0.0;
            }
            let between_acc = (acc - sent) / (1.0 - sent);
            let n = match between {
                Between::Reuse => curve,
                Between::Link => profiled,
            };
            (1.0 - sent).powi(2) * score_variance(between_acc, n)
        }
    }
}

/// How much more than `paper` (the paper's set, its models' expected accuracies filled in)
/// `plan` must expect to replace it: [`MIN_GAIN`] plus one standard error of the difference.
/// Every model whose expected accuracy differs between the two adds both estimates' sampling
/// variance. On a short clip the scores rest on a few profiled frames and the curves on a
/// few tens of consecutive ones, and a plan that only looks better by less than that noise
/// does worse as often as not.
pub fn required_gain(plan: &Plan, paper: &Plan, profiled: usize, curve: usize) -> f64 {
    let k = plan.modes.len().max(1);
    let variance: f64 = (0..plan.modes.len())
        .filter(|&j| {
            plan.modes.get(j) != paper.modes.get(j)
                || (plan.accuracy.get(j).copied().unwrap_or(0.0)
                    - paper.accuracy.get(j).copied().unwrap_or(0.0))
                .abs()
                    > 1e-9
        })
        .map(|j| {
            model_variance(plan, j, profiled, curve) + model_variance(paper, j, profiled, curve)
        })
        .sum();
    MIN_GAIN + variance.sqrt() / k as f64
}

/// The trigger at serving time: per camera and model, the feature accumulated since the
/// model's last selected frame and that frame's time; per model run in turns, its kept frames.
#[derive(Clone, Debug, PartialEq)]
pub struct Triggers {
    pub plan: Plan,
    /// Video seconds after which a model's output is refreshed whatever the change.
    max_age_s: f64,
    /// Per camera and model, the trigger's state.
    acc: Vec<Vec<Option<SinceSent>>>,
    /// Per model, the frames kept for its next turn.
    pub buffered: Vec<Vec<u64>>,
    /// Video time of the oldest kept frame.
    since: Option<f64>,
}

/// What the trigger says of one frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fired {
    /// Loaded triggered models to run on the frame now.
    pub now: Vec<usize>,
    /// Models run in turns that will run on the frame later.
    pub later: Vec<usize>,
}

impl Triggers {
    pub fn new(plan: Plan, max_age_s: f64) -> Self {
        let k = plan.modes.len();
        Triggers {
            plan,
            max_age_s,
            acc: Vec::new(),
            buffered: vec![Vec::new(); k],
            since: None,
        }
    }

    /// A new plan (and maximum age, which a configuration change may move); the accumulated
    /// changes go on (kept frames are flushed by the caller).
    pub fn replan(&mut self, plan: Plan, max_age_s: f64) {
        self.plan = plan;
        self.max_age_s = max_age_s;
    }

    /// Advances the trigger over a frame of `camera` with its feature changes (`None`: not
    /// measured, counted as no change).
    pub fn on_frame(
        &mut self,
        id: u64,
        time_s: f64,
        camera: usize,
        diffs: Option<&[f32]>,
    ) -> Fired {
        let k = self.plan.modes.len();
        if self.acc.len() <= camera {
            self.acc.resize(camera + 1, vec![None; k]);
        }
        let mut fired = Fired::default();
        for m in 0..k {
            let Mode::Triggered {
                feature, threshold, ..
            } = self.plan.modes[m]
            else {
                continue;
            };
            // A feature not measured counts as no change.
            let d = diffs.and_then(|d| d.get(feature)).copied().unwrap_or(0.0);
            let fire = reducto::trigger(
                &mut self.acc[camera][m],
                d,
                time_s,
                threshold,
                self.max_age_s,
            );
            if fire {
                if self.plan.in_turns.contains(m) {
                    fired.later.push(m);
                    self.buffered[m].push(id);
                    self.since.get_or_insert(time_s);
                } else {
                    fired.now.push(m);
                }
            }
        }
        fired
    }

    /// Whether the oldest kept frame has waited the allowance at video time `time_s`.
    pub fn due(&self, time_s: f64, latency_s: f64) -> bool {
        self.since.is_some_and(|t| time_s - t >= latency_s)
    }

    /// Takes every model's kept frames.
    pub fn take(&mut self) -> Vec<(usize, Vec<u64>)> {
        self.since = None;
        self.buffered
            .iter_mut()
            .enumerate()
            .filter(|(_, f)| !f.is_empty())
            .map(|(m, f)| (m, std::mem::take(f)))
            .collect()
    }

    /// Every model just ran exactly on a frame of `camera` at `time_s` (profiling): their
    /// change and age restart.
    pub fn reset_camera(&mut self, camera: usize, time_s: f64) {
        if let Some(row) = self.acc.get_mut(camera) {
            for a in row.iter_mut().filter(|a| a.is_some()) {
                *a = Some(SinceSent::sent_at(time_s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{OutputValue, TaskKind};
    use crate::schedule::Cost;

    fn v(x: f32) -> OutputValue {
        OutputValue::Vector(vec![x])
    }

    /// One camera; model 0's output steps when the feature jumps, model 1 is constant.
    fn samples() -> Vec<TriggerSample> {
        (0..40)
            .map(|i| {
                let jump = i % 10 == 0;
                TriggerSample {
                    camera: 0,
                    time_s: f64::from(i),
                    diffs: vec![if jump { 1.0 } else { 0.01 }],
                    row: vec![v((i / 10) as f32), v(3.0)],
                }
            })
            .collect()
    }

    fn specs() -> Vec<OutputSpec> {
        vec![OutputSpec::vector(1, TaskKind::Count); 2]
    }

    #[test]
    fn curves_find_the_threshold_that_follows_the_scene() {
        let c = curves(&samples(), &specs(), f64::INFINITY);
        // A threshold at the jumps: a tenth of the frames sent, every output right.
        assert!(
            c[0].iter()
                .any(|p| p.sent <= 0.1 + 1e-9 && (p.accuracy - 1.0).abs() < 1e-9),
            "{:?}",
            c[0]
        );
        // The constant model needs one frame.
        assert!(c[1].iter().any(|p| p.sent <= 0.03 && p.accuracy == 1.0));
    }

    fn input<'a>(
        costs: &'a Costs,
        budget: &'a Budget,
        curves: &'a [Vec<Point>],
        ensemble: &'a dyn Fn(&ModelSet, usize) -> f64,
        load: &'a [f64],
        cap_ms: f64,
        links: bool,
    ) -> PlanInput<'a> {
        PlanInput {
            costs,
            budget,
            cap_ms,
            curves,
            ensemble,
            load_ms: load,
            fps: 1.0,
            latency_s: 10.0,
            links,
            parents: &[None, None],
            reuse_at_most: 0.9,
        }
    }

    #[test]
    fn the_plan_triggers_what_the_budget_cannot_hold_and_charges_its_loads() {
        let costs = Costs::uniform(
            vec![Cost::new(10.0, 10.0), Cost::new(10.0, 10.0)],
            Cost::ZERO,
        );
        let budget = Budget::memory(10.0);
        let c = curves(&samples(), &specs(), f64::INFINITY);
        // Links from model 1 cannot predict model 0 (half right), and the reverse is perfect.
        let ensemble = |e: &ModelSet, j: usize| if e.contains(1) && j == 0 { 0.5 } else { 1.0 };
        let load = [100.0, 100.0];
        let p = plan(&input(&costs, &budget, &c, &ensemble, &load, 15.0, true)).unwrap();
        // Model 1 exact would leave model 0 at 50%; model 0 exact predicts 1 perfectly.
        assert_eq!(p.modes[0], Mode::Exact);
        assert_eq!(p.modes[1], Mode::Predicted);
        assert!((p.expected - 1.0).abs() < 1e-9);
        // Without links (Reducto within the budget) both run in turns on their triggers, and
        // the loads count against the allowance.
        let ensemble0 = |_: &ModelSet, _: usize| 0.0;
        let p = plan(&input(&costs, &budget, &c, &ensemble0, &load, 30.0, false)).unwrap();
        assert!(p.exact.is_empty());
        // Both are triggered; the budget holds one of them loaded, the other runs in turns.
        assert_eq!(p.resident.len() + p.in_turns.len(), 2, "{p:?}");
        assert!(!p.in_turns.is_empty());
        assert!(p.ms_per_frame <= 30.0 + 1e-9);
        assert!(
            p.ms_per_frame > 2.0,
            "loads are charged: {}",
            p.ms_per_frame
        );
        // With almost no compute nothing can run.
        let p = plan(&input(&costs, &budget, &c, &ensemble0, &load, 0.0, false)).unwrap();
        assert_eq!(p.modes, vec![Mode::Predicted, Mode::Predicted]);
    }

    #[test]
    fn triggers_fire_per_camera_and_buffer_the_turns() {
        let mut plan = Plan::exact_only(ModelSet::empty(2));
        plan.modes[0] = Mode::Triggered {
            feature: 0,
            threshold: 1.0,
            between: Between::Reuse,
        };
        plan.modes[1] = plan.modes[0];
        plan.in_turns.insert(1);
        let mut t = Triggers::new(plan, f64::INFINITY);
        let f = t.on_frame(0, 0.0, 0, Some(&[0.0]));
        assert_eq!((f.now, f.later), (vec![0], vec![1]));
        // Another camera's first frame fires too; small changes accumulate.
        assert_eq!(t.on_frame(1, 0.5, 1, Some(&[0.0])).now, vec![0]);
        assert!(t.on_frame(2, 1.0, 0, Some(&[0.6])).now.is_empty());
        assert!(!t.due(1.0, 10.0));
        assert_eq!(t.on_frame(3, 2.0, 0, Some(&[0.6])).now, vec![0]);
        assert!(t.due(10.0, 10.0));
        assert_eq!(t.take(), vec![(1, vec![0, 1, 3])]);
        assert!(!t.due(20.0, 10.0));
    }

    /// The paper's set {0} of two models (model 1 predicted at 0.6) and a plan that triggers
    /// model 1 on a fifth of the frames, reusing its output at 0.9 in between.
    fn paper_and_triggered() -> (Plan, Plan) {
        let mut paper = Plan::exact_only(ModelSet::from_indices(2, [0]));
        paper.accuracy[1] = 0.6;
        let mut plan = paper.clone();
        plan.modes[1] = Mode::Triggered {
            feature: 0,
            threshold: 1.0,
            between: Between::Reuse,
        };
        plan.sent[1] = 0.2;
        plan.accuracy[1] = 0.2 + 0.8 * 0.9;
        (paper, plan)
    }

    #[test]
    fn a_plan_must_beat_the_papers_set_by_more_than_its_estimates_noise() {
        let (paper, plan) = paper_and_triggered();
        // The same plan: nothing differs, the fixed margin only.
        assert!((required_gain(&paper, &paper, 4, 30) - MIN_GAIN).abs() < 1e-12);
        let few = required_gain(&plan, &paper, 1, 20);
        let many = required_gain(&plan, &paper, 200, 2000);
        assert!(few > many && many > MIN_GAIN, "{few} {many}");
        // One profiled sample and 20 curve samples: a standard error of about 0.29 on the
        // predicted score and 0.07 on the reuse (on 80% of the frames), over two models.
        let se = (score_variance(0.6, 1) + 0.64 * score_variance(0.9, 20)).sqrt() / 2.0;
        assert!((few - MIN_GAIN - se).abs() < 1e-12, "{few} {se}");
        // The plan expects 0.32 more on model 1 (0.16 on the mean): enough with many samples,
        // not with one profiled frame.
        let gain =
            plan.accuracy.iter().sum::<f64>() / 2.0 - paper.accuracy.iter().sum::<f64>() / 2.0;
        assert!(
            gain >= many && gain < few,
            "gain {gain}, needs {many} / {few}"
        );
        // A score of 1 on two samples is not certain.
        assert!(score_variance(1.0, 2) > 0.0);
    }

    #[test]
    fn a_trigger_refreshes_its_output_once_it_is_max_age_old() {
        let mut plan = Plan::exact_only(ModelSet::empty(1));
        plan.modes[0] = Mode::Triggered {
            feature: 0,
            threshold: 1.0,
            between: Between::Reuse,
        };
        let mut t = Triggers::new(plan, 3.0);
        // Nothing changes; one frame a second: the first frame, then every third second.
        let fired: Vec<bool> = (0..8)
            .map(|i| !t.on_frame(i, i as f64, 0, Some(&[0.0])).now.is_empty())
            .collect();
        assert_eq!(fired, [true, false, false, true, false, false, true, false]);
        // A profiled frame restarts the age: 8 is profiled, so 9 and 10 are not due.
        t.reset_camera(0, 8.0);
        assert!(t.on_frame(9, 9.0, 0, Some(&[0.0])).now.is_empty());
        assert!(t.on_frame(10, 10.0, 0, Some(&[0.0])).now.is_empty());
        assert_eq!(t.on_frame(11, 11.0, 0, Some(&[0.0])).now, vec![0]);
        // The curves count the refreshes as sent frames.
        let still: Vec<TriggerSample> = (0..9)
            .map(|i| TriggerSample {
                camera: 0,
                time_s: f64::from(i),
                // Small changes: the largest candidate threshold never fires in 9 frames.
                diffs: vec![0.001],
                row: vec![v(1.0)],
            })
            .collect();
        let spec = [OutputSpec::vector(1, TaskKind::Count)];
        let never = curves(&still, &spec, f64::INFINITY);
        let aged = curves(&still, &spec, 3.0);
        let largest = |c: &[Point]| c.iter().map(|p| p.sent).fold(1.0, f64::min);
        assert!((largest(&never[0]) - 1.0 / 9.0).abs() < 1e-9);
        assert!((largest(&aged[0]) - 3.0 / 9.0).abs() < 1e-9);
    }
}
