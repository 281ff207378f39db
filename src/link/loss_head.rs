//! Loss prediction for active learning (paper section 4.1, after Yoo and Kweon, "Learning
//! Loss for Active Learning"): a small network on a vec2vec link's hidden activation that
//! predicts the loss the link makes on a sample, so that online adaptation can queue the
//! frames the link is likely to get wrong.
//!
//! The head is a one-hidden-layer ReLU MLP (the same [`Mlp`] as the link) over the
//! standardised hidden activation, trained after the link with the link frozen. Its loss is
//! the mean absolute error to the link's per-sample loss plus the pairwise margin ranking loss
//! of the reference implementation: the batch is split into pairs (sample `i` with sample
//! `n - 1 - i`), and each pair costs `max(0, margin - s (p_i - p_j))` where `s` is +1 when
//! `l_i > l_j` and -1 otherwise. The ranking term teaches the order of losses, which is what a
//! selection policy uses; the MAE term keeps the predictions on the loss's scale.

use super::mlp::Mlp;
use super::norm::Norm;
use super::optim::RmsProp;
use ndarray::{Array2, ArrayView2};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Margin of the ranking loss (the reference's default).
pub const RANK_MARGIN: f32 = 1.0;
/// Hidden width of the head.
pub const HEAD_HIDDEN: usize = 32;
/// Learning rate of the head (RMSprop); smaller than the link's since its targets are losses.
const HEAD_LR: f32 = 1e-3;

/// A trained loss-prediction head.
#[derive(Clone, Debug)]
pub struct LossHead {
    /// Standardisation of the link's hidden activation.
    pub norm: Norm,
    pub mlp: Mlp,
}

/// MAE plus pairwise margin ranking loss of predictions `p` against losses `l`; the gradient
/// with respect to `p` goes to `dp`.
pub fn loss_prediction_loss(p: &[f32], l: &[f32], dp: &mut [f32]) -> f32 {
    let n = p.len();
    let inv_n = 1.0 / n.max(1) as f32;
    let mut loss = 0.0;
    for ((g, &pi), &li) in dp.iter_mut().zip(p).zip(l) {
        loss += (pi - li).abs() * inv_n;
        *g = if pi > li {
            inv_n
        } else if pi < li {
            -inv_n
        } else {
            0.0
        };
    }
    let pairs = n / 2;
    if pairs > 0 {
        let inv_p = 1.0 / pairs as f32;
        for i in 0..pairs {
            let j = n - 1 - i;
            let sign = if l[i] - l[j] > 0.0 { 1.0 } else { -1.0 };
            let hinge = RANK_MARGIN - sign * (p[i] - p[j]);
            if hinge > 0.0 {
                loss += hinge * inv_p;
                dp[i] -= sign * inv_p;
                dp[j] += sign * inv_p;
            }
        }
    }
    loss
}

impl LossHead {
    /// Trains a head on hidden activations `h` (rows) and the link's per-sample losses.
    pub fn fit(
        h: ArrayView2<'_, f32>,
        losses: &[f32],
        epochs: usize,
        batch: usize,
        rng: &mut StdRng,
    ) -> Self {
        let (n, dim) = h.dim();
        let norm = Norm::fit(dim, h.rows().into_iter().filter_map(|r| r.to_slice()));
        let mut x = Array2::zeros((n, dim));
        for (src, mut dst) in h.rows().into_iter().zip(x.rows_mut()) {
            if let (Some(s), Some(d)) = (src.to_slice(), dst.as_slice_mut()) {
                norm.apply(s, d);
            }
        }
        let mut mlp = Mlp::new(dim, HEAD_HIDDEN, 1, rng);
        let batch = batch.max(2);
        let mut ws = mlp.workspace(batch);
        let mut opt = RmsProp::new(HEAD_LR, mlp.params.len());
        let mut order: Vec<usize> = (0..n).collect();
        let mut xb = Array2::zeros((batch, dim));
        let mut lb = vec![0f32; batch];
        for _ in 0..epochs {
            order.shuffle(rng);
            for chunk in order.chunks(batch) {
                for (r, &i) in chunk.iter().enumerate() {
                    xb.row_mut(r).assign(&x.row(i));
                    lb[r] = losses[i];
                }
                let m = chunk.len();
                let targets = &lb[..m];
                mlp.batch_gradient_by(
                    xb.slice(ndarray::s![..m, ..]),
                    0.0,
                    rng,
                    &mut ws,
                    |p, dp| loss_prediction_loss(p, targets, dp),
                );
                opt.step(&mut mlp.params, ws.grad());
            }
        }
        Self { norm, mlp }
    }

    /// The predicted loss for one hidden activation.
    pub fn predict(&self, hidden: &[f32]) -> f32 {
        let mut x = vec![0.0; self.mlp.in_dim];
        self.norm.apply(hidden, &mut x);
        let mut h = Vec::with_capacity(self.mlp.hidden);
        let mut out = [0.0f32];
        self.mlp.forward_one(&x, &mut h, &mut out);
        out[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_gradient_matches_finite_differences() {
        let p = [0.3f32, -0.2, 1.5, 0.1, 0.7, 0.05];
        let l = [0.5f32, 0.1, 2.0, 0.4, 0.2, 0.9];
        let mut g = [0.0; 6];
        loss_prediction_loss(&p, &l, &mut g);
        let mut scratch = [0.0; 6];
        for i in 0..p.len() {
            let e = 1e-3;
            let (mut a, mut b) = (p, p);
            a[i] += e;
            b[i] -= e;
            let fd = (loss_prediction_loss(&a, &l, &mut scratch)
                - loss_prediction_loss(&b, &l, &mut scratch))
                / (2.0 * e);
            assert!((fd - g[i]).abs() < 1e-2, "dp{i}: {} vs {fd}", g[i]);
        }
    }

    #[test]
    fn ranking_term_vanishes_once_pairs_are_ordered_by_the_margin() {
        // p equals l (no MAE) and every pair is ordered with a gap of at least the margin.
        let l = [4.0f32, 0.0, 1.0, 2.5];
        let mut g = [0.0; 4];
        assert_eq!(loss_prediction_loss(&l, &l, &mut g), 0.0);
        // Reversing one pair's order costs margin plus the gap.
        let p = [0.0f32, 0.0, 1.0, 3.0];
        let loss = loss_prediction_loss(&p, &l, &mut g);
        assert!(loss > 1.0, "{loss}");
    }
}
