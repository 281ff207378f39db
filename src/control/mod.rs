//! The scheduling logic of Algorithm 2 as one pure state machine, driven by the live engine
//! (`mlink run`) and by the trace replay (`mlink eval`), so both make the same decisions on
//! the same footage.
//!
//! Typed [`Event`]s go in (a frame with its video time, samples measured, a frame served,
//! links ready, a model failed, the configuration changed); typed [`Command`]s come out (serve
//! a frame with a set, profile it, keep it and later run the models on the kept frames in
//! turns, select with a [`Cause`], start training, fine-tune with a [`TrainingPolicy`], label
//! queued frames). Nothing here touches GStreamer, ONNX Runtime, threads or the wall clock:
//! time is the frames' video time (PTS, trace time).
//!
//! - [`scores`]: the one profiled-score type, the scoring rule and `close_over_parents`.
//! - [`period`]: periods and probe spacing in video time.
//! - [`controller`]: phases (`Warmup`, `Training`, `Serving`), events and commands.
//! - [`hybrid`]: the hybrid policy's plan (per model exact, triggered or predicted) and trigger.

pub mod controller;
pub mod hybrid;
pub mod period;
pub mod scores;

pub use controller::{
    Batch, Command, ControlError, Controller, Decision, Event, FrameId, Labelling, Phase, Purpose,
    Selected, Settings,
};
pub use period::{NextPeriod, PeriodClock, PeriodLength};
pub use scores::{
    BundleLinks, Predictor, ProfiledScores, Row, Views, close_over_parents, mean_score,
    mean_score_viewed,
};

/// Why the active set was (re-)selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// No links yet: the models that fit run, nothing is predicted.
    NoLinks,
    /// Links loaded at start-up.
    Startup,
    /// Links freshly trained on the warm-up samples.
    Trained,
    /// A period's profiling frames were measured.
    Period,
    /// The predicted outputs' measured accuracy dropped below what the selection expected.
    Drift,
    /// The measured time per frame exceeded the budget.
    OverBudget,
    /// The pipeline file or the link bundle file changed.
    Reload,
    /// A model failed or came back after a failure.
    ModelFailure,
    /// The cameras' offered rate changed the time per frame a selection must fit.
    OfferedRate,
    /// Under the hybrid policy, the trigger's operating curves were measured on consecutive
    /// frames after serving started from given links.
    Curves,
}

impl Cause {
    /// The label used by metrics (`cause`), logs and decision files.
    pub fn as_label(self) -> &'static str {
        match self {
            Cause::NoLinks => "no_links",
            Cause::Startup => "startup",
            Cause::Trained => "trained",
            Cause::Period => "period",
            Cause::Drift => "drift",
            Cause::OverBudget => "over_budget",
            Cause::Reload => "reload",
            Cause::ModelFailure => "model_failure",
            Cause::OfferedRate => "offered_rate",
            Cause::Curves => "curves",
        }
    }
}

/// Why links are (re-)trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainingPolicy {
    /// The first training, on the warm-up samples.
    Initial,
    /// Every period, on its profiling samples.
    Periodic,
    /// On frames whose predictions were uncertain, labelled exactly.
    Uncertainty,
    /// On frames whose predicted loss was high, labelled exactly.
    LossPrediction,
    /// An edge of cross-site aggregation trains locally every period.
    FederatedLocal,
}

impl TrainingPolicy {
    /// The label used by metrics (`policy`) and logs.
    pub fn as_label(self) -> &'static str {
        match self {
            TrainingPolicy::Initial => "initial",
            TrainingPolicy::Periodic => "periodic",
            TrainingPolicy::Uncertainty => "uncertainty",
            TrainingPolicy::LossPrediction => "loss_prediction",
            TrainingPolicy::FederatedLocal => "federated_local",
        }
    }
}
