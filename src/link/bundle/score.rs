//! Scoring a bundle: p(g_ij) and p(h_{A,j}) as stored, recomputed on held-out samples, or
//! measured on profiling samples.

use super::{Link, LinkBundle, LinkScore, ScoreMatrix, TargetEnsemble, mask_of};
use crate::link::LinkError;
use crate::link::sample::Sample;
use crate::output::{OutputValue, try_mean_score};
use std::collections::BTreeMap;

/// Subset scores of an ensemble are computed exhaustively up to this many sources.
const MAX_EXHAUSTIVE_SOURCES: usize = 10;

impl LinkBundle {
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
        let mask = mask_of(active.iter().copied().filter(|&i| i != target));
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

    /// The mean score of h_{A,j} over the samples holding target j, each predicted from the
    /// models of `active` present on it (samples with none of them are left out); `require_all`
    /// leaves out the samples missing any model of `active` instead. None without a usable
    /// sample.
    pub(super) fn ensemble_score_on<'a>(
        &self,
        te: &TargetEnsemble,
        j: usize,
        active: &[usize],
        require_all: bool,
        samples: impl IntoIterator<Item = &'a Sample>,
    ) -> Result<Option<LinkScore>, LinkError> {
        let usable = samples.into_iter().filter_map(|s| {
            let exact = s.output(j)?;
            let used: Vec<(usize, &OutputValue)> = active
                .iter()
                .filter(|&&i| self.link(i, j).is_some())
                .filter_map(|&i| s.output(i).map(|v| (i, v)))
                .collect();
            let complete = used.len() == active.len();
            (!used.is_empty() && (complete || !require_all)).then_some((used, exact))
        });
        try_mean_score(
            &self.models[j].spec,
            usable.map(|(used, exact)| Ok((self.combine(te, j, &used)?.0, exact))),
        )
    }

    /// Validation scores of h_{A,j} for every subset A of the target's sources (up to
    /// [`MAX_EXHAUSTIVE_SOURCES`] sources), on the samples where the target and all of A are
    /// present.
    pub(super) fn subset_scores(
        &self,
        te: &TargetEnsemble,
        j: usize,
        samples: &[&Sample],
    ) -> Result<BTreeMap<u64, f64>, LinkError> {
        let sources = &te.ensemble.sources;
        let mut out = BTreeMap::new();
        if sources.len() > MAX_EXHAUSTIVE_SOURCES || samples.is_empty() {
            return Ok(out);
        }
        for bits in 1u64..(1u64 << sources.len()) {
            let subset: Vec<usize> = (0..sources.len())
                .filter(|b| bits & (1u64 << b) != 0)
                .map(|b| sources[b])
                .collect();
            if let Some(m) =
                self.ensemble_score_on(te, j, &subset, true, samples.iter().copied())?
            {
                out.insert(mask_of(subset), m.score);
            }
        }
        Ok(out)
    }

    /// Mean score of link `l` on the samples holding both its models; None without any.
    fn link_score_on(&self, l: &Link, samples: &[Sample]) -> Result<Option<LinkScore>, LinkError> {
        try_mean_score(
            &self.models[l.target].spec,
            samples
                .iter()
                .filter_map(|s| s.pair(l.source, l.target))
                .map(|(a, b)| Ok((l.net.predict(a)?, b))),
        )
    }

    /// Recomputes the stored validation scores (links and ensemble subsets) on `validation`.
    pub fn rescore(&mut self, validation: &[Sample]) -> Result<(), LinkError> {
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
        let all: Vec<&Sample> = validation.iter().collect();
        let mut fresh = Vec::with_capacity(k);
        for j in 0..self.ensembles.len() {
            fresh.push(self.subset_scores(&self.ensembles[j], j, &all)?);
        }
        for (te, scores) in self.ensembles.iter_mut().zip(fresh) {
            // Subsets absent from this validation set keep their earlier score.
            te.subset_scores.extend(scores);
        }
        self.clear_cache();
        Ok(())
    }

    /// Measures the links and ensembles on aligned samples (profiling): the mean score of
    /// every link g_ij on the samples where both ends are present, and per target the mean
    /// score of h_{A,j} for the executed set `active`, on the samples where the target and at
    /// least one model of A are present (using the models of A present on each).
    pub fn score_on(&self, samples: &[Sample], active: &[usize]) -> Result<ScoreMatrix, LinkError> {
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
            if !active.contains(&j) {
                *slot = self.ensemble_score_on(&self.ensembles[j], j, active, false, samples)?;
            }
        }
        Ok(ScoreMatrix { links, ensembles })
    }
}
