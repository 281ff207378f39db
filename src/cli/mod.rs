//! The `mlink` command line: one subcommand per file in this folder.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[cfg(feature = "gst")]
mod bench_ingest;
#[cfg(feature = "gst")]
mod serve_rtsp;
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
    /// Serve a video file in a loop, or a test pattern, as an RTSP camera.
    #[cfg(feature = "gst")]
    ServeRtsp(serve_rtsp::ServeRtspArgs),
    /// Measure decode, scale and convert throughput of a video file.
    #[cfg(feature = "gst")]
    BenchIngest(bench_ingest::BenchIngestArgs),
}

/// Entry point of the binary: parses arguments, sets up logging, runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        #[cfg(feature = "gst")]
        Command::ServeRtsp(args) => serve_rtsp::run(args),
        #[cfg(feature = "gst")]
        Command::BenchIngest(args) => bench_ingest::run(args),
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
