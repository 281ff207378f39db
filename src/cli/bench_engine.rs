//! `mlink bench engine PIPELINE`: CPU time per frame with every model exact versus under the
//! pipeline's budget with links, on the same frames, and the average output accuracy of the
//! budgeted run scored against the exact run record by record.

use crate::engine::record::OutputRecord;
use crate::engine::{self, RunOptions, RunSummary};
use crate::output::score;
use anyhow::Context;
use std::collections::HashMap;
use std::path::PathBuf;
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
}

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
