//! Carries out the controller's commands with the model pool, the sinks and the trainer.
//! The scheduling decisions are the controller's ([`crate::control`]); this file only runs
//! models, writes records, keeps frames and starts training.

use super::exec::{FrameOutputs, ModelPool};
use super::online::{TrainBatch, Trainer};
use super::record::{OutputRecord, Provenance, RECORD_VERSION};
use super::sink::SinkSet;
use super::{EngineError, RunSummary};
use crate::config::Pipeline;
use crate::control::hybrid::{Between, Mode};
use crate::control::{
    Batch, BundleLinks, Cause, Command, Controller, Decision, Event, FrameId, Labelling, Predictor,
    Purpose, Row, Selected, Views,
};
use crate::frame::Frame;
use crate::link::view_links::ModelInput;
use crate::link::{LinkBundle, Sample, TrainParams};
use crate::metrics::Metrics;
use crate::output::{OutputSpec, OutputValue};
use crate::schedule::ModelSet;
use crate::status::StatusBoard;
use crossbeam_channel::Receiver;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Where a run's time is charged (see [`Driver::charge`]).
#[derive(Clone, Copy)]
enum Account {
    Serving,
    Period,
}

/// Everything the frame path owns.
pub(super) struct Driver {
    pub cfg: Pipeline,
    pub pipeline_name: String,
    pub metrics: Arc<Metrics>,
    pub ids: Vec<String>,
    pub specs: Vec<OutputSpec>,
    pub pool: ModelPool,
    pub sinks: SinkSet,
    pub ctl: Controller,
    pub bundle: Option<Arc<LinkBundle>>,
    /// Pipeline model index -> bundle model index.
    pub to_bundle: Vec<usize>,
    pub links_path: PathBuf,
    /// The links file as the engine last read or wrote it (see [`super::reload::check_links`]).
    pub links_seen: Option<super::reload::FileStamp>,
    pub trainer: Option<Trainer>,
    pub training: Option<Receiver<Result<LinkBundle, String>>>,
    /// The warm-up samples, whose latest score the links until the first period is profiled.
    warm_tail: Batch,
    /// The warm-up samples the links are being trained on (pipeline order), for the online
    /// trainer's reservoir once the trained links are installed.
    learned: Batch,
    /// Frames kept for a run in turns or for labelling, by id.
    kept: BTreeMap<FrameId, Frame>,
    next_id: FrameId,
    /// Video time origin for frames without a PTS.
    started: Instant,
    pub decisions: Vec<Decision>,
    /// Inference time spent serving the current frame, the period's work done on its
    /// account (profiling, labels, runs in turns), and each model's latency.
    frame_ms: f64,
    period_ms: f64,
    frame_model_ms: Vec<(usize, f64)>,
    /// Time of one link prediction on the current frame (ms), when links ran.
    frame_link_ms: Option<f64>,
    /// Models that failed while carrying out the latest command.
    failed_now: Vec<usize>,
    /// Per model: accuracy of its predicted outputs measured on the latest profiling frames.
    pub predicted_accuracy: Vec<Option<f64>>,
    /// Threads the models' stages run on (see [`super::RunOptions::workers`]): measured
    /// wall time is charged times this, as the core time a frame takes.
    pub workers: usize,
    /// Cores the models run on, when the cameras' offered rate budgets the selection (live,
    /// budgeted runs); None: no rate budget.
    pub rate_cores: Option<usize>,
    /// The current frame's outputs when it was run with its batch: the set run and what it
    /// gave (used when the controller serves or profiles the frame with that set).
    prefetched: Option<(ModelSet, FrameOutputs)>,
    pub summary: RunSummary,
    /// The cameras' queues and the frames taken from them while the models run in turns.
    pub intake: super::backlog::Intake,
    /// What the status page shows, when the engine serves one.
    pub status: Option<Arc<StatusBoard>>,
    /// Under the hybrid policy: per camera, the frame-difference features at ingest.
    #[cfg(feature = "opencv")]
    differs: BTreeMap<Arc<str>, crate::eval::features::FrameDiffer>,
    /// Every model's newest exact output per camera: what a triggered model reuses between
    /// the frames its trigger selects.
    last_exact: super::reuse::LastOutputs,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Pipeline,
        pipeline_name: String,
        metrics: Arc<Metrics>,
        specs: Vec<OutputSpec>,
        pool: ModelPool,
        sinks: SinkSet,
        ctl: Controller,
        links_path: PathBuf,
        summary: RunSummary,
    ) -> Self {
        let ids: Vec<String> = cfg.models.iter().map(|m| m.id.clone()).collect();
        let k = ids.len();
        // No backlog until the wiring sets one (offline runs have none).
        let intake = super::backlog::Intake::new(0.0, Arc::clone(&metrics));
        Driver {
            cfg,
            pipeline_name,
            metrics,
            to_bundle: (0..k).collect(),
            predicted_accuracy: vec![None; k],
            ids,
            specs,
            pool,
            sinks,
            ctl,
            bundle: None,
            links_path,
            links_seen: None,
            trainer: None,
            training: None,
            warm_tail: Batch::default(),
            learned: Batch::default(),
            #[cfg(feature = "opencv")]
            differs: BTreeMap::new(),
            last_exact: Default::default(),
            kept: BTreeMap::new(),
            next_id: 0,
            started: Instant::now(),
            decisions: Vec::new(),
            frame_ms: 0.0,
            period_ms: 0.0,
            frame_model_ms: Vec::new(),
            frame_link_ms: None,
            failed_now: Vec::new(),
            workers: 1,
            rate_cores: None,
            prefetched: None,
            intake,
            summary,
            status: None,
        }
    }

    fn k(&self) -> usize {
        self.ids.len()
    }

    /// Hands an event to the controller with the current links and carries out what it says.
    pub fn send(&mut self, event: Event, frame: Option<&Frame>) -> Result<(), EngineError> {
        let mut events = VecDeque::from([event]);
        while let Some(event) = events.pop_front() {
            let bundle = self.bundle.clone();
            let links = bundle.as_deref().map(|b| BundleLinks {
                bundle: b,
                to_bundle: &self.to_bundle,
            });
            let commands = self
                .ctl
                .handle(event, links.as_ref().map(|l| l as &dyn Predictor))
                .map_err(|e| EngineError::Other(format!("scheduling: {e}")))?;
            for cmd in commands {
                if let Some(next) = self.execute(cmd, frame)? {
                    events.push_back(next);
                }
                for model in std::mem::take(&mut self.failed_now) {
                    events.push_back(Event::ModelFailed { model });
                }
            }
        }
        Ok(())
    }

    /// Runs the frames the hybrid's trigger still keeps (the end of the stream).
    pub fn flush_triggers(&mut self) -> Result<(), EngineError> {
        for cmd in self.ctl.finish() {
            self.execute(cmd, None)?;
        }
        Ok(())
    }

    /// The time per frame the cameras' offered rate allows on the cores (see
    /// [`super::rate`]), published as `mlink_offered_rate`; None without a rate budget.
    pub fn offered_rate_budget(&mut self) -> Option<f64> {
        let cores = self.rate_cores?;
        let fps = super::rate::offered_fps(&self.cfg);
        let ms = super::rate::implied_ms_per_frame(fps, cores);
        self.metrics
            .offered_rate
            .with_label_values(&["fps"])
            .set(fps);
        if let Some(ms) = ms {
            self.metrics
                .offered_rate
                .with_label_values(&["ms_per_frame"])
                .set(ms);
            tracing::info!(
                offered_fps = fps,
                cores,
                ms_per_frame = ms,
                "the cameras' rate budgets the selection"
            );
        }
        self.summary.offered_fps = fps;
        self.summary.rate_budget_ms = ms;
        ms
    }

    /// Tells the controller the offered rate's time per frame after the cameras changed.
    pub fn update_offered_rate(&mut self) -> Result<(), EngineError> {
        if self.rate_cores.is_none() {
            return Ok(());
        }
        let ms_per_frame = self.offered_rate_budget();
        self.send(Event::OfferedRate { ms_per_frame }, None)
    }

    /// Runs the set the controller serves with now on a batch of frames from the cameras at
    /// once ([`ModelPool::run_batch`]); the outputs go with each frame to
    /// [`Driver::on_frame_with`]. None per frame when the set is not loaded.
    pub fn run_batch(&mut self, frames: &[Frame]) -> Vec<Option<(ModelSet, FrameOutputs)>> {
        let mut set = self.ctl.active().clone();
        for m in self.ctl.failed().iter() {
            set.remove(m);
        }
        if set.is_empty() || !set.is_subset(self.pool.loaded()) {
            return frames.iter().map(|_| None).collect();
        }
        self.pool
            .run_batch(&set, frames)
            .into_iter()
            .map(|out| Some((set.clone(), out)))
            .collect()
    }

    /// One frame from a camera, with its outputs when it was run with its batch.
    pub fn on_frame_with(
        &mut self,
        frame: Frame,
        prefetched: Option<(ModelSet, FrameOutputs)>,
    ) -> Result<(), EngineError> {
        self.prefetched = prefetched;
        let result = self.on_frame(frame);
        self.prefetched = None;
        result
    }

    /// One frame from a camera.
    pub fn on_frame(&mut self, frame: Frame) -> Result<(), EngineError> {
        self.summary.frames += 1;
        let id = self.next_id;
        self.next_id += 1;
        let time_s = frame
            .pts_ns
            .map_or(self.started.elapsed().as_secs_f64(), |p| p as f64 / 1e9);
        self.frame_ms = 0.0;
        self.period_ms = 0.0;
        self.frame_model_ms.clear();
        self.frame_link_ms = None;
        #[cfg(feature = "opencv")]
        if self.ctl.settings().policy == crate::config::SelectionPolicy::Hybrid {
            self.send_features(id, &frame)?;
        }
        self.send(Event::Frame { id, time_s }, Some(&frame))?;
        // Serving is charged to the frame; profiling, probes and runs in turns over kept
        // frames are the period's work, which the controller spreads over the period.
        let cost = Event::Cost {
            ms: self.frame_ms,
            period_ms: self.period_ms,
            models: std::mem::take(&mut self.frame_model_ms),
            link_ms: self.frame_link_ms,
        };
        self.send(cost, None)?;
        if let Some(board) = &self.status {
            board.controller(&self.ctl, time_s);
        }
        if self.ctl.budget().ms_per_frame.is_some()
            && let Some(ms) = self.ctl.measured_ms_per_frame()
        {
            self.metrics
                .budget_used
                .with_label_values(&["ms_per_frame"])
                .set(ms);
        }
        if let Some(ms) = self.ctl.period_ms_per_frame() {
            // Profiling and runs in turns, spread over the latest whole period.
            self.metrics
                .budget_used
                .with_label_values(&["period_ms_per_frame"])
                .set(ms);
        }
        Ok(())
    }

    /// Adds what a run of models on one frame cost to the current frame's account (serving)
    /// or to the period's work done on it (`Account::Period`), in core time: the wall time
    /// (the frame's share of its batch) times the threads the stages ran on, which is what
    /// the declared costs and the rate budget count in.
    fn charge(&mut self, out: &FrameOutputs, account: Account) {
        let cores = self.workers.max(1) as f64;
        match account {
            Account::Serving => self.frame_ms += out.inference_ms * cores,
            Account::Period => self.period_ms += out.inference_ms * cores,
        }
        for (m, ms) in out.model_ms.iter().enumerate() {
            if let Some(ms) = ms {
                self.frame_model_ms.push((m, *ms * cores));
            }
        }
    }

    /// The current frame's outputs from its batch when they were run with `set`.
    fn take_prefetched(&mut self, set: &ModelSet) -> Option<FrameOutputs> {
        match self.prefetched.take() {
            Some((run, out)) if run == *set => Some(out),
            _ => None,
        }
    }

    /// Carries out one command; returns the event it produces, if any.
    fn execute(
        &mut self,
        cmd: Command,
        frame: Option<&Frame>,
    ) -> Result<Option<Event>, EngineError> {
        match cmd {
            Command::Serve {
                active, predict, ..
            } => {
                let Some(frame) = frame else { return Ok(None) };
                let (uncertainty, predicted_loss) = self.serve(frame, &active, predict);
                Ok(Some(Event::Served {
                    id: self.next_id.saturating_sub(1),
                    uncertainty,
                    predicted_loss,
                }))
            }
            Command::Profile { purpose, .. } => {
                let Some(frame) = frame else { return Ok(None) };
                // Every model fits the memory budget: they stay loaded until the next
                // selection, so a period's profiling frames load each model once. Failed
                // models wait for their retry.
                let mut all = ModelSet::full(self.k());
                for m in self.ctl.failed().iter() {
                    all.remove(m);
                }
                // What the frame's batch ran already is kept; the rest runs now.
                let mut out = match self.prefetched.take() {
                    Some((_, mut out)) => {
                        out.errors.iter_mut().for_each(|e| *e = None);
                        out
                    }
                    None => FrameOutputs::new(self.k()),
                };
                // Loading every model takes a while: the cameras' frames wait in the backlog.
                let pool = &mut self.pool;
                self.intake.while_busy(|| {
                    if let Err(e) = pool.transition(&all) {
                        tracing::error!(error = %e, "cannot load the models for profiling");
                    }
                    pool.run_isolated(&all, frame, &mut out);
                });
                self.note_failures(&out);
                self.charge(&out, Account::Period);
                self.summary.profiling_frames += 1;
                self.emit_exact(frame, &out);
                let (samples, views) = complete(&out).into_iter().unzip();
                Ok(Some(Event::Measured {
                    purpose,
                    frames: 1,
                    samples,
                    views,
                }))
            }
            Command::Keep { frame: id } => {
                if let Some(frame) = frame {
                    self.kept.insert(id, frame.clone());
                }
                Ok(None)
            }
            Command::Release { frames } => {
                for id in frames {
                    self.kept.remove(&id);
                }
                Ok(None)
            }
            Command::RunInTurns {
                frames,
                groups,
                purpose,
            } => {
                // A frame the trigger selected for several models stays kept until released.
                let kept: Vec<Frame> = frames
                    .iter()
                    .filter_map(|id| {
                        if purpose == Purpose::Trigger {
                            self.kept.get(id).cloned()
                        } else {
                            self.kept.remove(id)
                        }
                    })
                    .collect();
                let keep = self.ctl.loaded();
                let failed = self.ctl.failed();
                let groups: Vec<Vec<usize>> = groups
                    .into_iter()
                    .map(|g| g.into_iter().filter(|m| !failed.contains(*m)).collect())
                    .filter(|g: &Vec<usize>| !g.is_empty())
                    .collect();
                let dropped_before = self.frames_dropped();
                let pool = &mut self.pool;
                let outs = self
                    .intake
                    .while_busy(|| pool.run_all_in_turns(&groups, &kept, &keep));
                self.summary.frames_dropped_in_turns +=
                    self.frames_dropped().saturating_sub(dropped_before);
                let outs = match outs {
                    Ok(outs) => outs,
                    Err(e) => {
                        // The frames were served already; only their labels are lost.
                        self.metrics
                            .model_failures
                            .with_label_values(&["turns"])
                            .inc();
                        tracing::error!(error = %e, frames = kept.len(), "profiling in turns failed");
                        Vec::new()
                    }
                };
                for out in &outs {
                    self.charge(out, Account::Period);
                }
                if purpose == Purpose::Trigger {
                    for (frame, out) in kept.iter().zip(&outs) {
                        self.emit_triggered(frame, out);
                    }
                    return Ok(None);
                }
                if purpose != Purpose::Label {
                    self.summary.profiling_frames += kept.len() as u64;
                }
                let (samples, views) = outs.iter().filter_map(complete).unzip();
                Ok(Some(Event::Measured {
                    purpose,
                    frames: frames.len(),
                    samples,
                    views,
                }))
            }
            Command::Select(sel) => {
                self.apply_selection(&sel)?;
                Ok(None)
            }
            Command::StartTraining { samples, views } => {
                // Newest first, as the controller's seeding takes them.
                let newest = crate::control::controller::WARM_SCORING_SAMPLES;
                self.warm_tail = Batch::new(
                    samples.iter().rev().take(newest).cloned().collect(),
                    views.iter().rev().take(newest).cloned().collect(),
                );
                self.learned = Batch::new(samples.clone(), views.clone());
                self.start_training(samples, views);
                Ok(None)
            }
            Command::Train {
                samples,
                views,
                policy,
            } => {
                if let Some(t) = &self.trainer {
                    t.submit(TrainBatch {
                        rows: self.to_bundle_order(samples),
                        views: self.to_bundle_order(views),
                        policy: policy.as_label(),
                    });
                }
                Ok(None)
            }
        }
    }

    /// Frames the cameras dropped so far (the engine behind), all cameras together.
    fn frames_dropped(&self) -> u64 {
        self.cfg
            .cameras
            .iter()
            .map(|c| {
                self.metrics
                    .frames_dropped
                    .with_label_values(&[&c.id])
                    .get()
            })
            .sum()
    }

    /// Counts, logs and reports the models that failed on a frame.
    fn note_failures(&mut self, out: &FrameOutputs) {
        for (m, e) in out.errors.iter().enumerate() {
            if let Some(e) = e {
                self.metrics
                    .model_failures
                    .with_label_values(&[&self.ids[m]])
                    .inc();
                tracing::error!(model = %self.ids[m], error = %e, "model failed: excluded until its retry");
                self.failed_now.push(m);
            }
        }
    }

    /// Counts, exports and logs a selection made when no set keeps up with the cameras.
    pub fn note_rate_unmet(&mut self, sel: &Selected) {
        if !sel.rate_unmet {
            return;
        }
        let cause = sel.cause.as_label();
        self.summary.rate_unmet_selections += 1;
        self.metrics.rate_unmet.with_label_values(&[cause]).inc();
        tracing::warn!(
            cause,
            reason = %sel.reason,
            "no set of models keeps up with the cameras' offered rate: the cheapest serves \
             and the frames beyond its rate are dropped"
        );
    }

    /// Loads or unloads for a new active set and publishes what the scheduler saw.
    fn apply_selection(&mut self, sel: &Selected) -> Result<(), EngineError> {
        if let Err(e) = self.pool.transition(&sel.loaded()) {
            // Serving then finds the model not loaded, which marks it failed.
            tracing::error!(error = %e, "cannot load the selected models");
        }
        let cause = sel.cause.as_label();
        for (i, row) in sel.link_matrix.iter().enumerate() {
            for (j, s) in row.iter().enumerate() {
                if i != j {
                    self.metrics
                        .link_score
                        .with_label_values(&[&self.ids[i], &self.ids[j]])
                        .set(*s);
                }
            }
        }
        for (j, s) in sel.ensembles.iter().enumerate() {
            self.metrics
                .link_score
                .with_label_values(&["ensemble", &self.ids[j]])
                .set(*s);
        }
        for (j, m) in sel.measured.iter().enumerate() {
            if let Some(acc) = m {
                self.predicted_accuracy[j] = Some(*acc);
                self.metrics
                    .predicted_accuracy
                    .with_label_values(&[&self.ids[j]])
                    .set(*acc);
            }
        }
        self.metrics
            .expected_accuracy
            .with_label_values(&[&self.pipeline_name])
            .set(sel.objective);
        if sel.cause != Cause::NoLinks {
            self.metrics.reselections.with_label_values(&[cause]).inc();
            self.summary.reselections += 1;
        }
        self.note_rate_unmet(sel);
        let names: Vec<&str> = sel.to.iter().map(|m| self.ids[m].as_str()).collect();
        if sel.to.is_empty() && self.k() > 0 {
            self.metrics
                .empty_selections
                .with_label_values(&[cause])
                .inc();
            tracing::warn!(
                cause,
                reason = %sel.reason,
                "no model fits the budget: every output is unavailable until the budget grows"
            );
        } else {
            tracing::info!(cause, active = ?names, objective = sel.objective, reason = %sel.reason, "selected the active models");
        }
        self.decisions.push(sel.decision(&self.ids));
        if let Some(board) = &self.status {
            board.selected(sel, &self.ids);
        }
        Ok(())
    }

    /// The hybrid's trigger input: the frame's change since its camera's previous frame.
    #[cfg(feature = "opencv")]
    fn send_features(&mut self, id: FrameId, frame: &Frame) -> Result<(), EngineError> {
        let camera = self
            .cfg
            .cameras
            .iter()
            .position(|c| *c.id == *frame.camera)
            .unwrap_or(0);
        let diffs = match self.differs.entry(frame.camera.clone()).or_default().push(
            frame.width,
            frame.height,
            &frame.rgb,
        ) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "frame features unavailable: the trigger sees no change");
                return Ok(());
            }
        };
        self.send(Event::Features { id, camera, diffs }, None)
    }

    /// Exact outputs of a model run in turns on frames its trigger selected (late, within
    /// the latency allowance).
    fn emit_triggered(&mut self, frame: &Frame, out: &FrameOutputs) {
        let batch: Vec<OutputRecord> = out
            .values
            .iter()
            .enumerate()
            .filter_map(|(m, v)| {
                let v = v.as_ref()?;
                Some(self.record(
                    frame,
                    m,
                    Provenance::Exact { profiling: false },
                    Some(v.clone()),
                ))
            })
            .collect();
        self.summary.exact_outputs += batch.len() as u64;
        self.last_exact.note(frame, &out.values);
        self.sinks.send(batch);
    }

    fn emit_exact(&mut self, frame: &Frame, out: &FrameOutputs) {
        let mut batch = Vec::with_capacity(self.k());
        for (m, v) in out.values.iter().enumerate() {
            if let Some(v) = v {
                self.summary.exact_outputs += 1;
                batch.push(self.record(
                    frame,
                    m,
                    Provenance::Exact { profiling: true },
                    Some(v.clone()),
                ));
            }
        }
        if let Some(board) = &self.status {
            board.frame_served(frame, &out.detections, &batch);
        }
        self.last_exact.note(frame, &out.values);
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

    /// Serves one frame: the models of `active` exact, the others predicted (or unavailable
    /// with the reason). Returns the largest uncertainty and predicted loss of the
    /// predictions, for the labelling policy.
    fn serve(
        &mut self,
        frame: &Frame,
        active: &ModelSet,
        predict: bool,
    ) -> (Option<f64>, Option<f64>) {
        let (out, failure) = match self.take_prefetched(active) {
            Some(out) => {
                let failure = out.errors.iter().flatten().next().cloned();
                (out, failure)
            }
            None => {
                let mut out = FrameOutputs::new(self.k());
                let failure = self.pool.run(active, frame, &mut out).err();
                (out, failure.map(|e| e.to_string()))
            }
        };
        self.charge(&out, Account::Serving);
        if let Some(e) = &failure {
            tracing::error!(error = %e, "inference failed on a frame; its outputs are unavailable");
        }
        let sources: Vec<(usize, &OutputValue)> = out
            .values
            .iter()
            .enumerate()
            .filter_map(|(m, v)| v.as_ref().map(|v| (self.to_bundle[m], v)))
            .collect();
        let views: Vec<(usize, &[f32])> = out
            .views
            .iter()
            .enumerate()
            .filter_map(|(m, v)| v.as_deref().map(|v| (self.to_bundle[m], v)))
            .collect();
        let mut batch = Vec::with_capacity(self.k());
        let mut uncertainty: Option<f64> = None;
        for m in 0..self.k() {
            if let Some(v) = &out.values[m] {
                self.summary.exact_outputs += 1;
                batch.push(self.record(
                    frame,
                    m,
                    Provenance::Exact { profiling: false },
                    Some(v.clone()),
                ));
                continue;
            }
            // A triggered model that failed on the frame says so rather than serve its last
            // output.
            if out.errors[m].is_none()
                && let Some(reused) = self.reused(frame, m)
            {
                self.summary.reused_outputs += 1;
                self.metrics
                    .model_reused
                    .with_label_values(&[&self.ids[m]])
                    .inc();
                batch.push(reused);
                continue;
            }
            let predicted = match (&self.bundle, &out.errors[m]) {
                (_, Some(e)) => Err(format!("the model failed: {e}")),
                (Some(_), _) if !predict => {
                    Err("the budget holds no links: only the models that fit alone run".to_string())
                }
                (Some(bundle), _) => {
                    let t = Instant::now();
                    match bundle.predict_viewed(self.to_bundle[m], &sources, &views) {
                        Ok(p) => {
                            let secs = t.elapsed().as_secs_f64();
                            self.metrics
                                .link_seconds
                                .with_label_values(&[&self.ids[m]])
                                .observe(secs);
                            // An ensemble over n sources runs n links.
                            let per_link = secs * 1000.0 / p.sources.len().max(1) as f64;
                            self.frame_link_ms =
                                Some(self.frame_link_ms.map_or(per_link, |l| l.max(per_link)));
                            self.metrics
                                .model_predictions
                                .with_label_values(&[&self.ids[m]])
                                .inc();
                            uncertainty =
                                Some(uncertainty.map_or(p.uncertainty, |u| u.max(p.uncertainty)));
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
                (None, _) if self.training.is_some() => Err(format!(
                    "links are being trained on {} samples",
                    self.ctl.warmup_samples()
                )),
                (None, _) => Err("no links yet".to_string()),
            };
            match predicted {
                Ok((prov, value)) => {
                    self.summary.predicted_outputs += 1;
                    batch.push(self.record(frame, m, prov, Some(value)));
                }
                Err(reason) => {
                    self.summary.unavailable_outputs += 1;
                    batch.push(self.record(frame, m, Provenance::Unavailable { reason }, None));
                }
            }
        }
        if let Some(board) = &self.status {
            board.frame_served(frame, &out.detections, &batch);
        }
        self.last_exact.note(frame, &out.values);
        self.sinks.send(batch);
        self.observe_frame(frame);
        // The links' loss-prediction heads estimate how wrong each prediction is.
        let predicted_loss = match (&self.bundle, self.ctl.settings().labelling) {
            (Some(bundle), Labelling::LossPrediction { .. }) => (0..self.k())
                .filter(|m| out.values[*m].is_none())
                .filter_map(|m| bundle.predicted_loss(self.to_bundle[m], &sources))
                .fold(None, |acc: Option<f64>, l| {
                    Some(acc.map_or(l, |a| a.max(l)))
                }),
            _ => None,
        };
        (uncertainty, predicted_loss)
    }

    /// Under the hybrid policy, the record of a triggered model that reuses its last exact
    /// output between the frames its trigger selects (None: predicted as any other, also
    /// before its first exact output on the camera).
    fn reused(&self, frame: &Frame, m: usize) -> Option<OutputRecord> {
        let plan = self.ctl.plan()?;
        let reuses = matches!(
            plan.modes.get(m),
            Some(Mode::Triggered {
                between: Between::Reuse,
                ..
            })
        );
        if !reuses {
            return None;
        }
        let last = self.last_exact.before(frame, m)?;
        let now_s = frame.pts_ns.map(|p| p as f64 / 1e9);
        let provenance = Provenance::Reused {
            from_seq: last.seq,
            age_s: now_s
                .zip(last.pts_s)
                .map(|(now, then)| (now - then).max(0.0)),
        };
        Some(self.record(frame, m, provenance, Some(last.value.clone())))
    }

    fn bundle_id(&self, bundle_index: usize) -> String {
        self.to_bundle
            .iter()
            .position(|&b| b == bundle_index)
            .map(|m| self.ids[m].clone())
            .unwrap_or_else(|| format!("#{bundle_index}"))
    }

    fn to_bundle_order<T: Clone>(&self, rows: Vec<Vec<T>>) -> Vec<Vec<T>> {
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

    /// The pipeline's models with their output specs, as bundles name them.
    pub fn models_with_specs(&self) -> Vec<(String, OutputSpec)> {
        self.ids
            .iter()
            .cloned()
            .zip(self.specs.iter().cloned())
            .collect()
    }

    /// Starts link training on the warm-up samples, in the background.
    fn start_training(&mut self, samples: Vec<Row>, views: Vec<Views>) {
        let models = self.models_with_specs();
        let rows: Vec<Sample> = samples
            .iter()
            .map(|r| Sample::complete(r.iter().cloned()))
            .collect();
        let params = TrainParams::from_config(&self.cfg.links);
        let split = self.cfg.links.validation_split;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let metrics = self.metrics.clone();
        tracing::info!(
            samples = rows.len(),
            "training links and ensembles in the background"
        );
        let spawned = std::thread::Builder::new()
            .name("link training".into())
            .spawn(move || {
                let threads = std::thread::available_parallelism()
                    .map_or(1, |n| n.get().saturating_sub(1).max(1));
                let r = LinkBundle::train(&models, &rows, &params, split, threads, &|_| {})
                    .map(|mut b| {
                        // Beside the paper's links, the few-sample links over the link views,
                        // from the same samples (the driver's bundle is in pipeline order).
                        b.train_view_links(view_inputs(&samples, &views), &params);
                        b
                    })
                    .map_err(|e| e.to_string());
                metrics
                    .link_training_runs
                    .with_label_values(&[crate::control::TrainingPolicy::Initial.as_label()])
                    .inc();
                let _ = tx.send(r);
            });
        match spawned {
            Ok(_) => self.training = Some(rx),
            Err(e) => tracing::error!(error = %e, "cannot start link training"),
        }
    }

    /// Picks up finished background work: the initial training and online updates.
    pub fn poll_background(&mut self) -> Result<(), EngineError> {
        if let Some(rx) = &self.training {
            match rx.try_recv() {
                Ok(Ok(bundle)) => {
                    self.training = None;
                    self.install_bundle(bundle, Cause::Trained)?;
                }
                Ok(Err(e)) => {
                    self.training = None;
                    return Err(EngineError::Other(format!("link training failed: {e}")));
                }
                Err(_) => {}
            }
        }
        if let Some(t) = &self.trainer {
            let mut newest = None;
            while let Ok(b) = t.updates.try_recv() {
                newest = Some(b);
            }
            if let Some(b) = newest {
                // The trainer saved it: not a change for the file watch to pick up.
                self.links_seen = super::reload::stamp(&self.links_path);
                self.charge_link_costs(&b);
                self.bundle = Some(b);
                self.send(Event::LinksUpdated, None)?;
            }
        }
        Ok(())
    }

    /// Waits for an initial training still running (at exit), and installs its links.
    pub fn finish_training(&mut self) {
        if let Some(rx) = self.training.take() {
            tracing::info!("waiting for link training to finish before exiting");
            if let Ok(Ok(bundle)) = rx.recv()
                && let Err(e) = self.install_bundle(bundle, Cause::Trained)
            {
                tracing::error!(error = %e, "cannot install the trained links");
            }
        }
    }

    /// Maps, saves (when freshly trained) and installs a bundle, starts the online trainer
    /// and tells the controller that links exist.
    pub fn install_bundle(&mut self, bundle: LinkBundle, cause: Cause) -> Result<(), EngineError> {
        self.to_bundle = self
            .ids
            .iter()
            .map(|id| {
                bundle
                    .model_index(id)
                    .ok_or_else(|| EngineError::Other(format!("the links lack model {id}")))
            })
            .collect::<Result<_, _>>()?;
        if cause == Cause::Trained {
            bundle.save(&self.links_path)?;
            tracing::info!(path = %self.links_path.display(), "links saved");
        }
        self.links_seen = super::reload::stamp(&self.links_path);
        self.charge_link_costs(&bundle);
        self.bundle = Some(Arc::new(bundle));
        // Only links trained here learned from the warm-up samples held.
        let learned = std::mem::take(&mut self.learned);
        self.start_trainer(if cause == Cause::Trained {
            learned
        } else {
            Batch::default()
        });
        let tail = std::mem::take(&mut self.warm_tail);
        self.ctl.seed_batch(&tail);
        self.send(Event::LinksReady { cause }, None)
    }

    /// Charges links at their own size from now on (their prediction time is measured while
    /// serving): at install, and after online training, which can change it (a lookup link
    /// holds the samples it learned from).
    fn charge_link_costs(&mut self, bundle: &LinkBundle) {
        let links = BundleLinks {
            bundle,
            to_bundle: &self.to_bundle,
        };
        if let Some(mb) = links.mean_link_memory_mb() {
            let mut cost = self.ctl.costs().link;
            cost.memory_mb = mb;
            self.ctl.set_link_cost(cost);
            // Each link is charged its own parameter memory.
            self.ctl.set_link_costs(links.link_costs(cost.ms_per_frame));
            tracing::info!(mean_memory_mb = mb, "link costs from the links' parameters");
        }
    }

    /// Starts the online trainer when the adaptation settings call for one; `learned` are the
    /// samples (pipeline order) the links were trained on, where known.
    pub fn start_trainer(&mut self, learned: Batch) {
        let adapts = self.cfg.adaptation.policy != crate::config::AdaptationPolicy::None
            || self.cfg.adaptation.aggregator.is_some();
        if adapts && self.trainer.is_none() && self.bundle.is_some() {
            match Trainer::start(
                self.links_path.clone(),
                self.cfg.links.seed,
                self.cfg.adaptation.aggregator.clone(),
                self.metrics.clone(),
                TrainBatch {
                    rows: self.to_bundle_order(learned.rows),
                    views: self.to_bundle_order(learned.views),
                    policy: crate::control::TrainingPolicy::Initial.as_label(),
                },
            ) {
                Ok(t) => self.trainer = Some(t),
                Err(e) => tracing::warn!(error = %e, "online link training disabled"),
            }
        }
    }
}

/// Per complete sample its inputs for view links (`samples[s]` with `views[s]`); a sample
/// with a token-sequence head or a model without a view gives an incomplete frame, which
/// view-link training leaves out.
fn view_inputs<'a>(samples: &'a [Row], views: &'a [Views]) -> Vec<Vec<ModelInput<'a>>> {
    samples
        .iter()
        .zip(views)
        .map(|(row, views)| {
            row.iter()
                .zip(views)
                .filter_map(|(o, v)| match o {
                    OutputValue::Vector(head) if !v.is_empty() => {
                        Some(ModelInput { view: v, head })
                    }
                    _ => None,
                })
                .collect()
        })
        .collect()
}

/// A complete sample (every model's output) from one frame's outputs, with every model's
/// link view.
fn complete(out: &FrameOutputs) -> Option<(Row, Views)> {
    let row = out.values.iter().cloned().collect::<Option<Vec<_>>>()?;
    // A model without a view (none configured) leaves its entry empty: links that read
    // views then fall back to the heads.
    let views = out
        .views
        .iter()
        .map(|v| v.clone().unwrap_or_default())
        .collect();
    Some((row, views))
}
