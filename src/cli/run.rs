//! `mlink run PIPELINE`: the live engine.

use crate::engine::{self, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Stop after this many frames (all cameras together).
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Where to save trained links when the pipeline names no bundle (default out/<pipeline>.links).
    #[arg(long)]
    pub links_out: Option<PathBuf>,
    /// Serve /metrics here instead of the pipeline's address (`127.0.0.1:0` for any free port).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Seconds between checks of the pipeline file and the link bundle file for edits; 0
    /// disables hot reload.
    #[arg(long, default_value_t = 1.0)]
    pub reload_check: f64,
    /// Decode files as fast as the engine takes frames, dropping none (batch processing of
    /// recordings); live sources are unaffected.
    #[arg(long)]
    pub offline: bool,
    /// Print the run summary as JSON on standard output at the end.
    #[arg(long)]
    pub summary_json: bool,
    /// Load this link bundle instead of the pipeline's (or instead of warming up).
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// Write every selection of the active set here at the end, one JSON object a line:
    /// `{"frame": frames seen, "active": [model ids], "cause": "period"}`.
    #[arg(long, value_name = "FILE")]
    pub decisions: Option<PathBuf>,
    /// Threads the models' stages run on (ONNX Runtime intra-op threads, parallel pre- and
    /// post-processing of a batch); 0: the machine's cores.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Frames taken from the cameras at once and run through each model together; 0: one per
    /// camera (up to 16). `--workers 1 --batch 1` serves one frame at a time on one thread.
    #[arg(long, default_value_t = 0)]
    pub batch: usize,
    /// Select without the time budget the cameras' offered rate implies (frames a set cannot
    /// keep up with are then dropped).
    #[arg(long)]
    pub ignore_offered_rate: bool,
    /// Most MB of frames kept from live cameras while the models run in turns (profiling and
    /// labelling under a memory budget), served after them; 0: none (the cameras' queues drop
    /// what does not fit meanwhile).
    #[arg(long, value_name = "MB", default_value_t = engine::backlog::DEFAULT_BACKLOG_MB)]
    pub turns_backlog_mb: f64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = RunOptions {
        max_frames: args.max_frames,
        duration: args.duration.map(Duration::from_secs_f64),
        links_out: args.links_out,
        metrics_listen: args.metrics_listen,
        reload_check_s: args.reload_check,
        offline: args.offline,
        bundle: args.bundle,
        decisions: args.decisions,
        workers: args.workers,
        batch: args.batch,
        ignore_offered_rate: args.ignore_offered_rate,
        turns_backlog_mb: Some(args.turns_backlog_mb),
        ..RunOptions::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let summary = engine::run(&args.pipeline, opts, stop)?;
    if args.summary_json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    eprintln!(
        "mlink: {} frames: {} exact, {} predicted, {} reused, {} unavailable outputs; {} profiling frames; {} re-selections; \
         peak model memory {:.1} MB (budget {}); {:.1} ms CPU per frame; active at the end: {:?}",
        summary.frames,
        summary.exact_outputs,
        summary.predicted_outputs,
        summary.reused_outputs,
        summary.unavailable_outputs,
        summary.profiling_frames,
        summary.reselections,
        summary.peak_memory_mb,
        summary
            .budget_memory_mb
            .map_or("none".to_string(), |b| format!("{b:.1} MB")),
        summary.cpu_ms_per_frame,
        summary.active,
    );
    if !summary.predicted_accuracy.is_empty() {
        let parts: Vec<String> = summary
            .predicted_accuracy
            .iter()
            .map(|(id, a)| format!("{id} {:.1}%", a * 100.0))
            .collect();
        eprintln!(
            "mlink: accuracy of the predicted outputs on the latest profiling frames: {}",
            parts.join(", ")
        );
    }
    if let Some(l) = &summary.links {
        eprintln!("mlink: links saved in {}", l.display());
    }
    Ok(ExitCode::SUCCESS)
}
