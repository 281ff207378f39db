//! `mlink profile PIPELINE [--json]`: memory and latency of every model of a pipeline.

use crate::config::CostConfig;
use crate::models::{ModelCost, profile_model, synthetic_frame};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Warm runs per model for the latency median.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
}

/// One row of the table: a measured or declared cost.
#[derive(serde::Serialize)]
pub struct Row {
    pub model: String,
    /// `measured` or `declared`.
    pub source: &'static str,
    pub memory_mb: f64,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured: Option<ModelCost>,
}

/// Loads a pipeline file and the folder its model paths are relative to.
pub(crate) fn load_pipeline(path: &Path) -> anyhow::Result<(crate::config::Pipeline, PathBuf)> {
    let pipeline = crate::config::load(path).map_err(|errors| {
        anyhow::anyhow!(
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((pipeline, base))
}

/// The frame size the pipeline's first camera delivers (768x576 when it does not say).
pub(crate) fn frame_size(p: &crate::config::Pipeline) -> (u32, u32) {
    let cam = p.cameras.first();
    (
        cam.and_then(|c| c.width).unwrap_or(768),
        cam.and_then(|c| c.height).unwrap_or(576),
    )
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (pipeline, base) = load_pipeline(&args.pipeline)?;
    let info = crate::models::init_runtime()?;
    let (w, h) = frame_size(&pipeline);
    let frame = synthetic_frame(w, h);
    let metrics = crate::metrics::global();
    let mut rows = Vec::new();
    for m in &pipeline.models {
        let row = match &m.cost {
            CostConfig::Declared(d) => Row {
                model: m.id.clone(),
                source: "declared",
                memory_mb: d.memory_mb,
                latency_ms: d.latency_ms,
                measured: None,
            },
            CostConfig::Auto => {
                let c = profile_model(m, &base, &frame, args.runs, &metrics)
                    .with_context(|| format!("profiling model {}", m.id))?;
                Row {
                    model: m.id.clone(),
                    source: "measured",
                    memory_mb: c.memory_mb,
                    latency_ms: c.latency_ms,
                    measured: Some(c),
                }
            }
        };
        rows.push(row);
    }
    if args.json {
        let out = serde_json::json!({
            "format_version": 1,
            "runtime": info,
            "frame": { "width": w, "height": h },
            "models": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("provider: {}   frame: {w}x{h}", info.provider);
        println!(
            "{:<24} {:>9} {:>11} {:>11}",
            "model", "source", "memory MB", "latency ms"
        );
        for r in &rows {
            println!(
                "{:<24} {:>9} {:>11.1} {:>11.2}",
                r.model, r.source, r.memory_mb, r.latency_ms
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
