//! Offline evaluation: replay of scheduling methods over recorded traces, baselines (Standalone,
//! MTL, DRLS, Reducto, Optimal, distilled students) and reports (paper section 6.6).
//!
//! Pure Rust apart from the optional OpenCV frame features (feature `opencv`, in
//! [`features`]): no GStreamer, no ONNX Runtime.

pub mod drls;
#[cfg(feature = "opencv")]
pub mod features;
pub mod kd;
pub mod linker;
pub mod mtl;
pub mod online;
pub mod pixelnet;
pub mod plot;
pub mod problem;
pub mod reducto;
pub mod replay;
pub mod report;
pub mod stats;

pub use linker::LinkLearners;
pub use problem::{FrameRow, ModelInfo, Problem};
pub use replay::{Method, Outcome, Period, Replay, ReplayConfig};
pub use report::{
    Report, budget_label, default_budgets, evaluate, render_markdown, render_text, write_report,
};

use std::path::PathBuf;

/// How a model is scored against its exact output (the task's metric, in [0, 1]).
pub(crate) use crate::output::score;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Invalid(String),
    #[error("training the links: {0}")]
    Links(String),
    #[error("selecting models: {0}")]
    Schedule(String),
    #[error("drawing a plot: {0}")]
    Plot(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
