//! `mlink adapt-eval`: local-only, edge-local, global (federated over real HTTP) and fused link
//! accuracy on a target domain of a trace, with the bytes each round sends (paper Fig. 8).

use crate::adapt::crossdomain::{CrossDomainConfig, DomainSplit, evaluate};
use crate::adapt::fusion::FusionParams;
use crate::link::TrainParams;
use crate::link::trace::read_all;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Split {
    Auto,
    Camera,
    Time,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Trace of aligned model outputs (`mlink record`).
    pub trace: PathBuf,
    /// How to cut the trace into domains (auto: cameras when there are several, else time).
    #[arg(long, value_enum, default_value_t = Split::Auto)]
    pub split: Split,
    /// Number of time segments (time split).
    #[arg(long, default_value_t = 4)]
    pub domains: usize,
    /// Index of the target domain (default: the last).
    #[arg(long)]
    pub target: Option<usize>,
    /// Source model id (default: the first model other than the target model).
    #[arg(long)]
    pub source_model: Option<String>,
    /// Target model id (default: the last model with a vector output).
    #[arg(long)]
    pub target_model: Option<String>,
    /// Labelled frames of the target domain used for training (the rest are the test set).
    #[arg(long, default_value_t = 30)]
    pub local_samples: usize,
    /// Federated rounds.
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Local epochs per round on each edge.
    #[arg(long, default_value_t = 2)]
    pub local_epochs: usize,
    /// Epochs of the local-only and edge-local links.
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write report.json and report.md into this folder.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (header, records) =
        read_all(&args.trace).with_context(|| format!("reading trace {}", args.trace.display()))?;
    let cfg = CrossDomainConfig {
        source: args.source_model,
        target: args.target_model,
        split: match args.split {
            Split::Auto => DomainSplit::Auto,
            Split::Camera => DomainSplit::Camera,
            Split::Time => DomainSplit::Time,
        },
        domains: args.domains,
        target_domain: args.target,
        local_samples: args.local_samples,
        rounds: args.rounds,
        local_epochs: args.local_epochs,
        params: TrainParams {
            epochs: args.epochs,
            seed: args.seed,
            ..TrainParams::default()
        },
        fusion: FusionParams {
            seed: args.seed,
            ..FusionParams::default()
        },
    };
    let json = args.json;
    let report = evaluate(
        &args.trace.display().to_string(),
        &header,
        &records,
        &cfg,
        &|line| {
            if !json {
                eprintln!("{line}");
            }
        },
    )?;
    let text = serde_json::to_string_pretty(&report)?;
    if json {
        println!("{text}");
    } else {
        print!("{}", report.to_markdown());
    }
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        crate::fsutil::write_atomic(&dir.join("report.json"), format!("{text}\n").as_bytes())
            .with_context(|| format!("writing {}", dir.join("report.json").display()))?;
        crate::fsutil::write_atomic(&dir.join("report.md"), report.to_markdown().as_bytes())
            .with_context(|| format!("writing {}", dir.join("report.md").display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
