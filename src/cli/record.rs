//! `mlink record PIPELINE --out TRACE`: every model exact on every sampled frame of the
//! pipeline's cameras (its head's output and its link view), plus the frame-difference
//! features of the Reducto baseline and, with `--thumbnails WxH`, a downscaled copy of every
//! frame, into a trace (format version 3).
//! File cameras are read once (their `on_end` is ignored). Interrupting (Ctrl-C) finishes the
//! trace with the frames recorded so far; a crash leaves `TRACE.partial`, readable up to its
//! last complete record.

use crate::config::{self, OnEnd};
use crate::engine::exec::{FrameOutputs, ModelPool};
use crate::engine::wiring::measure_costs;
use crate::ingest::IngestManager;
use crate::link::trace::{ThumbnailSize, TraceHeader, TraceModel, TraceRecord, TraceWriter};
use crate::metrics::Metrics;
use crate::schedule::ModelSet;
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file (its cameras and models are used; the budget is ignored).
    pub pipeline: PathBuf,
    /// The trace to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Stop after this many frames.
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// Also store every frame downscaled to WxH packed RGB (e.g. 32x32), for the baselines
    /// that learn from pixels (`mlink eval`'s MTL, `mlink kd`).
    #[arg(long, value_name = "WxH", value_parser = parse_thumbnail)]
    pub thumbnails: Option<ThumbnailSize>,
}

fn parse_thumbnail(s: &str) -> Result<ThumbnailSize, String> {
    ThumbnailSize::parse(s)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut cfg = super::load_valid_pipeline(&args.pipeline)?;
    for c in &mut cfg.cameras {
        c.on_end = OnEnd::Stop;
    }
    let base = config::base_dir(&args.pipeline);
    crate::models::init_runtime()?;
    let metrics = Arc::new(Metrics::new());
    let costs = measure_costs(&cfg, &base, &metrics)?;
    let k = cfg.models.len();
    let mut pool = ModelPool::new(
        &cfg.models,
        costs.iter().map(|c| c.memory_mb).collect(),
        None,
        &base,
        metrics.clone(),
    );
    let all = ModelSet::full(k);
    pool.transition(&all)?;
    let specs = cfg
        .models
        .iter()
        .map(|m| crate::models::head_spec(m, &base))
        .collect::<Result<Vec<_>, _>>()?;
    let views = cfg
        .models
        .iter()
        .map(|m| crate::models::view_names(m, &base))
        .collect::<Result<Vec<_>, _>>()?;

    let feature_names: Vec<String> = if cfg!(feature = "opencv") {
        ["pixel", "area", "edge", "corner"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        Vec::new()
    };
    let header = TraceHeader {
        models: cfg
            .models
            .iter()
            .zip(&specs)
            .zip(&costs)
            .zip(views)
            .map(|(((m, spec), c), view)| TraceModel {
                id: m.id.clone(),
                spec: spec.clone(),
                memory_mb: Some(c.memory_mb),
                latency_ms: Some(c.ms_per_frame),
                crops_from: m.crops_from.clone(),
                view,
            })
            .collect(),
        frame_feature_names: feature_names,
        source: format!("mlink record {}", args.pipeline.display()),
        thumbnail: args.thumbnails,
    };
    let mut writer = TraceWriter::create(&args.out, &header)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    let _ = tokio::signal::ctrl_c().await;
                });
                stop.store(true, Ordering::SeqCst);
            }
        });
    }

    // Offline: files decode as fast as the models take frames and none is dropped.
    let ingest = IngestManager::with_options(
        metrics.clone(),
        crate::ingest::SourceOptions {
            offline: true,
            ..Default::default()
        },
    )?;
    let mut receivers = BTreeMap::new();
    for cam in &cfg.cameras {
        receivers.insert(cam.id.clone(), ingest.add_camera(cam, &base)?);
    }
    #[cfg(feature = "opencv")]
    let mut differs: BTreeMap<String, crate::eval::features::FrameDiffer> = BTreeMap::new();
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {pos} frames recorded ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); k];
    let mut frames = 0u64;
    let t0 = std::time::Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) || args.max_frames.is_some_and(|n| frames >= n) {
            break;
        }
        let mut got = None;
        for (id, rx) in &receivers {
            if let Ok(f) = rx.recv_timeout(Duration::from_millis(20)) {
                got = Some((id.clone(), f));
                break;
            }
        }
        let Some((cam, frame)) = got else {
            let done = receivers
                .iter()
                .all(|(id, rx)| rx.is_empty() && ingest.state(id).is_none_or(|s| s.is_terminal()));
            if done {
                break;
            }
            continue;
        };
        let mut out = FrameOutputs::new(k);
        pool.run(&all, &frame, &mut out)?;
        #[cfg(feature = "opencv")]
        let frame_features =
            differs
                .entry(cam.clone())
                .or_default()
                .push(frame.width, frame.height, &frame.rgb)?;
        #[cfg(not(feature = "opencv"))]
        let frame_features = {
            let _ = &cam;
            Vec::new()
        };
        for (m, ms) in out.model_ms.iter().enumerate() {
            if let Some(ms) = ms {
                latencies[m].push(*ms);
            }
        }
        writer.append(&TraceRecord {
            camera: frame.camera.to_string(),
            seq: frame.seq,
            time_s: frame
                .pts_ns
                .map_or(t0.elapsed().as_secs_f64(), |p| p as f64 / 1e9),
            outputs: out.values,
            views: out.views,
            frame_features,
            thumbnail: args.thumbnails.map(|t| frame.thumbnail(t.width, t.height)),
        })?;
        frames += 1;
        bar.inc(1);
    }
    ingest.shutdown();
    writer.finish()?;
    bar.finish_and_clear();
    let medians: Vec<String> = cfg
        .models
        .iter()
        .zip(latencies.iter_mut())
        .map(|(m, l)| {
            l.sort_by(f64::total_cmp);
            format!(
                "{} {:.1} ms",
                m.id,
                l.get(l.len() / 2).copied().unwrap_or(0.0)
            )
        })
        .collect();
    eprintln!(
        "recorded {frames} frames into {} (median latency: {})",
        args.out.display(),
        medians.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
