//! Explicit load and unload of the pipeline's models, with the memory each one took.

use super::ModelError;
use super::cost::{release_freed_memory, rss_bytes};
use super::loaded::LoadedModel;
use crate::config::ModelConfig;
use crate::metrics::Metrics;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The models of one pipeline and which of them are loaded.
pub struct ModelRegistry {
    base_dir: PathBuf,
    configs: BTreeMap<String, ModelConfig>,
    loaded: BTreeMap<String, (LoadedModel, f64)>,
    metrics: Arc<Metrics>,
}

impl ModelRegistry {
    /// `base_dir` is the folder model paths are relative to (the pipeline file's folder).
    pub fn new(
        configs: &[ModelConfig],
        base_dir: impl Into<PathBuf>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            base_dir: base_dir.into(),
            configs: configs.iter().map(|c| (c.id.clone(), c.clone())).collect(),
            loaded: BTreeMap::new(),
            metrics,
        }
    }

    /// Loads `id` (a no-op when it is loaded) and returns it. The host memory the session took
    /// (RSS growth) is recorded and exported as `mlink_budget_used{resource="memory_mb"}`.
    pub fn load(&mut self, id: &str) -> Result<&mut LoadedModel, ModelError> {
        if !self.loaded.contains_key(id) {
            let cfg = self
                .configs
                .get(id)
                .ok_or_else(|| ModelError::Unknown(id.to_string()))?;
            let before = rss_bytes();
            let model = LoadedModel::load(cfg, &self.base_dir, &self.metrics)?;
            let mb = rss_bytes().saturating_sub(before) as f64 / 1e6;
            self.loaded.insert(id.to_string(), (model, mb));
            self.publish();
        }
        match self.loaded.get_mut(id) {
            Some((m, _)) => Ok(m),
            None => Err(ModelError::NotLoaded(id.to_string())),
        }
    }

    /// Drops the session of `id`, releasing its memory; counted and logged.
    pub fn unload(&mut self, id: &str) -> Result<(), ModelError> {
        let (model, mb) = self
            .loaded
            .remove(id)
            .ok_or_else(|| ModelError::NotLoaded(id.to_string()))?;
        drop(model);
        release_freed_memory();
        self.metrics.model_unloads.with_label_values(&[id]).inc();
        tracing::info!(model = id, memory_mb = mb, "model unloaded");
        self.publish();
        Ok(())
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut LoadedModel> {
        self.loaded.get_mut(id).map(|(m, _)| m)
    }

    pub fn is_loaded(&self, id: &str) -> bool {
        self.loaded.contains_key(id)
    }

    /// Ids of the loaded models, sorted.
    pub fn loaded_ids(&self) -> Vec<String> {
        self.loaded.keys().cloned().collect()
    }

    /// Host memory taken by the loaded sessions when they were created, in MB.
    pub fn memory_in_use_mb(&self) -> f64 {
        self.loaded.values().map(|(_, mb)| mb).sum()
    }

    fn publish(&self) {
        self.metrics
            .budget_used
            .with_label_values(&["memory_mb"])
            .set(self.memory_in_use_mb());
    }
}
