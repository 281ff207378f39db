//! `mlink online TRACE`: Offline-Init against the engine's online training policies
//! (Periodic, Uncertainty, Loss-prediction) on one link over a trace cut into segments (the
//! paper's Fig. 6).

use crate::eval::Problem;
use crate::eval::online::{self, OnlineConfig};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The trace (written by `mlink record`).
    pub trace: PathBuf,
    /// The link's source model id.
    #[arg(long)]
    pub source: String,
    /// The link's target model id.
    #[arg(long)]
    pub target: String,
    /// Segments the trace is cut into (each is one period).
    #[arg(long, default_value_t = 10)]
    pub segments: usize,
    /// Share of the frames the links first train on.
    #[arg(long, default_value_t = 0.01)]
    pub init_fraction: f64,
    /// Initial training frames at least.
    #[arg(long, default_value_t = 10)]
    pub min_init_frames: usize,
    /// Labelling budget as a share of each segment (Periodic profiles twice it; the others
    /// profile it and label as many frames again on demand).
    #[arg(long, default_value_t = 0.01)]
    pub label_fraction: f64,
    /// Uncertainty above which a frame is labelled (default: the upper quartile on the initial frames).
    #[arg(long)]
    pub uncertainty_threshold: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write online.md, online.json and online.svg into this directory.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (header, records) = crate::link::trace::read_all(&args.trace)
        .with_context(|| format!("reading trace {}", args.trace.display()))?;
    let problem = Problem::from_trace(&header, records, &BTreeMap::new())
        .with_context(|| format!("trace {}", args.trace.display()))?;
    let index = |id: &str| {
        problem
            .models
            .iter()
            .position(|m| m.id == id)
            .with_context(|| {
                format!(
                    "model `{id}` is not recorded in the trace (models: {})",
                    problem
                        .models
                        .iter()
                        .map(|m| m.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    };
    let cfg = OnlineConfig {
        source: index(&args.source)?,
        target: index(&args.target)?,
        segments: args.segments,
        init_fraction: args.init_fraction,
        min_init_frames: args.min_init_frames,
        label_fraction: args.label_fraction,
        uncertainty_threshold: args.uncertainty_threshold,
        seed: args.seed,
    };
    let report = online::compare(&problem, &cfg)
        .with_context(|| format!("trace {}", args.trace.display()))?;
    let md = online::render_markdown(&report);
    print!("{md}");
    if let Some(dir) = &args.report {
        let write = |name: &str, bytes: &[u8]| -> anyhow::Result<()> {
            let p = dir.join(name);
            crate::fsutil::write_atomic(&p, bytes)
                .with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {}", p.display());
            Ok(())
        };
        write("online.md", md.as_bytes())?;
        write("online.json", &serde_json::to_vec_pretty(&report)?)?;
        write("online.svg", online::plot(&report)?.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
