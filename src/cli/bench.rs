//! `mlink bench ...`: speed measurements of the engine's parts.

use crate::models::{ModelCost, profile_model, synthetic_frame};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: Bench,
}

#[derive(clap::Subcommand, Debug)]
pub enum Bench {
    /// Per-model latency and the share of pre- and post-processing in it.
    Models(ModelsArgs),
    /// Link training and prediction times.
    Links(super::bench_links::Args),
    /// Model selection time for several model counts.
    Schedule(super::bench_schedule::Args),
    /// Concurrent link training and prediction, bundle memory, federated round bytes (Fig. 11).
    Overheads(super::bench_overheads::Args),
    /// Decode, scale and convert throughput of a video file.
    #[cfg(feature = "gst")]
    Ingest(super::bench_ingest::BenchIngestArgs),
    /// CPU time per frame with every model exact versus under the pipeline's budget with links.
    #[cfg(feature = "gst")]
    Engine(super::bench_engine::Args),
}

#[derive(clap::Args, Debug)]
pub struct ModelsArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Warm runs per model.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        Bench::Models(a) => models(a),
        Bench::Links(a) => super::bench_links::run(a),
        Bench::Schedule(a) => super::bench_schedule::run(a),
        Bench::Overheads(a) => super::bench_overheads::run(a),
        #[cfg(feature = "gst")]
        Bench::Ingest(a) => super::bench_ingest::run(a),
        #[cfg(feature = "gst")]
        Bench::Engine(a) => super::bench_engine::run(a),
    }
}

fn models(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    let (pipeline, base) = super::profile::load_pipeline(&args.pipeline)?;
    let info = crate::models::init_runtime()?;
    let (w, h) = super::profile::frame_size(&pipeline);
    let frame = synthetic_frame(w, h);
    let metrics = crate::metrics::global();
    let costs: Vec<ModelCost> = pipeline
        .models
        .iter()
        .map(|m| {
            profile_model(m, &base, &frame, args.runs, &metrics)
                .with_context(|| format!("benchmarking model {}", m.id))
        })
        .collect::<anyhow::Result<_>>()?;
    if args.json {
        let rows: Vec<_> = costs
            .iter()
            .map(|c| serde_json::json!({ "cost": c, "overhead_share": c.overhead_share() }))
            .collect();
        let out = serde_json::json!({
            "format_version": 1,
            "runtime": info,
            "frame": { "width": w, "height": h },
            "models": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "provider: {}   frame: {w}x{h}   runs: {}",
            info.provider, args.runs
        );
        println!(
            "{:<24} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "model", "total ms", "pre ms", "run ms", "post ms", "pre+post"
        );
        for c in &costs {
            println!(
                "{:<24} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.1}%",
                c.model,
                c.latency_ms,
                c.pre_ms,
                c.run_ms,
                c.post_ms,
                100.0 * c.overhead_share()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
