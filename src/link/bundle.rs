//! A link bundle: every link g_ij and ensemble h_j trained for one pipeline's models, with
//! their validation scores and training metadata.
//!
//! # API
//! - [`LinkBundle::train`] / [`LinkBundle::train_from_trace`]: train all k(k-1) links and k
//!   ensembles from aligned samples, in parallel.
//! - [`LinkBundle::predict`]: h_{A,j} for the executed models A, with the validation score of
//!   that source set and an uncertainty.
//! - [`LinkBundle::link_score`], [`LinkBundle::ensemble_score`]: p(g_ij) and p(h_{A,j}).
//! - [`LinkBundle::fine_tune`]: continue training on new samples (online adaptation);
//!   [`LinkBundle::fine_tune_and_rescore`] also refreshes the validation scores on held-out
//!   samples ([`LinkBundle::rescore`] alone does only that).
//! - [`LinkBundle::score_on`]: every link's and the ensembles' scores for an executed set,
//!   measured on given samples (profiling).
//! - [`LinkBundle::predicted_loss`], [`LinkBundle::link_predicted_loss`]: the loss the links
//!   are predicted to make on a frame (loss-prediction heads, for active learning).
//! - [`LinkBundle::link_params`], [`LinkBundle::set_link_params`],
//!   [`LinkBundle::link_gradient`], [`LinkBundle::train_round`]: flat parameters of one link
//!   (federated averaging).
//! - [`LinkBundle::save`], [`LinkBundle::load`], [`LinkBundle::check_models`].
//!
//! # File format (version 1)
//! One safetensors file. Each link's flat parameters are the 1-D f32 tensor `link.I.J`, each
//! ensemble's weights `ensemble.J` (sources x dims), each vec2vec link's loss-prediction head
//! `losshead.I.J` (flat, optional). The safetensors metadata holds
//! `mlink.manifest` (the JSON [`Manifest`]: format version, models, links with their
//! architecture, standardisation and scores, ensembles' subset scores, training metadata) and
//! `mlink.sha256` (SHA-256 over all tensor data in name order, which catches corruption the
//! safetensors header cannot). Written atomically (temporary file, then rename).

use super::LinkError;
use super::ensemble::Ensemble;
use super::loss_head::LossHead;
use super::mlp::Mlp;
use super::net::{Arch, LinkNet, TrainParams, check};
use super::norm::Norm;
use super::trace::TraceRecord;
use crate::output::{
    Activation, OutputForm, OutputSpec, OutputValue, TaskKind, activate, entropy, score, strip_end,
    wer,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const BUNDLE_VERSION: u32 = 1;
/// Subset scores of an ensemble are computed exhaustively up to this many sources.
const MAX_EXHAUSTIVE_SOURCES: usize = 10;

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
    /// p(g_ij): the mean [`score`] on held-out samples (None without any).
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
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkScore {
    pub score: f64,
    pub samples: usize,
}

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
    /// Entropy (nats) of class outputs; variance across the source links for linear tasks;
    /// mean WER between the source links' sequences.
    pub uncertainty: f64,
}

pub struct LinkBundle {
    pub models: Vec<BundleModel>,
    /// Indexed by `source * k + target` (None on the diagonal).
    links: Vec<Option<Link>>,
    /// One per target model.
    ensembles: Vec<TargetEnsemble>,
    pub meta: TrainingMeta,
    /// Scores of source subsets computed on demand (closed form) when not stored.
    cache: Mutex<HashMap<(u64, usize), f64>>,
}

fn mask_of(models: impl IntoIterator<Item = usize>) -> u64 {
    models.into_iter().fold(0, |m, i| m | (1u64 << i))
}

/// Splits sample indices into training and validation, deterministically from the seed.
fn split(n: usize, validation_split: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x5eed_5011));
    let n_val = ((n as f64) * validation_split.clamp(0.0, 0.9)).round() as usize;
    let val = idx.split_off(n - n_val.min(n));
    (idx, val)
}

/// Runs `f` over `0..n` on `threads` worker threads (a shared counter hands out the work).
fn parallel<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, n.max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let r = f(i);
                    if let Ok(mut g) = results.lock() {
                        g[i] = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every index is processed"))
        .collect()
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

    /// Trains every link and ensemble from aligned samples (`samples[n][m]`: model m's output
    /// on frame n, or None). `threads` workers train links in parallel; `progress` is called
    /// with a short description after each finished link or ensemble.
    pub fn train(
        models: &[(String, OutputSpec)],
        samples: &[Vec<Option<OutputValue>>],
        params: &TrainParams,
        validation_split: f64,
        threads: usize,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Self, LinkError> {
        let k = models.len();
        if k > 63 {
            return Err(LinkError::Form(format!(
                "{k} models: at most 63 are supported"
            )));
        }
        check_samples(models.iter().map(|(id, spec)| (id.as_str(), spec)), samples)?;
        let (train_idx, val_idx) = split(samples.len(), validation_split, params.seed);
        let pairs: Vec<(usize, usize)> = (0..k)
            .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
            .collect();
        let trained = parallel(pairs.len(), threads, |p| {
            let (i, j) = pairs[p];
            let r = train_link(models, samples, &train_idx, &val_idx, i, j, params);
            progress(&format!("link {} -> {}", models[i].0, models[j].0));
            r
        });
        let mut links: Vec<Option<Link>> = (0..k * k).map(|_| None).collect();
        for r in trained {
            let l = r?;
            let at = l.source * k + l.target;
            links[at] = Some(l);
        }
        let mut bundle = LinkBundle {
            models: models
                .iter()
                .map(|(id, spec)| BundleModel {
                    id: id.clone(),
                    spec: spec.clone(),
                })
                .collect(),
            links,
            ensembles: Vec::new(),
            meta: TrainingMeta {
                params: params.clone(),
                validation_split,
                train_samples: train_idx.len(),
                validation_samples: val_idx.len(),
                trained_unix_s: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                source: String::new(),
            },
            cache: Mutex::new(HashMap::new()),
        };
        let ens = parallel(k, threads, |j| {
            let r = bundle.train_ensemble(j, samples, &train_idx, &val_idx);
            progress(&format!("ensemble -> {}", models[j].0));
            r
        });
        bundle.ensembles = ens.into_iter().collect::<Result<_, _>>()?;
        Ok(bundle)
    }

    /// Trains from trace records (the header's models, in order).
    pub fn train_from_trace(
        header: &super::trace::TraceHeader,
        records: &[TraceRecord],
        params: &TrainParams,
        validation_split: f64,
        threads: usize,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Self, LinkError> {
        let models: Vec<(String, OutputSpec)> = header
            .models
            .iter()
            .map(|m| (m.id.clone(), m.spec.clone()))
            .collect();
        let samples: Vec<Vec<Option<OutputValue>>> =
            records.iter().map(|r| r.outputs.clone()).collect();
        let mut b = Self::train(
            &models,
            &samples,
            params,
            validation_split,
            threads,
            progress,
        )?;
        b.meta.source = header.source.clone();
        Ok(b)
    }

    fn train_ensemble(
        &self,
        j: usize,
        samples: &[Vec<Option<OutputValue>>],
        train_idx: &[usize],
        val_idx: &[usize],
    ) -> Result<TargetEnsemble, LinkError> {
        let k = self.models.len();
        let spec = &self.models[j].spec;
        let sources: Vec<usize> = (0..k).filter(|&i| i != j).collect();
        let dim = match spec.form {
            OutputForm::Vector { len } => len,
            OutputForm::Sequence { .. } => 0,
        };
        let mut ensemble = Ensemble::new(j, sources.clone(), dim);
        if dim > 0 {
            let mut data = Vec::new();
            for &n in train_idx {
                let Some(OutputValue::Vector(t)) = &samples[n][j] else {
                    continue;
                };
                let parts = sources
                    .iter()
                    .map(|&i| match &samples[n][i] {
                        Some(v) => self.link(i, j).map(|l| l.net.logits(v)).transpose(),
                        None => Ok(None),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if parts.iter().filter(|p| p.is_some()).count() >= 2 {
                    data.push((parts, t.clone()));
                }
            }
            let p = &self.meta.params;
            let mut rng = StdRng::seed_from_u64(p.seed ^ (0xe5e0 + j as u64));
            ensemble.fit(
                spec.task,
                &data,
                p.epochs,
                p.batch_size,
                p.learning_rate as f32,
                &mut rng,
            );
        }
        let mut te = TargetEnsemble {
            ensemble,
            subset_scores: BTreeMap::new(),
        };
        te.subset_scores = self.subset_scores(&te, j, samples, val_idx)?;
        Ok(te)
    }

    /// Validation scores of h_{A,j} for every subset A of the target's sources (up to
    /// [`MAX_EXHAUSTIVE_SOURCES`] sources), on the samples `idx` where the target and all of A
    /// are present.
    fn subset_scores(
        &self,
        te: &TargetEnsemble,
        j: usize,
        samples: &[Vec<Option<OutputValue>>],
        idx: &[usize],
    ) -> Result<BTreeMap<u64, f64>, LinkError> {
        let spec = &self.models[j].spec;
        let sources = &te.ensemble.sources;
        let mut out = BTreeMap::new();
        if sources.len() > MAX_EXHAUSTIVE_SOURCES || idx.is_empty() {
            return Ok(out);
        }
        for bits in 1u64..(1 << sources.len()) {
            let subset: Vec<usize> = (0..sources.len())
                .filter(|b| bits & (1 << b) != 0)
                .map(|b| sources[b])
                .collect();
            let mut sum = 0.0;
            let mut n = 0usize;
            for &s in idx {
                let Some(exact) = &samples[s][j] else {
                    continue;
                };
                let active: Option<Vec<(usize, &OutputValue)>> = subset
                    .iter()
                    .map(|&i| samples[s][i].as_ref().map(|v| (i, v)))
                    .collect();
                let Some(active) = active else { continue };
                let (value, _) = self.combine(te, j, &active)?;
                sum += score(spec, &value, exact);
                n += 1;
            }
            if n > 0 {
                out.insert(mask_of(subset), sum / n as f64);
            }
        }
        Ok(out)
    }

    /// h_{A,j} itself: the combined value and its uncertainty.
    fn combine(
        &self,
        te: &TargetEnsemble,
        j: usize,
        active: &[(usize, &OutputValue)],
    ) -> Result<(OutputValue, f64), LinkError> {
        let spec = &self.models[j].spec;
        match spec.form {
            OutputForm::Vector { .. } => {
                let mut zs = Vec::with_capacity(active.len());
                for &(i, v) in active {
                    if let Some(l) = self.link(i, j) {
                        zs.push((i, l.net.logits(v)?));
                    }
                }
                let parts: Vec<(usize, &[f32])> =
                    zs.iter().map(|(i, z)| (*i, z.as_slice())).collect();
                let value = te.ensemble.predict(spec.task, &parts)?;
                let unc = match Activation::for_task(spec.task) {
                    Activation::Softmax => entropy(&value),
                    Activation::Sigmoid => {
                        value.iter().map(|&p| entropy(&[p, 1.0 - p])).sum::<f64>()
                            / value.len().max(1) as f64
                    }
                    Activation::Linear => spread(&zs),
                };
                Ok((OutputValue::Vector(value), unc))
            }
            OutputForm::Sequence { end_token, .. } => {
                let mut preds = Vec::new();
                for &(i, v) in active {
                    if let Some(l) = self.link(i, j) {
                        preds.push((l.score.unwrap_or(0.0), l.net.predict(v)?));
                    }
                }
                let best = preds
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.0.total_cmp(&b.1.0))
                    .map(|(n, _)| n)
                    .ok_or(LinkError::NoSource { target: j })?;
                let tok = |v: &OutputValue| match v {
                    OutputValue::Tokens(t) => strip_end(t, Some(end_token)).to_vec(),
                    OutputValue::Vector(_) => Vec::new(),
                };
                let chosen = tok(&preds[best].1);
                let others: Vec<f64> = preds
                    .iter()
                    .enumerate()
                    .filter(|(n, _)| *n != best)
                    .map(|(_, p)| wer(&tok(&p.1), &chosen))
                    .collect();
                let unc = if others.is_empty() {
                    0.0
                } else {
                    others.iter().sum::<f64>() / others.len() as f64
                };
                Ok((preds.swap_remove(best).1, unc))
            }
        }
    }

    /// Predicts model `target` from the outputs of the executed models (`(model index,
    /// output)`; the target itself and models without a link are ignored).
    pub fn predict(
        &self,
        target: usize,
        active: &[(usize, &OutputValue)],
    ) -> Result<Prediction, LinkError> {
        let k = self.models.len();
        if target >= k {
            return Err(LinkError::Form(format!(
                "no model {target} (the bundle has {k})"
            )));
        }
        let mut used: Vec<(usize, &OutputValue)> = Vec::with_capacity(active.len());
        for &(i, v) in active {
            if i != target && self.link(i, target).is_some() {
                check(
                    &self.models[i].spec,
                    v,
                    &format!("output of {:?}", self.models[i].id),
                )?;
                used.push((i, v));
            }
        }
        if used.is_empty() {
            return Err(LinkError::NoSource { target });
        }
        let (value, uncertainty) = self.combine(&self.ensembles[target], target, &used)?;
        let sources: Vec<usize> = used.iter().map(|(i, _)| *i).collect();
        let score = self.ensemble_score(&sources, target);
        Ok(Prediction {
            value,
            sources,
            score,
            uncertainty,
        })
    }

    /// p(g_ij), 0 without validation data.
    pub fn link_score(&self, source: usize, target: usize) -> f64 {
        self.link(source, target)
            .and_then(|l| l.score)
            .unwrap_or(0.0)
    }

    /// p(h_{A,j}) for the executed set `active` (models other than `target`). Stored subset
    /// scores are used when available; otherwise the best single-link score in A (the
    /// ensemble was trained to do at least as well), cached per (A, j).
    pub fn ensemble_score(&self, active: &[usize], target: usize) -> f64 {
        let mask = mask_of(active.iter().copied().filter(|&i| i != target && i < 64));
        if mask == 0 || target >= self.ensembles.len() {
            return 0.0;
        }
        if let Some(s) = self.ensembles[target].subset_scores.get(&mask) {
            return *s;
        }
        if let Ok(c) = self.cache.lock()
            && let Some(s) = c.get(&(mask, target))
        {
            return *s;
        }
        let s = active
            .iter()
            .filter(|&&i| i != target)
            .map(|&i| self.link_score(i, target))
            .fold(0.0, f64::max);
        if let Ok(mut c) = self.cache.lock() {
            c.insert((mask, target), s);
        }
        s
    }

    /// The ensemble of a target (its sources and weights).
    pub fn ensemble(&self, target: usize) -> Option<&Ensemble> {
        self.ensembles.get(target).map(|e| &e.ensemble)
    }

    /// Checks aligned samples against the bundle's models (one entry per model, each present
    /// output fitting its model's spec).
    pub fn check_samples(&self, samples: &[Vec<Option<OutputValue>>]) -> Result<(), LinkError> {
        check_samples(
            self.models.iter().map(|m| (m.id.as_str(), &m.spec)),
            samples,
        )
    }

    /// Continues training every link on new aligned samples for `epochs` epochs (online
    /// adaptation), and retrains the loss heads of the links it changed. Scores are left as
    /// they are; [`fine_tune_and_rescore`](Self::fine_tune_and_rescore) refreshes them.
    pub fn fine_tune(
        &mut self,
        samples: &[Vec<Option<OutputValue>>],
        epochs: usize,
    ) -> Result<(), LinkError> {
        self.check_samples(samples)?;
        let k = self.models.len();
        let mut p = self.meta.params.clone();
        p.epochs = epochs;
        for (at, slot) in self.links.iter_mut().enumerate() {
            let Some(l) = slot else { continue };
            let (i, j) = (at / k, at % k);
            let (x, t) = pairs_of(samples, i, j);
            if x.is_empty() {
                continue;
            }
            let mut rng = StdRng::seed_from_u64(p.seed ^ at as u64 ^ 0xf1e7);
            l.net.fit(&x, &t, &p, &mut rng)?;
            if l.loss_head.is_some() {
                l.loss_head = l.net.fit_loss_head(&x, &t, &p, &mut rng)?;
            }
        }
        self.cache.lock().map(|mut c| c.clear()).ok();
        Ok(())
    }

    /// [`fine_tune`](Self::fine_tune) on `train`, then refreshes the validation scores on the
    /// held-out `validation` samples: each link's p(g_ij) (links without validation pairs keep
    /// theirs) and every ensemble's subset scores, so the scheduler sees the adapted links.
    pub fn fine_tune_and_rescore(
        &mut self,
        train: &[Vec<Option<OutputValue>>],
        validation: &[Vec<Option<OutputValue>>],
        epochs: usize,
    ) -> Result<(), LinkError> {
        self.check_samples(validation)?;
        self.fine_tune(train, epochs)?;
        self.rescore(validation)
    }

    /// Mean score of link `l` on the samples holding both its models; None without any.
    fn link_score_on(
        &self,
        l: &Link,
        samples: &[Vec<Option<OutputValue>>],
    ) -> Result<Option<LinkScore>, LinkError> {
        let (x, t) = pairs_of(samples, l.source, l.target);
        if x.is_empty() {
            return Ok(None);
        }
        let spec = &self.models[l.target].spec;
        let mut sum = 0.0;
        for (a, b) in x.iter().zip(&t) {
            sum += score(spec, &l.net.predict(a)?, b);
        }
        Ok(Some(LinkScore {
            score: sum / x.len() as f64,
            samples: x.len(),
        }))
    }

    /// Recomputes the stored validation scores (links and ensemble subsets) on `validation`.
    pub fn rescore(&mut self, validation: &[Vec<Option<OutputValue>>]) -> Result<(), LinkError> {
        self.check_samples(validation)?;
        let k = self.models.len();
        let mut link_scores = vec![None; k * k];
        for (at, slot) in self.links.iter().enumerate() {
            if let Some(l) = slot {
                link_scores[at] = self.link_score_on(l, validation)?;
            }
        }
        for (slot, new) in self.links.iter_mut().zip(link_scores) {
            if let (Some(l), Some(new)) = (slot.as_mut(), new) {
                l.score = Some(new.score);
                l.validation_pairs = new.samples;
            }
        }
        let idx: Vec<usize> = (0..validation.len()).collect();
        let mut fresh = Vec::with_capacity(k);
        for j in 0..self.ensembles.len() {
            fresh.push(self.subset_scores(&self.ensembles[j], j, validation, &idx)?);
        }
        for (te, scores) in self.ensembles.iter_mut().zip(fresh) {
            // Subsets absent from this validation set keep their earlier score.
            te.subset_scores.extend(scores);
        }
        self.cache.lock().map(|mut c| c.clear()).ok();
        Ok(())
    }

    /// Measures the links and ensembles on aligned samples (profiling): the mean score of
    /// every link g_ij on the samples where both ends are present, and per target the mean
    /// score of h_{A,j} for the executed set `active`, on the samples where the target and at
    /// least one model of A are present (using the models of A present on each).
    pub fn score_on(
        &self,
        samples: &[Vec<Option<OutputValue>>],
        active: &[usize],
    ) -> Result<ScoreMatrix, LinkError> {
        self.check_samples(samples)?;
        let k = self.models.len();
        if let Some(&bad) = active.iter().find(|&&i| i >= k) {
            return Err(LinkError::Form(format!(
                "no model {bad} (the bundle has {k})"
            )));
        }
        let mut links = vec![vec![None; k]; k];
        for l in self.links.iter().flatten() {
            links[l.source][l.target] = self.link_score_on(l, samples)?;
        }
        let mut ensembles = vec![None; k];
        for (j, slot) in ensembles.iter_mut().enumerate() {
            if active.contains(&j) {
                continue;
            }
            let spec = &self.models[j].spec;
            let (mut sum, mut n) = (0.0, 0usize);
            for s in samples {
                let Some(exact) = &s[j] else { continue };
                let used: Vec<(usize, &OutputValue)> = active
                    .iter()
                    .filter(|&&i| self.link(i, j).is_some())
                    .filter_map(|&i| s[i].as_ref().map(|v| (i, v)))
                    .collect();
                if used.is_empty() {
                    continue;
                }
                let (value, _) = self.combine(&self.ensembles[j], j, &used)?;
                sum += score(spec, &value, exact);
                n += 1;
            }
            if n > 0 {
                *slot = Some(LinkScore {
                    score: sum / n as f64,
                    samples: n,
                });
            }
        }
        Ok(ScoreMatrix { links, ensembles })
    }

    /// The loss g_ij is predicted to make on `input` (its loss head), None for links without
    /// a head (sequence links, links trained without pairs).
    pub fn link_predicted_loss(
        &self,
        source: usize,
        target: usize,
        input: &OutputValue,
    ) -> Result<Option<f64>, LinkError> {
        let l = self.link_ref(source, target)?;
        check(
            &self.models[source].spec,
            input,
            &format!("output of {:?}", self.models[source].id),
        )?;
        let Some(head) = &l.loss_head else {
            return Ok(None);
        };
        Ok(l.net.hidden(input)?.map(|h| f64::from(head.predict(&h))))
    }

    /// The predicted loss of predicting `target` from the executed models: the mean of the
    /// predicted losses of the links from the active sources that have a loss head. None when
    /// none has one or an output does not fit its model. A selection policy ranks frames by
    /// it (a high value: the links are likely wrong there, worth executing the target).
    pub fn predicted_loss(&self, target: usize, active: &[(usize, &OutputValue)]) -> Option<f64> {
        let losses: Vec<f64> = active
            .iter()
            .filter(|(i, _)| *i != target)
            .filter_map(|&(i, v)| self.link_predicted_loss(i, target, v).ok().flatten())
            .collect();
        (!losses.is_empty()).then(|| losses.iter().sum::<f64>() / losses.len() as f64)
    }

    /// Flat parameters of g_ij.
    pub fn link_params(&self, source: usize, target: usize) -> Result<Vec<f32>, LinkError> {
        Ok(self.link_ref(source, target)?.net.params())
    }

    pub fn set_link_params(
        &mut self,
        source: usize,
        target: usize,
        params: &[f32],
    ) -> Result<(), LinkError> {
        self.link_mut(source, target)?.net.set_params(params)
    }

    /// Gradient of g_ij's mean loss on the samples (flat, like the parameters).
    pub fn link_gradient(
        &self,
        source: usize,
        target: usize,
        samples: &[Vec<Option<OutputValue>>],
    ) -> Result<Vec<f32>, LinkError> {
        self.link_ref(source, target)?;
        self.check_samples(samples)?;
        let (x, t) = pairs_of(samples, source, target);
        if x.is_empty() {
            return Err(LinkError::NoPairs {
                from: source,
                target,
            });
        }
        self.link_ref(source, target)?.net.gradient(&x, &t)
    }

    /// Trains g_ij locally for `epochs` epochs on the samples and returns the parameter
    /// change (new - old), the update a federated client sends.
    pub fn train_round(
        &mut self,
        source: usize,
        target: usize,
        samples: &[Vec<Option<OutputValue>>],
        epochs: usize,
    ) -> Result<Vec<f32>, LinkError> {
        let mut p = self.meta.params.clone();
        p.epochs = epochs;
        self.link_ref(source, target)?;
        self.check_samples(samples)?;
        let (x, t) = pairs_of(samples, source, target);
        if x.is_empty() {
            return Err(LinkError::NoPairs {
                from: source,
                target,
            });
        }
        let l = self.link_mut(source, target)?;
        let before = l.net.params();
        let mut rng = StdRng::seed_from_u64(p.seed ^ 0x70_0d);
        l.net.fit(&x, &t, &p, &mut rng)?;
        Ok(l.net
            .params()
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect())
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

fn spread(zs: &[(usize, Vec<f32>)]) -> f64 {
    if zs.len() < 2 {
        return 0.0;
    }
    let dim = zs[0].1.len();
    let n = zs.len() as f64;
    let mut total = 0.0;
    for d in 0..dim {
        let mean = zs.iter().map(|(_, z)| z[d] as f64).sum::<f64>() / n;
        total += zs
            .iter()
            .map(|(_, z)| (z[d] as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
    }
    total / dim.max(1) as f64
}

/// Checks that every sample has one entry per model and that every present output fits its
/// model's spec, naming the first offending sample and model.
fn check_samples<'a>(
    models: impl Iterator<Item = (&'a str, &'a OutputSpec)> + Clone,
    samples: &[Vec<Option<OutputValue>>],
) -> Result<(), LinkError> {
    let k = models.clone().count();
    for (n, s) in samples.iter().enumerate() {
        if s.len() != k {
            return Err(LinkError::Form(format!(
                "sample {n} has {} outputs for {k} models",
                s.len()
            )));
        }
        for ((id, spec), v) in models.clone().zip(s) {
            if let Some(v) = v {
                check(spec, v, &format!("sample {n}, model {id:?}"))?;
            }
        }
    }
    Ok(())
}

/// The (input, target) pairs of samples where both models are present.
fn pairs_of(
    samples: &[Vec<Option<OutputValue>>],
    i: usize,
    j: usize,
) -> (Vec<&OutputValue>, Vec<&OutputValue>) {
    samples
        .iter()
        .filter_map(|s| match (s.get(i), s.get(j)) {
            (Some(Some(a)), Some(Some(b))) => Some((a, b)),
            _ => None,
        })
        .unzip()
}

fn train_link(
    models: &[(String, OutputSpec)],
    samples: &[Vec<Option<OutputValue>>],
    train_idx: &[usize],
    val_idx: &[usize],
    i: usize,
    j: usize,
    p: &TrainParams,
) -> Result<Link, LinkError> {
    let pick = |idx: &[usize]| -> (Vec<&OutputValue>, Vec<&OutputValue>) {
        idx.iter()
            .filter_map(|&n| match (&samples[n][i], &samples[n][j]) {
                (Some(a), Some(b)) => Some((a, b)),
                _ => None,
            })
            .unzip()
    };
    let (x, t) = pick(train_idx);
    let (vx, vt) = pick(val_idx);
    let mut rng = StdRng::seed_from_u64(
        p.seed ^ ((i as u64) << 32 | j as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    let (src, dst) = (&models[i].1, &models[j].1);
    let mut net = LinkNet::new(src, dst, p, &x, &t, &mut rng)?;
    net.fit(&x, &t, p, &mut rng)?;
    let loss_head = net.fit_loss_head(&x, &t, p, &mut rng)?;
    let score = if vx.is_empty() {
        None
    } else {
        let mut sum = 0.0;
        for (a, b) in vx.iter().zip(&vt) {
            sum += score(dst, &net.predict(a)?, b);
        }
        Some(sum / vx.len() as f64)
    };
    Ok(Link {
        source: i,
        target: j,
        arch: Arch::of(src, dst),
        net,
        score,
        train_pairs: x.len(),
        validation_pairs: vx.len(),
        loss_head,
    })
}

// ---------------------------------------------------------------------------------------------
// Persistence

#[derive(Serialize, Deserialize)]
struct LinkEntry {
    source: usize,
    target: usize,
    arch: Arch,
    in_norm: Option<Norm>,
    out_norm: Option<Norm>,
    param_count: usize,
    score: Option<f64>,
    train_pairs: usize,
    validation_pairs: usize,
    /// Standardisation of the loss head's input; the head's flat parameters are the tensor
    /// `losshead.I.J`. Absent for links without a head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loss_head: Option<LossHeadEntry>,
}

#[derive(Serialize, Deserialize)]
struct LossHeadEntry {
    norm: Norm,
    hidden: usize,
    param_count: usize,
}

#[derive(Serialize, Deserialize)]
struct EnsembleEntry {
    target: usize,
    sources: Vec<usize>,
    dims: usize,
    /// (bit mask over model indices, validation score)
    subset_scores: Vec<(u64, f64)>,
}

/// The JSON manifest stored in the safetensors metadata.
#[derive(Serialize, Deserialize)]
struct Manifest {
    format_version: u32,
    models: Vec<BundleModel>,
    links: Vec<LinkEntry>,
    ensembles: Vec<EnsembleEntry>,
    meta: TrainingMeta,
}

const MANIFEST_KEY: &str = "mlink.manifest";
const HASH_KEY: &str = "mlink.sha256";

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl LinkBundle {
    /// Writes the bundle atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<(), BundleError> {
        let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
        let mut links = Vec::new();
        for l in self.links.iter().flatten() {
            let p = l.net.params();
            links.push(LinkEntry {
                source: l.source,
                target: l.target,
                arch: l.arch,
                in_norm: l.net.in_norm().cloned(),
                out_norm: l.net.out_norm().cloned(),
                param_count: p.len(),
                score: l.score,
                train_pairs: l.train_pairs,
                validation_pairs: l.validation_pairs,
                loss_head: l.loss_head.as_ref().map(|h| LossHeadEntry {
                    norm: h.norm.clone(),
                    hidden: h.mlp.hidden,
                    param_count: h.mlp.params.len(),
                }),
            });
            tensors.insert(
                format!("link.{}.{}", l.source, l.target),
                (vec![p.len()], to_bytes(&p)),
            );
            if let Some(h) = &l.loss_head {
                tensors.insert(
                    format!("losshead.{}.{}", l.source, l.target),
                    (vec![h.mlp.params.len()], to_bytes(&h.mlp.params)),
                );
            }
        }
        let mut ensembles = Vec::new();
        for te in &self.ensembles {
            let e = &te.ensemble;
            let dims = e.logit_weights.first().map_or(0, Vec::len);
            ensembles.push(EnsembleEntry {
                target: e.target,
                sources: e.sources.clone(),
                dims,
                subset_scores: te.subset_scores.iter().map(|(k, v)| (*k, *v)).collect(),
            });
            if dims > 0 {
                tensors.insert(
                    format!("ensemble.{}", e.target),
                    (
                        vec![e.sources.len(), dims],
                        to_bytes(&e.logit_weights.concat()),
                    ),
                );
            }
        }
        let manifest = Manifest {
            format_version: BUNDLE_VERSION,
            models: self.models.clone(),
            links,
            ensembles,
            meta: self.meta.clone(),
        };
        let json = serde_json::to_string(&manifest).map_err(|e| BundleError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut hasher = sha2::Sha256::default();
        for (_, data) in tensors.values() {
            sha2::Digest::update(&mut hasher, data);
        }
        let hash = hex(&sha2::Digest::finalize(hasher));
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(name, (shape, data))| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .map(|v| (name.clone(), v))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| BundleError::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let meta = HashMap::from([
            (MANIFEST_KEY.to_string(), json),
            (HASH_KEY.to_string(), hash),
        ]);
        let bytes =
            safetensors::serialize(views, Some(meta)).map_err(|e| BundleError::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        crate::fsutil::write_atomic(path, &bytes).map_err(|source| BundleError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads a bundle written by [`save`](Self::save).
    pub fn load(path: &Path) -> Result<Self, BundleError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| BundleError::Io {
            path: p.clone(),
            source,
        })?;
        let corrupt = |reason: String| BundleError::Corrupt {
            path: p.clone(),
            reason,
        };
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| corrupt(format!("safetensors: {e}")))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| corrupt(format!("safetensors: {e}")))?;
        let meta = header
            .metadata()
            .as_ref()
            .ok_or_else(|| corrupt("no manifest (not an mlink bundle)".into()))?;
        let json = meta
            .get(MANIFEST_KEY)
            .ok_or_else(|| corrupt("no manifest (not an mlink bundle)".into()))?;
        let version: serde_json::Value =
            serde_json::from_str(json).map_err(|e| corrupt(format!("manifest: {e}")))?;
        let found = version
            .get("format_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| corrupt("manifest has no format_version".into()))?;
        if found > BUNDLE_VERSION as u64 {
            return Err(BundleError::NewerVersion {
                path: p.clone(),
                found: found as u32,
                supported: BUNDLE_VERSION,
            });
        }
        let m: Manifest =
            serde_json::from_value(version).map_err(|e| corrupt(format!("manifest: {e}")))?;
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort();
        let mut hasher = sha2::Sha256::default();
        for n in &names {
            let t = st.tensor(n).map_err(|e| corrupt(e.to_string()))?;
            sha2::Digest::update(&mut hasher, t.data());
        }
        if meta.get(HASH_KEY).map(String::as_str)
            != Some(hex(&sha2::Digest::finalize(hasher)).as_str())
        {
            return Err(corrupt(
                "weight checksum mismatch (the file is damaged)".into(),
            ));
        }
        let floats = |name: &str, want: usize| -> Result<Vec<f32>, BundleError> {
            let t = st
                .tensor(name)
                .map_err(|_| corrupt(format!("tensor {name} is missing")))?;
            if t.dtype() != safetensors::Dtype::F32 || t.data().len() != want * 4 {
                return Err(corrupt(format!("tensor {name} has the wrong type or size")));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let k = m.models.len();
        let mut links: Vec<Option<Link>> = (0..k * k).map(|_| None).collect();
        let mut rng = StdRng::seed_from_u64(0);
        for e in m.links {
            if e.source >= k || e.target >= k || e.source == e.target {
                return Err(corrupt(format!(
                    "link {} -> {} is out of range",
                    e.source, e.target
                )));
            }
            let (src, dst) = (&m.models[e.source].spec, &m.models[e.target].spec);
            let mut net = LinkNet::with_norms(
                src,
                dst,
                m.meta.params.hidden_factor,
                e.in_norm,
                e.out_norm,
                &mut rng,
            )?;
            net.set_params(&floats(
                &format!("link.{}.{}", e.source, e.target),
                e.param_count,
            )?)
            .map_err(|err| corrupt(format!("link {} -> {}: {err}", e.source, e.target)))?;
            let loss_head = match &e.loss_head {
                None => None,
                Some(h) => {
                    let dim = h.norm.mean.len();
                    if h.norm.std.len() != dim
                        || h.param_count != Mlp::param_count(dim, h.hidden, 1)
                    {
                        return Err(corrupt(format!(
                            "loss head of link {} -> {} is inconsistent",
                            e.source, e.target
                        )));
                    }
                    let params = floats(
                        &format!("losshead.{}.{}", e.source, e.target),
                        h.param_count,
                    )?;
                    if params.iter().any(|v| !v.is_finite()) {
                        return Err(corrupt(format!(
                            "loss head of link {} -> {} has non-finite weights",
                            e.source, e.target
                        )));
                    }
                    Some(LossHead {
                        norm: h.norm.clone(),
                        mlp: Mlp {
                            in_dim: dim,
                            hidden: h.hidden,
                            out_dim: 1,
                            params,
                        },
                    })
                }
            };
            links[e.source * k + e.target] = Some(Link {
                source: e.source,
                target: e.target,
                arch: e.arch,
                net,
                score: e.score,
                train_pairs: e.train_pairs,
                validation_pairs: e.validation_pairs,
                loss_head,
            });
        }
        let mut ensembles = Vec::new();
        for (j, e) in m.ensembles.into_iter().enumerate() {
            if e.target != j || e.sources.iter().any(|&s| s >= k) {
                return Err(corrupt(format!("ensemble {j} is inconsistent")));
            }
            let mut ens = Ensemble::new(e.target, e.sources.clone(), e.dims);
            if e.dims > 0 {
                let w = floats(&format!("ensemble.{j}"), e.sources.len() * e.dims)?;
                for (s, row) in ens.logit_weights.iter_mut().enumerate() {
                    row.copy_from_slice(&w[s * e.dims..(s + 1) * e.dims]);
                }
            }
            ensembles.push(TargetEnsemble {
                ensemble: ens,
                subset_scores: e.subset_scores.into_iter().collect(),
            });
        }
        if ensembles.len() != k {
            return Err(corrupt(format!(
                "{} ensembles for {k} models",
                ensembles.len()
            )));
        }
        Ok(LinkBundle {
            models: m.models,
            links,
            ensembles,
            meta: m.meta,
            cache: Mutex::new(HashMap::new()),
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Activation of a task's raw values (re-exported for callers that combine outputs).
pub fn activated(task: TaskKind, mut z: Vec<f32>) -> Vec<f32> {
    activate(Activation::for_task(task), &mut z);
    z
}
