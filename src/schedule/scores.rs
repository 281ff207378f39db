//! Link scores: `p(g_ij)` for single links and `p(h_{A,j})` for ensembles, in `[0, 1]`.

use super::{ModelSet, ScheduleError};
use serde::{Deserialize, Serialize};

/// What the scheduler needs to know about the links: how well each link and each ensemble
/// predicts its target (the task's metric against the exact output, normalised to `[0, 1]`).
pub trait LinkScores {
    /// Number of models `k`; models are `0..k`.
    fn n_models(&self) -> usize;
    /// `p(g_ij)`: score of the link from `source` to `target` (`source != target`).
    fn link(&self, source: usize, target: usize) -> f64;
    /// `p(h_{A,j})`: score of the ensemble of the links from the models of `active` to
    /// `target` (`target` not in `active`). 0 when `active` is empty.
    fn ensemble(&self, active: &ModelSet, target: usize) -> f64;
    /// The matrix form of these scores, when they have one: selection then uses incremental
    /// updates instead of calling [`LinkScores::ensemble`] for every candidate set.
    fn as_matrix(&self) -> Option<&MatrixScores> {
        None
    }
}

/// Pairwise link scores in a `k x k` matrix plus a fixed ensemble gain.
///
/// The ensemble rule (the paper's "ensemble gain" of the Fig. 10 simulation, applied as
/// dominance by the best source plus mutual assistance from each further one):
///
/// `p(h_{A,j}) = min(1, max_{i in A} p(g_ij) + gain * (|A| - 1))`, and 0 when `A` is empty.
///
/// With one source this is the link itself (`h_{{i},j} = g_ij`, section 2); each further
/// source adds `gain`, so adding a source never lowers a target's score (the paper's
/// monotonicity assumption). `gain = 0` is pure dominance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatrixScores {
    k: usize,
    /// Row-major: `scores[source * k + target]`; the diagonal is unused.
    scores: Vec<f64>,
    gain: f64,
}

impl MatrixScores {
    /// Scores from a row-major `k x k` matrix (`rows[source][target]`), each in `[0, 1]`
    /// (the diagonal is ignored), and an ensemble gain in `[0, 1]`.
    pub fn new(rows: Vec<Vec<f64>>, gain: f64) -> Result<Self, ScheduleError> {
        let k = rows.len();
        let mut scores = Vec::with_capacity(k * k);
        for (i, row) in rows.into_iter().enumerate() {
            if row.len() != k {
                return Err(ScheduleError::Shape(format!(
                    "row {i} of the link score matrix has {} entries, expected {k}",
                    row.len()
                )));
            }
            for (j, &s) in row.iter().enumerate() {
                if i != j && !(0.0..=1.0).contains(&s) {
                    return Err(ScheduleError::Score {
                        from: i,
                        to: j,
                        score: s,
                    });
                }
            }
            scores.extend(row);
        }
        if !(0.0..=1.0).contains(&gain) {
            return Err(ScheduleError::Shape(format!(
                "the ensemble gain must be in [0, 1], got {gain}"
            )));
        }
        Ok(MatrixScores { k, scores, gain })
    }

    /// The ensemble gain per further source.
    pub fn gain(&self) -> f64 {
        self.gain
    }

    /// `p(g_ij)` without bounds checks beyond the slice's.
    #[inline]
    pub fn at(&self, source: usize, target: usize) -> f64 {
        self.scores[source * self.k + target]
    }

    /// The row of links out of `source`.
    #[inline]
    pub fn row(&self, source: usize) -> &[f64] {
        &self.scores[source * self.k..(source + 1) * self.k]
    }

    /// The ensemble rule given the best source score and the number of sources.
    #[inline]
    pub fn combine(&self, best: f64, n_sources: usize) -> f64 {
        if n_sources == 0 {
            0.0
        } else {
            (best + self.gain * (n_sources - 1) as f64).min(1.0)
        }
    }
}

impl LinkScores for MatrixScores {
    fn n_models(&self) -> usize {
        self.k
    }

    fn link(&self, source: usize, target: usize) -> f64 {
        self.at(source, target)
    }

    fn ensemble(&self, active: &ModelSet, target: usize) -> f64 {
        let mut best = 0.0f64;
        let mut n = 0;
        for i in active.iter().filter(|&i| i != target) {
            best = best.max(self.at(i, target));
            n += 1;
        }
        self.combine(best, n)
    }

    fn as_matrix(&self) -> Option<&MatrixScores> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensemble_is_best_source_plus_gain_capped_at_one() {
        let m = MatrixScores::new(
            vec![
                vec![0.0, 0.5, 0.97],
                vec![0.6, 0.0, 0.2],
                vec![0.3, 0.4, 0.0],
            ],
            0.02,
        )
        .unwrap();
        let none = ModelSet::empty(3);
        assert_eq!(m.ensemble(&none, 2), 0.0);
        // One source: the link itself.
        assert_eq!(m.ensemble(&ModelSet::from_indices(3, [1]), 0), 0.6);
        // Two sources into 2: best 0.97 + 0.02 = 0.99.
        assert!((m.ensemble(&ModelSet::from_indices(3, [0, 1]), 2) - 0.99).abs() < 1e-12);
        // Two sources into 0: best 0.6 + 0.02.
        assert!((m.ensemble(&ModelSet::from_indices(3, [1, 2]), 0) - 0.62).abs() < 1e-12);
        let capped = MatrixScores::new(vec![vec![0.0, 0.99], vec![0.99, 0.0]], 0.5).unwrap();
        assert_eq!(capped.combine(0.99, 3), 1.0);
    }

    #[test]
    fn rejects_bad_matrices() {
        assert!(MatrixScores::new(vec![vec![0.0, 1.5], vec![0.5, 0.0]], 0.0).is_err());
        assert!(MatrixScores::new(vec![vec![0.0, 0.5]], 0.0).is_err());
        assert!(MatrixScores::new(vec![vec![0.0]], 2.0).is_err());
        assert!(MatrixScores::new(vec![vec![0.0, f64::NAN], vec![0.5, 0.0]], 0.0).is_err());
    }
}
