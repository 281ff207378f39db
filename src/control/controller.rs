//! The controller: phases, events in, commands out.
//!
//! Phases ([`Phase`]):
//! 1. `Warmup` (no links): every model runs on every frame until `warmup_samples` complete
//!    samples exist. When every model fits the memory budget at once, each frame is profiled
//!    on arrival; otherwise each frame is served at once with the standalone set, kept, and
//!    the kept frames are run in turns by chunks.
//! 2. `Training`: the links train elsewhere; the standalone set serves.
//! 3. `Serving`: each period (in video time) starts by profiling its first
//!    `max(min, ceil(ratio x expected frames))` frames; once they are measured the active set
//!    is re-selected from the profiled scores of the latest `profile_window` periods. With a
//!    drift margin, one frame is probed every quarter period, and when the probes' measured
//!    accuracy of the predicted outputs falls more than the margin below what the selection
//!    expected, the set is re-selected at once. Frames the labelling policy queues are
//!    labelled once the period's profiling is done and train the links with it.
//!
//! `AllExact` is the unbounded mode: every model runs on every frame, nothing is selected.

use super::hybrid::{self, HybridSettings, Plan, TriggerSample, Triggers};
use super::period::{PeriodClock, PeriodLength, Spacing};
use super::scores::{Predictor, ProfiledScores, Row, Views, close_over_parents};
use super::{Cause, TrainingPolicy};
use crate::config::{AdaptationPolicy, Pipeline, SelectionPolicy};
use crate::output::OutputSpec;
use crate::schedule::{self, Budget, Costs, LinkScores, ModelSet, ProfilingPlan};
use std::collections::VecDeque;

/// The driver's name for a frame (arrival index in the engine, trace index in the replay).
pub type FrameId = u64;

/// Frames kept per turn while warming up with models that do not fit together.
pub const WARMUP_CHUNK: usize = 25;
/// Frames queued at most for exact labelling between two periods.
pub const LABEL_QUEUE: usize = 16;
/// Warm-up samples that score the links until the first period is profiled.
pub const WARM_SCORING_SAMPLES: usize = 32;
/// Profiled samples after an online update below which the updated links' held-out scores
/// make up the difference in their scores.
const UPDATED_LINKS_PRIOR_SAMPLES: f64 = 8.0;
/// Under `loss_prediction` without a threshold, a frame is queued when its predicted loss
/// exceeds this multiple of the running mean.
const LOSS_FACTOR: f64 = 2.0;
/// Predicted losses seen before the running mean is trusted.
const LOSS_MIN_SEEN: u64 = 10;

/// Which frames are labelled exactly to fine-tune the links (paper section 4.1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Labelling {
    None,
    /// Every period's profiling samples.
    Periodic,
    /// Frames whose prediction uncertainty exceeds the threshold.
    Uncertainty {
        threshold: Option<f64>,
    },
    /// Frames whose predicted loss exceeds the threshold (or twice the running mean).
    LossPrediction {
        threshold: Option<f64>,
    },
}

/// The controller's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub policy: SelectionPolicy,
    pub period: PeriodLength,
    pub profiling_ratio: f64,
    pub min_profile_frames: u64,
    /// Profiling frames per period at most (the frames kept for a run in turns: the memory
    /// bound of profiling).
    pub max_kept_frames: u64,
    /// Periods of profiling samples the scores are measured on.
    pub profile_window: usize,
    /// Frames per second expected before a whole period has been counted.
    pub fps_hint: f64,
    pub drift_margin: Option<f64>,
    pub warmup_samples: usize,
    pub labelling: Labelling,
    /// An edge of cross-site aggregation: fine-tune every period.
    pub federated: bool,
    /// Under `SelectionPolicy::Hybrid`.
    pub hybrid: HybridSettings,
}

/// Frames per second assumed for a camera without sampling.
pub const ASSUMED_FPS: f64 = 10.0;
/// Profiling frames kept at most for a run in turns, by default.
pub const DEFAULT_MAX_KEPT_FRAMES: u64 = 32;

impl Settings {
    /// The settings of a pipeline file.
    pub fn from_pipeline(cfg: &Pipeline) -> Self {
        let fps_hint: f64 = cfg
            .cameras
            .iter()
            .map(|c| {
                c.sampling
                    .as_ref()
                    .and_then(|s| s.fps.or(s.every_seconds.map(|e| 1.0 / e)))
                    .unwrap_or(ASSUMED_FPS)
            })
            .sum();
        let threshold = cfg.adaptation.uncertainty_threshold;
        Settings {
            policy: cfg.scheduler.policy,
            period: PeriodLength::Seconds(cfg.scheduler.period_s),
            profiling_ratio: cfg.scheduler.profiling_ratio,
            min_profile_frames: 1,
            max_kept_frames: DEFAULT_MAX_KEPT_FRAMES,
            profile_window: 4,
            fps_hint: if fps_hint > 0.0 {
                fps_hint
            } else {
                ASSUMED_FPS
            },
            drift_margin: cfg.scheduler.drift_margin,
            warmup_samples: cfg.links.warmup_samples,
            labelling: match cfg.adaptation.policy {
                AdaptationPolicy::None => Labelling::None,
                AdaptationPolicy::Periodic => Labelling::Periodic,
                AdaptationPolicy::Uncertainty => Labelling::Uncertainty { threshold },
                AdaptationPolicy::LossPrediction => Labelling::LossPrediction { threshold },
            },
            federated: cfg.adaptation.aggregator.is_some(),
            hybrid: HybridSettings {
                latency_s: cfg.scheduler.latency_allowance_s,
                max_age_s: cfg.scheduler.max_output_age_s,
                load_ms: Vec::new(),
                load_ms_per_mb: cfg.scheduler.load_ms_per_mb,
                ms_per_frame: None,
                links: true,
                trigger_target: hybrid::DEFAULT_TRIGGER_TARGET,
            },
        }
    }
}

/// What a batch of measured samples was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Warmup,
    Period,
    Probe,
    Label,
    /// Frames the hybrid's trigger selected for a model run in turns (only that model ran:
    /// no complete samples).
    Trigger,
    /// Consecutive frames every model runs on for the hybrid's operating curves, when serving
    /// started from given links without a warm-up.
    Curves,
}

/// What the driver tells the controller.
#[derive(Clone, Debug)]
pub enum Event {
    /// A frame arrived, with its video time in seconds.
    Frame { id: FrameId, time_s: f64 },
    /// The frame-difference features of the next frame (the change since the previous frame
    /// of its camera), sent before its `Frame` by drivers that measure them.
    Features {
        id: FrameId,
        camera: usize,
        diffs: Vec<f32>,
    },
    /// Every model ran on `frames` frames (complete samples in `samples`; a frame whose
    /// outputs were not all produced is counted but has no sample).
    Measured {
        purpose: Purpose,
        frames: usize,
        samples: Vec<Row>,
        /// Each sample's link views (`views[s]` for `samples[s]`), for links that read them;
        /// empty when the driver has none.
        views: Vec<Views>,
    },
    /// A frame was served; the largest uncertainty and predicted loss of its predictions.
    Served {
        id: FrameId,
        uncertainty: Option<f64>,
        predicted_loss: Option<f64>,
    },
    /// Links exist now (loaded at start-up or trained): serving starts.
    LinksReady { cause: Cause },
    /// The links were replaced by fine-tuned ones (selection waits for the next period, and
    /// scores them on samples profiled after the update).
    LinksUpdated,
    /// Initial training failed: warm up again.
    TrainingFailed,
    /// What one frame cost: `ms`, the time of serving it (the serving set and the links);
    /// `period_ms`, the period's work done on its account (profiling, probes, labels and runs
    /// in turns over kept frames), which the meter spreads over the frames instead of
    /// charging it to the serving set; and each model's measured latency when it ran.
    Cost {
        ms: f64,
        period_ms: f64,
        models: Vec<(usize, f64)>,
        /// Measured time of one link prediction on this frame (ms), when links ran.
        link_ms: Option<f64>,
    },
    /// A model failed (inference, oracle or load): it is excluded from selection and
    /// retried after a backoff in video time.
    ModelFailed { model: usize },
    /// The time per frame the cameras' offered rate allows changed (cameras added or
    /// removed): selections fit it from now on. None: no implied budget.
    OfferedRate { ms_per_frame: Option<f64> },
    /// The configuration changed.
    ConfigChanged {
        /// Boxed: the settings are far larger than any other event.
        settings: Box<Settings>,
        budget: Budget,
        costs: Costs,
    },
}

/// A selection, with what the scheduler saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Selected {
    pub from: ModelSet,
    pub to: ModelSet,
    pub cause: Cause,
    /// The frame after which the selection was made (None before the first frame).
    pub at: Option<FrameId>,
    /// Frames the controller had seen when it selected.
    pub frames_seen: u64,
    pub objective: f64,
    pub reason: String,
    /// Mean score the selection expects of the predicted outputs (None when none are).
    pub expected: Option<f64>,
    /// Link scores (source row, target column) the selection used, when links exist.
    pub link_matrix: Vec<Vec<f64>>,
    /// Per model: 1 when active, else its ensemble score from the active set.
    pub ensembles: Vec<f64>,
    /// Per model outside the set: its accuracy measured on the profiling samples.
    pub measured: Vec<Option<f64>>,
    /// Whether the set predicts the others (false: the budget holds no links).
    pub predict: bool,
    /// Under the hybrid policy, every model's mode.
    pub plan: Option<Plan>,
    /// No set fits the time per frame the offered rate allows: the cheapest set serves and
    /// the frames it cannot keep up with are dropped.
    pub rate_unmet: bool,
}

/// What the controller tells the driver to do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Run `active` on the frame, predict the others (with `predict`; otherwise their
    /// outputs are unavailable: the budget holds no links).
    Serve {
        frame: FrameId,
        active: ModelSet,
        predict: bool,
    },
    /// Run every model on the frame (they fit together), write exact records and report
    /// `Event::Measured { purpose }`.
    Profile { frame: FrameId, purpose: Purpose },
    /// Keep a copy of the frame (it was just served) for a later [`Command::RunInTurns`].
    Keep { frame: FrameId },
    /// Run the models group by group on the kept frames (labels only: they were served) and
    /// report `Event::Measured { purpose }`; the frames are then released.
    RunInTurns {
        frames: Vec<FrameId>,
        groups: Vec<Vec<usize>>,
        purpose: Purpose,
    },
    /// Move from one active set to another.
    Select(Box<Selected>),
    /// Train the links on the warm-up samples (complete rows, with each row's link views:
    /// `views[s]` for `samples[s]`, empty when unknown), off the frame path; report
    /// `Event::LinksReady { cause: Cause::Trained }` or `Event::TrainingFailed`.
    StartTraining {
        samples: Vec<Row>,
        views: Vec<Views>,
    },
    /// Fine-tune the links on labelled samples (with each row's link views: `views[s]` for
    /// `samples[s]`, empty when unknown), off the frame path.
    Train {
        samples: Vec<Row>,
        views: Vec<Views>,
        policy: TrainingPolicy,
    },
    /// Release kept frames without running anything (queued frames no longer wanted).
    Release { frames: Vec<FrameId> },
}

impl Selected {
    /// The models to hold loaded: the active set and, under the hybrid policy, the triggered
    /// models that stay loaded beside it.
    pub fn loaded(&self) -> ModelSet {
        with_resident(&self.to, self.plan.as_ref())
    }

    /// The decision-file line of this selection, with the models' ids.
    pub fn decision(&self, ids: &[String]) -> Decision {
        let features: Vec<String> = crate::eval::reducto::FEATURE_NAMES
            .iter()
            .map(|f| f.to_string())
            .collect();
        Decision {
            frame: self.frames_seen,
            active: self.to.iter().filter_map(|m| ids.get(m).cloned()).collect(),
            cause: self.cause,
            plan: self.plan.as_ref().map(|p| p.summary(ids, &features)),
        }
    }
}

/// One selection as written to a decision file (`--decisions`, one JSON object a line).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Decision {
    /// Frames seen before the selection (0 before the first).
    pub frame: u64,
    pub active: Vec<String>,
    pub cause: Cause,
    /// Under the hybrid policy, every model's mode ([`Plan::summary`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Schedule(#[from] schedule::ScheduleError),
    #[error("{0}")]
    Invalid(String),
}

/// Video seconds a failed model waits before its first retry; each further failure doubles
/// the wait, up to [`FAILURE_BACKOFF_MAX_S`].
pub const FAILURE_BACKOFF_S: f64 = 5.0;
pub const FAILURE_BACKOFF_MAX_S: f64 = 300.0;

/// A model's failures: how many so far, and until when (video time) it is excluded.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Failures {
    pub count: u32,
    pub excluded_until: Option<f64>,
}

/// Weight of the newest frame in the measured time per frame (an EWMA over about 10 frames).
pub const COST_EWMA: f64 = 0.1;
/// Frames measured after a selection before the measured time per frame can trigger another.
pub const COST_MIN_FRAMES: u64 = 10;

/// Measured time per frame and per model (EWMA).
#[derive(Clone, Debug, PartialEq)]
pub struct Meter {
    /// The serving time per frame (EWMA): the serving set and the links, without the
    /// period's work.
    pub frame_ms: Option<f64>,
    pub model_ms: Vec<Option<f64>>,
    pub link_ms: Option<f64>,
    /// Frames measured since the last selection.
    pub since_selection: u64,
    /// The period's work (profiling, probes, labels, runs in turns) and the frames served
    /// since the latest period's profiling ended. A run in turns takes seconds on one frame's
    /// account; charged to that frame, it would push the per-frame average over any budget
    /// for tens of frames and re-select for nothing.
    pub window_work_ms: f64,
    pub window_frames: u64,
    /// Periods whose profiling has ended while serving.
    pub periods_done: u64,
    /// The period's work per frame over the latest whole period (from the end of one
    /// period's profiling to the end of the next, so one profiling burst and the frames of
    /// one period); None until a whole period has been measured.
    pub period_share_ms: Option<f64>,
    /// The next frame's serving runs on sessions just loaded (not metered).
    pub fresh_sessions: bool,
    /// The latest `over_budget` selection kept the set it replaced: no other re-selects on
    /// the measured time until a selection for another cause.
    pub settled: bool,
}

impl Meter {
    /// A period's profiling has ended: the window since the previous one is a whole period
    /// (the first window, from the start of serving, is not).
    fn close_period(&mut self) {
        if self.periods_done > 0 && self.window_frames > 0 {
            self.period_share_ms = Some(self.window_work_ms / self.window_frames as f64);
        }
        self.periods_done += 1;
        self.window_work_ms = 0.0;
        self.window_frames = 0;
    }

    /// A new set is measured afresh: the time per frame of the previous one says nothing of
    /// it (model latencies are kept).
    fn restart(&mut self) {
        self.frame_ms = None;
        self.since_selection = 0;
        self.fresh_sessions = true;
        self.settled = false;
    }
}

fn ewma(old: Option<f64>, new: f64) -> f64 {
    old.map_or(new, |o| o + COST_EWMA * (new - o))
}

/// The phase and the state that exists only in it.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Every model exact, nothing selected (no budget).
    AllExact,
    Warmup {
        /// The complete samples gathered so far, with their link views.
        samples: Batch,
        kept: Vec<FrameId>,
    },
    Training {
        samples: usize,
    },
    Serving(Box<Serving>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Serving {
    pub period: PeriodState,
    pub drift: DriftState,
    pub queue: LabelQueue,
    pub curves: CurveSampling,
}

/// Under the hybrid policy, after serving started from given links (no warm-up, so no
/// consecutive exact samples for the trigger's curves): the next frames are profiled one after
/// another, and the plan is made again once they are measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CurveSampling {
    /// Frames still to take.
    pub to_take: u64,
    /// Frames taken but not measured yet.
    pub awaiting: u64,
    /// Frames kept for a run in turns.
    pub kept: Vec<FrameId>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PeriodState {
    pub clock: PeriodClock,
    /// Profiling frames of this period still to come.
    pub to_profile: u64,
    /// Profiling frames sent but not measured yet.
    pub awaiting: u64,
    /// Frames kept for a run in turns.
    pub kept: Vec<FrameId>,
    /// This period's samples so far.
    pub samples: Batch,
}

/// Profiling samples with their link views (`views[s]` for `rows[s]`, empty when unknown).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub rows: Vec<Row>,
    pub views: Vec<Views>,
}

impl Batch {
    pub fn new(rows: Vec<Row>, views: Vec<Views>) -> Self {
        let mut b = Batch::default();
        b.extend(rows, views);
        b
    }

    /// Appends samples; views beyond the rows are dropped, missing ones left empty.
    pub fn extend(&mut self, rows: Vec<Row>, views: Vec<Views>) {
        let n = rows.len();
        let mut views = views;
        views.resize(n, Vec::new());
        self.rows.extend(rows);
        self.views.extend(views);
    }

    pub fn append(&mut self, other: &Batch) {
        self.extend(other.rows.clone(), other.views.clone());
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn clear(&mut self) {
        self.rows.clear();
        self.views.clear();
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DriftState {
    pub spacing: Spacing,
    pub expected: Option<f64>,
    pub probes: Batch,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LabelQueue {
    pub frames: Vec<FrameId>,
    /// Running mean of predicted losses (`loss_prediction`).
    pub loss_mean: f64,
    pub loss_seen: u64,
}

/// The controller. Model indices are the pipeline's.
pub struct Controller {
    settings: Settings,
    specs: Vec<OutputSpec>,
    costs: Costs,
    budget: Budget,
    /// The time per frame the cameras' offered rate allows on the engine's cores (the
    /// engine computes it), capping the budget's own time per frame; None: no such cap.
    rate_ms: Option<f64>,
    parents: Vec<Option<usize>>,
    active: ModelSet,
    phase: Phase,
    /// Profiling batches that score the links, the latest last.
    history: VecDeque<Batch>,
    /// The links were trained again online since they were loaded or trained: their held-out
    /// scores weigh in while the scoring window holds fewer than 8 samples.
    scoring_updated_links: bool,
    frames_seen: u64,
    last_frame: Option<FrameId>,
    meter: Meter,
    /// Whether the active set predicts the other models (false when the budget holds no
    /// links: see `select`).
    predict: bool,
    failures: Vec<Failures>,
    /// Video time of the latest frame.
    now_s: f64,
    /// Under the hybrid policy while serving: the plan and its trigger.
    triggers: Option<Triggers>,
    /// Consecutive exact samples with their frame-difference features, the hybrid's operating
    /// curves, and the curves measured on them.
    trigger_samples: Vec<TriggerSample>,
    curves: Vec<Vec<hybrid::Point>>,
    /// The features of the frame about to arrive.
    features: Option<(FrameId, usize, Vec<f32>)>,
    /// Warm-up frames sent to be measured, in order, with their camera and features (to pair
    /// with their samples for the curves).
    warm_features: VecDeque<Option<(usize, f64, Vec<f32>)>>,
    /// Commands to send after the current frame's (a new plan's flush).
    deferred: Vec<Command>,
    /// The frame just taken for the hybrid's curves ([`CurveSampling`]).
    curve_frame: Option<FrameId>,
}

/// Consecutive frames profiled for the hybrid's curves at least, when serving starts from given
/// links.
const MIN_CURVE_FRAMES: usize = 8;
/// Consecutive samples kept at most for the hybrid's curves.
pub const MAX_TRIGGER_SAMPLES: usize = 2000;

impl Controller {
    /// A controller in `Warmup` (or `AllExact` with `all_exact`).
    pub fn new(
        settings: Settings,
        specs: Vec<OutputSpec>,
        costs: Costs,
        budget: Budget,
        parents: Vec<Option<usize>>,
        all_exact: bool,
    ) -> Result<Self, ControlError> {
        let k = specs.len();
        if costs.n_models() != k || parents.len() != k {
            return Err(ControlError::Invalid(format!(
                "{k} models, {} costs, {} parent entries",
                costs.n_models(),
                parents.len()
            )));
        }
        if !(settings.profiling_ratio >= 0.0 && settings.profiling_ratio <= 1.0) {
            return Err(ControlError::Invalid(format!(
                "the profiling ratio must be in [0, 1], got {}",
                settings.profiling_ratio
            )));
        }
        let phase = if all_exact {
            Phase::AllExact
        } else {
            Phase::Warmup {
                samples: Batch::default(),
                kept: Vec::new(),
            }
        };
        Ok(Controller {
            active: if all_exact {
                ModelSet::full(k)
            } else {
                ModelSet::empty(k)
            },
            settings,
            specs,
            costs,
            budget,
            rate_ms: None,
            parents,
            phase,
            history: VecDeque::new(),
            scoring_updated_links: false,
            frames_seen: 0,
            last_frame: None,
            predict: true,
            failures: vec![Failures::default(); k],
            now_s: 0.0,
            triggers: None,
            trigger_samples: Vec::new(),
            curves: vec![Vec::new(); k],
            features: None,
            curve_frame: None,
            warm_features: VecDeque::new(),
            deferred: Vec::new(),
            meter: Meter {
                frame_ms: None,
                model_ms: vec![None; k],
                link_ms: None,
                since_selection: 0,
                window_work_ms: 0.0,
                window_frames: 0,
                periods_done: 0,
                period_share_ms: None,
                fresh_sessions: false,
                settled: false,
            },
        })
    }

    pub fn active(&self) -> &ModelSet {
        &self.active
    }

    /// The models to hold loaded now: the active set and, under the hybrid policy, the
    /// triggered models that stay loaded beside it (what a run in turns restores).
    pub fn loaded(&self) -> ModelSet {
        with_resident(&self.active, self.plan())
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn costs(&self) -> &Costs {
        &self.costs
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Sets the time per frame the offered rate allows (before [`Controller::start`]; later
    /// changes go through [`Event::OfferedRate`]). Not finite or not positive: no cap.
    pub fn set_rate_budget(&mut self, ms_per_frame: Option<f64>) {
        self.rate_ms = ms_per_frame.filter(|ms| ms.is_finite() && *ms > 0.0);
    }

    /// The time per frame the offered rate allows, when set.
    pub fn rate_budget(&self) -> Option<f64> {
        self.rate_ms
    }

    /// The budget selections are made under: the pipeline's, its time per frame capped by
    /// the offered rate's.
    pub fn selection_budget(&self) -> Budget {
        let ms = match (self.budget.ms_per_frame, self.rate_ms) {
            (Some(b), Some(r)) => Some(b.min(r)),
            (b, r) => b.or(r),
        };
        Budget {
            memory_mb: self.budget.memory_mb,
            ms_per_frame: ms,
        }
    }

    /// Charges links at `cost` each from now on (the links' parameter memory and measured
    /// prediction time).
    pub fn set_link_cost(&mut self, cost: crate::schedule::Cost) {
        if cost.is_valid() {
            self.costs.link = cost;
        }
    }

    /// Charges each link its own cost from now on (`per_link[i][j]`, source row, target
    /// column); a matrix of the wrong shape or with an invalid cost is ignored.
    pub fn set_link_costs(&mut self, per_link: Vec<Vec<crate::schedule::Cost>>) {
        let k = self.k();
        let shaped = per_link.len() == k && per_link.iter().all(|r| r.len() == k);
        if shaped && per_link.iter().flatten().all(|c| c.is_valid()) {
            self.costs.per_link = per_link;
        }
    }

    /// The measured time per frame (EWMA, ms), profiling and probes included.
    /// The measured time per frame: serving, plus the period's work spread over the frames
    /// once a period has been measured.
    pub fn measured_ms_per_frame(&self) -> Option<f64> {
        self.meter
            .frame_ms
            .map(|f| f + self.meter.period_share_ms.unwrap_or(0.0))
    }

    /// The period's work (profiling, probes, labels, runs in turns) per frame served, once a
    /// period has been measured.
    pub fn period_ms_per_frame(&self) -> Option<f64> {
        self.meter.period_share_ms
    }

    /// The models excluded after a failure, until their retry.
    pub fn failed(&self) -> ModelSet {
        ModelSet::from_indices(
            self.k(),
            (0..self.k()).filter(|&m| self.failures[m].excluded_until.is_some()),
        )
    }

    /// Frames seen so far.
    pub fn frames_seen(&self) -> u64 {
        self.frames_seen
    }

    /// The phase's name, as the status page shows it.
    pub fn phase_label(&self) -> &'static str {
        match &self.phase {
            Phase::AllExact => "all_exact",
            Phase::Warmup { .. } => "warmup",
            Phase::Training { .. } => "training",
            Phase::Serving(_) => "serving",
        }
    }

    /// When the next periodic re-selection is due (None outside serving, or before its
    /// first frame).
    pub fn next_reselection(&self) -> Option<super::NextPeriod> {
        match &self.phase {
            Phase::Serving(s) => s.period.clock.next_period(),
            _ => None,
        }
    }

    /// Samples gathered in warm-up so far.
    pub fn warmup_samples(&self) -> usize {
        match &self.phase {
            Phase::Warmup { samples, .. } => samples.len(),
            Phase::Training { samples } => *samples,
            _ => 0,
        }
    }

    /// The selection before links exist: the models that fit, nothing predicted.
    pub fn start(&mut self) -> Vec<Command> {
        if matches!(self.phase, Phase::AllExact) {
            return Vec::new();
        }
        vec![self.standalone(Cause::NoLinks)]
    }

    fn k(&self) -> usize {
        self.specs.len()
    }

    /// Whether every model fits the memory budget at once (profiling needs no turns).
    fn all_fit_at_once(&self) -> bool {
        let all = ModelSet::full(self.k());
        Budget {
            memory_mb: self.budget.memory_mb,
            ms_per_frame: None,
        }
        .fits(self.costs.models_cost(&all))
    }

    /// Handles one event. `links` are the current links (None before any exist).
    pub fn handle(
        &mut self,
        event: Event,
        links: Option<&dyn Predictor>,
    ) -> Result<Vec<Command>, ControlError> {
        match event {
            Event::Frame { id, time_s } => self.on_frame(id, time_s, links),
            Event::Features { id, camera, diffs } => {
                self.features = Some((id, camera, diffs));
                Ok(Vec::new())
            }
            Event::Measured {
                purpose,
                frames,
                samples,
                views,
            } => self.on_measured(purpose, frames, Batch::new(samples, views), links),
            Event::Served {
                id,
                uncertainty,
                predicted_loss,
            } => Ok(self.on_served(id, uncertainty, predicted_loss)),
            Event::LinksReady { cause } => {
                // Links trained or loaded anew are scored on the window as it is.
                self.scoring_updated_links = false;
                self.on_links_ready(cause, links)
            }
            Event::LinksUpdated => {
                // The links learned from every profiled sample held (they were handed over
                // for training): scoring them there would measure their fit, not their
                // accuracy, so the next selection scores on samples profiled from now on,
                // with the updated links' held-out scores making up for the few there are.
                self.history.clear();
                self.scoring_updated_links = true;
                Ok(Vec::new())
            }
            Event::ModelFailed { model } => self.on_model_failed(model, links),
            Event::Cost {
                ms,
                period_ms,
                models,
                link_ms,
            } => {
                if let Some(t) = link_ms.filter(|t| t.is_finite() && *t >= 0.0) {
                    self.meter.link_ms = Some(ewma(self.meter.link_ms, t));
                }
                self.on_cost(ms, period_ms, &models, links)
            }
            Event::TrainingFailed => {
                self.phase = Phase::Warmup {
                    samples: Batch::default(),
                    kept: Vec::new(),
                };
                Ok(Vec::new())
            }
            Event::ConfigChanged {
                settings,
                budget,
                costs,
            } => self.on_config(*settings, budget, costs, links),
            Event::OfferedRate { ms_per_frame } => {
                let before = self.rate_ms;
                self.set_rate_budget(ms_per_frame);
                if self.rate_ms == before || matches!(self.phase, Phase::AllExact) {
                    return Ok(Vec::new());
                }
                Ok(vec![self.reselect(Cause::OfferedRate, links)?])
            }
        }
    }

    fn on_model_failed(
        &mut self,
        model: usize,
        links: Option<&dyn Predictor>,
    ) -> Result<Vec<Command>, ControlError> {
        let Some(f) = self.failures.get_mut(model) else {
            return Ok(Vec::new());
        };
        if f.excluded_until.is_some() {
            return Ok(Vec::new());
        }
        f.count += 1;
        let wait = (FAILURE_BACKOFF_S * 2f64.powi(f.count as i32 - 1)).min(FAILURE_BACKOFF_MAX_S);
        f.excluded_until = Some(self.now_s + wait);
        if self.active.contains(model) && !matches!(self.phase, Phase::AllExact) {
            return Ok(vec![self.reselect(Cause::ModelFailure, links)?]);
        }
        Ok(Vec::new())
    }

    /// Re-selects in the current phase: from the links when serving, else standalone.
    fn reselect(
        &mut self,
        cause: Cause,
        links: Option<&dyn Predictor>,
    ) -> Result<Command, ControlError> {
        match self.phase {
            Phase::Serving(_) => self.select(cause, links),
            _ => Ok(self.standalone(cause)),
        }
    }

    /// Lets failed models whose wait is over back into selection.
    fn retry_failed(
        &mut self,
        time_s: f64,
        links: Option<&dyn Predictor>,
    ) -> Result<Vec<Command>, ControlError> {
        let mut back = false;
        for f in &mut self.failures {
            if f.excluded_until.is_some_and(|t| time_s >= t) {
                f.excluded_until = None;
                back = true;
            }
        }
        if back && !matches!(self.phase, Phase::AllExact) {
            return Ok(vec![self.reselect(Cause::ModelFailure, links)?]);
        }
        Ok(Vec::new())
    }

    fn on_frame(
        &mut self,
        id: FrameId,
        time_s: f64,
        links: Option<&dyn Predictor>,
    ) -> Result<Vec<Command>, ControlError> {
        self.now_s = time_s;
        let features = self.features.take().filter(|f| f.0 == id);
        let mut out = self.retry_failed(time_s, links)?;
        let inner = self.on_frame_inner(id, time_s)?;
        let for_curves = std::mem::take(&mut self.curve_frame) == Some(id);
        if matches!(self.phase, Phase::Warmup { .. }) || for_curves {
            // Pair warm-up (and curve) frames with their samples for the hybrid's curves.
            for c in &inner {
                let sent = match c {
                    Command::Profile { frame, .. } => *frame == id,
                    Command::Keep { frame } => *frame == id,
                    _ => false,
                };
                if sent {
                    self.warm_features.push_back(
                        features
                            .as_ref()
                            .map(|(_, cam, d)| (*cam, time_s, d.clone())),
                    );
                }
            }
        }
        out.extend(inner);
        self.apply_triggers(id, time_s, features, &mut out);
        out.append(&mut self.deferred);
        Ok(out)
    }

    /// Under the hybrid policy: adds the loaded triggered models that fire to the frame's
    /// served set, keeps the frame for the models run in turns that fire, and runs the turns
    /// whose oldest kept frame has waited the latency allowance.
    fn apply_triggers(
        &mut self,
        id: FrameId,
        time_s: f64,
        features: Option<(FrameId, usize, Vec<f32>)>,
        out: &mut Vec<Command>,
    ) {
        let latency = self.settings.hybrid.latency_s;
        let Some(t) = self.triggers.as_mut() else {
            return;
        };
        let camera = features.as_ref().map_or(0, |f| f.1);
        let diffs = features.as_ref().map(|f| f.2.as_slice());
        let profiled = out
            .iter()
            .any(|c| matches!(c, Command::Profile { frame, .. } if *frame == id));
        if profiled {
            // Every model ran exactly on the frame.
            t.reset_camera(camera, time_s);
        } else {
            let fired = t.on_frame(id, time_s, camera, diffs);
            for c in out.iter_mut() {
                if let Command::Serve { frame, active, .. } = c
                    && *frame == id
                {
                    for &m in &fired.now {
                        active.insert(m);
                    }
                }
            }
            let kept = out
                .iter()
                .any(|c| matches!(c, Command::Keep { frame } if *frame == id));
            if !fired.later.is_empty() && !kept {
                out.push(Command::Keep { frame: id });
            }
        }
        if t.due(time_s, latency) {
            out.extend(Self::turns(t));
        }
    }

    /// One run in turns per model with kept frames, then the frames are released.
    fn turns(t: &mut Triggers) -> Vec<Command> {
        let mut out = Vec::new();
        let mut all: Vec<FrameId> = Vec::new();
        for (m, frames) in t.take() {
            all.extend(&frames);
            out.push(Command::RunInTurns {
                frames,
                groups: vec![vec![m]],
                purpose: Purpose::Trigger,
            });
        }
        all.sort_unstable();
        all.dedup();
        if !all.is_empty() {
            out.push(Command::Release { frames: all });
        }
        out
    }

    /// Runs the hybrid's kept frames now, whatever their wait (the end of the stream).
    pub fn finish(&mut self) -> Vec<Command> {
        self.triggers.as_mut().map_or_else(Vec::new, Self::turns)
    }

    /// Seeds the hybrid's operating curves with consecutive exact samples (time order).
    pub fn seed_trigger_samples(&mut self, samples: Vec<TriggerSample>) {
        self.trigger_samples = samples;
        let n = self.trigger_samples.len();
        if n > MAX_TRIGGER_SAMPLES {
            self.trigger_samples.drain(..n - MAX_TRIGGER_SAMPLES);
        }
        self.curves = self.measure_curves();
    }

    fn measure_curves(&self) -> Vec<Vec<hybrid::Point>> {
        hybrid::one_feature(
            hybrid::curves(
                &self.trigger_samples,
                &self.specs,
                self.settings.hybrid.max_age_s,
            ),
            self.settings.hybrid.trigger_target,
        )
    }

    /// The hybrid's current plan, when serving under it.
    pub fn plan(&self) -> Option<&Plan> {
        self.triggers.as_ref().map(|t| &t.plan)
    }

    fn on_frame_inner(&mut self, id: FrameId, time_s: f64) -> Result<Vec<Command>, ControlError> {
        self.frames_seen += 1;
        self.last_frame = Some(id);
        let all_fit = self.all_fit_at_once();
        let active = self.active.clone();
        let predict = self.predict;
        let mut out = Vec::new();
        match &mut self.phase {
            Phase::AllExact => out.push(Command::Serve {
                frame: id,
                active,
                predict,
            }),
            Phase::Training { .. } => out.push(Command::Serve {
                frame: id,
                active,
                predict,
            }),
            Phase::Warmup { samples, kept } => {
                if profile_or_keep(&mut out, id, &active, predict, all_fit, Purpose::Warmup) {
                    kept.push(id);
                    let remaining = self.settings.warmup_samples.saturating_sub(samples.len());
                    if kept.len() >= WARMUP_CHUNK.min(remaining.max(1)) {
                        let frames = std::mem::take(kept);
                        out.push(self.in_turns(frames, Purpose::Warmup));
                    }
                }
            }
            Phase::Serving(s) if s.curves.to_take > 0 => {
                // The hybrid's curves first: consecutive frames, every model exact.
                s.curves.to_take -= 1;
                s.curves.awaiting += 1;
                self.curve_frame = Some(id);
                if profile_or_keep(&mut out, id, &active, predict, all_fit, Purpose::Curves) {
                    s.curves.kept.push(id);
                    if s.curves.kept.len() >= WARMUP_CHUNK || s.curves.to_take == 0 {
                        let frames = std::mem::take(&mut s.curves.kept);
                        out.push(self.in_turns(frames, Purpose::Curves));
                    }
                }
            }
            Phase::Serving(s) => {
                let tick = s.period.clock.on_frame(time_s);
                if tick.new_period {
                    // Capped, so that frames kept for a run in turns stay within the bound.
                    s.period.to_profile = tick
                        .profile_frames
                        .min(self.settings.max_kept_frames.max(1));
                    s.period.samples.clear();
                    s.drift.probes.clear();
                }
                let probe_due = s.drift.spacing.due(time_s);
                if s.period.to_profile > 0 {
                    s.period.to_profile -= 1;
                    s.period.awaiting += 1;
                    if profile_or_keep(&mut out, id, &active, predict, all_fit, Purpose::Period) {
                        s.period.kept.push(id);
                        if s.period.to_profile == 0 {
                            let frames = std::mem::take(&mut s.period.kept);
                            out.push(self.in_turns(frames, Purpose::Period));
                        }
                    }
                } else if probe_due && self.settings.drift_margin.is_some() {
                    if profile_or_keep(&mut out, id, &active, predict, all_fit, Purpose::Probe) {
                        out.push(self.in_turns(vec![id], Purpose::Probe));
                    }
                } else {
                    out.push(Command::Serve {
                        frame: id,
                        active,
                        predict,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Groups of models that fit the memory budget together, for a run in turns; a model
    /// that crops another's boxes is in its parent's group or a later one.
    fn in_turns(&self, frames: Vec<FrameId>, purpose: Purpose) -> Command {
        let groups = self.turn_groups();
        Command::RunInTurns {
            frames,
            groups,
            purpose,
        }
    }

    /// First-fit groups from the profiling plan, then fixed so that no model runs before the
    /// model whose boxes it crops (see [`order_by_parents`]).
    pub fn turn_groups(&self) -> Vec<Vec<usize>> {
        let plan = ProfilingPlan::new(
            1,
            1.0,
            &self.costs.models,
            &Budget {
                memory_mb: self.budget.memory_mb,
                ms_per_frame: None,
            },
            &ModelSet::empty(self.k()),
        );
        let mut groups = match plan {
            Ok(p) => p.groups,
            // A model alone over the budget: each model in its own turn; loading reports it.
            Err(_) => (0..self.k()).map(|m| vec![m]).collect(),
        };
        order_by_parents(&mut groups, &self.parents);
        groups
    }

    /// Updates the measured costs; when the measured time per frame (serving plus the
    /// period's share) exceeds the time budget, re-selects with the measured model latencies
    /// under the budget less the measured overhead (the period's share, links): cause
    /// `over_budget`.
    fn on_cost(
        &mut self,
        ms: f64,
        period_ms: f64,
        models: &[(usize, f64)],
        links: Option<&dyn Predictor>,
    ) -> Result<Vec<Command>, ControlError> {
        if !ms.is_finite() || ms < 0.0 {
            return Ok(Vec::new());
        }
        if matches!(self.phase, Phase::Serving(_)) {
            if period_ms.is_finite() && period_ms > 0.0 {
                self.meter.window_work_ms += period_ms;
            }
            self.meter.window_frames += 1;
        }
        // The first run of sessions just loaded (after a selection or a run in turns, which
        // reloads the serving set) is several times slower than the next ones: metered, it
        // would re-select on a time no later frame takes.
        let fresh = std::mem::replace(&mut self.meter.fresh_sessions, period_ms > 0.0);
        if !fresh {
            self.meter.frame_ms = Some(ewma(self.meter.frame_ms, ms));
            for &(m, t) in models {
                if let Some(slot) = self.meter.model_ms.get_mut(m)
                    && t.is_finite()
                    && t >= 0.0
                {
                    *slot = Some(ewma(*slot, t));
                }
            }
        }
        self.meter.since_selection += 1;
        let limit = self.selection_budget().ms_per_frame;
        let Some(measured) = self.measured_ms_per_frame() else {
            return Ok(Vec::new());
        };
        let Some(limit) = limit else {
            return Ok(Vec::new());
        };
        let serving = matches!(self.phase, Phase::Serving(_));
        if !serving
            || measured <= limit
            || self.meter.since_selection < COST_MIN_FRAMES
            || self.meter.settled
        {
            return Ok(Vec::new());
        }
        // Under the hybrid policy the triggered models' runs are part of serving, not overhead:
        // their share as the plan expected it, at the costs it was planned with.
        let triggers_ms = self.plan().map_or(0.0, |p| {
            (p.ms_per_frame - self.costs.set_cost(&p.exact).ms_per_frame).max(0.0)
        });
        for (m, t) in self.meter.model_ms.iter().enumerate() {
            if let Some(t) = t {
                self.costs.models[m].ms_per_frame = *t;
            }
        }
        if let Some(t) = self.meter.link_ms {
            self.costs.link.ms_per_frame = t;
            // The engine measures one time for all links: each is charged it.
            for c in self.costs.per_link.iter_mut().flatten() {
                c.ms_per_frame = t;
            }
        }
        let serving_ms = self.costs.set_cost(&self.active).ms_per_frame + triggers_ms;
        let overhead = (measured - serving_ms).max(0.0);
        let (budget, rate) = (self.budget, self.rate_ms);
        let reduced = Some((limit - overhead).max(0.0));
        if rate.is_some_and(|r| self.budget.ms_per_frame.is_none_or(|b| r < b)) {
            // The offered rate binds: a set that fits none is replaced by the cheapest one,
            // which drops fewer frames than serving nothing (see `under_rate`).
            self.rate_ms = reduced;
        } else {
            self.budget.ms_per_frame = reduced;
            self.rate_ms = None;
        }
        let before = self.active.clone();
        let sel = self.select(Cause::OverBudget, links);
        (self.budget, self.rate_ms) = (budget, rate);
        // The same set again, or one no cheaper by the measured costs: nothing cheaper fits,
        // so measuring further cannot change the choice until another selection (period,
        // rate, configuration) comes; re-selecting would only move between equals.
        let ms = |c: &Self, set: &ModelSet| c.costs.set_cost(set).ms_per_frame;
        self.meter.settled = self.active == before || ms(self, &self.active) >= ms(self, &before);
        Ok(vec![sel?])
    }

    fn on_measured(
        &mut self,
        purpose: Purpose,
        frames: usize,
        batch: Batch,
        links: Option<&dyn Predictor>,
    ) -> Result<Vec<Command>, ControlError> {
        let mut out = Vec::new();
        if matches!(purpose, Purpose::Warmup | Purpose::Curves) {
            self.pair_trigger_samples(frames, &batch.rows);
        }
        match (&mut self.phase, purpose) {
            (Phase::Warmup { samples, .. }, Purpose::Warmup) => {
                samples.extend(batch.rows, batch.views);
                if samples.len() >= self.settings.warmup_samples {
                    let Batch { rows, views } = std::mem::take(samples);
                    self.phase = Phase::Training {
                        samples: rows.len(),
                    };
                    out.push(Command::StartTraining {
                        samples: rows,
                        views,
                    });
                }
            }
            (Phase::Serving(s), Purpose::Curves) => {
                s.curves.awaiting = s.curves.awaiting.saturating_sub(frames as u64);
                if s.curves.to_take == 0 && s.curves.awaiting == 0 {
                    self.curves = self.measure_curves();
                    out.push(self.select(Cause::Curves, links)?);
                }
            }
            (Phase::Serving(s), Purpose::Period) => {
                s.period.samples.append(&batch);
                // Frames without a complete sample count as measured too.
                s.period.awaiting = s.period.awaiting.saturating_sub(frames as u64);
                if s.period.awaiting == 0 && s.period.to_profile == 0 {
                    let batch = s.period.samples.clone();
                    let queued = std::mem::take(&mut s.queue.frames);
                    self.remember(batch.clone());
                    self.meter.close_period();
                    out.push(self.select(Cause::Period, links)?);
                    if !queued.is_empty() {
                        out.push(self.label(queued));
                    } else if let Some(policy) = self.periodic_policy() {
                        out.push(Command::Train {
                            samples: batch.rows,
                            views: batch.views,
                            policy,
                        });
                    }
                }
            }
            (Phase::Serving(s), Purpose::Probe) => {
                s.drift.probes.append(&batch);
                let probes = s.drift.probes.clone();
                let expected = s.drift.expected;
                if let (Some(links), Some(expected), Some(margin)) =
                    (links, expected, self.settings.drift_margin)
                    && probes.len() >= 2
                {
                    let scores =
                        ProfiledScores::with_views(links, &self.specs, &probes.rows, &probes.views);
                    if let Some(measured) = scores.measured_predicted_accuracy(&self.active)
                        && measured < expected - margin
                    {
                        self.remember(probes);
                        if let Phase::Serving(s) = &mut self.phase {
                            s.drift.probes.clear();
                        }
                        out.push(self.select(Cause::Drift, Some(links))?);
                    }
                }
            }
            (Phase::Serving(_), Purpose::Label) => {
                let period = match &self.phase {
                    Phase::Serving(s) => s.period.samples.clone(),
                    _ => Batch::default(),
                };
                let policy = match self.settings.labelling {
                    Labelling::Uncertainty { .. } => Some(TrainingPolicy::Uncertainty),
                    Labelling::LossPrediction { .. } => Some(TrainingPolicy::LossPrediction),
                    _ => self.periodic_policy(),
                };
                if let Some(policy) = policy {
                    let mut samples = period;
                    samples.append(&batch);
                    let Batch { rows, views } = samples;
                    out.push(Command::Train {
                        samples: rows,
                        views,
                        policy,
                    });
                }
            }
            // Samples for a phase that has ended (e.g. warm-up chunks after training began)
            // are dropped: nothing waits for them.
            _ => {}
        }
        Ok(out)
    }

    /// Pairs measured warm-up or curve frames (in the order they were sent) with their
    /// frame-difference features: consecutive exact samples for the hybrid's curves. A batch
    /// with an incomplete frame pairs none (its rows no longer line up with the frames).
    fn pair_trigger_samples(&mut self, frames: usize, rows: &[Row]) {
        let paired: Vec<Option<(usize, f64, Vec<f32>)>> = (0..frames)
            .map(|_| self.warm_features.pop_front().flatten())
            .collect();
        if rows.len() != frames {
            return;
        }
        for (f, row) in paired.into_iter().zip(rows) {
            if let Some((camera, time_s, diffs)) = f {
                self.trigger_samples.push(TriggerSample {
                    camera,
                    time_s,
                    diffs,
                    row: row.clone(),
                });
            }
        }
        let n = self.trigger_samples.len();
        if n > MAX_TRIGGER_SAMPLES {
            self.trigger_samples.drain(..n - MAX_TRIGGER_SAMPLES);
        }
    }

    /// The policy that fine-tunes on every period's samples, if any.
    fn periodic_policy(&self) -> Option<TrainingPolicy> {
        match self.settings.labelling {
            Labelling::Periodic => Some(TrainingPolicy::Periodic),
            _ if self.settings.federated => Some(TrainingPolicy::FederatedLocal),
            _ => None,
        }
    }

    /// Labels queued frames: they were served and kept; every model runs on them.
    fn label(&self, frames: Vec<FrameId>) -> Command {
        Command::RunInTurns {
            groups: self.turn_groups(),
            frames,
            purpose: Purpose::Label,
        }
    }

    fn on_served(
        &mut self,
        id: FrameId,
        uncertainty: Option<f64>,
        predicted_loss: Option<f64>,
    ) -> Vec<Command> {
        let labelling = self.settings.labelling;
        let Phase::Serving(s) = &mut self.phase else {
            return Vec::new();
        };
        let queue = &mut s.queue;
        let wanted = match labelling {
            Labelling::Uncertainty {
                threshold: Some(th),
            } => uncertainty.is_some_and(|u| u > th),
            Labelling::LossPrediction { threshold } => match predicted_loss {
                Some(loss) => {
                    let th = threshold.unwrap_or(queue.loss_mean * LOSS_FACTOR);
                    queue.loss_mean = if queue.loss_seen == 0 {
                        loss
                    } else {
                        0.95 * queue.loss_mean + 0.05 * loss
                    };
                    queue.loss_seen += 1;
                    queue.loss_seen > LOSS_MIN_SEEN && loss > th
                }
                None => false,
            },
            _ => false,
        };
        if wanted && queue.frames.len() < LABEL_QUEUE {
            queue.frames.push(id);
            return vec![Command::Keep { frame: id }];
        }
        Vec::new()
    }

    fn on_links_ready(
        &mut self,
        cause: Cause,
        links: Option<&dyn Predictor>,
    ) -> Result<Vec<Command>, ControlError> {
        if matches!(self.phase, Phase::AllExact) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        if let Phase::Warmup { kept, .. } = &mut self.phase
            && !kept.is_empty()
        {
            out.push(Command::Release {
                frames: std::mem::take(kept),
            });
        }
        let mut serving = self.new_serving();
        if self.settings.policy == SelectionPolicy::Hybrid && self.trigger_samples.is_empty() {
            serving.curves.to_take = self.settings.warmup_samples.max(MIN_CURVE_FRAMES) as u64;
        }
        self.phase = Phase::Serving(Box::new(serving));
        if self.curves.iter().all(Vec::is_empty) && !self.trigger_samples.is_empty() {
            self.curves = self.measure_curves();
        }
        out.push(self.select(cause, links)?);
        Ok(out)
    }

    /// Seeds the scores with the latest warm-up samples, until the first period is profiled.
    pub fn seed_samples(&mut self, samples: &[Row]) {
        self.seed_batch(&Batch::new(samples.to_vec(), Vec::new()));
    }

    /// [`Controller::seed_samples`] with the samples' link views.
    pub fn seed_batch(&mut self, samples: &Batch) {
        let n = samples.len();
        let from = n.saturating_sub(WARM_SCORING_SAMPLES);
        let rows: Vec<Row> = samples.rows[from..].iter().rev().cloned().collect();
        let views: Vec<Views> = samples.views[from..].iter().rev().cloned().collect();
        self.history.clear();
        if !rows.is_empty() {
            self.history.push_back(Batch::new(rows, views));
        }
    }

    fn new_serving(&self) -> Serving {
        let clock = PeriodClock::new(
            self.settings.period,
            self.settings.profiling_ratio,
            self.settings.min_profile_frames,
            self.settings.fps_hint,
        );
        let spacing = Spacing::new(clock.quarter());
        Serving {
            period: PeriodState {
                clock,
                to_profile: 0,
                awaiting: 0,
                kept: Vec::new(),
                samples: Batch::default(),
            },
            drift: DriftState {
                spacing,
                expected: None,
                probes: Batch::default(),
            },
            queue: LabelQueue {
                frames: Vec::new(),
                loss_mean: 0.0,
                loss_seen: 0,
            },
            curves: CurveSampling::default(),
        }
    }

    fn on_config(
        &mut self,
        settings: Settings,
        budget: Budget,
        costs: Costs,
        links: Option<&dyn Predictor>,
    ) -> Result<Vec<Command>, ControlError> {
        if costs.n_models() != self.k() {
            return Err(ControlError::Invalid(format!(
                "a reload cannot change the number of models ({} to {})",
                self.k(),
                costs.n_models()
            )));
        }
        let period_changed = settings.period != self.settings.period
            || settings.profiling_ratio != self.settings.profiling_ratio;
        let select = settings.policy != self.settings.policy || budget != self.budget;
        self.settings = settings;
        self.budget = budget;
        self.costs = costs;
        let fresh = self.new_serving();
        if period_changed && let Phase::Serving(s) = &mut self.phase {
            s.period.clock = fresh.period.clock;
            s.drift.spacing = fresh.drift.spacing;
        }
        if !select || matches!(self.phase, Phase::AllExact) {
            return Ok(Vec::new());
        }
        Ok(vec![match &self.phase {
            Phase::Serving(_) => self.select(Cause::Reload, links)?,
            _ => self.standalone(Cause::Reload),
        }])
    }

    /// A selected set less the failed models, closed over parents (a dependent of a failed
    /// model goes too).
    fn without_failed(&self, mut set: ModelSet, costs: &Costs) -> ModelSet {
        for m in self.failed().iter() {
            set.remove(m);
        }
        close_over_parents(set, &self.parents, costs, &self.budget)
    }

    fn remember(&mut self, batch: Batch) {
        self.history.push_back(batch);
        while self.history.len() > self.settings.profile_window.max(1) {
            self.history.pop_front();
        }
    }

    /// The standalone selection under the selection budget (see [`Controller::under_rate`]).
    fn standalone(&mut self, cause: Cause) -> Command {
        self.under_rate(|c| Ok(c.standalone_under_budget(cause)))
            .unwrap_or_else(|_| unreachable!("the standalone selection cannot fail"))
    }

    /// A selection from the links under the selection budget (see [`Controller::under_rate`]).
    fn select(
        &mut self,
        cause: Cause,
        links: Option<&dyn Predictor>,
    ) -> Result<Command, ControlError> {
        self.under_rate(|c| c.select_under_budget(cause, links))
    }

    /// Runs a selection with the budget's time per frame capped by the offered rate's. When
    /// the cap leaves no model at all although the pipeline's budget holds one, no set can
    /// keep up with the cameras: the cheapest model (with links for the others) serves, so
    /// that as few frames as possible are dropped, and the selection says so (`rate_unmet`).
    fn under_rate(
        &mut self,
        mut selection: impl FnMut(&mut Self) -> Result<Command, ControlError>,
    ) -> Result<Command, ControlError> {
        let Some(rate) = self.rate_ms else {
            return selection(self);
        };
        let own = self.budget;
        self.budget = self.selection_budget();
        self.rate_ms = None;
        let mut result = selection(self);
        let empty = |r: &Result<Command, ControlError>| matches!(r, Ok(Command::Select(s)) if s.to.is_empty());
        if empty(&result) && self.k() > 0 {
            let links = self.costs.link.ms_per_frame * (self.k() - 1) as f64;
            let cheapest = self
                .costs
                .models
                .iter()
                .map(|c| c.ms_per_frame)
                .fold(f64::INFINITY, f64::min);
            self.budget.ms_per_frame = Some(match own.ms_per_frame {
                Some(b) => b.min(cheapest + links),
                None => cheapest + links,
            });
            let fallback = selection(self);
            if !empty(&fallback) {
                result = fallback.map(|cmd| match cmd {
                    Command::Select(mut s) => {
                        s.rate_unmet = true;
                        s.reason = format!(
                            "no set fits the {rate:.1} ms per frame the cameras' rate allows; \
                             the cheapest serves and frames beyond it are dropped ({})",
                            s.reason
                        );
                        Command::Select(s)
                    }
                    other => other,
                });
            }
        }
        self.budget = own;
        self.rate_ms = Some(rate);
        result
    }

    /// The standalone selection (no links): the models that fit, cheapest first.
    fn standalone_under_budget(&mut self, cause: Cause) -> Command {
        self.meter.restart();
        self.predict = true;
        let sel = schedule::standalone(&self.costs, &self.budget);
        let to = self.without_failed(sel.active, &self.costs.clone());
        let from = std::mem::replace(&mut self.active, to.clone());
        Command::Select(Box::new(Selected {
            from,
            to,
            cause,
            at: self.last_frame,
            frames_seen: self.frames_seen,
            objective: sel.objective,
            reason: sel.reason,
            expected: None,
            link_matrix: Vec::new(),
            ensembles: Vec::new(),
            measured: vec![None; self.k()],
            predict: true,
            plan: None,
            rate_unmet: false,
        }))
    }

    /// The hybrid's plan around the paper's set `paper` (whose cost is the compute allowance
    /// unless one is given): failed models are only predicted.
    fn hybrid_plan<S: LinkScores + ?Sized>(
        &self,
        paper: &ModelSet,
        costs: &Costs,
        scores: &S,
        profiled: usize,
    ) -> Plan {
        let h = &self.settings.hybrid;
        let cap = h
            .ms_per_frame
            .or(self.budget.ms_per_frame)
            .unwrap_or_else(|| costs.set_cost(paper).ms_per_frame);
        let failed = self.failed();
        let mut curves = self.curves.clone();
        for m in failed.iter() {
            curves[m].clear();
        }
        let ensemble = |e: &ModelSet, j: usize| {
            if e.iter().any(|m| failed.contains(m)) {
                0.0
            } else {
                scores.ensemble(e, j)
            }
        };
        let load_ms = h.load_ms_for(costs);
        let input = hybrid::PlanInput {
            costs,
            budget: &self.budget,
            cap_ms: cap,
            curves: &curves,
            ensemble: &ensemble,
            load_ms: &load_ms,
            fps: self.settings.fps_hint,
            latency_s: h.latency_s,
            links: h.links,
            parents: &self.parents,
            reuse_at_most: h.trigger_target,
        };
        let k = self.k();
        let mut paper_plan = Plan::exact_only(paper.clone());
        for j in (0..k).filter(|&j| !paper.contains(j)) {
            paper_plan.accuracy[j] = ensemble(paper, j);
        }
        paper_plan.expected = paper_plan.accuracy.iter().sum::<f64>() / k.max(1) as f64;
        paper_plan.ms_per_frame = costs.set_cost(paper).ms_per_frame;
        // The scores and curves come from few samples on a short clip: a plan replaces the
        // paper's set only when it expects more than the fixed margin and the estimates'
        // noise.
        let curve = self.trigger_samples.len();
        let mut p = hybrid::plan(&input)
            .filter(|p| {
                !h.links
                    || p.expected
                        >= paper_plan.expected
                            + hybrid::required_gain(p, &paper_plan, profiled, curve)
            })
            .unwrap_or(paper_plan);
        for m in failed.iter() {
            p.exact.remove(m);
            p.resident.remove(m);
            p.in_turns.remove(m);
            p.modes[m] = hybrid::Mode::Predicted;
        }
        p
    }

    /// Selects from the profiled scores of the latest batches.
    fn select_under_budget(
        &mut self,
        cause: Cause,
        links: Option<&dyn Predictor>,
    ) -> Result<Command, ControlError> {
        let Some(links) = links else {
            return Ok(self.standalone(cause));
        };
        self.meter.restart();
        let mut samples = Batch::default();
        for b in &self.history {
            samples.append(b);
        }
        // Links trained again online: their held-out scores count beside the few samples
        // profiled since, until there are enough of those.
        let prior_weight = if self.scoring_updated_links {
            (UPDATED_LINKS_PRIOR_SAMPLES - samples.len() as f64).max(0.0)
        } else {
            0.0
        };
        let scores = ProfiledScores::weighing_prior(
            links,
            &self.specs,
            &samples.rows,
            &samples.views,
            prior_weight,
        );
        let mut sel = schedule::select(self.settings.policy, &self.costs, &self.budget, &scores)?;
        let mut predict = true;
        if sel.active.is_empty() && self.k() > 0 {
            // The policy stopped at a model that does not fit with its links (the paper's
            // rule stops at the first misfit): try the greedy that skips misfits, and when
            // nothing fits with links at all, serve the models that fit alone rather than
            // leave every output unavailable.
            let greedy = schedule::gain(&self.costs, &self.budget, &scores);
            if !greedy.active.is_empty() {
                sel.reason = format!(
                    "{}; the greedy that skips misfits found a set that fits with its links",
                    sel.reason
                );
                sel.active = greedy.active;
            } else {
                let alone = schedule::standalone(
                    &Costs::models_only(self.costs.models.clone()),
                    &self.budget,
                );
                if !alone.active.is_empty() {
                    sel.reason = format!(
                        "no model fits the budget together with its links ({}); serving the \
                         models that fit alone, without predictions",
                        sel.reason
                    );
                    sel.active = alone.active;
                    predict = false;
                }
            }
        }
        let costs_now = if predict {
            self.costs.clone()
        } else {
            Costs::models_only(self.costs.models.clone())
        };
        let mut to = self.without_failed(sel.active, &costs_now);
        let mut plan = None;
        if self.settings.policy == SelectionPolicy::Hybrid {
            let p = self.hybrid_plan(&to, &costs_now, &scores, samples.len());
            to = p.exact.clone();
            if !self.settings.hybrid.links {
                predict = false;
            }
            sel.reason = format!("{}; hybrid: {}", sel.reason, p.summary(&[], &[]));
            plan = Some(p.clone());
            match self.triggers.as_mut() {
                Some(t) => {
                    // Frames kept under the old plan run now.
                    self.deferred.extend(Self::turns(t));
                    t.replan(p, self.settings.hybrid.max_age_s);
                }
                None => self.triggers = Some(Triggers::new(p, self.settings.hybrid.max_age_s)),
            }
        } else {
            self.triggers = None;
        }
        self.predict = predict;
        let k = self.k();
        let predicted: Vec<usize> = to.complement_iter().collect();
        let ensembles: Vec<f64> = (0..k)
            .map(|j| {
                if to.contains(j) {
                    1.0
                } else {
                    scores.ensemble(&to, j)
                }
            })
            .collect();
        let expected = if predicted.is_empty() {
            None
        } else {
            Some(predicted.iter().map(|&j| ensembles[j]).sum::<f64>() / predicted.len() as f64)
        };
        let measured = scores.measured_per_model(&to);
        let objective = schedule::objective(&scores, &to);
        if let Phase::Serving(s) = &mut self.phase {
            s.drift.expected = expected;
        }
        let from = std::mem::replace(&mut self.active, to.clone());
        Ok(Command::Select(Box::new(Selected {
            from,
            to,
            cause,
            at: self.last_frame,
            frames_seen: self.frames_seen,
            objective,
            reason: sel.reason,
            expected,
            link_matrix: scores.link_matrix().to_vec(),
            ensembles,
            measured,
            predict,
            plan,
            rate_unmet: false,
        })))
    }
}

/// Profiles frame `id` for `purpose`: at once when every model fits together; otherwise the
/// frame is served with the active set and kept for a run in turns. Returns whether it was
/// kept.
fn profile_or_keep(
    out: &mut Vec<Command>,
    id: FrameId,
    active: &ModelSet,
    predict: bool,
    all_fit: bool,
    purpose: Purpose,
) -> bool {
    if all_fit {
        out.push(Command::Profile { frame: id, purpose });
        return false;
    }
    out.push(Command::Serve {
        frame: id,
        active: active.clone(),
        predict,
    });
    out.push(Command::Keep { frame: id });
    true
}

/// `active` and the plan's resident triggered models.
fn with_resident(active: &ModelSet, plan: Option<&Plan>) -> ModelSet {
    let mut set = active.clone();
    for m in plan.into_iter().flat_map(|p| p.resident.iter()) {
        set.insert(m);
    }
    set
}

/// Makes every model's parent run in the same group as the model or an earlier one: a
/// dependent planned in a group before its parent's moves to a turn of its own right after
/// the parent's (a group of one fits, since the plan checked every model alone).
pub fn order_by_parents(groups: &mut Vec<Vec<usize>>, parents: &[Option<usize>]) {
    let group_of = |groups: &Vec<Vec<usize>>, m: usize| groups.iter().position(|g| g.contains(&m));
    // Each pass fixes at least one misplaced dependent; parents form a forest, so at most
    // `k` passes are needed.
    for _ in 0..parents.len() {
        let mut moved = false;
        for (m, p) in parents.iter().enumerate() {
            let Some(p) = *p else { continue };
            let (Some(gm), Some(gp)) = (group_of(groups, m), group_of(groups, p)) else {
                continue;
            };
            if gm < gp {
                groups[gm].retain(|&x| x != m);
                groups.insert(gp + 1, vec![m]);
                moved = true;
            }
        }
        groups.retain(|g| !g.is_empty());
        if !moved {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{OutputValue, TaskKind};
    use crate::schedule::Cost;

    /// Links that predict any target as the first source's value: a link is perfect exactly
    /// where the two models agree on the samples. The prior is a fixed 0.5.
    struct CopyLinks;

    impl Predictor for CopyLinks {
        fn predict(&self, _: usize, sources: &[(usize, &OutputValue)]) -> Option<OutputValue> {
            sources.first().map(|(_, v)| (*v).clone())
        }
        fn prior(&self, _: &[usize], _: usize) -> Option<f64> {
            Some(0.5)
        }
    }

    fn v(x: f32) -> OutputValue {
        OutputValue::Vector(vec![x])
    }

    /// Three count models: 0 and 1 always agree; 2 agrees with them only when `agree`.
    fn sample(agree: bool) -> Row {
        vec![v(1.0), v(1.0), v(if agree { 1.0 } else { 7.0 })]
    }

    fn settings() -> Settings {
        Settings {
            policy: SelectionPolicy::Mlink,
            period: PeriodLength::Seconds(10.0),
            profiling_ratio: 0.2,
            min_profile_frames: 1,
            max_kept_frames: 64,
            profile_window: 4,
            fps_hint: 1.0,
            drift_margin: None,
            warmup_samples: 3,
            labelling: Labelling::None,
            federated: false,
            hybrid: HybridSettings::default(),
        }
    }

    fn costs() -> Costs {
        Costs {
            models: vec![
                Cost::new(100.0, 10.0),
                Cost::new(100.0, 10.0),
                Cost::new(100.0, 10.0),
            ],
            link: Cost::ZERO,
            per_link: Vec::new(),
        }
    }

    fn controller(s: Settings, budget_mb: f64, parents: Vec<Option<usize>>) -> Controller {
        let specs = vec![OutputSpec::vector(1, TaskKind::Count); 3];
        Controller::new(s, specs, costs(), Budget::memory(budget_mb), parents, false).unwrap()
    }

    /// A fake driver: carries out commands at once with samples from `sample_of`, and
    /// records what it was told.
    struct Driver<'a> {
        c: Controller,
        links: Option<&'a dyn Predictor>,
        sample_of: Box<dyn Fn(FrameId) -> Row + 'a>,
        log: Vec<Command>,
        served: Vec<(FrameId, ModelSet)>,
        profiled: Vec<(FrameId, Purpose)>,
        kept: Vec<FrameId>,
    }

    impl<'a> Driver<'a> {
        fn new(c: Controller, sample_of: impl Fn(FrameId) -> Row + 'a) -> Self {
            Driver {
                c,
                links: None,
                sample_of: Box::new(sample_of),
                log: Vec::new(),
                served: Vec::new(),
                profiled: Vec::new(),
                kept: Vec::new(),
            }
        }

        fn send(&mut self, e: Event) {
            let cmds = self.c.handle(e, self.links).unwrap();
            for cmd in cmds {
                self.log.push(cmd.clone());
                match cmd {
                    Command::Serve { frame, active, .. } => self.served.push((frame, active)),
                    Command::Profile { frame, purpose } => {
                        self.profiled.push((frame, purpose));
                        let s = (self.sample_of)(frame);
                        self.send(Event::Measured {
                            purpose,
                            frames: 1,
                            samples: vec![s],
                            views: Vec::new(),
                        });
                    }
                    Command::Keep { frame } => self.kept.push(frame),
                    Command::RunInTurns {
                        frames, purpose, ..
                    } => {
                        for f in &frames {
                            assert!(self.kept.contains(f), "frame {f} was not kept");
                            self.profiled.push((*f, purpose));
                        }
                        self.kept.retain(|f| !frames.contains(f));
                        let samples = frames.iter().map(|&f| (self.sample_of)(f)).collect();
                        self.send(Event::Measured {
                            purpose,
                            frames: frames.len(),
                            samples,
                            views: Vec::new(),
                        });
                    }
                    _ => {}
                }
            }
        }

        fn frame(&mut self, id: FrameId, time_s: f64) {
            self.send(Event::Frame { id, time_s });
        }

        fn selections(&self) -> Vec<(Option<FrameId>, Vec<usize>, Cause)> {
            self.log
                .iter()
                .filter_map(|c| match c {
                    Command::Select(s) => Some((s.at, s.to.iter().collect(), s.cause)),
                    _ => None,
                })
                .collect()
        }

        fn trains(&self) -> Vec<(usize, TrainingPolicy)> {
            self.log
                .iter()
                .filter_map(|c| match c {
                    Command::Train {
                        samples, policy, ..
                    } => Some((samples.len(), *policy)),
                    _ => None,
                })
                .collect()
        }
    }

    /// `n` consecutive samples of camera 0, one a second, with the given features and rows.
    fn one_camera_samples(
        n: FrameId,
        diff: impl Fn(FrameId) -> Vec<f32>,
        row: impl Fn(FrameId) -> Row,
    ) -> Vec<TriggerSample> {
        (0..n)
            .map(|i| TriggerSample {
                camera: 0,
                time_s: i as f64,
                diffs: diff(i),
                row: row(i),
            })
            .collect()
    }

    /// Serving from given links under the hybrid policy: no warm-up gave the trigger its
    /// curves, so the first frames are profiled one after another, the curves measured on
    /// them and the plan made again; with curves from a warm-up, no frame is taken for them.
    #[test]
    fn a_hybrid_started_from_given_links_profiles_consecutive_frames_for_its_curves() {
        let row = |i: FrameId| vec![v(1.0), v((i / 5) as f32), v(2.0)];
        let diff = |i: FrameId| vec![if i.is_multiple_of(5) { 1.0f32 } else { 0.01 }];
        let links = CopyLinks;
        for seeded in [false, true] {
            let mut s = settings();
            s.policy = SelectionPolicy::Hybrid;
            s.warmup_samples = 10;
            let mut c = controller(s, 100.0, vec![None; 3]);
            if seeded {
                c.seed_trigger_samples(one_camera_samples(20, diff, row));
            }
            let mut d = Driver::new(c, row);
            d.links = Some(&links);
            d.send(Event::LinksReady {
                cause: Cause::Startup,
            });
            for i in 0..30 {
                d.send(Event::Features {
                    id: i,
                    camera: 0,
                    diffs: diff(i),
                });
                d.frame(i, i as f64);
            }
            let taken: Vec<FrameId> = d
                .profiled
                .iter()
                .filter(|(_, p)| *p == Purpose::Curves)
                .map(|(f, _)| *f)
                .collect();
            let reselected = d.selections().iter().any(|s| s.2 == Cause::Curves);
            if seeded {
                assert!(taken.is_empty() && !reselected, "{taken:?}");
            } else {
                assert_eq!(taken, (0..10).collect::<Vec<FrameId>>());
                assert!(reselected, "{:?}", d.selections());
                assert_eq!(d.c.trigger_samples.len(), 10);
                assert!(d.c.curves.iter().all(|c| !c.is_empty()));
            }
        }
    }

    /// Model 0 is constant, model 2 copies model 1, and model 1 steps whenever the frame
    /// difference jumps (every 10 frames); the budget holds one model at a time.
    #[test]
    fn hybrid_triggers_run_in_turns_within_the_budget_and_the_allowance() {
        let row = |i: u64| vec![v(1.0), v((i / 10) as f32), v((i / 10) as f32)];
        let diff = |i: u64| vec![if i.is_multiple_of(10) { 1.0f32 } else { 0.01 }];
        let mut s = settings();
        s.policy = SelectionPolicy::Hybrid;
        s.hybrid = HybridSettings {
            latency_s: 3.0,
            load_ms: vec![5.0; 3],
            ms_per_frame: Some(40.0),
            ..HybridSettings::default()
        };
        let mut c = controller(s, 100.0, vec![None; 3]);
        c.seed_trigger_samples(one_camera_samples(40, diff, row));
        let links = CopyLinks;
        let mut log = c
            .handle(
                Event::LinksReady {
                    cause: Cause::Startup,
                },
                Some(&links),
            )
            .unwrap();
        let plan = c.plan().cloned().expect("a hybrid plan");
        assert!(!plan.in_turns.is_empty(), "{plan:?}");
        let mut times = std::collections::BTreeMap::new();
        for i in 0..30u64 {
            times.insert(i, i as f64);
            for e in [
                Event::Features {
                    id: i,
                    camera: 0,
                    diffs: diff(i),
                },
                Event::Frame {
                    id: i,
                    time_s: i as f64,
                },
            ] {
                for cmd in c.handle(e, Some(&links)).unwrap() {
                    if let Command::Profile { frame, purpose } = cmd {
                        log.push(cmd.clone());
                        let r = c
                            .handle(
                                Event::Measured {
                                    purpose,
                                    frames: 1,
                                    samples: vec![row(frame)],
                                    views: Vec::new(),
                                },
                                Some(&links),
                            )
                            .unwrap();
                        log.extend(r);
                    } else {
                        log.push(cmd);
                    }
                }
            }
        }
        log.extend(c.finish());
        let mut kept = Vec::new();
        let mut turns = 0;
        let mut flushed_at = 0u64;
        for cmd in &log {
            match cmd {
                Command::Serve { frame, active, .. } => {
                    flushed_at = *frame;
                    assert!(
                        Budget::memory(100.0).fits(costs().models_cost(active)),
                        "frame {frame} serves {active:?}"
                    );
                }
                Command::Keep { frame } => kept.push(*frame),
                Command::RunInTurns {
                    frames,
                    groups,
                    purpose: Purpose::Trigger,
                } => {
                    turns += 1;
                    // One model a turn, alone in memory, on frames kept for it, once the
                    // oldest has waited the allowance (or at the end).
                    assert_eq!(groups.len(), 1);
                    assert_eq!(groups[0].len(), 1);
                    assert!(c.plan().unwrap().in_turns.contains(groups[0][0]));
                    assert!(frames.iter().all(|f| kept.contains(f)), "{frames:?}");
                    let waited = times[&flushed_at] - times[&frames[0]];
                    assert!(waited >= 3.0 || flushed_at == 29, "{waited}");
                }
                _ => {}
            }
        }
        assert!(turns >= 2, "{log:?}");
        // Every camera's first frame fires the trigger.
        assert!(kept.contains(&0));
    }

    #[test]
    fn warmup_then_training_then_serving() {
        let mut d = Driver::new(controller(settings(), 1000.0, vec![None; 3]), |_| {
            sample(true)
        });
        for cmd in d.c.start() {
            d.log.push(cmd);
        }
        assert!(matches!(d.c.phase(), Phase::Warmup { .. }));
        for i in 0..3 {
            d.frame(i, i as f64);
        }
        // Every model fits: each warm-up frame is profiled on arrival.
        assert_eq!(d.profiled.len(), 3);
        assert!(d.profiled.iter().all(|(_, p)| *p == Purpose::Warmup));
        assert!(matches!(d.c.phase(), Phase::Training { samples: 3 }));
        let training = d
            .log
            .iter()
            .filter(|c| matches!(c, Command::StartTraining { samples, views } if samples.len() == 3 && views.len() == 3))
            .count();
        assert_eq!(training, 1);
        // While training, the standalone set (every model fits) serves.
        d.frame(3, 3.0);
        assert_eq!(d.served.last().map(|s| s.1.len()), Some(3));
        d.links = Some(&CopyLinks);
        d.send(Event::LinksReady {
            cause: Cause::Trained,
        });
        assert!(matches!(d.c.phase(), Phase::Serving(_)));
        let sel = d.selections();
        assert_eq!(sel[0].2, Cause::NoLinks);
        assert_eq!(sel.last().map(|s| s.2), Some(Cause::Trained));
    }

    #[test]
    fn warmup_in_turns_serves_at_once_and_keeps_chunks() {
        let mut s = settings();
        s.warmup_samples = 30;
        let mut d = Driver::new(controller(s, 150.0, vec![None; 3]), |_| sample(true));
        for cmd in d.c.start() {
            d.log.push(cmd);
        }
        for i in 0..25 {
            d.frame(i, i as f64);
        }
        // Each frame served on arrival with the standalone set (one model fits).
        assert_eq!(d.served.len(), 25);
        assert!(d.served.iter().all(|(_, a)| a.len() == 1));
        // The first chunk of 25 ran in turns, nothing is kept any more.
        assert_eq!(d.profiled.len(), 25);
        assert!(d.kept.is_empty());
        // The second chunk is the 5 samples still missing.
        for i in 25..30 {
            d.frame(i, i as f64);
        }
        assert_eq!(d.profiled.len(), 30);
        assert!(matches!(d.c.phase(), Phase::Training { samples: 30 }));
    }

    fn serving(
        s: Settings,
        budget_mb: f64,
        sample_of: impl Fn(FrameId) -> Row + 'static,
    ) -> Driver<'static> {
        let mut d = Driver::new(controller(s, budget_mb, vec![None; 3]), sample_of);
        d.links = Some(&CopyLinks);
        d.send(Event::LinksReady {
            cause: Cause::Startup,
        });
        d
    }

    #[test]
    fn each_period_in_video_time_starts_with_profiling() {
        // 10 s periods, 1 frame per second, 20%: two profiling frames per period.
        let mut d = serving(settings(), 1000.0, |_| sample(true));
        for i in 0..30 {
            d.frame(i, 100.0 + i as f64);
        }
        let profiled: Vec<FrameId> = d.profiled.iter().map(|p| p.0).collect();
        assert_eq!(profiled, [0, 1, 10, 11, 20, 21]);
        let causes: Vec<(Option<FrameId>, Cause)> =
            d.selections().iter().map(|s| (s.0, s.2)).collect();
        assert_eq!(
            causes,
            [
                (None, Cause::Startup),
                (Some(1), Cause::Period),
                (Some(11), Cause::Period),
                (Some(21), Cause::Period)
            ]
        );
        // Frames arriving twice as fast: the period follows video time, not frame counts.
        let mut d = serving(settings(), 1000.0, |_| sample(true));
        for i in 0..40 {
            d.frame(i, i as f64 * 0.5);
        }
        let periods = d
            .selections()
            .iter()
            .filter(|s| s.2 == Cause::Period)
            .count();
        assert_eq!(periods, 2);
    }

    #[test]
    fn profiling_in_turns_serves_at_once_keeps_only_the_profiled_frames() {
        let mut d = serving(settings(), 150.0, |_| sample(true));
        for i in 0..12 {
            d.frame(i, i as f64);
        }
        // Every frame served on arrival, profiling ones included.
        assert_eq!(d.served.len(), 12);
        let profiled: Vec<FrameId> = d.profiled.iter().map(|p| p.0).collect();
        assert_eq!(profiled, [0, 1, 10, 11]);
        assert!(d.kept.is_empty());
        let turns = d
            .log
            .iter()
            .filter_map(|c| match c {
                Command::RunInTurns { groups, .. } => Some(groups.clone()),
                _ => None,
            })
            .collect::<Vec<_>>();
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[0], vec![vec![0], vec![1], vec![2]]);
        // With 0 and 1 always agreeing and 2 never, one model serves and predicts only its twin.
        let last = d.selections().last().cloned().unwrap();
        assert_eq!(last.2, Cause::Period);
        assert_eq!(last.1.len(), 1);
    }

    #[test]
    fn the_kept_frames_are_capped() {
        let mut s = settings();
        s.profiling_ratio = 1.0;
        s.max_kept_frames = 3;
        let mut d = serving(s, 150.0, |_| sample(true));
        for i in 0..10 {
            d.frame(i, i as f64);
        }
        assert_eq!(d.profiled.len(), 3);
    }

    #[test]
    fn drift_reselects_when_probes_fall_below_expectations() {
        let mut s = settings();
        s.drift_margin = Some(0.1);
        s.profiling_ratio = 0.1;
        // Model 2 agrees with the others in the first period, never afterwards.
        let mut d = serving(s, 100.0, |f| sample(f < 5));
        for i in 0..10 {
            d.frame(i, i as f64);
        }
        let sel = d.selections();
        // Probes every 2.5 s of video time from the mark set by frame 0: frames 3, 6 and 9;
        // frame 3 is before the change, frame 6 after it: (1 + 0.5) / 2 = 0.75 < 1 - 0.1.
        let probes: Vec<FrameId> = d
            .profiled
            .iter()
            .filter(|p| p.1 == Purpose::Probe)
            .map(|p| p.0)
            .collect();
        assert_eq!(probes, [3, 6, 9]);
        let drift: Vec<Option<FrameId>> = sel
            .iter()
            .filter(|s| s.2 == Cause::Drift)
            .map(|s| s.0)
            .collect();
        // Probes start over after a drift selection: one probe (frame 9) is not enough.
        assert_eq!(drift, [Some(6)]);
        // Without a margin, no probe at all.
        let mut s = settings();
        s.profiling_ratio = 0.1;
        let mut d = serving(s, 100.0, |f| sample(f < 5));
        for i in 0..10 {
            d.frame(i, i as f64);
        }
        assert!(d.profiled.iter().all(|p| p.1 != Purpose::Probe));
    }

    #[test]
    fn uncertainty_queues_frames_and_labels_them_after_profiling() {
        let mut s = settings();
        s.labelling = Labelling::Uncertainty {
            threshold: Some(0.5),
        };
        let mut d = serving(s, 150.0, |_| sample(true));
        for i in 0..5 {
            d.frame(i, i as f64);
            d.send(Event::Served {
                id: i,
                uncertainty: Some(if i == 3 { 0.9 } else { 0.1 }),
                predicted_loss: None,
            });
        }
        assert_eq!(d.kept, [3]);
        for i in 5..11 {
            d.frame(i, i as f64);
        }
        // Frame 3 labelled after the second period's profiling (frames 10 and 11 pending:
        // the period needs both before it selects).
        d.frame(11, 11.0);
        let labelled: Vec<FrameId> = d
            .profiled
            .iter()
            .filter(|p| p.1 == Purpose::Label)
            .map(|p| p.0)
            .collect();
        assert_eq!(labelled, [3]);
        // Trained on the period's two samples and the labelled one.
        assert_eq!(d.trains(), [(3, TrainingPolicy::Uncertainty)]);
    }

    #[test]
    fn links_updated_online_are_scored_only_on_samples_they_did_not_learn_from() {
        let mut s = settings();
        s.labelling = Labelling::Periodic;
        let mut d = serving(s, 1000.0, |_| sample(true));
        for i in 0..11 {
            d.frame(i, i as f64);
        }
        assert_eq!(d.trains(), [(2, TrainingPolicy::Periodic)]);
        assert!(!d.c.history.is_empty());
        assert!(!d.c.scoring_updated_links);
        d.send(Event::LinksUpdated);
        assert!(d.c.history.is_empty());
        // Until enough fresh samples, the updated links' held-out scores weigh in.
        assert!(d.c.scoring_updated_links);
        // The next period's samples are what the next selection scores on.
        for i in 11..21 {
            d.frame(i, i as f64);
        }
        assert_eq!(d.c.history.len(), 1);
        assert_eq!(d.c.history[0].len(), 2);
    }

    #[test]
    fn periodic_trains_every_period_and_none_never() {
        let mut s = settings();
        s.labelling = Labelling::Periodic;
        let mut d = serving(s.clone(), 1000.0, |_| sample(true));
        for i in 0..21 {
            d.frame(i, i as f64);
        }
        assert_eq!(
            d.trains(),
            [(2, TrainingPolicy::Periodic), (2, TrainingPolicy::Periodic)]
        );
        s.labelling = Labelling::None;
        let mut d = serving(s.clone(), 1000.0, |_| sample(true));
        for i in 0..21 {
            d.frame(i, i as f64);
        }
        assert!(d.trains().is_empty());
        s.federated = true;
        let mut d = serving(s, 1000.0, |_| sample(true));
        d.frame(0, 0.0);
        d.frame(1, 1.0);
        assert_eq!(d.trains(), [(2, TrainingPolicy::FederatedLocal)]);
    }

    #[test]
    fn loss_prediction_queues_frames_far_above_the_running_mean() {
        let mut s = settings();
        s.labelling = Labelling::LossPrediction { threshold: None };
        let mut d = serving(s, 1000.0, |_| sample(true));
        for i in 0..15 {
            d.send(Event::Served {
                id: i,
                uncertainty: None,
                predicted_loss: Some(if i == 13 { 5.0 } else { 1.0 }),
            });
        }
        // Frame 13 only: the mean is trusted after 10 losses, and 5 > 2 x the mean.
        assert_eq!(d.kept, [13]);
        // An explicit threshold applies from the start.
        let mut s = settings();
        s.labelling = Labelling::LossPrediction {
            threshold: Some(0.5),
        };
        let mut d = serving(s, 1000.0, |_| sample(true));
        d.send(Event::Served {
            id: 0,
            uncertainty: None,
            predicted_loss: Some(1.0),
        });
        assert!(d.kept.is_empty(), "the first 10 losses only build the mean");
    }

    #[test]
    fn reload_reselects_under_the_new_budget() {
        let mut d = serving(settings(), 1000.0, |_| sample(true));
        d.frame(0, 0.0);
        d.frame(1, 1.0);
        assert_eq!(d.c.active().len(), 3);
        d.send(Event::ConfigChanged {
            settings: Box::new(settings()),
            budget: Budget::memory(150.0),
            costs: costs(),
        });
        let last = d.selections().last().cloned().unwrap();
        assert_eq!(last.2, Cause::Reload);
        assert_eq!(last.1.len(), 1);
        // The same configuration again selects nothing.
        let before = d.selections().len();
        d.send(Event::ConfigChanged {
            settings: Box::new(settings()),
            budget: Budget::memory(150.0),
            costs: costs(),
        });
        assert_eq!(d.selections().len(), before);
    }

    /// Three models declared at 10 ms under a 25 ms time budget, serving with links.
    fn serving_within_25_ms() -> Driver<'static> {
        let specs = vec![OutputSpec::vector(1, TaskKind::Count); 3];
        let ctl = Controller::new(
            settings(),
            specs,
            costs(),
            Budget::time(25.0),
            vec![None; 3],
            false,
        )
        .unwrap();
        let mut d = Driver::new(ctl, |_| sample(false));
        d.links = Some(&CopyLinks);
        d.send(Event::LinksReady {
            cause: Cause::Startup,
        });
        d
    }

    #[test]
    fn a_measured_time_over_the_budget_reselects_with_measured_costs() {
        // Declared 10 ms each: two models fit 25 ms. They really take 20 ms each.
        let mut d = serving_within_25_ms();
        assert_eq!(d.c.active().len(), 2);
        let active: Vec<usize> = d.c.active().iter().collect();
        for _ in 0..COST_MIN_FRAMES {
            d.send(Event::Cost {
                period_ms: 0.0,
                ms: 40.0,
                models: active.iter().map(|&m| (m, 20.0)).collect(),
                link_ms: None,
            });
        }
        assert_eq!(
            d.c.measured_ms_per_frame(),
            None,
            "the new set is measured afresh"
        );
        let last = d.selections().last().cloned().unwrap();
        assert_eq!(last.2, Cause::OverBudget);
        assert_eq!(last.1.len(), 1, "one model at 20 ms fits 25 ms");
        // Within the budget: no re-selection.
        let before = d.selections().len();
        for _ in 0..2 * COST_MIN_FRAMES {
            d.send(Event::Cost {
                period_ms: 0.0,
                ms: 20.0,
                models: vec![(last.1[0], 20.0)],
                link_ms: None,
            });
        }
        assert!(d.c.measured_ms_per_frame().unwrap() < 25.0);
        let over: Vec<_> = d.selections()[before..].to_vec();
        assert!(over.is_empty(), "{over:?}");
    }

    #[test]
    fn the_offered_rate_caps_the_time_per_frame_and_says_when_no_set_keeps_up() {
        // Memory holds all three (10 ms each); the cameras' rate allows 25 ms a frame.
        let mut ctl = controller(settings(), 300.0, vec![None; 3]);
        ctl.set_rate_budget(Some(25.0));
        assert_eq!(ctl.selection_budget().ms_per_frame, Some(25.0));
        let mut d = Driver::new(ctl, |_| sample(true));
        d.links = Some(&CopyLinks);
        d.send(Event::LinksReady {
            cause: Cause::Startup,
        });
        let n_active = d.c.active().len();
        assert!(
            (1..=2).contains(&n_active),
            "at most two 10 ms models fit 25 ms"
        );
        let last_select = |d: &Driver| {
            d.log
                .iter()
                .rev()
                .find_map(|c| match c {
                    Command::Select(s) => Some((**s).clone()),
                    _ => None,
                })
                .unwrap()
        };
        assert!(!last_select(&d).rate_unmet);
        // More cameras: 5 ms a frame fits no model; the cheapest serves, and it is said.
        d.send(Event::OfferedRate {
            ms_per_frame: Some(5.0),
        });
        let sel = last_select(&d);
        assert_eq!(sel.cause, Cause::OfferedRate);
        assert_eq!(sel.to.len(), 1, "{sel:?}");
        assert!(sel.rate_unmet, "{sel:?}");
        // Measured far over the rate (profiling in turns, say): still the cheapest serves
        // rather than nothing.
        d.send(Event::OfferedRate {
            ms_per_frame: Some(25.0),
        });
        let active: Vec<usize> = d.c.active().iter().collect();
        for _ in 0..COST_MIN_FRAMES {
            d.send(Event::Cost {
                period_ms: 0.0,
                ms: 400.0,
                models: active.iter().map(|&m| (m, 10.0)).collect(),
                link_ms: None,
            });
        }
        let sel = last_select(&d);
        assert_eq!(sel.cause, Cause::OverBudget);
        assert_eq!(sel.to.len(), 1, "{sel:?}");
        assert!(sel.rate_unmet, "{sel:?}");
        // Each model measured at 400 ms makes the others, still at their declared 10 ms,
        // look cheaper: the set moves until every model has been measured, then stays, as
        // nothing cheaper exists.
        let cost_400 = |d: &mut Driver, frames: u64| {
            for _ in 0..frames {
                let models = d.c.active().iter().map(|m| (m, 400.0)).collect();
                d.send(Event::Cost {
                    period_ms: 0.0,
                    ms: 400.0,
                    models,
                    link_ms: None,
                });
            }
        };
        cost_400(&mut d, 3 * 3 * COST_MIN_FRAMES);
        let n = d.selections().len();
        cost_400(&mut d, 3 * COST_MIN_FRAMES);
        assert_eq!(d.selections().len(), n, "{:?}", &d.selections()[n..]);
        d.send(Event::OfferedRate {
            ms_per_frame: Some(5.0),
        });
        // The same rate again changes nothing.
        let n = d.selections().len();
        d.send(Event::OfferedRate {
            ms_per_frame: Some(5.0),
        });
        assert_eq!(d.selections().len(), n);
        // No cap: the memory budget alone holds all three.
        d.send(Event::OfferedRate { ms_per_frame: None });
        let sel = last_select(&d);
        assert_eq!(
            (sel.cause, sel.rate_unmet),
            (Cause::OfferedRate, false),
            "{sel:?}"
        );
        assert!(!sel.to.is_empty());
        // The pipeline's own time budget still applies under a looser rate.
        d.c.set_rate_budget(Some(1000.0));
        let b = Budget {
            memory_mb: Some(300.0),
            ms_per_frame: Some(15.0),
        };
        d.send(Event::ConfigChanged {
            settings: Box::new(settings()),
            budget: b,
            costs: costs(),
        });
        assert_eq!(d.c.selection_budget().ms_per_frame, Some(15.0));
        assert_eq!(d.c.active().len(), 1);
    }

    #[test]
    fn profiling_overhead_counts_against_the_time_budget() {
        // Declared costs are right (10 ms), but profiling adds 10 ms a frame on average:
        // 20 + 10 = 30 > 25, so one model must go.
        let mut d = serving_within_25_ms();
        let active: Vec<usize> = d.c.active().iter().collect();
        for _ in 0..COST_MIN_FRAMES {
            d.send(Event::Cost {
                period_ms: 0.0,
                ms: 30.0,
                models: active.iter().map(|&m| (m, 10.0)).collect(),
                link_ms: None,
            });
        }
        let last = d.selections().last().cloned().unwrap();
        assert_eq!((last.2, last.1.len()), (Cause::OverBudget, 1));
    }

    #[test]
    fn the_first_run_of_freshly_loaded_sessions_does_not_reselect() {
        // Two models at 10 ms serve within 25 ms; the first frame after the selection takes
        // 200 ms (sessions just created), the next ones 20 ms. Metered, the first would keep
        // the average over 25 ms for more than 20 frames.
        let mut d = serving_within_25_ms();
        let before = d.selections().len();
        for i in 0..3 * COST_MIN_FRAMES {
            let models = d.c.active().iter().map(|m| (m, 10.0)).collect();
            d.send(Event::Cost {
                ms: if i == 0 { 200.0 } else { 20.0 },
                period_ms: 0.0,
                models,
                link_ms: None,
            });
        }
        assert_eq!(d.selections().len(), before, "{:?}", d.selections());
        assert_eq!(d.c.measured_ms_per_frame(), Some(20.0));
    }

    #[test]
    fn a_period_burst_is_spread_over_the_period_not_charged_to_its_frame() {
        // Two models at 10 ms serve within 25 ms. Each period's profiling takes 60 ms on the
        // account of one frame: spread over the period's 10 frames that is 6 ms a frame,
        // 26 ms in all, one over. Charged to its frame, the burst alone would have pushed
        // the per-frame average to 24 + 20 = 44 ms at once.
        let mut d = serving_within_25_ms();
        assert_eq!(d.c.active().len(), 2);
        let cost = |d: &mut Driver, period_ms: f64| {
            let models = d.c.active().iter().map(|m| (m, 10.0)).collect();
            d.send(Event::Cost {
                ms: 20.0,
                period_ms,
                models,
                link_ms: None,
            });
        };
        // The first period: its burst lands in the partial window from the start of serving.
        for i in 0..10u64 {
            d.frame(i, i as f64);
            cost(&mut d, if i == 1 { 60.0 } else { 0.0 });
            assert_eq!(d.c.period_ms_per_frame(), None, "frame {i}");
        }
        let before = d.selections().len();
        // The second period ends its profiling at frame 11: the window since frame 1 holds
        // one burst over 10 frames.
        for i in 10..12u64 {
            d.frame(i, i as f64);
            cost(&mut d, if i == 11 { 60.0 } else { 0.0 });
        }
        let share = d.c.period_ms_per_frame().unwrap();
        assert!((share - 6.0).abs() < 1e-9, "{share}");
        let over: Vec<_> = d.selections()[before..]
            .iter()
            .filter(|s| s.2 == Cause::OverBudget)
            .cloned()
            .collect();
        assert!(over.is_empty(), "the burst alone re-selected: {over:?}");
        // Serving plus the share (20 + 6) exceeds 25: the next frames re-select to one model.
        let before = d.selections().len();
        for i in 12..12 + 3 * COST_MIN_FRAMES {
            d.frame(i, i as f64);
            cost(&mut d, if i % 10 == 1 { 60.0 } else { 0.0 });
        }
        let over = d.selections()[before..]
            .iter()
            .find(|s| s.2 == Cause::OverBudget)
            .cloned();
        assert_eq!(over.map(|s| s.1.len()), Some(1));
    }

    #[test]
    fn a_budget_equal_to_the_cheapest_model_still_serves_it() {
        let specs = vec![OutputSpec::vector(1, TaskKind::Count); 3];
        let mut c = costs();
        c.link = Cost::new(1.0, 0.1);
        let ctl = Controller::new(
            settings(),
            specs,
            c,
            Budget::memory(100.0),
            vec![None; 3],
            false,
        )
        .unwrap();
        let mut d = Driver::new(ctl, |_| sample(true));
        d.links = Some(&CopyLinks);
        d.send(Event::LinksReady {
            cause: Cause::Startup,
        });
        // A model and its two links take 102 MB: the model alone is served, unpredicted.
        assert_eq!(d.c.active().len(), 1);
        d.frame(0, 0.0);
        d.frame(1, 1.0);
        let predict: Vec<bool> = d
            .log
            .iter()
            .filter_map(|c| match c {
                Command::Serve { predict, .. } => Some(*predict),
                _ => None,
            })
            .collect();
        assert_eq!(predict, [false, false]);
        let sel = match d.log.iter().rev().find(|c| matches!(c, Command::Select(_))) {
            Some(Command::Select(s)) => s.clone(),
            _ => unreachable!(),
        };
        assert!(
            !sel.predict && sel.reason.contains("without predictions"),
            "{sel:?}"
        );
    }

    #[test]
    fn a_failed_model_is_excluded_and_retried_with_backoff() {
        let mut d = serving(settings(), 1000.0, |_| sample(true));
        d.frame(0, 0.0);
        d.frame(1, 1.0);
        assert_eq!(d.c.active().len(), 3);
        d.send(Event::ModelFailed { model: 1 });
        let last = d.selections().last().cloned().unwrap();
        assert_eq!(last.2, Cause::ModelFailure);
        assert_eq!(last.1, [0, 2]);
        assert_eq!(d.c.failed().iter().collect::<Vec<_>>(), [1]);
        // Retried 5 s of video later.
        d.frame(2, 5.9);
        assert!(!d.c.active().contains(1));
        d.frame(3, 6.0);
        let last = d.selections().last().cloned().unwrap();
        assert_eq!(
            (last.1.clone(), last.2),
            (vec![0, 1, 2], Cause::ModelFailure)
        );
        // A second failure waits twice as long.
        d.send(Event::ModelFailed { model: 1 });
        d.frame(4, 15.9);
        assert!(!d.c.active().contains(1));
        d.frame(5, 16.0);
        assert!(d.c.active().contains(1));
        // A model outside the set failing (while profiling) is excluded, nothing re-selected.
        let mut d = serving(settings(), 150.0, |_| sample(true));
        let outside = (0..3).find(|m| !d.c.active().contains(*m)).unwrap();
        let cmds =
            d.c.handle(Event::ModelFailed { model: outside }, d.links)
                .unwrap();
        assert!(cmds.is_empty(), "{cmds:?}");
        assert!(d.c.failed().contains(outside));
    }

    #[test]
    fn groups_in_turns_run_parents_first() {
        // 2 crops the boxes of 0; first-fit by memory would put 2 before 0.
        let mut c = Costs {
            models: vec![
                Cost::new(50.0, 1.0),
                Cost::new(100.0, 1.0),
                Cost::new(60.0, 1.0),
            ],
            link: Cost::ZERO,
            per_link: Vec::new(),
        };
        let specs = vec![OutputSpec::vector(1, TaskKind::Count); 3];
        let ctl = Controller::new(
            settings(),
            specs.clone(),
            c.clone(),
            Budget::memory(100.0),
            vec![None, None, Some(0)],
            false,
        )
        .unwrap();
        let groups = ctl.turn_groups();
        let pos = |m: usize| groups.iter().position(|g| g.contains(&m)).unwrap();
        assert!(pos(0) <= pos(2), "{groups:?}");
        c.models[2] = Cost::new(40.0, 1.0);
        let mut g = vec![vec![2, 1], vec![0]];
        order_by_parents(&mut g, &[None, None, Some(0)]);
        assert_eq!(g, vec![vec![1], vec![0], vec![2]]);
    }

    #[test]
    fn all_exact_serves_every_model_and_never_selects() {
        let specs = vec![OutputSpec::vector(1, TaskKind::Count); 3];
        let ctl = Controller::new(
            settings(),
            specs,
            costs(),
            Budget::default(),
            vec![None; 3],
            true,
        )
        .unwrap();
        let mut d = Driver::new(ctl, |_| sample(true));
        assert!(d.c.start().is_empty());
        for i in 0..30 {
            d.frame(i, i as f64);
        }
        assert_eq!(d.served.len(), 30);
        assert!(d.served.iter().all(|s| s.1.len() == 3));
        assert!(d.selections().is_empty());
    }
}
