//! `mlink kd TRACE`: model links against distilled students at several training sizes (the
//! paper's Fig. 5) on a trace recorded with thumbnails.

use crate::eval::{Problem, ReplayConfig, kd};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The trace (recorded with `mlink record --thumbnails WxH`).
    pub trace: PathBuf,
    /// Training sizes in % of the trace's time span (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1.0, 5.0, 10.0, 20.0])]
    pub sizes: Vec<f64>,
    /// Repeats per size with consecutive seeds (means and standard deviations are reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write kd.md, kd.json and kd.svg into this directory.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (header, records) = crate::link::trace::read_all(&args.trace)
        .with_context(|| format!("reading trace {}", args.trace.display()))?;
    let problem = Problem::from_trace(&header, records, &BTreeMap::new())
        .with_context(|| format!("trace {}", args.trace.display()))?;
    let base = ReplayConfig {
        seed: args.seed,
        ..ReplayConfig::default()
    };
    let shares: Vec<f64> = args.sizes.iter().map(|p| p / 100.0).collect();
    let report = kd::compare(&problem, &base, &shares, args.repeats)
        .with_context(|| format!("trace {}", args.trace.display()))?;
    let md = kd::render_markdown(&report);
    print!("{md}");
    if let Some(dir) = &args.report {
        let write = |name: &str, bytes: &[u8]| -> anyhow::Result<()> {
            let p = dir.join(name);
            crate::fsutil::write_atomic(&p, bytes)
                .with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {}", p.display());
            Ok(())
        };
        write("kd.md", md.as_bytes())?;
        write("kd.json", &serde_json::to_vec_pretty(&report)?)?;
        write("kd.svg", kd::plot(&report)?.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
