//! A trace turned into what the replay works on: models with their costs and specs, and the
//! recorded frames in time order with every model's exact output.

use super::EvalError;
use crate::link::trace::{ThumbnailSize, TraceHeader, TraceRecord};
use crate::output::{OutputSpec, OutputValue};
use crate::schedule::Cost;
use std::collections::BTreeMap;

/// The largest model count the replay enumerates subsets of (2^16 sets for Optimal).
pub const MAX_MODELS: usize = 16;

/// One recorded model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub id: String,
    pub spec: OutputSpec,
    pub cost: Cost,
    /// Index of the model whose boxes this one runs on: it can only run together with it.
    pub parent: Option<usize>,
}

/// One recorded frame whose every model output is present.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameRow {
    /// Index into [`Problem::cameras`].
    pub camera: usize,
    pub seq: u64,
    pub time_s: f64,
    pub outputs: Vec<OutputValue>,
    /// Per model, its link view (trace format 2); the head's vector where the trace holds no
    /// view (format 1), empty for a token-sequence head without one.
    pub views: Vec<Vec<f32>>,
    pub features: Vec<f32>,
    /// The frame's thumbnail (trace format 3, [`Problem::thumbnail`] size), for the baselines
    /// that learn from pixels.
    pub thumbnail: Option<Vec<u8>>,
}

/// A validated trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub models: Vec<ModelInfo>,
    pub feature_names: Vec<String>,
    pub cameras: Vec<String>,
    pub frames: Vec<FrameRow>,
    /// Where the trace came from (its header's description).
    pub source: String,
    /// Records left out because a model's output was missing.
    pub incomplete_records: usize,
    /// Whether the trace recorded link views (else `views` repeat the heads).
    pub has_views: bool,
    /// The size of the frames' thumbnails when the trace holds them.
    pub thumbnail: Option<ThumbnailSize>,
}

impl Problem {
    /// Builds the problem from a trace. Costs come from the header (`memory_mb`,
    /// `latency_ms`) unless `overrides` (by model id) gives them; a model with no cost either
    /// way is an error naming the fix. Frames are put in time order (stable for equal times).
    pub fn from_trace(
        header: &TraceHeader,
        records: Vec<TraceRecord>,
        overrides: &BTreeMap<String, Cost>,
    ) -> Result<Self, EvalError> {
        let k = header.models.len();
        if k == 0 {
            return Err(EvalError::Invalid("the trace records no models".into()));
        }
        if k > MAX_MODELS {
            return Err(EvalError::Invalid(format!(
                "the trace records {k} models; the replay enumerates model sets and supports at most {MAX_MODELS}"
            )));
        }
        for id in overrides.keys() {
            if !header.models.iter().any(|m| &m.id == id) {
                return Err(EvalError::Invalid(format!(
                    "a cost is given for model `{id}`, which the trace does not record (models: {})",
                    header
                        .models
                        .iter()
                        .map(|m| m.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let mut models = Vec::with_capacity(k);
        for m in &header.models {
            let cost = match (overrides.get(&m.id), m.memory_mb, m.latency_ms) {
                (Some(c), _, _) => *c,
                (None, Some(mb), Some(ms)) => Cost::new(mb, ms),
                _ => {
                    return Err(EvalError::Invalid(format!(
                        "model `{}` has no profiled memory and latency in the trace; give its cost with `--cost {}=MB:MS`",
                        m.id, m.id
                    )));
                }
            };
            if !cost.is_valid() {
                return Err(EvalError::Invalid(format!(
                    "model `{}` has an invalid cost ({} MB, {} ms): costs must be finite and not negative",
                    m.id, cost.memory_mb, cost.ms_per_frame
                )));
            }
            models.push(ModelInfo {
                id: m.id.clone(),
                spec: m.spec.clone(),
                cost,
                parent: None,
            });
        }
        for (m, info) in header.models.iter().zip(models.iter_mut()) {
            if let Some(p) = &m.crops_from {
                let parent = header
                    .models
                    .iter()
                    .position(|o| &o.id == p)
                    .ok_or_else(|| {
                        EvalError::Invalid(format!(
                            "model {} runs on the boxes of {p}, which the trace does not record",
                            m.id
                        ))
                    })?;
                info.parent = Some(parent);
            }
        }
        let nf = header.frame_feature_names.len();
        let mut cameras: Vec<String> = Vec::new();
        let mut frames = Vec::with_capacity(records.len());
        let mut incomplete = 0;
        for (i, r) in records.into_iter().enumerate() {
            if r.outputs.len() != k || r.frame_features.len() != nf || !r.time_s.is_finite() {
                return Err(EvalError::Invalid(format!(
                    "record {i} holds {} outputs and {} frame features for {k} models and {nf} features (time {})",
                    r.outputs.len(),
                    r.frame_features.len(),
                    r.time_s
                )));
            }
            let Some(outputs) = r.outputs.into_iter().collect::<Option<Vec<_>>>() else {
                incomplete += 1;
                continue;
            };
            for (m, v) in models.iter().zip(&outputs) {
                m.spec.check(v).map_err(|e| {
                    EvalError::Invalid(format!("record {i}, model `{}`: {e}", m.id))
                })?;
            }
            let views: Vec<Vec<f32>> = outputs
                .iter()
                .enumerate()
                .map(|(m, out)| match (r.views.get(m), out) {
                    (Some(Some(v)), _) => v.clone(),
                    (_, OutputValue::Vector(v)) => v.clone(),
                    (_, OutputValue::Tokens(_)) => Vec::new(),
                })
                .collect();
            let camera = match cameras.iter().position(|c| *c == r.camera) {
                Some(c) => c,
                None => {
                    cameras.push(r.camera.clone());
                    cameras.len() - 1
                }
            };
            frames.push(FrameRow {
                camera,
                seq: r.seq,
                time_s: r.time_s,
                outputs,
                views,
                features: r.frame_features,
                thumbnail: r.thumbnail,
            });
        }
        frames.sort_by(|a, b| a.time_s.total_cmp(&b.time_s));
        Ok(Problem {
            models,
            feature_names: header.frame_feature_names.clone(),
            cameras,
            frames,
            source: header.source.clone(),
            incomplete_records: incomplete,
            has_views: header.models.iter().any(|m| !m.view.is_empty()),
            thumbnail: header.thumbnail,
        })
    }

    /// Keeps only the models named in `ids` (in the trace's order), e.g. to evaluate a subset
    /// of the recorded models; an unknown id is an error listing the recorded ones.
    pub fn restrict(&mut self, ids: &[String]) -> Result<(), EvalError> {
        let recorded = || {
            self.models
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for id in ids {
            if !self.models.iter().any(|m| &m.id == id) {
                return Err(EvalError::Invalid(format!(
                    "model `{id}` is not recorded in the trace (models: {})",
                    recorded()
                )));
            }
        }
        let keep: Vec<bool> = self.models.iter().map(|m| ids.contains(&m.id)).collect();
        if !keep.contains(&true) {
            return Err(EvalError::Invalid("no model left to evaluate".into()));
        }
        self.models = keep_marked(std::mem::take(&mut self.models), &keep);
        for f in &mut self.frames {
            f.outputs = keep_marked(std::mem::take(&mut f.outputs), &keep);
            f.views = keep_marked(std::mem::take(&mut f.views), &keep);
        }
        Ok(())
    }

    /// Whether every frame holds a thumbnail (what the pixel baselines need).
    pub fn has_thumbnails(&self) -> bool {
        self.thumbnail.is_some()
            && !self.frames.is_empty()
            && self.frames.iter().all(|f| f.thumbnail.is_some())
    }

    pub fn n_models(&self) -> usize {
        self.models.len()
    }

    pub fn costs(&self) -> Vec<Cost> {
        self.models.iter().map(|m| m.cost).collect()
    }
}

/// The items of `v` whose flag in `keep` is set.
fn keep_marked<T>(v: Vec<T>, keep: &[bool]) -> Vec<T> {
    v.into_iter()
        .zip(keep)
        .filter_map(|(x, &k)| k.then_some(x))
        .collect()
}
