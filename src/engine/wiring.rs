//! Wiring of `mlink run`: the pipeline file, metrics, costs, model pool, sinks, links and the
//! controller are built here, then the frame loop runs ([`super::frames`]) and the run is
//! summed up.

use super::driver::Driver;
use super::exec::ModelPool;
use super::sink::{self, SinkSet};
use super::{
    EngineError, RunOptions, RunSummary, frames, process_cpu_seconds, rate, signals, startup,
};
use crate::config::{self, CostConfig, Pipeline};
use crate::control::{Cause, Controller, Settings, TrainingPolicy};
use crate::metrics::Metrics;
use crate::models;
use crate::schedule::{Budget, Cost, Costs, ModelSet};
use crate::status::StatusBoard;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Cost charged per link prediction until links exist: a vec2vec link is tens of thousands
/// of weights and runs in tens of microseconds.
pub const LINK_COST: Cost = Cost {
    memory_mb: 0.1,
    ms_per_frame: 0.05,
};

/// Runs a pipeline until its file sources end, a limit in `opts` is reached, or `stop` is set
/// (SIGINT/SIGTERM). Sinks are flushed and links saved before it returns.
pub fn run(
    pipeline_path: &Path,
    mut opts: RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, EngineError> {
    let mut cfg = config::load_and_validate(pipeline_path).map_err(EngineError::Config)?;
    rate::copy_cameras(&mut cfg, opts.camera_copies);
    opts.workers = rate::resolve_workers(opts.workers);
    opts.batch = rate::resolve_batch(opts.batch, cfg.cameras.len());
    let base = config::base_dir(pipeline_path);
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(StatusBoard::new(pipeline_path, &cfg, metrics.clone()));
    let metrics_server =
        signals::start_metrics(&cfg, &opts, metrics.clone(), status.clone(), stop.clone())?;
    models::init_runtime()?;

    let (oracles, specs) = startup::output_specs(&cfg, &base)?;
    let model_costs = measure_costs(&cfg, &base, &metrics)?;
    let costs = Costs {
        models: model_costs,
        link: LINK_COST,
        per_link: Vec::new(),
    };
    let budget = if opts.unbounded {
        Budget::default()
    } else {
        Budget::from(&cfg.scheduler.budget)
    };
    if let Some(ms) = budget.ms_per_frame {
        metrics.budget.with_label_values(&["ms_per_frame"]).set(ms);
    }
    let memory: Vec<f64> = costs.models.iter().map(|c| c.memory_mb).collect();
    // Each session runs on the workers' threads (its own setting when that is more).
    let session_models: Vec<config::ModelConfig> = cfg
        .models
        .iter()
        .map(|m| config::ModelConfig {
            threads: m.threads.max(opts.workers),
            ..m.clone()
        })
        .collect();
    let pool = ModelPool::new(
        &session_models,
        memory,
        budget.memory_mb,
        &base,
        metrics.clone(),
    )
    .with_oracles(oracles)
    .with_workers(opts.workers);
    let parents: Vec<Option<usize>> = (0..cfg.models.len()).map(|m| pool.parent(m)).collect();

    let mut sinks = cfg
        .sinks
        .iter()
        .map(|s| sink::build(s, &base, &metrics))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(c) = &opts.capture {
        sinks.push(Box::new(sink::MemorySink(c.clone())));
    }
    let sinks = SinkSet::new(sinks, metrics.clone());

    let given_bundle = opts.bundle.clone().or_else(|| {
        cfg.links
            .bundle
            .as_ref()
            .map(|p| config::resolve_path(&base, p))
    });
    let links_path = match &given_bundle {
        Some(p) => p.clone(),
        None => opts
            .links_out
            .clone()
            .unwrap_or_else(|| default_links_path(pipeline_path)),
    };
    let ctl = Controller::new(
        Settings::from_pipeline(&cfg),
        specs.clone(),
        costs,
        budget,
        parents,
        opts.unbounded,
    )
    .map_err(|e| EngineError::Other(e.to_string()))?;
    let summary = RunSummary {
        budget_memory_mb: budget.memory_mb,
        workers: opts.workers,
        batch: opts.batch,
        metrics_addr: metrics_server.as_ref().map(|(a, _)| a.clone()),
        ..RunSummary::default()
    };
    let name = pipeline_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut d = Driver::new(
        cfg,
        name,
        metrics.clone(),
        specs,
        pool,
        sinks,
        ctl,
        links_path,
        summary,
    );
    d.status = Some(status);
    d.workers = opts.workers;
    if !opts.offline {
        // Offline runs wait for the engine instead of dropping: nothing to keep.
        let mb = opts
            .turns_backlog_mb
            .unwrap_or(super::backlog::DEFAULT_BACKLOG_MB);
        d.intake = super::backlog::Intake::new(mb, metrics.clone());
    }
    d.summary.offered_fps = rate::offered_fps(&d.cfg);
    if !opts.offline && !opts.unbounded && !opts.ignore_offered_rate {
        // Live cameras offer frames at their rate: a set that cannot keep up drops them.
        d.rate_cores = Some(opts.workers.min(rate::machine_cores()));
        let ms = d.offered_rate_budget();
        d.ctl.set_rate_budget(ms);
    }
    tracing::info!(
        workers = opts.workers,
        batch = opts.batch,
        cameras = d.cfg.cameras.len(),
        "frame loop"
    );
    if opts.unbounded {
        // Every model fits: no links needed, every output exact.
        d.pool.transition(&ModelSet::full(d.ids.len()))?;
    } else {
        for cmd in d.ctl.start() {
            if let crate::control::Command::Select(sel) = cmd {
                d.pool.transition(&sel.to)?;
                d.note_rate_unmet(&sel);
                tracing::info!(reason = %sel.reason, "standalone selection until links exist");
            }
        }
        if let Some(path) = &given_bundle {
            let bundle = startup::load_bundle(&d.cfg, &d.specs, path)?;
            d.install_bundle(bundle, Cause::Startup)?;
        }
    }

    let cpu_start = process_cpu_seconds();
    let result = frames::run_loop(&mut d, pipeline_path, &base, &opts, &stop);
    d.summary.backlog_frames = d.intake.taken;
    d.summary.backlog_dropped = d.intake.dropped;
    d.summary.backlog_peak_frames = d.intake.peak_frames;
    d.finish_training();
    if let Some(t) = d.trainer.take() {
        t.finish();
    }
    d.summary.federated_rounds = metrics
        .link_training_runs
        .with_label_values(&["federated"])
        .get();
    d.summary.online_training_runs = [
        TrainingPolicy::Periodic,
        TrainingPolicy::Uncertainty,
        TrainingPolicy::LossPrediction,
        TrainingPolicy::FederatedLocal,
    ]
    .iter()
    .map(|p| {
        metrics
            .link_training_runs
            .with_label_values(&[p.as_label()])
            .get()
    })
    .sum();
    d.sinks.flush();
    d.summary.peak_memory_mb = d.pool.peak_mb();
    d.summary.peak_measured_memory_mb = d.pool.peak_measured_mb();
    sum_up_frames(&mut d.summary, &metrics, &d.cfg);
    d.summary.active = d.ctl.active().iter().map(|m| d.ids[m].clone()).collect();
    d.summary.predicted_accuracy = d
        .ids
        .iter()
        .zip(&d.predicted_accuracy)
        .filter_map(|(id, a)| a.map(|a| (id.clone(), a)))
        .collect();
    if d.summary.frames > 0 {
        d.summary.cpu_ms_per_frame =
            (process_cpu_seconds() - cpu_start) * 1000.0 / d.summary.frames as f64;
    }
    if d.bundle.is_some() {
        d.summary.links = Some(d.links_path.clone());
    }
    if let Some(path) = &opts.decisions {
        write_decisions(path, &d.decisions)?;
    }
    if let Some((_, handle)) = metrics_server {
        stop.store(true, Ordering::SeqCst);
        let _ = handle.join();
    }
    result.map(|()| d.summary)
}

/// Frames ingested and dropped, and the mean frame latency, over the run's cameras.
fn sum_up_frames(summary: &mut RunSummary, metrics: &Metrics, cfg: &Pipeline) {
    let (mut latency_sum, mut latency_count) = (0.0, 0u64);
    for cam in &cfg.cameras {
        let id = cam.id.as_str();
        summary.frames_ingested += metrics.frames_ingested.with_label_values(&[id]).get();
        summary.frames_dropped += metrics.frames_dropped.with_label_values(&[id]).get();
        let h = metrics.frame_seconds.with_label_values(&[id]);
        latency_sum += h.get_sample_sum();
        latency_count += h.get_sample_count();
    }
    if latency_count > 0 {
        summary.mean_frame_latency_s = latency_sum / latency_count as f64;
    }
}

/// Writes the selections, one JSON object a line (`{"frame":..,"active":[..],"cause":..}`),
/// atomically.
pub fn write_decisions(
    path: &Path,
    decisions: &[crate::control::Decision],
) -> Result<(), EngineError> {
    let mut text = String::new();
    for d in decisions {
        let line = serde_json::to_string(d)
            .map_err(|e| EngineError::Other(format!("cannot encode a decision: {e}")))?;
        text.push_str(&line);
        text.push('\n');
    }
    crate::fsutil::write_atomic(path, text.as_bytes()).map_err(|e| {
        EngineError::Other(format!("cannot write decisions to {}: {e}", path.display()))
    })
}

/// Where links are saved when the pipeline names no bundle: `out/<pipeline>.links`.
fn default_links_path(pipeline: &Path) -> PathBuf {
    let stem = pipeline
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline".into());
    PathBuf::from("out").join(format!("{stem}.links"))
}

/// Declared costs as they are; `auto` ones profiled on a synthetic frame of the first camera's
/// size, one model at a time.
pub(crate) fn measure_costs(
    cfg: &Pipeline,
    base: &Path,
    metrics: &Metrics,
) -> Result<Vec<Cost>, EngineError> {
    let (w, h) = cfg
        .cameras
        .first()
        .and_then(|c| Some((c.width?, c.height?)))
        .unwrap_or((640, 480));
    let frame = models::synthetic_frame(w, h);
    cfg.models
        .iter()
        .map(|m| match &m.cost {
            CostConfig::Declared(d) => Ok(Cost::new(d.memory_mb, d.latency_ms)),
            CostConfig::Auto => {
                let c = models::profile_model(m, base, &frame, 3, metrics)?;
                tracing::info!(model = %m.id, memory_mb = c.memory_mb, latency_ms = c.latency_ms, "profiled cost");
                Ok(Cost::new(c.memory_mb.max(1.0), c.latency_ms))
            }
        })
        .collect()
}
