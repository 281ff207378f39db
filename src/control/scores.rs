//! Link scores as the scheduler sees them, measured on profiling samples: the one scoring
//! rule shared by the live engine and the trace replay.
//!
//! # The rule
//! A link's (or an ensemble's) score is the mean of `output::score` between its prediction
//! and the target's exact output over the profiling samples (the paper's `p(g_ij)` and
//! `p(h_{A,j})`, section 5: "measured on the profiling frames"). Only when there is no
//! sample at all (a bundle loaded at start-up, before the first period is profiled) does the
//! score fall back to the link's validation score from training, the prior. Blending the two
//! was rejected: the validation score comes from frames near the training ones and is
//! optimistic, and a prior worth a fixed number of samples outweighs a short period's
//! profiling, so selections would follow training rather than the footage.

use crate::link::LinkBundle;
use crate::output::{OutputSpec, OutputValue};
use crate::schedule::{Budget, Costs, LinkScores, ModelSet};
use std::cell::RefCell;
use std::collections::HashMap;

/// One complete row of a profiling sample: every model's exact output on one frame, in
/// pipeline order.
pub type Row = Vec<OutputValue>;

/// Every model's link view on one frame, in pipeline order (what links that read more than
/// the heads predict from); empty when the driver has none.
pub type Views = Vec<Vec<f32>>;

/// What the controller needs from the trained links. Model indices are the pipeline's.
pub trait Predictor {
    /// The prediction of `target` from the exact outputs of `sources` (a single link with one
    /// source, the ensemble with more); `None` when no prediction can be made.
    fn predict(&self, target: usize, sources: &[(usize, &OutputValue)]) -> Option<OutputValue>;
    /// The same prediction with the frame's link views (`views[m]`, model m's view; empty
    /// when unknown). Links over the views override this, so that the scheduler scores the
    /// links that serve.
    fn predict_viewed(
        &self,
        target: usize,
        sources: &[(usize, &OutputValue)],
        views: &[Vec<f32>],
    ) -> Option<OutputValue> {
        let _ = views;
        self.predict(target, sources)
    }
    /// The validation score from training of the ensemble (or, with one source, the link)
    /// from `sources` to `target`, when known.
    fn prior(&self, sources: &[usize], target: usize) -> Option<f64>;
}

/// A link bundle seen in pipeline order: `to_bundle[m]` is pipeline model `m`'s index in the
/// bundle (the identity for a bundle trained on the same model list).
pub struct BundleLinks<'a> {
    pub bundle: &'a LinkBundle,
    pub to_bundle: &'a [usize],
}

impl BundleLinks<'_> {
    /// Mean parameter memory of one serving link between the pipeline's models, in MB (f32
    /// weights): what the scheduler charges per link.
    pub fn mean_link_memory_mb(&self) -> Option<f64> {
        let k = self.to_bundle.len();
        let mut total = 0usize;
        let mut n = 0usize;
        for i in 0..k {
            for j in (0..k).filter(|&j| j != i) {
                if let Some(p) = self
                    .bundle
                    .serving_link_parameters(self.to_bundle[i], self.to_bundle[j])
                {
                    total += p;
                    n += 1;
                }
            }
        }
        (n > 0).then(|| total as f64 * 4.0 / 1e6 / n as f64)
    }
}

impl BundleLinks<'_> {
    /// Per source row and target column, each link's own parameter memory (MB, f32 weights)
    /// at `ms` each: what the scheduler charges per link. A missing link costs nothing.
    pub fn link_costs(&self, ms: f64) -> Vec<Vec<crate::schedule::Cost>> {
        let k = self.to_bundle.len();
        (0..k)
            .map(|i| {
                (0..k)
                    .map(|j| {
                        match self
                            .bundle
                            .serving_link_parameters(self.to_bundle[i], self.to_bundle[j])
                        {
                            Some(p) if i != j => {
                                crate::schedule::Cost::new(p as f64 * 4.0 / 1e6, ms)
                            }
                            _ => crate::schedule::Cost::ZERO,
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

impl Predictor for BundleLinks<'_> {
    fn predict(&self, target: usize, sources: &[(usize, &OutputValue)]) -> Option<OutputValue> {
        let inputs: Vec<(usize, &OutputValue)> = sources
            .iter()
            .map(|&(i, v)| (self.to_bundle[i], v))
            .collect();
        self.bundle
            .predict(self.to_bundle[target], &inputs)
            .ok()
            .map(|p| p.value)
    }

    fn predict_viewed(
        &self,
        target: usize,
        sources: &[(usize, &OutputValue)],
        views: &[Vec<f32>],
    ) -> Option<OutputValue> {
        let inputs: Vec<(usize, &OutputValue)> = sources
            .iter()
            .map(|&(i, v)| (self.to_bundle[i], v))
            .collect();
        let views: Vec<(usize, &[f32])> = views
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .filter_map(|(m, v)| Some((*self.to_bundle.get(m)?, v.as_slice())))
            .collect();
        self.bundle
            .predict_viewed(self.to_bundle[target], &inputs, &views)
            .ok()
            .map(|p| p.value)
    }

    fn prior(&self, sources: &[usize], target: usize) -> Option<f64> {
        let t = self.to_bundle[target];
        // View links, where the bundle holds them, serve whenever the sources' views are at
        // hand (always in the engine and in a format 2 trace): their held-out score is the
        // prior of what serves.
        if let Some(vl) = self.bundle.view_links() {
            let s: Vec<usize> = sources.iter().map(|&i| self.to_bundle[i]).collect();
            if let Some(score) = vl.held_out(&s, t) {
                return Some(score);
            }
        }
        Some(match sources {
            [i] => self.bundle.link_score(self.to_bundle[*i], t),
            _ => {
                let s: Vec<usize> = sources.iter().map(|&i| self.to_bundle[i]).collect();
                self.bundle.ensemble_score(&s, t)
            }
        })
    }
}

/// Scores of links and ensembles measured on profiling samples (see the module's rule).
pub struct ProfiledScores<'a, P: Predictor + ?Sized> {
    links: &'a P,
    specs: &'a [OutputSpec],
    samples: &'a [Row],
    views: &'a [Views],
    /// Samples' worth of weight the links' prior has beside the measured samples.
    prior_weight: f64,
    matrix: Vec<Vec<f64>>,
    ensembles: RefCell<HashMap<(Vec<usize>, usize), f64>>,
}

impl<'a, P: Predictor + ?Sized> ProfiledScores<'a, P> {
    /// `samples`: complete rows in pipeline order; `specs`: each model's output spec.
    pub fn new(links: &'a P, specs: &'a [OutputSpec], samples: &'a [Row]) -> Self {
        Self::with_views(links, specs, samples, &[])
    }

    /// As [`ProfiledScores::new`], with each sample's link views (`views[s]` for
    /// `samples[s]`; missing entries have none).
    pub fn with_views(
        links: &'a P,
        specs: &'a [OutputSpec],
        samples: &'a [Row],
        views: &'a [Views],
    ) -> Self {
        Self::weighing_prior(links, specs, samples, views, 0.0)
    }

    /// As [`ProfiledScores::with_views`], each score counting the links' prior (their
    /// held-out score) as `prior_weight` samples beside the measured ones: for links trained
    /// again online, until enough samples were profiled after the update.
    pub fn weighing_prior(
        links: &'a P,
        specs: &'a [OutputSpec],
        samples: &'a [Row],
        views: &'a [Views],
        prior_weight: f64,
    ) -> Self {
        let k = specs.len();
        let mut matrix = vec![vec![1.0; k]; k];
        for (i, row) in matrix.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                if i != j {
                    *cell = score_or_prior(links, specs, samples, views, &[i], j, prior_weight);
                }
            }
        }
        ProfiledScores {
            links,
            specs,
            samples,
            views,
            prior_weight,
            matrix,
            ensembles: RefCell::new(HashMap::new()),
        }
    }

    /// The link score matrix (source row, target column; 1 on the diagonal).
    pub fn link_matrix(&self) -> &[Vec<f64>] {
        &self.matrix
    }

    /// Mean measured accuracy of the models outside `active` predicted from `active` on the
    /// samples (never the prior); `None` without samples, sources or predicted models.
    pub fn measured_predicted_accuracy(&self, active: &ModelSet) -> Option<f64> {
        let sources: Vec<usize> = active.iter().collect();
        let targets: Vec<usize> = active.complement_iter().collect();
        if sources.is_empty() || targets.is_empty() || self.samples.is_empty() {
            return None;
        }
        let total: f64 = targets
            .iter()
            .filter_map(|&j| {
                mean_score_viewed(
                    self.links,
                    self.specs,
                    self.samples,
                    self.views,
                    &sources,
                    j,
                )
            })
            .sum();
        Some(total / targets.len() as f64)
    }

    /// Per model outside `active`, its measured accuracy when predicted from `active` (the
    /// accuracy of the outputs the engine predicts, measured on profiling frames).
    pub fn measured_per_model(&self, active: &ModelSet) -> Vec<Option<f64>> {
        let sources: Vec<usize> = active.iter().collect();
        (0..self.specs.len())
            .map(|j| {
                if active.contains(j) || sources.is_empty() {
                    None
                } else {
                    mean_score_viewed(
                        self.links,
                        self.specs,
                        self.samples,
                        self.views,
                        &sources,
                        j,
                    )
                }
            })
            .collect()
    }
}

impl<P: Predictor + ?Sized> LinkScores for ProfiledScores<'_, P> {
    fn n_models(&self) -> usize {
        self.specs.len()
    }

    fn link(&self, source: usize, target: usize) -> f64 {
        self.matrix[source][target]
    }

    fn ensemble(&self, active: &ModelSet, target: usize) -> f64 {
        let sources: Vec<usize> = active.iter().filter(|&i| i != target).collect();
        match sources.len() {
            0 => return 0.0,
            1 => return self.matrix[sources[0]][target],
            _ => {}
        }
        let key = (sources, target);
        if let Some(s) = self.ensembles.borrow().get(&key) {
            return *s;
        }
        let s = score_or_prior(
            self.links,
            self.specs,
            self.samples,
            self.views,
            &key.0,
            target,
            self.prior_weight,
        );
        self.ensembles.borrow_mut().insert(key, s);
        s
    }
}

/// The measured mean score when there are samples, else the prior, else 0; with a
/// `prior_weight` > 0 and both known, their mean weighted by the samples and that weight.
fn score_or_prior<P: Predictor + ?Sized>(
    links: &P,
    specs: &[OutputSpec],
    samples: &[Row],
    views: &[Views],
    sources: &[usize],
    target: usize,
    prior_weight: f64,
) -> f64 {
    let measured = mean_score_viewed(links, specs, samples, views, sources, target);
    let prior = links.prior(sources, target);
    let n = samples.len() as f64;
    match (measured, prior) {
        (Some(m), Some(p)) if prior_weight > 0.0 => (n * m + prior_weight * p) / (n + prior_weight),
        (m, p) => m.or(p).unwrap_or(0.0),
    }
    .clamp(0.0, 1.0)
}

/// Mean score of predicting `target` from `sources` over the samples (a failed prediction
/// scores 0); `None` without samples.
pub fn mean_score<P: Predictor + ?Sized>(
    links: &P,
    specs: &[OutputSpec],
    samples: &[Row],
    sources: &[usize],
    target: usize,
) -> Option<f64> {
    mean_score_viewed(links, specs, samples, &[], sources, target)
}

/// [`mean_score`] with each sample's link views (`views[s]` for `samples[s]`).
pub fn mean_score_viewed<P: Predictor + ?Sized>(
    links: &P,
    specs: &[OutputSpec],
    samples: &[Row],
    views: &[Views],
    sources: &[usize],
    target: usize,
) -> Option<f64> {
    let predictions = samples.iter().enumerate().map(|(s, row)| {
        let inputs: Vec<(usize, &OutputValue)> = sources.iter().map(|&i| (i, &row[i])).collect();
        let v = views.get(s).map_or(&[][..], Vec::as_slice);
        (links.predict_viewed(target, &inputs, v), &row[target])
    });
    crate::output::mean_score(&specs[target], predictions).map(|m| m.score)
}

/// A model that crops another's boxes (`parents[m] = Some(p)`) cannot run without it: the
/// parent is added when the budget allows, otherwise the dependent is dropped. Models are
/// visited in index order, so the result is deterministic.
pub fn close_over_parents(
    mut active: ModelSet,
    parents: &[Option<usize>],
    costs: &Costs,
    budget: &Budget,
) -> ModelSet {
    for m in 0..active.capacity() {
        let Some(p) = parents.get(m).copied().flatten() else {
            continue;
        };
        if active.contains(m) && !active.contains(p) {
            let with = active.with(p);
            if budget.fits(costs.set_cost(&with)) {
                active = with;
            } else {
                active.remove(m);
            }
        }
    }
    active
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::TaskKind;
    use crate::schedule::Cost;

    struct CopyLinks;
    impl Predictor for CopyLinks {
        fn predict(&self, _: usize, s: &[(usize, &OutputValue)]) -> Option<OutputValue> {
            s.first().map(|(_, v)| (*v).clone())
        }
        fn prior(&self, sources: &[usize], _: usize) -> Option<f64> {
            Some(0.1 * sources.len() as f64)
        }
    }

    fn v(x: f32) -> OutputValue {
        OutputValue::Vector(vec![x])
    }

    #[test]
    fn measured_on_samples_else_the_prior() {
        let specs = vec![OutputSpec::vector(1, TaskKind::Count); 3];
        let none: Vec<Row> = Vec::new();
        let s = ProfiledScores::new(&CopyLinks, &specs, &none);
        assert_eq!(s.link(0, 1), 0.1);
        assert_eq!(s.ensemble(&ModelSet::from_indices(3, [0, 1]), 2), 0.2);
        assert_eq!(
            s.measured_predicted_accuracy(&ModelSet::from_indices(3, [0])),
            None
        );
        // 0 and 1 agree on both samples, 2 on one of them.
        let rows = vec![vec![v(1.0), v(1.0), v(1.0)], vec![v(2.0), v(2.0), v(5.0)]];
        let s = ProfiledScores::new(&CopyLinks, &specs, &rows);
        assert_eq!(s.link(0, 1), 1.0);
        assert_eq!(s.link(0, 2), 0.5);
        assert_eq!(s.ensemble(&ModelSet::from_indices(3, [0, 1]), 2), 0.5);
        let a = ModelSet::from_indices(3, [0]);
        assert_eq!(s.measured_predicted_accuracy(&a), Some(0.75));
        assert_eq!(s.measured_per_model(&a), vec![None, Some(1.0), Some(0.5)]);
    }

    #[test]
    fn a_prior_weight_counts_the_prior_as_that_many_samples() {
        let specs = vec![OutputSpec::vector(1, TaskKind::Count); 3];
        let rows = vec![vec![v(1.0), v(1.0), v(1.0)], vec![v(2.0), v(2.0), v(5.0)]];
        // Two samples measured beside a prior of two samples' weight: the plain mean.
        let s = ProfiledScores::weighing_prior(&CopyLinks, &specs, &rows, &[], 2.0);
        assert!((s.link(0, 1) - (2.0 * 1.0 + 2.0 * 0.1) / 4.0).abs() < 1e-12);
        assert!((s.link(0, 2) - (2.0 * 0.5 + 2.0 * 0.1) / 4.0).abs() < 1e-12);
        let pair = ModelSet::from_indices(3, [0, 1]);
        assert!((s.ensemble(&pair, 2) - (2.0 * 0.5 + 2.0 * 0.2) / 4.0).abs() < 1e-12);
        // Measured accuracy stays measured; no weight, no prior; no samples, the prior.
        let a = ModelSet::from_indices(3, [0]);
        assert_eq!(s.measured_predicted_accuracy(&a), Some(0.75));
        let plain = ProfiledScores::weighing_prior(&CopyLinks, &specs, &rows, &[], 0.0);
        assert_eq!(plain.link(0, 2), 0.5);
        let none: Vec<Row> = Vec::new();
        let prior = ProfiledScores::weighing_prior(&CopyLinks, &specs, &none, &[], 8.0);
        assert_eq!(prior.link(0, 2), 0.1);
    }

    #[test]
    fn parents_are_added_when_they_fit_else_the_dependent_goes() {
        let costs = Costs {
            models: vec![Cost::new(50.0, 1.0), Cost::new(30.0, 1.0)],
            link: Cost::ZERO,
            per_link: Vec::new(),
        };
        let parents = [None, Some(0)];
        let only_child = ModelSet::from_indices(2, [1]);
        let both = close_over_parents(only_child.clone(), &parents, &costs, &Budget::memory(80.0));
        assert_eq!(both, ModelSet::full(2));
        let none = close_over_parents(only_child, &parents, &costs, &Budget::memory(40.0));
        assert!(none.is_empty());
    }
}
