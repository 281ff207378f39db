//! A link bundle: every link g_ij and ensemble h_j trained for one pipeline's models, with
//! their validation scores and training metadata.
//!
//! The type and its lookups live here; each job on it has its own file:
//! - [`train`]: [`LinkBundle::train`] / [`LinkBundle::train_from_trace`] train all k(k-1)
//!   links and k ensembles from aligned [`Sample`]s, in parallel; [`LinkBundle::fine_tune`]
//!   continues training on new samples (online adaptation), and
//!   [`LinkBundle::fine_tune_and_rescore`] also refreshes the validation scores.
//! - [`predict`]: [`LinkBundle::predict`] gives h_{A,j} for the executed models A, with the
//!   validation score of that source set and an uncertainty; [`LinkBundle::predict_viewed`]
//!   lets the few-sample links over the link views ([`ViewLinks`]) serve where the bundle
//!   holds them and the sources' views are at hand;
//!   [`LinkBundle::predicted_loss`] and [`LinkBundle::link_predicted_loss`] give the loss the
//!   links are predicted to make on a frame (loss-prediction heads, for active learning).
//! - [`score`]: [`LinkBundle::link_score`] and [`LinkBundle::ensemble_score`] are p(g_ij) and
//!   p(h_{A,j}); [`LinkBundle::rescore`] recomputes them on held-out samples;
//!   [`LinkBundle::score_on`] measures every link and ensemble for an executed set on given
//!   samples (profiling).
//! - [`federated`]: flat parameters of one link, its gradient and a local training round
//!   (federated averaging).
//! - [`store`]: [`LinkBundle::save`] and [`LinkBundle::load`] (the file format is described
//!   there).

mod federated;
mod predict;
mod score;
mod store;
mod train;

pub use predict::activated;
pub use store::BUNDLE_VERSION;

use super::LinkError;
use super::ensemble::Ensemble;
use super::loss_head::LossHead;
use super::net::{Arch, LinkNet, TrainParams};
use super::sample::{Sample, check_samples};
use super::view_links::ViewLinks;
use crate::output::{OutputSpec, OutputValue};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// The most models a bundle holds: source sets are bit masks over model indices in a `u64`.
pub const MAX_MODELS: usize = 63;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a readable link bundle ({reason})")]
    Corrupt { path: String, reason: String },
    #[error(
        "{path}: bundle format version {found} is newer than the supported {supported}; upgrade mlink"
    )]
    NewerVersion {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("the bundle does not match the pipeline: {0}")]
    Mismatch(String),
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// A model as the bundle knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BundleModel {
    pub id: String,
    pub spec: OutputSpec,
}

/// How and on what the bundle was trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingMeta {
    pub params: TrainParams,
    pub validation_split: f64,
    pub train_samples: usize,
    pub validation_samples: usize,
    pub trained_unix_s: u64,
    pub source: String,
}

/// One trained link and its validation record.
pub struct Link {
    pub source: usize,
    pub target: usize,
    pub arch: Arch,
    pub net: LinkNet,
    /// p(g_ij): the mean score on held-out samples (None without any).
    pub score: Option<f64>,
    pub train_pairs: usize,
    pub validation_pairs: usize,
    /// Predicts this link's loss on a sample from its hidden activation (vec2vec links).
    pub loss_head: Option<LossHead>,
}

/// The ensemble of one target and the validation scores of its source subsets.
pub struct TargetEnsemble {
    pub ensemble: Ensemble,
    /// Validation score per source subset, keyed by a bit mask over model indices.
    pub subset_scores: BTreeMap<u64, f64>,
}

/// A measured score and the number of samples it was measured on.
pub type LinkScore = crate::output::MeanScore;

/// Scores measured by [`LinkBundle::score_on`].
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreMatrix {
    /// `links[i][j]`: g_ij on the samples where models i and j are both present (None on the
    /// diagonal and where no sample has both).
    pub links: Vec<Vec<Option<LinkScore>>>,
    /// Per target j outside the active set: h_{A,j} (None for active models and targets
    /// without usable samples).
    pub ensembles: Vec<Option<LinkScore>>,
}

/// A prediction of one target from the executed models.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub value: OutputValue,
    /// Model indices whose outputs were used.
    pub sources: Vec<usize>,
    /// Validation score of h_{A,j} for this source set.
    pub score: f64,
    /// Entropy (nats) of class outputs; for linear tasks (counts, regression, boxes) the
    /// variance across the source links, or with one source the squared error its loss head
    /// predicts (both a variance per output dimension, in the target's units); mean WER
    /// between the source links' sequences.
    pub uncertainty: f64,
}

pub struct LinkBundle {
    pub models: Vec<BundleModel>,
    /// Indexed by `source * k + target` (None on the diagonal).
    links: Vec<Option<Link>>,
    /// One per target model.
    ensembles: Vec<TargetEnsemble>,
    pub meta: TrainingMeta,
    /// The few-sample links over the models' link views, trained beside the paper's links
    /// from the same frames where every model's view was recorded; they serve a prediction
    /// whenever every source's view is at hand ([`predict_viewed`](Self::predict_viewed)).
    view_links: Option<ViewLinks>,
    /// Scores of source subsets computed on demand (closed form) when not stored.
    cache: Mutex<HashMap<(u64, usize), f64>>,
}

/// The bit mask of a set of model indices; indices of [`MAX_MODELS`] or more are left out
/// (a bundle never holds them, so they cannot name one of its models).
fn mask_of(models: impl IntoIterator<Item = usize>) -> u64 {
    models
        .into_iter()
        .filter(|&i| i < MAX_MODELS)
        .fold(0, |m, i| m | (1u64 << i))
}

/// Rejects more models than a source-set mask can hold.
fn check_model_count(k: usize) -> Result<(), LinkError> {
    if k > MAX_MODELS {
        return Err(LinkError::Form(format!(
            "{k} models: at most {MAX_MODELS} are supported"
        )));
    }
    Ok(())
}

impl LinkBundle {
    pub fn model_count(&self) -> usize {
        self.models.len()
    }

    pub fn model_index(&self, id: &str) -> Option<usize> {
        self.models.iter().position(|m| m.id == id)
    }

    pub fn link(&self, source: usize, target: usize) -> Option<&Link> {
        let k = self.models.len();
        (source < k && target < k)
            .then(|| self.links[source * k + target].as_ref())
            .flatten()
    }

    /// The few-sample links over the link views, when the bundle holds them.
    pub fn view_links(&self) -> Option<&ViewLinks> {
        self.view_links.as_ref()
    }

    /// Numbers the serving link `source -> target` holds (its memory is 4 bytes each): the
    /// link over the views where the bundle has one (they serve wherever the sources' views
    /// are at hand, which the engine always has), else the paper's network. None without
    /// either.
    pub fn serving_link_parameters(&self, source: usize, target: usize) -> Option<usize> {
        self.view_links
            .as_ref()
            .and_then(|v| v.link_parameters(source, target))
            .or_else(|| self.link_params(source, target).ok().map(|p| p.len()))
    }

    /// The ensemble of a target (its sources and weights).
    pub fn ensemble(&self, target: usize) -> Option<&Ensemble> {
        self.ensembles.get(target).map(|e| &e.ensemble)
    }

    /// Checks aligned samples against the bundle's models (one entry per model, each present
    /// output fitting its model's spec).
    pub fn check_samples(&self, samples: &[Sample]) -> Result<(), LinkError> {
        check_samples(
            self.models.iter().map(|m| (m.id.as_str(), &m.spec)),
            samples,
        )
    }

    fn link_ref(&self, source: usize, target: usize) -> Result<&Link, LinkError> {
        self.link(source, target).ok_or(LinkError::NoLink {
            from: source,
            target,
        })
    }

    fn link_mut(&mut self, source: usize, target: usize) -> Result<&mut Link, LinkError> {
        let k = self.models.len();
        if source >= k || target >= k {
            return Err(LinkError::NoLink {
                from: source,
                target,
            });
        }
        self.links[source * k + target]
            .as_mut()
            .ok_or(LinkError::NoLink {
                from: source,
                target,
            })
    }

    /// Forgets the subset scores computed on demand (after the links or scores changed).
    fn clear_cache(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// Checks that the pipeline's models (id, spec) are the bundle's, naming the first
    /// mismatch.
    pub fn check_models(&self, models: &[(String, OutputSpec)]) -> Result<(), BundleError> {
        for (id, spec) in models {
            match self.models.iter().find(|m| &m.id == id) {
                None => {
                    return Err(BundleError::Mismatch(format!(
                        "model {id:?} has no links in the bundle (it knows {})",
                        self.models
                            .iter()
                            .map(|m| m.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                Some(m) if &m.spec != spec => {
                    return Err(BundleError::Mismatch(format!(
                        "model {id:?} has output {spec:?} in the pipeline but {:?} in the bundle; retrain the links",
                        m.spec
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}
