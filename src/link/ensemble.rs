//! The multi-source ensemble h_{A,j} of section 3.5.
//!
//! For a vector target, every source link's pre-activation output `z_i` (logits for class
//! tasks, de-standardised values for linear tasks) is weighted per output dimension and the
//! sum is activated by the target's task:
//!
//! `h_{A,j} = act( sum_{i in A} w_{i,d} z_{i,d} )`,  `w_{i,d} = exp(a_{i,d}) / sum_{k in A} exp(a_{k,d})`
//!
//! The weights are a softmax over the *present* sources, so any subset A of the sources can be
//! used without retraining: absent sources are dropped and the rest renormalised. With a single
//! source the weight is 1 and `h_{{i},j} = g_ij` exactly. Training draws a random non-empty
//! subset of the available sources per sample, so the weights suit every subset.
//!
//! For a sequence target, outputs cannot be averaged token by token without decoding jointly;
//! the ensemble takes the prediction of the source in A whose link scored best on validation.

use super::LinkError;
use super::optim::RmsProp;
use crate::output::{Activation, TaskKind, activate, loss_and_grad};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// One training sample of an ensemble: each source's link output (None when absent) and the
/// exact target.
pub type EnsembleSample = (Vec<Option<Vec<f32>>>, Vec<f32>);

/// The trainable weights of one target's ensemble.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ensemble {
    pub target: usize,
    /// Model indices of the sources, in the order of `logit_weights`.
    pub sources: Vec<usize>,
    /// `a_{i,d}` per source (outer) and output dimension (inner); empty for sequence targets.
    pub logit_weights: Vec<Vec<f32>>,
}

impl Ensemble {
    pub fn new(target: usize, sources: Vec<usize>, out_dim: usize) -> Self {
        let logit_weights = vec![vec![0.0; out_dim]; sources.len()];
        Self {
            target,
            sources,
            logit_weights,
        }
    }

    /// Combines the pre-activation outputs of the present sources (`(model index, z)`) into
    /// the pre-activation ensemble output. Sources not in this ensemble are ignored.
    pub fn combine(&self, parts: &[(usize, &[f32])]) -> Result<Vec<f32>, LinkError> {
        let idx: Vec<(usize, &[f32])> = parts
            .iter()
            .filter_map(|(m, z)| self.sources.iter().position(|s| s == m).map(|k| (k, *z)))
            .collect();
        let Some(first) = idx.first() else {
            return Err(LinkError::NoSource {
                target: self.target,
            });
        };
        let dim = first.1.len();
        // Every source's output and weights must cover the same dimensions (a stored
        // ensemble is checked at load; this keeps a mismatch an error, never a panic).
        if let Some((k, z)) = idx
            .iter()
            .find(|(k, z)| z.len() != dim || self.logit_weights[*k].len() != dim)
        {
            return Err(LinkError::Form(format!(
                "ensemble of model {}: source {} gives {} values and has {} weights, expected {dim}",
                self.target,
                self.sources[*k],
                z.len(),
                self.logit_weights[*k].len()
            )));
        }
        let mut out = vec![0.0; dim];
        for d in 0..dim {
            let m = idx
                .iter()
                .map(|(k, _)| self.logit_weights[*k][d])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut norm = 0.0;
            let mut acc = 0.0;
            for (k, z) in &idx {
                let w = (self.logit_weights[*k][d] - m).exp();
                norm += w;
                acc += w * z[d];
            }
            out[d] = acc / norm;
        }
        Ok(out)
    }

    /// The activated ensemble output.
    pub fn predict(
        &self,
        task: TaskKind,
        parts: &[(usize, &[f32])],
    ) -> Result<Vec<f32>, LinkError> {
        let mut z = self.combine(parts)?;
        activate(Activation::for_task(task), &mut z);
        Ok(z)
    }

    /// Trains the weights (eq. 3) on samples of per-source link outputs and the exact target
    /// (`(parts, target)` where `parts[k]` is `Some(z)` for source `self.sources[k]` present).
    pub fn fit(
        &mut self,
        task: TaskKind,
        samples: &[EnsembleSample],
        epochs: usize,
        batch: usize,
        lr: f32,
        rng: &mut StdRng,
    ) {
        let n_src = self.sources.len();
        let dim = self.logit_weights.first().map_or(0, Vec::len);
        if samples.is_empty() || n_src < 2 || dim == 0 {
            return;
        }
        let mut flat: Vec<f32> = self.logit_weights.concat();
        let mut opt = RmsProp::new(lr, flat.len());
        let mut grad = vec![0.0; flat.len()];
        let mut order: Vec<usize> = (0..samples.len()).collect();
        let (mut z, mut dz) = (vec![0.0; dim], vec![0.0; dim]);
        let mut w = vec![0.0; n_src];
        for _ in 0..epochs {
            order.shuffle(rng);
            for chunk in order.chunks(batch.max(1)) {
                grad.iter_mut().for_each(|g| *g = 0.0);
                for &s in chunk {
                    let (parts, target) = &samples[s];
                    let present: Vec<usize> = (0..n_src).filter(|&k| parts[k].is_some()).collect();
                    if present.is_empty() {
                        continue;
                    }
                    // A random non-empty subset, so the weights work for any A.
                    let mut active: Vec<usize> = present
                        .iter()
                        .copied()
                        .filter(|_| rng.random_bool(0.5))
                        .collect();
                    if active.is_empty() {
                        active.push(present[rng.random_range(0..present.len())]);
                    }
                    if active.len() < 2 {
                        continue; // one source: weight 1, nothing to learn
                    }
                    for d in 0..dim {
                        let m = active
                            .iter()
                            .map(|&k| flat[k * dim + d])
                            .fold(f32::NEG_INFINITY, f32::max);
                        let mut norm = 0.0;
                        for &k in &active {
                            w[k] = (flat[k * dim + d] - m).exp();
                            norm += w[k];
                        }
                        z[d] = 0.0;
                        for &k in &active {
                            w[k] /= norm;
                            z[d] += w[k] * parts[k].as_ref().map_or(0.0, |p| p[d]);
                        }
                    }
                    loss_and_grad(task, &z, target, &mut dz);
                    for d in 0..dim {
                        let m = active
                            .iter()
                            .map(|&k| flat[k * dim + d])
                            .fold(f32::NEG_INFINITY, f32::max);
                        let norm: f32 = active.iter().map(|&k| (flat[k * dim + d] - m).exp()).sum();
                        for &k in &active {
                            let wk = (flat[k * dim + d] - m).exp() / norm;
                            let zk = parts[k].as_ref().map_or(0.0, |p| p[d]);
                            // dz_d/da_{k,d} = w_k (z_{k,d} - z_d)
                            grad[k * dim + d] += dz[d] * wk * (zk - z[d]) / chunk.len() as f32;
                        }
                    }
                }
                opt.step(&mut flat, &grad);
            }
        }
        for (k, row) in self.logit_weights.iter_mut().enumerate() {
            row.copy_from_slice(&flat[k * dim..(k + 1) * dim]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatched_dimensions_are_an_error_not_a_panic() {
        let e = Ensemble::new(0, vec![1, 2], 2);
        assert_eq!(
            e.combine(&[(1, &[1.0, 3.0]), (2, &[3.0, 5.0])]).unwrap(),
            vec![2.0, 4.0]
        );
        assert!(e.combine(&[(1, &[1.0, 3.0]), (2, &[3.0])]).is_err());
        assert!(e.combine(&[(1, &[1.0, 3.0, 5.0])]).is_err());
        assert!(matches!(
            e.combine(&[(7, &[1.0])]),
            Err(LinkError::NoSource { target: 0 })
        ));
    }
}
