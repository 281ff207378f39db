//! The `mlink` command line: one subcommand per file in this folder.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod aggregate;
mod bench;
mod bench_links;
mod bench_schedule;
mod eval;
mod links;
mod profile;
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
