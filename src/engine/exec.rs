//! Running models on frames for the engine: explicit, budget-checked loads and unloads, and
//! execution of a set of models on one frame in dependency order (a model with `crops_from`
//! runs after the detector whose boxes it crops).

use crate::adapt::oracle::OracleLink;
use crate::config::ModelConfig;
use crate::frame::Frame;
use crate::metrics::Metrics;
use crate::models::{Detection, Inference, ModelError, ModelRegistry};
use crate::output::OutputValue;
use crate::schedule::ModelSet;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(
        "loading {model} ({cost_mb:.1} MB) would take the accounted memory to {would_be_mb:.1} MB, \
         over the budget of {budget_mb:.1} MB"
    )]
    OverBudget {
        model: String,
        cost_mb: f64,
        would_be_mb: f64,
        budget_mb: f64,
    },
    #[error("{model} crops the boxes of {parent}, which has not run on this frame")]
    MissingParent { model: String, parent: String },
    #[error("{model} failed on a frame of the batch: {message}")]
    InBatch { model: String, message: String },
    #[error("the oracle link of {model} failed: {source}")]
    Oracle {
        model: String,
        source: crate::adapt::oracle::OracleError,
    },
}

/// The pipeline's models, loaded and unloaded explicitly under a memory budget. Memory is
/// accounted with each model's cost (declared in the pipeline file or profiled at start-up),
/// which is what the scheduler plans with; a load that would exceed the budget is refused, so
/// no code path can break it.
pub struct ModelPool {
    ids: Vec<String>,
    /// Index of the model whose detections a model crops, per model.
    parents: Vec<Option<usize>>,
    /// Models in an order where every parent precedes its dependents.
    order: Vec<usize>,
    memory_mb: Vec<f64>,
    budget_mb: Option<f64>,
    registry: ModelRegistry,
    loaded: ModelSet,
    accounted_mb: f64,
    peak_mb: f64,
    /// The most host memory the loaded sessions measurably took at once (the sum of each
    /// loaded session's RSS growth at its creation), in MB: what the accounted memory stands
    /// for, checked against the budget by the tests.
    peak_measured_mb: f64,
    /// Per model: an oracle link applied to its exact output (`models[].oracle`).
    oracles: Vec<Option<Arc<OracleLink>>>,
    /// Threads a batch's stages run on (runs in turns over kept frames use them too).
    workers: usize,
    metrics: Arc<Metrics>,
}

/// Outputs of the models that ran on one frame.
#[derive(Clone, Debug, Default)]
pub struct FrameOutputs {
    /// Per model index: its output when it ran.
    pub values: Vec<Option<OutputValue>>,
    /// Per model index: its detections when it ran (for models cropping them).
    pub detections: Vec<Option<Vec<Detection>>>,
    /// Per model index: its inference time on this frame in ms, when it ran.
    pub model_ms: Vec<Option<f64>>,
    /// Per model index: its link view when it ran (the encoding of its raw output).
    pub views: Vec<Option<Vec<f32>>>,
    /// Inference time spent on this frame, in ms.
    pub inference_ms: f64,
    /// Per model index: why it failed on this frame ([`ModelPool::run_isolated`]).
    pub errors: Vec<Option<String>>,
}

impl FrameOutputs {
    pub fn new(k: usize) -> Self {
        Self {
            values: vec![None; k],
            detections: vec![None; k],
            model_ms: vec![None; k],
            views: vec![None; k],
            inference_ms: 0.0,
            errors: vec![None; k],
        }
    }
}

impl ModelPool {
    pub fn new(
        models: &[ModelConfig],
        memory_mb: Vec<f64>,
        budget_mb: Option<f64>,
        base_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Self {
        let ids: Vec<String> = models.iter().map(|m| m.id.clone()).collect();
        let parents: Vec<Option<usize>> = models
            .iter()
            .map(|m| {
                m.crops_from
                    .as_ref()
                    .and_then(|p| ids.iter().position(|id| id == p))
            })
            .collect();
        let order = dependency_order(&parents);
        if let Some(b) = budget_mb {
            metrics.budget.with_label_values(&["memory_mb"]).set(b);
        }
        Self {
            ids,
            parents,
            order,
            memory_mb,
            budget_mb,
            registry: ModelRegistry::new(models, base_dir, metrics.clone()),
            loaded: ModelSet::empty(models.len()),
            accounted_mb: 0.0,
            peak_mb: 0.0,
            peak_measured_mb: 0.0,
            oracles: vec![None; models.len()],
            workers: 1,
            metrics,
        }
    }

    /// Runs batches on `workers` threads ([`ModelPool::run_batch`]); 1 runs kept frames one
    /// at a time.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Serves `oracle(model(x))` for the models that have an oracle link.
    pub fn with_oracles(mut self, oracles: Vec<Option<Arc<OracleLink>>>) -> Self {
        if oracles.len() == self.oracles.len() {
            self.oracles = oracles;
        }
        self
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn id(&self, m: usize) -> &str {
        &self.ids[m]
    }

    pub fn parent(&self, m: usize) -> Option<usize> {
        self.parents[m]
    }

    pub fn loaded(&self) -> &ModelSet {
        &self.loaded
    }

    /// Accounted memory of the loaded models, in MB.
    pub fn accounted_mb(&self) -> f64 {
        self.accounted_mb
    }

    /// The most memory accounted at any moment since start-up, in MB.
    pub fn peak_mb(&self) -> f64 {
        self.peak_mb
    }

    /// Host memory the loaded sessions took when they were created (RSS growth), in MB.
    pub fn measured_mb(&self) -> f64 {
        self.registry.memory_in_use_mb()
    }

    /// The most of [`ModelPool::measured_mb`] at any moment since start-up, in MB.
    pub fn peak_measured_mb(&self) -> f64 {
        self.peak_measured_mb
    }

    pub fn set_budget_mb(&mut self, budget_mb: Option<f64>) {
        self.budget_mb = budget_mb;
        if let Some(b) = budget_mb {
            self.metrics.budget.with_label_values(&["memory_mb"]).set(b);
        }
    }

    /// Loads model `m` unless it is loaded; refused when it would exceed the memory budget.
    pub fn load(&mut self, m: usize) -> Result<(), ExecError> {
        if self.loaded.contains(m) {
            return Ok(());
        }
        let would_be = self.accounted_mb + self.memory_mb[m];
        if let Some(budget) = self.budget_mb
            && would_be > budget + 1e-9
        {
            return Err(ExecError::OverBudget {
                model: self.ids[m].clone(),
                cost_mb: self.memory_mb[m],
                would_be_mb: would_be,
                budget_mb: budget,
            });
        }
        // The session counts itself in `model_loads` (`LoadedModel::load`).
        self.registry.load(&self.ids[m])?;
        self.loaded.insert(m);
        self.accounted_mb = would_be;
        self.peak_mb = self.peak_mb.max(would_be);
        self.peak_measured_mb = self.peak_measured_mb.max(self.measured_mb());
        self.publish();
        tracing::info!(model = %self.ids[m], accounted_mb = self.accounted_mb, "model loaded");
        Ok(())
    }

    pub fn unload(&mut self, m: usize) -> Result<(), ExecError> {
        if !self.loaded.contains(m) {
            return Ok(());
        }
        self.registry.unload(&self.ids[m])?;
        self.loaded.remove(m);
        self.accounted_mb = (self.accounted_mb - self.memory_mb[m]).max(0.0);
        self.publish();
        Ok(())
    }

    /// Moves the loaded set to `target`: unloads first, then loads, so memory never holds more
    /// than the larger of the two sets.
    pub fn transition(&mut self, target: &ModelSet) -> Result<(), ExecError> {
        for m in self.loaded.clone().iter() {
            if !target.contains(m) {
                self.unload(m)?;
            }
        }
        for m in target.iter() {
            self.load(m)?;
        }
        Ok(())
    }

    fn publish(&self) {
        self.metrics
            .budget_used
            .with_label_values(&["memory_mb"])
            .set(self.accounted_mb);
        for (m, id) in self.ids.iter().enumerate() {
            self.metrics
                .model_active
                .with_label_values(&[id])
                .set(i64::from(self.loaded.contains(m)));
        }
    }

    /// Runs the models of `set` (all must be loaded) on `frame`, parents before dependents,
    /// adding to `out`. A dependent whose parent has not run on this frame is an error.
    pub fn run(
        &mut self,
        set: &ModelSet,
        frame: &Frame,
        out: &mut FrameOutputs,
    ) -> Result<(), ExecError> {
        for m in self.order.clone() {
            if set.contains(m) {
                self.run_one(m, frame, out)?;
            }
        }
        Ok(())
    }

    /// Like [`ModelPool::run`], but a model that fails does not stop the others: its error is
    /// kept in `out.errors` (a dependent of a failed model fails for want of its boxes).
    /// Models that already have an output in `out` (run with the frame's batch) are not run
    /// again.
    pub fn run_isolated(&mut self, set: &ModelSet, frame: &Frame, out: &mut FrameOutputs) {
        for m in self.order.clone() {
            if set.contains(m)
                && out.values[m].is_none()
                && let Err(e) = self.run_one(m, frame, out)
            {
                out.errors[m] = Some(e.to_string());
            }
        }
    }

    /// Runs model `m` on `frame`, adding its output to `out`.
    fn run_one(
        &mut self,
        m: usize,
        frame: &Frame,
        out: &mut FrameOutputs,
    ) -> Result<(), ExecError> {
        let crops = match self.parents[m] {
            Some(p) => match &out.detections[p] {
                Some(d) => Some(d.clone()),
                None => {
                    return Err(ExecError::MissingParent {
                        model: self.ids[m].clone(),
                        parent: self.ids[p].clone(),
                    });
                }
            },
            None => None,
        };
        let model = self
            .registry
            .get_mut(&self.ids[m])
            .ok_or_else(|| ModelError::NotLoaded(self.ids[m].clone()))?;
        let inference = model.infer(frame, crops.as_deref())?;
        self.store(m, inference, out)
    }

    /// Puts model `m`'s inference into `out`, through its oracle link when it has one.
    fn store(
        &self,
        m: usize,
        inference: Inference,
        out: &mut FrameOutputs,
    ) -> Result<(), ExecError> {
        out.inference_ms += inference.timing.total_ms();
        out.model_ms[m] = Some(inference.timing.total_ms());
        let value = match &self.oracles[m] {
            Some(oracle) => oracle
                .apply(&inference.value)
                .map_err(|source| ExecError::Oracle {
                    model: self.ids[m].clone(),
                    source,
                })?,
            None => inference.value,
        };
        out.values[m] = Some(value);
        out.detections[m] = Some(inference.detections);
        out.views[m] = Some(inference.view);
        Ok(())
    }

    /// Runs the models of `set` on a batch of frames (from several cameras), parents before
    /// dependents, each model once over the whole batch ([`LoadedModel::infer_many`]: stages
    /// spread over the pool's workers, one ONNX Runtime call for the batch when the model
    /// takes one). Failures are kept per frame and model in `errors`, as
    /// [`ModelPool::run_isolated`] does.
    ///
    /// [`LoadedModel::infer_many`]: crate::models::LoadedModel::infer_many
    pub fn run_batch(&mut self, set: &ModelSet, frames: &[Frame]) -> Vec<FrameOutputs> {
        let k = self.len();
        let mut outs: Vec<FrameOutputs> = frames.iter().map(|_| FrameOutputs::new(k)).collect();
        self.run_batch_into(set, frames, &mut outs);
        outs
    }

    /// [`ModelPool::run_batch`] adding to `outs` (one per frame): models that have an output
    /// there already are not run again, and their detections feed their dependents.
    fn run_batch_into(&mut self, set: &ModelSet, frames: &[Frame], outs: &mut [FrameOutputs]) {
        let workers = self.workers;
        for m in self.order.clone() {
            if !set.contains(m) || outs.iter().all(|o| o.values[m].is_some()) {
                continue;
            }
            // The frames model m can run on: all, or those its parent found boxes on.
            let mut jobs: Vec<(usize, Option<Vec<Detection>>)> = Vec::with_capacity(frames.len());
            for (i, out) in outs.iter_mut().enumerate() {
                match self.parents[m] {
                    None => jobs.push((i, None)),
                    Some(p) => match &out.detections[p] {
                        Some(d) => jobs.push((i, Some(d.clone()))),
                        None => {
                            out.errors[m] = Some(
                                ExecError::MissingParent {
                                    model: self.ids[m].clone(),
                                    parent: self.ids[p].clone(),
                                }
                                .to_string(),
                            )
                        }
                    },
                }
            }
            let Some(model) = self.registry.get_mut(&self.ids[m]) else {
                let e = ModelError::NotLoaded(self.ids[m].clone()).to_string();
                for (i, _) in &jobs {
                    outs[*i].errors[m] = Some(e.clone());
                }
                continue;
            };
            let inputs: Vec<(&Frame, Option<&[Detection]>)> = jobs
                .iter()
                .map(|(i, crops)| (&frames[*i], crops.as_deref()))
                .collect();
            let results = model.infer_many(&inputs, workers);
            for ((i, _), result) in jobs.iter().zip(results) {
                let stored = result
                    .map_err(ExecError::from)
                    .and_then(|inference| self.store(m, inference, &mut outs[*i]));
                if let Err(e) = stored {
                    outs[*i].errors[m] = Some(e.to_string());
                }
            }
        }
    }

    /// Runs every model on every frame of `frames` without ever exceeding the memory budget:
    /// the models are grouped as the profiling plan packs them (one group when they all fit),
    /// and groups run in turns (load, run over the buffered frames, unload); `keep` stays
    /// loaded through a group that fits beside it. Parents run in an earlier or the same
    /// group as their dependents. Leaves `keep` loaded at the end.
    pub fn run_all_in_turns(
        &mut self,
        groups: &[Vec<usize>],
        frames: &[Frame],
        keep: &ModelSet,
    ) -> Result<Vec<FrameOutputs>, ExecError> {
        let k = self.len();
        let mut outs: Vec<FrameOutputs> = frames.iter().map(|_| FrameOutputs::new(k)).collect();
        for group in order_groups(groups, &self.parents) {
            let mut set = ModelSet::empty(k);
            for &m in &group {
                set.insert(m);
            }
            // The models to keep stay loaded when the group fits beside them (a triggered
            // model beside the exact set, as the hybrid's plan charges it); otherwise the
            // group runs alone.
            for m in self.loaded.clone().iter() {
                if !set.contains(m) && !keep.contains(m) {
                    self.unload(m)?;
                }
            }
            let to_load: f64 = group
                .iter()
                .filter(|&&m| !self.loaded.contains(m))
                .map(|&m| self.memory_mb[m])
                .sum();
            let fits_beside = self
                .budget_mb
                .is_none_or(|b| self.accounted_mb + to_load <= b + 1e-9);
            if !fits_beside {
                for m in self.loaded.clone().iter() {
                    if !set.contains(m) {
                        self.unload(m)?;
                    }
                }
            }
            for &m in &group {
                self.load(m)?;
            }
            if self.workers > 1 && frames.len() > 1 {
                // The kept frames are a batch: each model of the group runs over all at once.
                self.run_batch_into(&set, frames, &mut outs);
                let failed = outs.iter().find_map(|o| {
                    group
                        .iter()
                        .find_map(|&m| o.errors[m].as_ref().map(|e| (m, e.clone())))
                });
                if let Some((m, message)) = failed {
                    return Err(ExecError::InBatch {
                        model: self.ids[m].clone(),
                        message,
                    });
                }
            } else {
                for (frame, out) in frames.iter().zip(outs.iter_mut()) {
                    self.run(&set, frame, out)?;
                }
            }
        }
        self.transition(keep)?;
        Ok(outs)
    }
}

/// An order of model indices in which every parent precedes its dependents (parents form a
/// forest: `crops_from` names another model and validation rejects self-references).
fn dependency_order(parents: &[Option<usize>]) -> Vec<usize> {
    let depth = |mut m: usize| {
        let mut d = 0;
        while let Some(p) = parents[m] {
            d += 1;
            m = p;
            if d > parents.len() {
                break; // a cycle; validation prevents it, never loop forever
            }
        }
        d
    };
    let mut order: Vec<usize> = (0..parents.len()).collect();
    order.sort_by_key(|&m| (depth(m), m));
    order
}

/// Puts groups holding a parent before groups holding its dependents, keeping the planned
/// order otherwise (a stable sort on the deepest dependency a group needs from elsewhere).
fn order_groups(groups: &[Vec<usize>], parents: &[Option<usize>]) -> Vec<Vec<usize>> {
    let depth_of = |m: usize| {
        let mut d = 0;
        let mut cur = m;
        while let Some(p) = parents[cur] {
            d += 1;
            cur = p;
            if d > parents.len() {
                break;
            }
        }
        d
    };
    let mut gs: Vec<Vec<usize>> = groups.to_vec();
    gs.sort_by_key(|g| g.iter().map(|&m| depth_of(m)).min().unwrap_or(0));
    gs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependents_come_after_their_parents() {
        // 0 <- 2 (2 crops 0's boxes), 1 <- 3 <- nothing else
        let parents = vec![None, None, Some(0), Some(1)];
        let order = dependency_order(&parents);
        let pos = |m| order.iter().position(|&x| x == m).unwrap();
        assert!(pos(0) < pos(2) && pos(1) < pos(3));
        let groups = vec![vec![2, 3], vec![0], vec![1]];
        let ordered = order_groups(&groups, &parents);
        assert_eq!(ordered.last().unwrap(), &vec![2, 3]);
    }
}
