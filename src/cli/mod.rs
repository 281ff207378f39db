//! The `mlink` command line: one subcommand per file in this folder.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod adapt;
mod adapt_eval;
mod aggregate;
mod bench;
#[cfg(feature = "gst")]
mod bench_engine;
#[cfg(feature = "gst")]
mod bench_ingest;
mod bench_links;
mod bench_overheads;
mod bench_schedule;
mod eval;
mod kd;
mod link_export;
mod links;
mod online;
mod profile;
#[cfg(feature = "gst")]
mod record;
#[cfg(feature = "gst")]
mod run;
#[cfg(feature = "gst")]
mod serve_rtsp;
mod simulate;
mod train;
mod validate;

#[derive(Parser, Debug)]
#[command(
    name = "mlink",
    version,
    about = "Streaming video analytics with model links"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check pipeline files without running them.
    Validate(validate::Args),
    /// Measure every model's memory and latency (or show the declared costs).
    Profile(profile::Args),
    /// Speed measurements of the engine's parts.
    Bench(bench::Args),
    /// Train every model link and ensemble from a trace into a link bundle.
    Train(train::Args),
    /// Print a link bundle's link matrix (validation scores, as in the paper's Table III).
    Links(links::Args),
    /// Simulate model selection on random instances (the paper's Fig. 10).
    Simulate(simulate::Args),
    /// Serve cross-domain link aggregation (federated averaging) for edge engines.
    Aggregate(aggregate::Args),
    /// Replay scheduling methods and baselines over a recorded trace; print or write a report.
    Eval(eval::Args),
    /// Model links against distilled students by training size (the paper's Fig. 5).
    Kd(kd::Args),
    /// Offline-Init against online link training policies, segment by segment (Fig. 6).
    Online(online::Args),
    /// Serve a video file in a loop, or a test pattern, as an RTSP camera.
    #[cfg(feature = "gst")]
    ServeRtsp(serve_rtsp::ServeRtspArgs),
    /// Run a pipeline: cameras, models, links, scheduler, sinks and metrics.
    #[cfg(feature = "gst")]
    Run(run::Args),
    /// Record every model's exact outputs (and frame-difference features) on a pipeline's footage.
    #[cfg(feature = "gst")]
    Record(record::Args),
    /// Train an oracle link from a deployed model to ground-truth labels (domain adaptation).
    Adapt(adapt::Args),
    /// Local-only, global (federated) and fused link accuracy on a target domain of a trace.
    AdaptEval(adapt_eval::Args),
    /// Write one link of a bundle as an aggregator link file.
    LinkExport(link_export::ExportArgs),
    /// Set one link of a bundle from an aggregator link file.
    LinkImport(link_export::ImportArgs),
}

/// Entry point of the binary: parses arguments, sets up logging, runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Train(args) => train::run(args),
        Command::Links(args) => links::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Aggregate(args) => aggregate::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Kd(args) => kd::run(args),
        Command::Online(args) => online::run(args),
        #[cfg(feature = "gst")]
        Command::ServeRtsp(args) => serve_rtsp::run(args),
        #[cfg(feature = "gst")]
        Command::Run(args) => run::run(args),
        #[cfg(feature = "gst")]
        Command::Record(args) => record::run(args),
        Command::Adapt(args) => adapt::run(args),
        Command::AdaptEval(args) => adapt_eval::run(args),
        Command::LinkExport(args) => link_export::run_export(args),
        Command::LinkImport(args) => link_export::run_import(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MLINK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Loads and validates a pipeline file, turning its located errors into one message.
#[cfg(feature = "gst")]
pub(crate) fn load_valid_pipeline(
    path: &std::path::Path,
) -> anyhow::Result<crate::config::Pipeline> {
    crate::config::load_and_validate(path).map_err(|errors| {
        anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}
