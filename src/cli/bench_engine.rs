//! `mlink bench engine PIPELINE`: CPU time per frame with every model exact versus under the
//! pipeline's budget with links, on the same frames, and the average output accuracy of the
//! budgeted run scored against the exact run record by record.
//!
//! `mlink bench engine PIPELINE --cameras 1,2,4,8,16`: camera scaling. The pipeline's cameras
//! are run N times each, live (at their sampling rate, dropping frames the engine cannot
//! take), under the pipeline's budget with the same links, by the single-worker engine
//! (`--workers 1 --batch 1`) and by the pipelined, batched one, one after the other for each
//! N; the largest N each serves in real time is reported.

use crate::engine::record::OutputRecord;
use crate::engine::{self, RunOptions, RunSummary};
use crate::output::score;
use anyhow::Context;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Frames measured in each run.
    #[arg(long, default_value_t = 200)]
    pub frames: u64,
    /// A link bundle to use; without one, links are first trained by a warm-up run.
    #[arg(long)]
    pub links: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Camera scaling instead: copies of the pipeline's cameras to run, e.g. `1,2,4,8,16`.
    #[arg(long, value_delimiter = ',')]
    pub cameras: Vec<usize>,
    /// Seconds each scaling run lasts.
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
    /// Workers and batch size of the scaled engine (0: the machine's cores, one frame per
    /// camera).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    #[arg(long, default_value_t = 0)]
    pub batch: usize,
}

/// Most frames dropped, as a share of those the cameras delivered, for a run to count as
/// real time (a few can go while the first selection loads its models).
pub const REAL_TIME_DROP_SHARE: f64 = 0.01;
/// Largest mean frame latency, in seconds, for a run to count as real time.
pub const REAL_TIME_LATENCY_S: f64 = 1.0;

fn quiet_options(frames: u64) -> RunOptions {
    RunOptions {
        max_frames: Some(frames),
        metrics_listen: Some("127.0.0.1:0".into()),
        offline: true,
        ..RunOptions::default()
    }
}

fn capture_run(
    args: &Args,
    mut opts: RunOptions,
) -> anyhow::Result<(RunSummary, Vec<OutputRecord>)> {
    let records = Arc::new(Mutex::new(Vec::new()));
    opts.capture = Some(records.clone());
    let summary = engine::run(&args.pipeline, opts, Arc::new(AtomicBool::new(false)))?;
    let recs = records.lock().map(|v| v.clone()).unwrap_or_default();
    Ok((summary, recs))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let links = links_for(&args)?;
    if !args.cameras.is_empty() {
        return scaling(&args, &links);
    }
    let exact = capture_run(
        &args,
        RunOptions {
            unbounded: true,
            ..quiet_options(args.frames)
        },
    )?;
    let budgeted = capture_run(
        &args,
        RunOptions {
            bundle: Some(links.clone()),
            ..quiet_options(args.frames)
        },
    )?;

    // Score every budgeted record against the exact run's record of the same frame and model.
    let cfg = super::load_valid_pipeline(&args.pipeline)?;
    let base = crate::config::base_dir(&args.pipeline);
    let specs: HashMap<String, crate::output::OutputSpec> = cfg
        .models
        .iter()
        .map(|m| crate::models::head_spec(m, &base).map(|s| (m.id.clone(), s)))
        .collect::<Result<_, _>>()?;
    let truth: HashMap<(String, u64, String), &OutputRecord> = exact
        .1
        .iter()
        .map(|r| ((r.camera.clone(), r.seq, r.model.clone()), r))
        .collect();
    let (mut total, mut n) = (0.0, 0usize);
    for r in &budgeted.1 {
        let Some(t) = truth.get(&(r.camera.clone(), r.seq, r.model.clone())) else {
            continue;
        };
        let (Some(spec), Some(tv)) = (specs.get(&r.model), &t.value) else {
            continue;
        };
        total += r.value.as_ref().map_or(0.0, |v| score(spec, v, tv));
        n += 1;
    }
    let accuracy = if n > 0 { total / n as f64 } else { 0.0 };
    let ratio = budgeted.0.cpu_ms_per_frame / exact.0.cpu_ms_per_frame.max(1e-9);
    let json = serde_json::json!({
        "format_version": 1,
        "pipeline": args.pipeline.display().to_string(),
        "frames": args.frames,
        "exact": { "cpu_ms_per_frame": exact.0.cpu_ms_per_frame, "frames": exact.0.frames },
        "budgeted": {
            "cpu_ms_per_frame": budgeted.0.cpu_ms_per_frame,
            "frames": budgeted.0.frames,
            "active": budgeted.0.active,
            "budget_memory_mb": budgeted.0.budget_memory_mb,
            "peak_memory_mb": budgeted.0.peak_memory_mb,
            "exact_outputs": budgeted.0.exact_outputs,
            "predicted_outputs": budgeted.0.predicted_outputs,
            "profiling_frames": budgeted.0.profiling_frames,
        },
        "cpu_ratio": ratio,
        "average_output_accuracy": accuracy,
        "scored_records": n,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("frames per run:             {}", args.frames);
        println!(
            "all models exact:           {:.1} ms CPU per frame",
            exact.0.cpu_ms_per_frame
        );
        println!(
            "budgeted with links:        {:.1} ms CPU per frame (active {:?}, peak {:.0} MB of {:?} MB)",
            budgeted.0.cpu_ms_per_frame,
            budgeted.0.active,
            budgeted.0.peak_memory_mb,
            budgeted.0.budget_memory_mb
        );
        println!("CPU ratio:                  {:.1}%", ratio * 100.0);
        println!(
            "average output accuracy:    {:.3} over {n} records",
            accuracy
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One engine configuration of the scaling bench.
struct Mode {
    name: &'static str,
    workers: usize,
    batch: usize,
    rate_budget: bool,
    /// Frames taken in while the models run in turns ([`engine::backlog`]).
    backlog: bool,
}

/// The scaling bench (see the module).
fn scaling(args: &Args, links: &Path) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds > 0.0,
        "--seconds must be positive"
    );
    anyhow::ensure!(
        args.cameras.iter().all(|&n| n >= 1),
        "--cameras takes counts of at least 1"
    );
    // The engine before (one frame at a time on one thread, no rate budget, runs in turns
    // blocking ingest), the same with the rate budget and the turns backlog, the pipelined,
    // batched engine with the rate budget but runs in turns blocking ingest, and with both.
    let modes = [
        Mode {
            name: "before",
            workers: 1,
            batch: 1,
            rate_budget: false,
            backlog: false,
        },
        Mode {
            name: "single_worker",
            workers: 1,
            batch: 1,
            rate_budget: true,
            backlog: true,
        },
        Mode {
            name: "pipelined_blocking",
            workers: args.workers,
            batch: args.batch,
            rate_budget: true,
            backlog: false,
        },
        Mode {
            name: "pipelined",
            workers: args.workers,
            batch: args.batch,
            rate_budget: true,
            backlog: true,
        },
    ];
    let mut rows = Vec::new();
    for &n in &args.cameras {
        for mode in &modes {
            eprintln!(
                "{n} camera copies, {} engine, {} s live",
                mode.name, args.seconds
            );
            let opts = RunOptions {
                duration: Some(std::time::Duration::from_secs_f64(args.seconds)),
                metrics_listen: Some("127.0.0.1:0".into()),
                bundle: Some(links.to_path_buf()),
                camera_copies: n,
                workers: mode.workers,
                batch: mode.batch,
                ignore_offered_rate: !mode.rate_budget,
                turns_backlog_mb: Some(if mode.backlog {
                    engine::backlog::DEFAULT_BACKLOG_MB
                } else {
                    0.0
                }),
                reload_check_s: 0.0,
                ..RunOptions::default()
            };
            let s = engine::run(&args.pipeline, opts, Arc::new(AtomicBool::new(false)))?;
            rows.push(ScalingRow::new(n, mode.name, args.seconds, &s));
        }
    }
    let best_by = |mode: &str, serving_only: bool| {
        rows.iter()
            .filter(|r| {
                r.mode == mode
                    && if serving_only {
                        r.real_time_between_turns
                    } else {
                        r.real_time
                    }
            })
            .map(|r| r.cameras)
            .max()
            .unwrap_or(0)
    };
    let best = |mode: &str| best_by(mode, false);
    let best_serving = |mode: &str| best_by(mode, true);
    let json = serde_json::json!({
        "format_version": 1,
        "pipeline": args.pipeline.display().to_string(),
        "seconds_per_run": args.seconds,
        "machine_cores": engine::rate::machine_cores(),
        "real_time": {
            "max_drop_share": REAL_TIME_DROP_SHARE,
            "max_mean_latency_s": REAL_TIME_LATENCY_S,
        },
        "runs": rows,
        "max_real_time_cameras": {
            "before": best("before"),
            "single_worker": best("single_worker"),
            "pipelined_blocking": best("pipelined_blocking"),
            "pipelined": best("pipelined"),
        },
        "max_real_time_cameras_between_turns": {
            "before": best_serving("before"),
            "single_worker": best_serving("single_worker"),
            "pipelined_blocking": best_serving("pipelined_blocking"),
            "pipelined": best_serving("pipelined"),
        },
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!(
            "| cameras | engine | workers x batch | offered fps | served fps | dropped | of which in turns | mean latency s | CPU ms/frame | rate budget ms | active at the end | real time | between turns |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {} | {} x {} | {:.1} | {:.1} | {:.1}% | {:.1}% | {:.2} | {:.1} | {} | {} | {} | {} |",
                r.cameras,
                r.mode,
                r.workers,
                r.batch,
                r.offered_fps,
                r.served_fps,
                r.drop_share * 100.0,
                r.turns_drop_share * 100.0,
                r.mean_latency_s,
                r.cpu_ms_per_frame,
                r.rate_budget_ms
                    .map_or("none".to_string(), |b| format!("{b:.1}")),
                r.active.join("+"),
                if r.real_time { "yes" } else { "no" },
                if r.real_time_between_turns {
                    "yes"
                } else {
                    "no"
                },
            );
        }
        println!(
            "largest real-time camera count: before {}, single worker {}, pipelined without the turns backlog {}, pipelined {}",
            best("before"),
            best("single_worker"),
            best("pipelined_blocking"),
            best("pipelined")
        );
        println!(
            "counting only drops outside runs in turns: before {}, single worker {}, pipelined without the turns backlog {}, pipelined {}",
            best_serving("before"),
            best_serving("single_worker"),
            best_serving("pipelined_blocking"),
            best_serving("pipelined")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One scaling run's figures.
#[derive(serde::Serialize)]
struct ScalingRow {
    cameras: usize,
    mode: &'static str,
    workers: usize,
    batch: usize,
    offered_fps: f64,
    frames: u64,
    served_fps: f64,
    frames_ingested: u64,
    frames_dropped: u64,
    frames_dropped_in_turns: u64,
    drop_share: f64,
    turns_drop_share: f64,
    mean_latency_s: f64,
    cpu_ms_per_frame: f64,
    rate_budget_ms: Option<f64>,
    rate_unmet_selections: u64,
    reselections: u64,
    profiling_frames: u64,
    /// Frames taken in while the models ran in turns, and the most held at once.
    backlog_frames: u64,
    backlog_peak_frames: usize,
    active: Vec<String>,
    /// No more than [`REAL_TIME_DROP_SHARE`] dropped, mean latency within
    /// [`REAL_TIME_LATENCY_S`].
    real_time: bool,
    /// The same, not counting the frames dropped while the models ran in turns.
    real_time_between_turns: bool,
}

impl ScalingRow {
    fn new(cameras: usize, mode: &'static str, seconds: f64, s: &RunSummary) -> Self {
        let share = |n: u64| {
            if s.frames_ingested > 0 {
                n as f64 / s.frames_ingested as f64
            } else {
                1.0
            }
        };
        let drop_share = share(s.frames_dropped);
        let turns_drop_share = share(s.frames_dropped_in_turns.min(s.frames_dropped));
        let keeps_up = |dropped: f64| {
            s.frames > 0
                && dropped <= REAL_TIME_DROP_SHARE
                && s.mean_frame_latency_s <= REAL_TIME_LATENCY_S
        };
        ScalingRow {
            cameras,
            mode,
            workers: s.workers,
            batch: s.batch,
            offered_fps: s.offered_fps,
            frames: s.frames,
            served_fps: s.frames as f64 / seconds,
            frames_ingested: s.frames_ingested,
            frames_dropped: s.frames_dropped,
            frames_dropped_in_turns: s.frames_dropped_in_turns,
            drop_share,
            turns_drop_share,
            mean_latency_s: s.mean_frame_latency_s,
            cpu_ms_per_frame: s.cpu_ms_per_frame,
            rate_budget_ms: s.rate_budget_ms,
            rate_unmet_selections: s.rate_unmet_selections,
            reselections: s.reselections,
            profiling_frames: s.profiling_frames,
            backlog_frames: s.backlog_frames,
            backlog_peak_frames: s.backlog_peak_frames,
            active: s.active.clone(),
            real_time: keeps_up(drop_share),
            real_time_between_turns: keeps_up(drop_share - turns_drop_share),
        }
    }
}

/// The links the runs use: `--links`, or trained by a warm-up run.
fn links_for(args: &Args) -> anyhow::Result<PathBuf> {
    let links = match &args.links {
        Some(l) => l.clone(),
        None => {
            let out =
                std::env::temp_dir().join(format!("mlink-bench-{}.links", std::process::id()));
            eprintln!(
                "training links with a warm-up run (saved to {})",
                out.display()
            );
            // The warm-up run stops as soon as its links can have been trained.
            let cfg = super::load_valid_pipeline(&args.pipeline)?;
            let o = RunOptions {
                links_out: Some(out.clone()),
                ..quiet_options(cfg.links.warmup_samples as u64 + 1)
            };
            let s = engine::run(&args.pipeline, o, Arc::new(AtomicBool::new(false)))?;
            s.links.context(
                "the warm-up run ended before its links were trained (not enough frames?)",
            )?
        }
    };
    Ok(links)
}
