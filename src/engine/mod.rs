//! The live system behind `mlink run` (paper Algorithm 2): a thin driver around the pure
//! controller ([`crate::control`]), which decides what runs; camera frames feed ONNX Runtime
//! sessions for the active models while link ensembles predict the others.
//!
//! - [`wiring`]: builds the pool, sinks, links and controller from the pipeline file.
//! - `frames`: the frame/timer loop that turns frames into controller events.
//! - `driver`: carries out the controller's commands (serve, profile, run in turns, select,
//!   train).
//! - `signals`, `reload`: the metrics endpoint with SIGINT/SIGTERM, and hot reload.
//! - [`startup`]: the start-up checks `mlink run` and `mlink validate` share.
//! - [`exec`]: budget-checked model loads and dependency-ordered execution.
//! - [`online`]: online link training off the frame path.
//! - [`record`], [`sink`]: output records and where they go.

#[cfg(feature = "gst")]
pub mod backlog;
mod driver;
pub mod exec;
#[cfg(feature = "gst")]
mod frames;
pub mod online;
pub mod rate;
pub mod record;
#[cfg(feature = "gst")]
mod reload;
mod reuse;
#[cfg(feature = "gst")]
mod signals;
pub mod sink;
pub mod startup;
#[cfg(feature = "gst")]
pub mod wiring;

#[cfg(feature = "gst")]
pub use wiring::run;

use crate::config::ConfigError;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid pipeline:\n{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigError>),
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error(transparent)]
    Exec(#[from] exec::ExecError),
    #[error(transparent)]
    Schedule(#[from] crate::schedule::ScheduleError),
    #[error(transparent)]
    Bundle(#[from] crate::link::BundleError),
    #[error("link training failed: {0}")]
    Link(#[from] crate::link::LinkError),
    #[error(transparent)]
    Sink(#[from] sink::SinkError),
    #[cfg(feature = "gst")]
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// Options of one run that are not part of the pipeline file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Stop after this many frames (all cameras together).
    pub max_frames: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Where trained links are saved when the pipeline names no bundle.
    pub links_out: Option<PathBuf>,
    /// Override the metrics address of the pipeline file (`127.0.0.1:0` picks a free port).
    pub metrics_listen: Option<String>,
    /// Seconds between checks of the pipeline file for edits (hot reload); 0 disables.
    pub reload_check_s: f64,
    /// Load this link bundle instead of the pipeline's (or instead of warming up).
    pub bundle: Option<PathBuf>,
    /// Ignore the budget: every model runs exactly (the baseline of `mlink bench engine`).
    pub unbounded: bool,
    /// Decode files as fast as the engine takes frames, dropping none (benchmarks, batch runs);
    /// live sources are unaffected.
    pub offline: bool,
    /// Write every selection (frame count, active set, cause) here as JSON lines at the end.
    pub decisions: Option<PathBuf>,
    /// Also keep every record in memory (benchmarks compare runs record by record).
    pub capture: Option<std::sync::Arc<std::sync::Mutex<Vec<record::OutputRecord>>>>,
    /// Threads the models' stages run on: ONNX Runtime intra-op threads of each session, and
    /// the parallel pre- and post-processing of a batch. 0: the machine's cores. With
    /// `batch` 1 and `workers` 1 the engine serves one frame at a time on one thread.
    pub workers: usize,
    /// Frames taken from the cameras at once and run through each model together (one
    /// ONNX Runtime call where the model takes a batch). 0: one per camera, up to
    /// [`rate::MAX_AUTO_BATCH`].
    pub batch: usize,
    /// Select without the time budget the cameras' offered rate implies (the engine before it
    /// had one; `mlink bench engine --cameras` compares).
    pub ignore_offered_rate: bool,
    /// Runs every camera of the pipeline this many times (copies named `<id>-2`, `<id>-3`,
    /// ...), for `mlink bench engine --cameras`. 0 or 1: the cameras as in the file.
    pub camera_copies: usize,
    /// Most MB of frames kept from the cameras while the models run in turns, served after
    /// them ([`backlog`]); None: [`backlog::DEFAULT_BACKLOG_MB`]; 0: none (runs in turns
    /// block ingest and the cameras' queues drop what does not fit).
    pub turns_backlog_mb: Option<f64>,
}

/// What a run did, for the CLI, tests and benchmarks.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunSummary {
    pub frames: u64,
    pub exact_outputs: u64,
    pub predicted_outputs: u64,
    /// Outputs of triggered models served from their last exact output (policy hybrid).
    pub reused_outputs: u64,
    pub unavailable_outputs: u64,
    pub profiling_frames: u64,
    pub reselections: u64,
    pub budget_memory_mb: Option<f64>,
    /// Most memory the loaded models took at any moment (accounted with their costs).
    pub peak_memory_mb: f64,
    /// CPU time of the process per frame, in ms.
    pub cpu_ms_per_frame: f64,
    /// The active set at the end.
    pub active: Vec<String>,
    /// Where the links were saved.
    pub links: Option<PathBuf>,
    /// Address the metrics were served on.
    pub metrics_addr: Option<String>,
    /// Online link training runs that finished (periodic, uncertainty, loss prediction).
    pub online_training_runs: u64,
    /// Federated rounds this engine took part in as an edge (`adaptation.aggregator`).
    pub federated_rounds: u64,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
    /// Per model predicted at some point: the accuracy of its predicted outputs measured on
    /// the latest profiling frames (model id, accuracy in [0, 1]).
    pub predicted_accuracy: Vec<(String, f64)>,
    /// Most host memory the loaded sessions measurably took at once (RSS growth at each
    /// session's creation, summed over the loaded ones), in MB.
    pub peak_measured_memory_mb: f64,
    /// Frames the cameras delivered after sampling, and those dropped because the engine was
    /// behind (drop-oldest; offline runs drop none).
    pub frames_ingested: u64,
    pub frames_dropped: u64,
    /// Of the dropped frames, those dropped while the models ran in turns over kept frames
    /// (profiling and labelling under a memory budget that holds fewer than all models: the
    /// active set is unloaded meanwhile, and serving waits).
    pub frames_dropped_in_turns: u64,
    /// Frames taken into the turns backlog (while the models ran in turns, and from the
    /// cameras while the backlog was served), those dropped over its bound or left at the
    /// end, and the most it held at once.
    pub backlog_frames: u64,
    pub backlog_dropped: u64,
    pub backlog_peak_frames: usize,
    /// Mean time from a frame's capture to its records, in seconds.
    pub mean_frame_latency_s: f64,
    /// Frames per second the cameras offer, and the time per frame (ms) that allows on the
    /// engine's cores (None offline, unbounded, or without cameras).
    pub offered_fps: f64,
    pub rate_budget_ms: Option<f64>,
    /// Selections made when no set could keep up with the offered rate.
    pub rate_unmet_selections: u64,
    /// The workers and batch size the run used.
    pub workers: usize,
    pub batch: usize,
}

/// CPU time (user + system) of this process so far, in seconds.
pub fn process_cpu_seconds() -> f64 {
    // /proc/self/stat fields 14 and 15 are utime and stime in clock ticks.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Field 14 (utime) is index 11 after the state field; ticks are 100 per second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}
