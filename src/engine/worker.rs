//! The frame loop of `mlink run`.
//!
//! Phases:
//! 1. **Warm-up** (no link bundle given): every model runs on every frame (in turns when the
//!    budget cannot hold them together) until `links.warmup_samples` aligned samples exist;
//!    every record is exact.
//! 2. **Training**: links and ensembles train on a background thread; meanwhile the
//!    standalone selection (the models that fit, no links) serves, and the other models' records
//!    say their links are being trained.
//! 3. **Serving**: active models run; the others are predicted by the ensemble of links from
//!    the active set. At the start of every period the next `ceil(ratio * frames per period)`
//!    frames are buffered and profiled with every model (in turns when needed); link scores are
//!    re-measured, the active set re-selected and sessions loaded or unloaded. With a drift
//!    margin, a single frame is probed every quarter period and a drop of the predicted outputs'
//!    accuracy beyond the margin re-selects at once.

use super::exec::{FrameOutputs, ModelPool};
use super::online::{TrainBatch, Trainer};
use super::record::{OutputRecord, Provenance, RECORD_VERSION};
use super::scores::ProfiledScores;
use super::sink::{self, SinkSet};
use super::{EngineError, RunOptions, RunSummary, process_cpu_seconds};
use crate::adapt::oracle::OracleLink;
use crate::config::{self, AdaptationPolicy, CameraConfig, CostConfig, Pipeline};
use crate::frame::Frame;
use crate::ingest::IngestManager;
use crate::link::{LinkBundle, Sample, TrainParams};
use crate::metrics::Metrics;
use crate::models;
use crate::output::{OutputSpec, OutputValue};
use crate::schedule::{self, Budget, Cost, Costs, LinkScores, ModelSet, ProfilingPlan};
use crossbeam_channel::{Receiver, Select};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Cost charged per link prediction: a vec2vec link is tens of thousands of weights and runs in
/// tens of microseconds.
const LINK_COST: Cost = Cost {
    memory_mb: 0.1,
    ms_per_frame: 0.05,
};
/// Frames buffered per turn during warm-up when the models run in turns.
const WARMUP_CHUNK: usize = 25;
/// Frames queued for exact labelling under the `uncertainty` policy.
const UNCERTAIN_QUEUE: usize = 16;
/// Profiling batches whose samples score the links (the latest ones).
const PROFILE_HISTORY: usize = 4;
/// Under `loss_prediction` without a threshold, a frame is queued for labelling when its
/// predicted loss exceeds this multiple of the running mean.
const LOSS_FACTOR: f64 = 2.0;
/// Frame rate assumed for a camera without sampling until frames are counted.
const ASSUMED_FPS: f64 = 10.0;

enum Phase {
    Warmup,
    Training(Receiver<Result<LinkBundle, String>>),
    Serving,
}

/// Everything the frame loop owns.
struct Worker {
    cfg: Pipeline,
    path: PathBuf,
    base: PathBuf,
    metrics: Arc<Metrics>,
    ids: Vec<String>,
    specs: Vec<OutputSpec>,
    costs: Costs,
    budget: Budget,
    pool: ModelPool,
    sinks: SinkSet,
    phase: Phase,
    bundle: Option<Arc<LinkBundle>>,
    /// Pipeline model index -> bundle model index.
    to_bundle: Vec<usize>,
    links_path: PathBuf,
    trainer: Option<Trainer>,
    active: ModelSet,
    expected_predicted_accuracy: Option<f64>,
    warm_buffer: Vec<Frame>,
    warm_samples: Vec<Vec<OutputValue>>,
    profile_buffer: Vec<Frame>,
    profile_due: bool,
    profile_target: usize,
    profile_history: Vec<Vec<Vec<OutputValue>>>,
    uncertain: Vec<Frame>,
    probes: Vec<Vec<OutputValue>>,
    period_start: Instant,
    frames_in_period: u64,
    last_probe: Instant,
    /// Running mean of the predicted losses (`loss_prediction` policy).
    loss_mean: f64,
    loss_seen: u64,
    summary: RunSummary,
}

/// Runs a pipeline until its file sources end, a limit in `opts` is reached, or `stop` is set
/// (SIGINT/SIGTERM). Sinks are flushed and links saved before it returns.
pub fn run(
    pipeline_path: &Path,
    opts: RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, EngineError> {
    let cfg = config::load_and_validate(pipeline_path).map_err(EngineError::Config)?;
    let base = config::base_dir(pipeline_path);
    let metrics = Arc::new(Metrics::new());
    let metrics_server = start_metrics(&cfg, &opts, metrics.clone(), stop.clone())?;
    models::init_runtime()?;

    let ids: Vec<String> = cfg.models.iter().map(|m| m.id.clone()).collect();
    let head_specs = cfg
        .models
        .iter()
        .map(|m| models::head_spec(m, &base))
        .collect::<Result<Vec<_>, _>>()?;
    let (oracles, specs) = load_oracles(&cfg, &base, head_specs)?;
    let model_costs = measure_costs(&cfg, &base, &metrics)?;
    let costs = Costs {
        models: model_costs,
        link: LINK_COST,
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
    let pool = ModelPool::new(
        &cfg.models,
        memory,
        budget.memory_mb,
        &base,
        metrics.clone(),
    )
    .with_oracles(oracles);

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
    let k = ids.len();
    let mut worker = Worker {
        path: pipeline_path.to_path_buf(),
        base: base.clone(),
        metrics: metrics.clone(),
        to_bundle: (0..k).collect(),
        specs,
        costs,
        budget,
        pool,
        sinks,
        phase: Phase::Warmup,
        bundle: None,
        links_path,
        trainer: None,
        active: ModelSet::empty(k),
        expected_predicted_accuracy: None,
        warm_buffer: Vec::new(),
        warm_samples: Vec::new(),
        profile_buffer: Vec::new(),
        profile_due: false,
        profile_target: 1,
        profile_history: Vec::new(),
        uncertain: Vec::new(),
        probes: Vec::new(),
        period_start: Instant::now(),
        frames_in_period: 0,
        last_probe: Instant::now(),
        loss_mean: 0.0,
        loss_seen: 0,
        summary: RunSummary {
            budget_memory_mb: budget.memory_mb,
            metrics_addr: metrics_server.as_ref().map(|(a, _)| a.clone()),
            ..RunSummary::default()
        },
        ids,
        cfg,
    };
    if opts.unbounded {
        // Every model fits: no links needed, every output exact.
        worker.phase = Phase::Serving;
        let all = ModelSet::full(k);
        worker.pool.transition(&all)?;
        worker.active = all;
    } else if let Some(path) = &given_bundle {
        let bundle = LinkBundle::load(path)?;
        let models: Vec<(String, OutputSpec)> = worker
            .ids
            .iter()
            .cloned()
            .zip(worker.specs.iter().cloned())
            .collect();
        bundle.check_models(&models)?;
        worker.install_bundle(bundle, "startup")?;
    } else {
        // Until links exist, the standalone selection decides what runs between warm-up batches.
        worker.select_standalone()?;
    }

    let ingest = IngestManager::with_options(
        metrics.clone(),
        crate::ingest::SourceOptions {
            offline: opts.offline,
            ..Default::default()
        },
    )?;
    let mut cameras: BTreeMap<String, (CameraConfig, Receiver<Frame>)> = BTreeMap::new();
    for cam in &worker.cfg.cameras {
        let rx = ingest.add_camera(cam, &base)?;
        cameras.insert(cam.id.clone(), (cam.clone(), rx));
    }

    let started = Instant::now();
    let cpu_start = process_cpu_seconds();
    let mut last_mtime = mtime(pipeline_path);
    let mut last_reload_check = Instant::now();
    let result = loop {
        if stop.load(Ordering::SeqCst) {
            tracing::info!("stopping on signal");
            break Ok(());
        }
        if opts.duration.is_some_and(|d| started.elapsed() >= d)
            || opts.max_frames.is_some_and(|n| worker.summary.frames >= n)
        {
            break Ok(());
        }
        if opts.reload_check_s > 0.0
            && last_reload_check.elapsed().as_secs_f64() >= opts.reload_check_s
        {
            last_reload_check = Instant::now();
            let now = mtime(pipeline_path);
            if now != last_mtime {
                last_mtime = now;
                worker.reload(&ingest, &mut cameras);
            }
        }
        if let Err(e) = worker.poll_background() {
            break Err(e);
        }
        match next_frame(&cameras, Duration::from_millis(100)) {
            Some(frame) => {
                if let Err(e) = worker.on_frame(frame) {
                    break Err(e);
                }
            }
            None => {
                let all_done = cameras.iter().all(|(id, (_, rx))| {
                    rx.is_empty() && ingest.state(id).is_none_or(|s| s.is_terminal())
                });
                if all_done && !cameras.is_empty() {
                    tracing::info!("every camera has ended");
                    break Ok(());
                }
            }
        }
    };
    ingest.shutdown();
    // Warm-up frames still buffered are profiled, and frames buffered for profiling are
    // served, so that none is silently lost.
    let warm: Vec<Frame> = std::mem::take(&mut worker.warm_buffer);
    if !warm.is_empty()
        && let Err(e) = worker.profile_frames(&warm, warm.len())
    {
        tracing::warn!(error = %e, "buffered warm-up frames could not be profiled at shutdown");
    }
    let leftover: Vec<Frame> = std::mem::take(&mut worker.profile_buffer);
    for f in leftover {
        if let Err(e) = worker.serve(f) {
            tracing::warn!(error = %e, "a buffered frame could not be served at shutdown");
        }
    }
    let training_rx = match std::mem::replace(&mut worker.phase, Phase::Serving) {
        Phase::Training(rx) => Some(rx),
        other => {
            worker.phase = other;
            None
        }
    };
    if let Some(rx) = training_rx {
        tracing::info!("waiting for link training to finish before exiting");
        if let Ok(Ok(bundle)) = rx.recv() {
            let _ = worker.install_bundle(bundle, "trained");
        }
    }
    if let Some(t) = worker.trainer.take() {
        t.finish();
    }
    worker.summary.federated_rounds = metrics
        .link_training_runs
        .with_label_values(&["federated"])
        .get();
    worker.summary.online_training_runs = [
        "periodic",
        "uncertainty",
        "loss_prediction",
        "federated_local",
    ]
    .iter()
    .map(|p| metrics.link_training_runs.with_label_values(&[p]).get())
    .sum();
    worker.sinks.flush();
    worker.summary.peak_memory_mb = worker.pool.peak_mb();
    worker.summary.active = worker
        .active
        .iter()
        .map(|m| worker.ids[m].clone())
        .collect();
    if worker.summary.frames > 0 {
        worker.summary.cpu_ms_per_frame =
            (process_cpu_seconds() - cpu_start) * 1000.0 / worker.summary.frames as f64;
    }
    if worker.bundle.is_some() {
        worker.summary.links = Some(worker.links_path.clone());
    }
    if let Some((_, handle)) = metrics_server {
        stop.store(true, Ordering::SeqCst);
        let _ = handle.join();
    }
    result.map(|()| worker.summary)
}

/// Per model of a pipeline: its oracle link, when it has one.
type ModelOracles = Vec<Option<Arc<OracleLink>>>;

/// Loads the models' oracle links (`models[].oracle`), checking that each maps the model's own
/// output; a model with an oracle then outputs the oracle's spec.
fn load_oracles(
    cfg: &Pipeline,
    base: &Path,
    mut specs: Vec<OutputSpec>,
) -> Result<(ModelOracles, Vec<OutputSpec>), EngineError> {
    let mut oracles = Vec::with_capacity(cfg.models.len());
    for (m, spec) in cfg.models.iter().zip(specs.iter_mut()) {
        let Some(path) = &m.oracle else {
            oracles.push(None);
            continue;
        };
        let path = config::resolve_path(base, path);
        let oracle = OracleLink::load(&path).map_err(|e| {
            EngineError::Other(format!(
                "model {}: oracle link {}: {e}",
                m.id,
                path.display()
            ))
        })?;
        if oracle.source_spec != *spec {
            return Err(EngineError::Other(format!(
                "model {}: the oracle link {} maps a different output ({:?}) than the model gives ({:?})",
                m.id,
                path.display(),
                oracle.source_spec,
                spec
            )));
        }
        *spec = oracle.spec.clone();
        oracles.push(Some(Arc::new(oracle)));
    }
    Ok((oracles, specs))
}

/// Where links are saved when the pipeline names no bundle: `out/<pipeline>.links`.
fn default_links_path(pipeline: &Path) -> PathBuf {
    let stem = pipeline
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline".into());
    PathBuf::from("out").join(format!("{stem}.links"))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Waits up to `timeout` for a frame from any camera.
fn next_frame(
    cameras: &BTreeMap<String, (CameraConfig, Receiver<Frame>)>,
    timeout: Duration,
) -> Option<Frame> {
    if cameras.is_empty() {
        std::thread::sleep(timeout);
        return None;
    }
    let receivers: Vec<&Receiver<Frame>> = cameras.values().map(|(_, rx)| rx).collect();
    let mut sel = Select::new();
    for rx in &receivers {
        sel.recv(rx);
    }
    let op = sel.select_timeout(timeout).ok()?;
    let i = op.index();
    op.recv(receivers[i]).ok()
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

/// Serves `/metrics` on a thread with its own runtime, which also turns SIGINT and SIGTERM
/// into `stop`. Returns the bound address.
fn start_metrics(
    cfg: &Pipeline,
    opts: &RunOptions,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<Option<(String, std::thread::JoinHandle<()>)>, EngineError> {
    let listen = opts
        .metrics_listen
        .clone()
        .or_else(|| cfg.metrics.listen.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| EngineError::Other(format!("cannot start the async runtime: {e}")))?;
    let listener = match &listen {
        Some(addr) => {
            let l = rt
                .block_on(tokio::net::TcpListener::bind(addr.as_str()))
                .map_err(|source| EngineError::Metrics {
                    addr: addr.clone(),
                    source,
                })?;
            Some(l)
        }
        None => None,
    };
    let bound = listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string());
    if let Some(a) = &bound {
        tracing::info!("metrics at http://{a}/metrics");
    }
    let handle = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            rt.block_on(async move {
                let stop_wait = stop.clone();
                let stopped = async move {
                    loop {
                        if stop_wait.load(Ordering::SeqCst) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                let signals = async {
                    let mut term =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                            .ok();
                    let term_recv = async {
                        match term.as_mut() {
                            Some(t) => {
                                t.recv().await;
                            }
                            None => std::future::pending::<()>().await,
                        }
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {},
                        _ = term_recv => {},
                    }
                };
                let serve = async {
                    match listener {
                        Some(l) => {
                            if let Err(e) = crate::metrics::serve(l, metrics, stopped).await {
                                tracing::warn!(error = %e, "metrics server stopped");
                            }
                        }
                        None => stopped.await,
                    }
                };
                tokio::select! {
                    _ = serve => {},
                    _ = signals => { stop.store(true, Ordering::SeqCst); },
                }
            });
        })
        .map_err(|e| EngineError::Other(format!("cannot start the metrics thread: {e}")))?;
    Ok(Some((bound.unwrap_or_default(), handle)))
}

impl Worker {
    fn k(&self) -> usize {
        self.ids.len()
    }

    /// The expected number of frames in a period, from the cameras' sampling rates and, once a
    /// period has passed, from the frames actually counted.
    fn frames_per_period(&self) -> u64 {
        let period = self.cfg.scheduler.period_s;
        let elapsed = self.period_start.elapsed().as_secs_f64();
        if elapsed >= period && self.frames_in_period > 0 {
            return self.frames_in_period;
        }
        let fps: f64 = self
            .cfg
            .cameras
            .iter()
            .map(|c| match &c.sampling {
                Some(s) => s
                    .fps
                    .or(s.every_seconds.map(|e| 1.0 / e))
                    .unwrap_or(ASSUMED_FPS),
                None => ASSUMED_FPS,
            })
            .sum();
        schedule::period_frames(period, fps)
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), EngineError> {
        self.summary.frames += 1;
        self.frames_in_period += 1;
        match self.phase {
            Phase::Warmup => {
                self.warm_buffer.push(frame);
                let all_fit = self
                    .budget
                    .fits(self.costs.models_cost(&ModelSet::full(self.k())));
                let remaining = self
                    .cfg
                    .links
                    .warmup_samples
                    .saturating_sub(self.warm_samples.len());
                let chunk = if all_fit {
                    1
                } else {
                    WARMUP_CHUNK.min(remaining.max(1))
                };
                if self.warm_buffer.len() >= chunk {
                    let frames = std::mem::take(&mut self.warm_buffer);
                    let rows = self.profile_frames(&frames, frames.len())?;
                    self.warm_samples.extend(rows);
                    if self.warm_samples.len() >= self.cfg.links.warmup_samples {
                        self.start_training();
                    }
                }
                Ok(())
            }
            Phase::Training(_) => self.serve(frame),
            Phase::Serving => {
                let period = self.cfg.scheduler.period_s;
                if !self.profile_due && self.period_start.elapsed().as_secs_f64() >= period {
                    self.profile_due = true;
                    let n = (self.cfg.scheduler.profiling_ratio * self.frames_per_period() as f64)
                        .ceil();
                    self.profile_target = (n as usize).max(1);
                }
                if self.profile_due {
                    self.profile_buffer.push(frame);
                    if self.profile_buffer.len() >= self.profile_target {
                        self.run_profiling("period")?;
                    }
                    return Ok(());
                }
                let drift_every = period / 4.0;
                if self.cfg.scheduler.drift_margin.is_some()
                    && self.last_probe.elapsed().as_secs_f64() >= drift_every
                {
                    self.last_probe = Instant::now();
                    return self.drift_probe(frame);
                }
                self.serve(frame)
            }
        }
    }

    /// Runs every model on `frames` within the budget (in turns when they do not fit
    /// together), writes exact records for the first `emit` frames (the others were served
    /// already and are only labelled) and returns the complete rows.
    fn profile_frames(
        &mut self,
        frames: &[Frame],
        emit: usize,
    ) -> Result<Vec<Vec<OutputValue>>, EngineError> {
        let plan = ProfilingPlan::new(
            frames.len() as u64,
            1.0,
            &self.costs.models,
            &self.budget,
            self.pool.loaded(),
        )?;
        if plan.in_turns {
            tracing::debug!(summary = %plan.summary, "profiling in turns");
        }
        let keep = self.active.clone();
        let outs = self.pool.run_all_in_turns(&plan.groups, frames, &keep)?;
        let mut rows = Vec::with_capacity(frames.len());
        for (n, (frame, out)) in frames.iter().zip(&outs).enumerate() {
            if n < emit {
                self.summary.profiling_frames += 1;
                self.emit_exact(frame, out, true);
            }
            if let Some(r) = out.values.iter().cloned().collect::<Option<Vec<_>>>() {
                rows.push(r);
            }
        }
        Ok(rows)
    }

    fn emit_exact(&mut self, frame: &Frame, out: &FrameOutputs, profiling: bool) {
        let mut batch = Vec::with_capacity(self.k());
        for (m, v) in out.values.iter().enumerate() {
            if let Some(v) = v {
                self.summary.exact_outputs += 1;
                batch.push(self.record(frame, m, Provenance::Exact { profiling }, Some(v.clone())));
            }
        }
        self.sinks.send(batch);
        self.observe_frame(frame);
    }

    fn record(
        &self,
        frame: &Frame,
        m: usize,
        provenance: Provenance,
        value: Option<OutputValue>,
    ) -> OutputRecord {
        OutputRecord {
            v: RECORD_VERSION,
            camera: frame.camera.to_string(),
            seq: frame.seq,
            pts_s: frame.pts_ns.map(|p| p as f64 / 1e9),
            time: frame
                .wall_time
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            model: self.ids[m].clone(),
            provenance,
            value,
        }
    }

    fn observe_frame(&self, frame: &Frame) {
        let latency = frame.wall_time.elapsed().map_or(0.0, |d| d.as_secs_f64());
        self.metrics
            .frame_seconds
            .with_label_values(&[&frame.camera])
            .observe(latency);
    }

    /// Serves one frame: active models exact, the others predicted (or unavailable).
    fn serve(&mut self, frame: Frame) -> Result<(), EngineError> {
        let mut out = FrameOutputs::new(self.k());
        let active = self.active.clone();
        self.pool.run(&active, &frame, &mut out)?;
        let mut batch = Vec::with_capacity(self.k());
        let sources: Vec<(usize, &OutputValue)> = out
            .values
            .iter()
            .enumerate()
            .filter_map(|(m, v)| v.as_ref().map(|v| (self.to_bundle[m], v)))
            .collect();
        let mut uncertain = false;
        for m in 0..self.k() {
            if let Some(v) = &out.values[m] {
                self.summary.exact_outputs += 1;
                batch.push(self.record(
                    &frame,
                    m,
                    Provenance::Exact { profiling: false },
                    Some(v.clone()),
                ));
                continue;
            }
            let provenance_value = match (&self.bundle, &self.phase) {
                (Some(bundle), _) => {
                    let t = Instant::now();
                    match bundle.predict(self.to_bundle[m], &sources) {
                        Ok(p) => {
                            self.metrics
                                .link_seconds
                                .with_label_values(&[&self.ids[m]])
                                .observe(t.elapsed().as_secs_f64());
                            self.metrics
                                .model_predictions
                                .with_label_values(&[&self.ids[m]])
                                .inc();
                            if let Some(th) = self.cfg.adaptation.uncertainty_threshold
                                && self.cfg.adaptation.policy == AdaptationPolicy::Uncertainty
                                && p.uncertainty > th
                            {
                                uncertain = true;
                            }
                            let names = p.sources.iter().map(|&i| self.bundle_id(i)).collect();
                            Ok((
                                Provenance::Predicted {
                                    sources: names,
                                    score: p.score,
                                    uncertainty: p.uncertainty,
                                },
                                p.value,
                            ))
                        }
                        Err(e) => Err(format!("no prediction: {e}")),
                    }
                }
                (None, Phase::Training(_)) => Err(format!(
                    "links are being trained on {} samples",
                    self.warm_samples.len()
                )),
                (None, _) => Err("no links yet".to_string()),
            };
            match provenance_value {
                Ok((prov, value)) => {
                    self.summary.predicted_outputs += 1;
                    batch.push(self.record(&frame, m, prov, Some(value)));
                }
                Err(reason) => {
                    self.summary.unavailable_outputs += 1;
                    batch.push(self.record(&frame, m, Provenance::Unavailable { reason }, None));
                }
            }
        }
        self.sinks.send(batch);
        self.observe_frame(&frame);
        if self.cfg.adaptation.policy == AdaptationPolicy::LossPrediction
            && let Some(bundle) = &self.bundle
        {
            // The links' loss-prediction heads estimate how wrong each prediction is; frames
            // predicted to be hard are labelled exactly at the next profiling.
            let worst = (0..self.k())
                .filter(|m| out.values[*m].is_none())
                .filter_map(|m| bundle.predicted_loss(self.to_bundle[m], &sources))
                .fold(None, |acc: Option<f64>, l| {
                    Some(acc.map_or(l, |a| a.max(l)))
                });
            if let Some(loss) = worst {
                let threshold = self
                    .cfg
                    .adaptation
                    .uncertainty_threshold
                    .unwrap_or(self.loss_mean * LOSS_FACTOR);
                self.loss_mean = if self.loss_seen == 0 {
                    loss
                } else {
                    0.95 * self.loss_mean + 0.05 * loss
                };
                self.loss_seen += 1;
                if self.loss_seen > 10 && loss > threshold {
                    uncertain = true;
                }
            }
        }
        if uncertain && self.uncertain.len() < UNCERTAIN_QUEUE {
            self.uncertain.push(frame);
        }
        Ok(())
    }

    fn bundle_id(&self, bundle_index: usize) -> String {
        self.to_bundle
            .iter()
            .position(|&b| b == bundle_index)
            .map(|m| self.ids[m].clone())
            .unwrap_or_else(|| format!("#{bundle_index}"))
    }

    /// Starts link training on the warm-up samples, in the background.
    fn start_training(&mut self) {
        let models: Vec<(String, OutputSpec)> = self
            .ids
            .iter()
            .cloned()
            .zip(self.specs.iter().cloned())
            .collect();
        let samples: Vec<Sample> = self
            .warm_samples
            .iter()
            .map(|r| Sample::complete(r.iter().cloned()))
            .collect();
        let params = TrainParams::from_config(&self.cfg.links);
        let split = self.cfg.links.validation_split;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let metrics = self.metrics.clone();
        tracing::info!(
            samples = samples.len(),
            "training links and ensembles in the background"
        );
        let spawned = std::thread::Builder::new()
            .name("link training".into())
            .spawn(move || {
                let threads = std::thread::available_parallelism()
                    .map_or(1, |n| n.get().saturating_sub(1).max(1));
                let r = LinkBundle::train(&models, &samples, &params, split, threads, &|_| {})
                    .map_err(|e| e.to_string());
                metrics
                    .link_training_runs
                    .with_label_values(&["initial"])
                    .inc();
                let _ = tx.send(r);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start link training");
        }
        self.phase = Phase::Training(rx);
    }

    /// Picks up finished background work: the initial training and online updates.
    fn poll_background(&mut self) -> Result<(), EngineError> {
        if let Phase::Training(rx) = &self.phase {
            match rx.try_recv() {
                Ok(Ok(bundle)) => {
                    self.phase = Phase::Serving;
                    self.install_bundle(bundle, "trained")?;
                }
                Ok(Err(e)) => return Err(EngineError::Other(format!("link training failed: {e}"))),
                Err(_) => {}
            }
        }
        if let Some(t) = &self.trainer {
            let mut newest = None;
            while let Ok(b) = t.updates.try_recv() {
                newest = Some(b);
            }
            if let Some(b) = newest {
                self.bundle = Some(b);
            }
        }
        Ok(())
    }

    /// Saves a freshly trained or loaded bundle, starts the online trainer and selects.
    fn install_bundle(
        &mut self,
        bundle: LinkBundle,
        cause: &'static str,
    ) -> Result<(), EngineError> {
        self.to_bundle = self
            .ids
            .iter()
            .map(|id| {
                bundle
                    .model_index(id)
                    .ok_or_else(|| EngineError::Other(format!("the links lack model {id}")))
            })
            .collect::<Result<_, _>>()?;
        if cause == "trained" {
            bundle.save(&self.links_path)?;
            tracing::info!(path = %self.links_path.display(), "links saved");
        }
        for i in 0..self.k() {
            for j in 0..self.k() {
                if i != j {
                    let s = bundle.link_score(self.to_bundle[i], self.to_bundle[j]);
                    self.metrics
                        .link_score
                        .with_label_values(&[&self.ids[i], &self.ids[j]])
                        .set(s);
                }
            }
        }
        self.bundle = Some(Arc::new(bundle));
        self.phase = Phase::Serving;
        let adapts = self.cfg.adaptation.policy != AdaptationPolicy::None
            || self.cfg.adaptation.aggregator.is_some();
        if adapts && self.trainer.is_none() {
            match Trainer::start(
                self.links_path.clone(),
                self.cfg.links.seed,
                self.cfg.adaptation.aggregator.clone(),
                self.metrics.clone(),
            ) {
                Ok(t) => self.trainer = Some(t),
                Err(e) => tracing::warn!(error = %e, "online link training disabled"),
            }
        }
        let rows: Vec<Vec<OutputValue>> =
            self.warm_samples.iter().rev().take(32).cloned().collect();
        if !rows.is_empty() {
            self.profile_history = vec![rows];
        }
        self.reselect(cause)?;
        self.period_start = Instant::now();
        self.frames_in_period = 0;
        Ok(())
    }

    /// Before links exist: the models that fit, cheapest first.
    fn select_standalone(&mut self) -> Result<(), EngineError> {
        let sel = schedule::standalone(&self.costs, &self.budget);
        tracing::info!(reason = %sel.reason, "standalone selection until links are trained");
        let active = self.close_over_parents(sel.active);
        self.pool.transition(&active)?;
        self.active = active;
        Ok(())
    }

    /// A model cropping another's boxes cannot run without it: add the parent when the budget
    /// allows, otherwise drop the dependent.
    fn close_over_parents(&self, mut active: ModelSet) -> ModelSet {
        for m in active.clone().iter() {
            if let Some(p) = self.pool.parent(m)
                && !active.contains(p)
            {
                let mut with = active.clone();
                with.insert(p);
                if self.budget.fits(self.costs.set_cost(&with)) {
                    active = with;
                } else {
                    active.remove(m);
                }
            }
        }
        active
    }

    /// Re-selects the active set from the latest profiled scores and loads or unloads.
    fn reselect(&mut self, cause: &'static str) -> Result<(), EngineError> {
        let Some(bundle) = self.bundle.clone() else {
            return Ok(());
        };
        let rows: Vec<Vec<OutputValue>> = self.profile_history.iter().flatten().cloned().collect();
        let scores =
            ProfiledScores::new(&bundle, self.to_bundle.clone(), self.specs.clone(), &rows);
        let sel = schedule::select(
            self.cfg.scheduler.policy,
            &self.costs,
            &self.budget,
            &scores,
        )?;
        let active = self.close_over_parents(sel.active.clone());
        self.pool.transition(&active)?;
        let predicted: Vec<usize> = (0..self.k()).filter(|j| !active.contains(*j)).collect();
        self.expected_predicted_accuracy = if predicted.is_empty() {
            None
        } else {
            Some(
                predicted
                    .iter()
                    .map(|&j| scores.ensemble(&active, j))
                    .sum::<f64>()
                    / predicted.len() as f64,
            )
        };
        for (i, row) in scores.link_matrix().iter().enumerate() {
            for (j, s) in row.iter().enumerate() {
                if i != j {
                    self.metrics
                        .link_score
                        .with_label_values(&[&self.ids[i], &self.ids[j]])
                        .set(*s);
                }
            }
        }
        for j in 0..self.k() {
            let s = if active.contains(j) {
                1.0
            } else {
                scores.ensemble(&active, j)
            };
            self.metrics
                .link_score
                .with_label_values(&["ensemble", &self.ids[j]])
                .set(s);
        }
        let objective = schedule::objective(&scores, &active);
        self.metrics
            .expected_accuracy
            .with_label_values(&[&self.pipeline_name()])
            .set(objective);
        self.metrics.reselections.with_label_values(&[cause]).inc();
        if self.budget.ms_per_frame.is_some() {
            self.metrics
                .budget_used
                .with_label_values(&["ms_per_frame"])
                .set(self.costs.set_cost(&active).ms_per_frame);
        }
        self.summary.reselections += 1;
        let names: Vec<&str> = active.iter().map(|m| self.ids[m].as_str()).collect();
        tracing::info!(cause, active = ?names, objective, reason = %sel.reason, "selected the active models");
        self.active = active;
        Ok(())
    }

    fn pipeline_name(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Keeps the latest profiling batches that score the links; drift probes start over.
    fn remember_profile(&mut self, rows: Vec<Vec<OutputValue>>) {
        self.profile_history.push(rows);
        if self.profile_history.len() > PROFILE_HISTORY {
            self.profile_history.remove(0);
        }
        self.probes.clear();
    }

    /// Profiles the buffered frames (plus frames queued as uncertain), re-selects and hands the
    /// samples to online training.
    fn run_profiling(&mut self, cause: &'static str) -> Result<(), EngineError> {
        let mut frames = std::mem::take(&mut self.profile_buffer);
        let uncertain = std::mem::take(&mut self.uncertain);
        let n_uncertain = uncertain.len();
        // Uncertain frames were already served; profiling them only labels them for training.
        let served = frames.len();
        frames.extend(uncertain);
        let rows = self.profile_frames(&frames, served)?;
        self.profile_due = false;
        self.remember_profile(rows.clone());
        self.reselect(cause)?;
        self.period_start = Instant::now();
        self.frames_in_period = 0;
        if let Some(t) = &self.trainer {
            let policy = match self.cfg.adaptation.policy {
                AdaptationPolicy::Uncertainty if n_uncertain > 0 => Some("uncertainty"),
                AdaptationPolicy::Periodic => Some("periodic"),
                AdaptationPolicy::LossPrediction if n_uncertain > 0 => Some("loss_prediction"),
                // An edge of cross-site aggregation trains every period.
                _ if self.cfg.adaptation.aggregator.is_some() => Some("federated_local"),
                _ => None,
            };
            if let Some(policy) = policy {
                t.submit(TrainBatch {
                    rows: self.to_bundle_order(rows),
                    policy,
                });
            }
        }
        Ok(())
    }

    fn to_bundle_order(&self, rows: Vec<Vec<OutputValue>>) -> Vec<Vec<OutputValue>> {
        rows.into_iter()
            .map(|r| {
                let mut out = r.clone();
                for (m, v) in r.into_iter().enumerate() {
                    if let Some(slot) = out.get_mut(self.to_bundle[m]) {
                        *slot = v;
                    }
                }
                out
            })
            .collect()
    }

    /// Profiles one frame to check the predicted outputs; re-selects when their accuracy has
    /// dropped by more than the drift margin below what the selection expected.
    fn drift_probe(&mut self, frame: Frame) -> Result<(), EngineError> {
        let rows = self.profile_frames(std::slice::from_ref(&frame), 1)?;
        self.probes.extend(rows);
        let (Some(bundle), Some(expected), Some(margin)) = (
            self.bundle.clone(),
            self.expected_predicted_accuracy,
            self.cfg.scheduler.drift_margin,
        ) else {
            return Ok(());
        };
        let probes = self.probes.clone();
        let scores =
            ProfiledScores::new(&bundle, self.to_bundle.clone(), self.specs.clone(), &probes);
        if let Some(measured) = scores.measured_predicted_accuracy(&self.active)
            && probes.len() >= 2
            && measured < expected - margin
        {
            tracing::warn!(
                measured,
                expected,
                margin,
                "predicted outputs drifted; re-selecting early"
            );
            self.remember_profile(probes);
            self.reselect("drift")?;
        }
        Ok(())
    }

    /// Applies an edited pipeline file: cameras added, removed or changed and the budget, without
    /// a restart. An invalid edit is rejected with its errors and the running configuration kept.
    fn reload(
        &mut self,
        ingest: &IngestManager,
        cameras: &mut BTreeMap<String, (CameraConfig, Receiver<Frame>)>,
    ) {
        let new = match config::load_and_validate(&self.path) {
            Ok(p) => p,
            Err(errors) => {
                for e in &errors {
                    tracing::error!("rejected pipeline edit: {e}");
                }
                self.summary.reloads_rejected += 1;
                return;
            }
        };
        if new.models != self.cfg.models || new.links != self.cfg.links {
            tracing::warn!(
                "models or links changed in the pipeline file: they apply at the next restart"
            );
        }
        let old: BTreeMap<String, CameraConfig> = self
            .cfg
            .cameras
            .iter()
            .map(|c| (c.id.clone(), c.clone()))
            .collect();
        let wanted: BTreeMap<String, CameraConfig> = new
            .cameras
            .iter()
            .map(|c| (c.id.clone(), c.clone()))
            .collect();
        for (id, cam) in &old {
            if wanted.get(id) != Some(cam) {
                if let Err(e) = ingest.remove_camera(id) {
                    tracing::warn!(camera = %id, error = %e, "cannot remove camera");
                }
                cameras.remove(id);
                tracing::info!(camera = %id, "camera removed");
            }
        }
        for (id, cam) in &wanted {
            if old.get(id) != Some(cam) {
                match ingest.add_camera(cam, &self.base) {
                    Ok(rx) => {
                        cameras.insert(id.clone(), (cam.clone(), rx));
                        tracing::info!(camera = %id, "camera added");
                    }
                    Err(e) => tracing::error!(camera = %id, error = %e, "cannot add camera"),
                }
            }
        }
        let budget_changed = new.scheduler != self.cfg.scheduler;
        self.cfg.cameras = new.cameras.clone();
        self.cfg.sinks = new.sinks.clone();
        self.cfg.adaptation = new.adaptation.clone();
        if budget_changed {
            self.cfg.scheduler = new.scheduler.clone();
            self.budget = Budget::from(&self.cfg.scheduler.budget);
            self.pool.set_budget_mb(self.budget.memory_mb);
            // Unload first if the new budget is smaller than what is loaded.
            if let Err(e) = self.reselect("reload") {
                tracing::error!(error = %e, "re-selection after the budget change failed");
            }
        }
        self.summary.reloads_applied += 1;
        tracing::info!("pipeline file reloaded");
    }
}
