//! Link scores as the scheduler sees them in the live engine: each link's and ensemble's
//! validation score from training, corrected by what the latest profiling frames measured.
//!
//! A profiled score is the mean of `output::score` between a link's prediction and the
//! model's exact output over the profiling samples. With few samples that mean is noisy, so
//! it is blended with the validation score as a prior worth [`PRIOR_SAMPLES`] samples:
//! `(n * measured + PRIOR_SAMPLES * validation) / (n + PRIOR_SAMPLES)`.

use crate::link::LinkBundle;
use crate::output::{OutputSpec, OutputValue, mean_score};
use crate::schedule::{LinkScores, ModelSet};
use std::collections::HashMap;
use std::sync::Mutex;

/// Weight of the training-time validation score, in samples.
pub const PRIOR_SAMPLES: f64 = 8.0;

/// Scores of links and ensembles for the models of a pipeline, in pipeline order.
pub struct ProfiledScores<'a> {
    bundle: &'a LinkBundle,
    /// Pipeline model index -> bundle model index.
    to_bundle: Vec<usize>,
    specs: Vec<OutputSpec>,
    samples: &'a [Vec<OutputValue>],
    links: Vec<Vec<f64>>,
    ensembles: Mutex<HashMap<(Vec<usize>, usize), f64>>,
}

impl<'a> ProfiledScores<'a> {
    /// `samples`: complete rows (every model's exact output, pipeline order) from profiling.
    pub fn new(
        bundle: &'a LinkBundle,
        to_bundle: Vec<usize>,
        specs: Vec<OutputSpec>,
        samples: &'a [Vec<OutputValue>],
    ) -> Self {
        let k = to_bundle.len();
        let mut links = vec![vec![0.0; k]; k];
        for (i, row) in links.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                if i != j {
                    let prior = bundle.link_score(to_bundle[i], to_bundle[j]);
                    *cell = blend(
                        measure(bundle, &to_bundle, &specs, samples, &[i], j),
                        samples.len(),
                        prior,
                    );
                }
            }
        }
        Self {
            bundle,
            to_bundle,
            specs,
            samples,
            links,
            ensembles: Mutex::new(HashMap::new()),
        }
    }

    /// The link score matrix (source row, target column), for metrics and logs.
    pub fn link_matrix(&self) -> &[Vec<f64>] {
        &self.links
    }

    /// Measured (not blended) accuracy of predicting each model outside `active` from
    /// `active` on the profiling samples: the drift detector compares it with expectations.
    pub fn measured_predicted_accuracy(&self, active: &ModelSet) -> Option<f64> {
        let sources: Vec<usize> = active.iter().collect();
        if sources.is_empty() || self.samples.is_empty() {
            return None;
        }
        let targets: Vec<usize> = (0..self.to_bundle.len())
            .filter(|j| !active.contains(*j))
            .collect();
        if targets.is_empty() {
            return None;
        }
        let total: f64 = targets
            .iter()
            .filter_map(|&j| {
                measure(
                    self.bundle,
                    &self.to_bundle,
                    &self.specs,
                    self.samples,
                    &sources,
                    j,
                )
            })
            .sum();
        Some(total / targets.len() as f64)
    }
}

fn blend(measured: Option<f64>, n: usize, prior: f64) -> f64 {
    match measured {
        Some(m) => (n as f64 * m + PRIOR_SAMPLES * prior) / (n as f64 + PRIOR_SAMPLES),
        None => prior,
    }
}

/// Mean score of predicting `target` from `sources` over the samples; None without samples.
fn measure(
    bundle: &LinkBundle,
    to_bundle: &[usize],
    specs: &[OutputSpec],
    samples: &[Vec<OutputValue>],
    sources: &[usize],
    target: usize,
) -> Option<f64> {
    // A prediction that fails scores 0.
    let predictions = samples.iter().map(|row| {
        let inputs: Vec<(usize, &OutputValue)> =
            sources.iter().map(|&i| (to_bundle[i], &row[i])).collect();
        let predicted = bundle.predict(to_bundle[target], &inputs).ok();
        (predicted.map(|p| p.value), &row[target])
    });
    mean_score(&specs[target], predictions).map(|m| m.score)
}

impl LinkScores for ProfiledScores<'_> {
    fn n_models(&self) -> usize {
        self.to_bundle.len()
    }

    fn link(&self, source: usize, target: usize) -> f64 {
        self.links[source][target]
    }

    fn ensemble(&self, active: &ModelSet, target: usize) -> f64 {
        let sources: Vec<usize> = active.iter().filter(|&i| i != target).collect();
        match sources.len() {
            0 => return 0.0,
            1 => return self.links[sources[0]][target],
            _ => {}
        }
        let key = (sources.clone(), target);
        if let Ok(cache) = self.ensembles.lock()
            && let Some(s) = cache.get(&key)
        {
            return *s;
        }
        let bundle_sources: Vec<usize> = sources.iter().map(|&i| self.to_bundle[i]).collect();
        let prior = self
            .bundle
            .ensemble_score(&bundle_sources, self.to_bundle[target]);
        let s = blend(
            measure(
                self.bundle,
                &self.to_bundle,
                &self.specs,
                self.samples,
                &sources,
                target,
            ),
            self.samples.len(),
            prior,
        );
        if let Ok(mut cache) = self.ensembles.lock() {
            cache.insert(key, s);
        }
        s
    }
}
