//! Output activations and training losses per task (paper sections 3.4 and 3.6).
//!
//! Every loss here takes the network's *pre-activation* output `z` and returns the loss together
//! with its gradient with respect to `z`, so that the activation and the loss are fused (this is
//! both cheaper and numerically safer than differentiating through a softmax or sigmoid).

use super::TaskKind;

/// The output activation a target's task calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Single-label classes; also each step of a token sequence (over the vocabulary).
    Softmax,
    /// Independent per-class probabilities.
    Sigmoid,
    /// Regression, localization and counts.
    Linear,
}

impl Activation {
    pub fn for_task(task: TaskKind) -> Self {
        match task {
            TaskKind::SingleLabel | TaskKind::Sequence => Activation::Softmax,
            TaskKind::MultiLabel => Activation::Sigmoid,
            TaskKind::Regression | TaskKind::Localization | TaskKind::Count => Activation::Linear,
        }
    }
}

/// Applies `act` to `z` in place.
pub fn activate(act: Activation, z: &mut [f32]) {
    match act {
        Activation::Softmax => softmax_in_place(z),
        Activation::Sigmoid => z.iter_mut().for_each(|x| *x = sigmoid(*x)),
        Activation::Linear => {}
    }
}

pub(crate) fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

pub(crate) fn softmax_in_place(z: &mut [f32]) {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in z.iter_mut() {
        *x = (*x - m).exp();
        sum += *x;
    }
    if sum > 0.0 {
        z.iter_mut().for_each(|x| *x /= sum);
    }
}

/// Loss of one sample for a vector task and its gradient with respect to the pre-activation
/// output `z` (written to `grad`, same length as `z`):
/// - single-label: soft-label cross-entropy `-sum t log softmax(z)` against the target's whole
///   probability vector (knowledge distillation, section 3.6);
/// - multi-label: binary cross-entropy on `sigmoid(z)`, averaged over classes;
/// - regression, count, localization: mean squared error (boxes as four coordinates, the empty
///   box being the all-zero target, so "no box" is learnt like any other value).
///
/// Sequence targets use [`token_loss_and_grad`].
pub fn loss_and_grad(task: TaskKind, z: &[f32], target: &[f32], grad: &mut [f32]) -> f32 {
    debug_assert_eq!(z.len(), target.len());
    debug_assert_eq!(z.len(), grad.len());
    let n = z.len().max(1) as f32;
    match Activation::for_task(task) {
        Activation::Softmax => {
            let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
            let tsum: f32 = target.iter().sum();
            let mut loss = 0.0;
            for ((g, &zi), &ti) in grad.iter_mut().zip(z).zip(target) {
                let logp = zi - lse;
                loss -= ti * logp;
                *g = logp.exp() * tsum - ti;
            }
            loss
        }
        Activation::Sigmoid => {
            let mut loss = 0.0;
            for ((g, &zi), &ti) in grad.iter_mut().zip(z).zip(target) {
                // log(1 + e^z) computed without overflow.
                let softplus = zi.max(0.0) + (-zi.abs()).exp().ln_1p();
                loss += softplus - ti * zi;
                *g = (sigmoid(zi) - ti) / n;
            }
            loss / n
        }
        Activation::Linear => {
            let mut loss = 0.0;
            for ((g, &zi), &ti) in grad.iter_mut().zip(z).zip(target) {
                let d = zi - ti;
                loss += d * d;
                *g = 2.0 * d / n;
            }
            loss / n
        }
    }
}

/// Token cross-entropy of one decoding step: `-log softmax(z)[target]`, gradient into `grad`.
pub fn token_loss_and_grad(z: &[f32], target: usize, grad: &mut [f32]) -> f32 {
    grad.copy_from_slice(z);
    softmax_in_place(grad);
    let loss = -grad[target].max(1e-30).ln();
    grad[target] -= 1.0;
    loss
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_grad(task: TaskKind, z: &[f32], t: &[f32]) {
        let mut g = vec![0.0; z.len()];
        loss_and_grad(task, z, t, &mut g);
        let mut scratch = vec![0.0; z.len()];
        for i in 0..z.len() {
            let h = 1e-3;
            let mut zp = z.to_vec();
            zp[i] += h;
            let mut zm = z.to_vec();
            zm[i] -= h;
            let fd = (loss_and_grad(task, &zp, t, &mut scratch)
                - loss_and_grad(task, &zm, t, &mut scratch))
                / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 2e-3,
                "{task:?} dz{i}: analytic {} vs fd {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn loss_gradients_match_finite_differences() {
        let z = [0.3, -1.2, 2.0, 0.1];
        check_grad(TaskKind::SingleLabel, &z, &[0.1, 0.2, 0.6, 0.1]);
        check_grad(TaskKind::MultiLabel, &z, &[1.0, 0.0, 1.0, 0.0]);
        check_grad(TaskKind::Regression, &z, &[0.5, 0.5, -1.0, 3.0]);
        check_grad(TaskKind::Localization, &z, &[0.0, 0.0, 0.0, 0.0]);
        check_grad(TaskKind::Count, &z, &[1.0, 2.0, 0.0, 4.0]);
        let mut g = [0.0; 4];
        let base = token_loss_and_grad(&z, 2, &mut g);
        let mut zp = z;
        zp[1] += 1e-3;
        let mut s = [0.0; 4];
        let fd = (token_loss_and_grad(&zp, 2, &mut s) - base) / 1e-3;
        assert!((fd - g[1]).abs() < 2e-3);
    }

    #[test]
    fn activations_by_task() {
        let mut z = [1.0, 2.0, 3.0];
        activate(Activation::for_task(TaskKind::SingleLabel), &mut z);
        assert!((z.iter().sum::<f32>() - 1.0).abs() < 1e-6 && z[2] > z[1]);
        let mut z = [0.0, 100.0];
        activate(Activation::for_task(TaskKind::MultiLabel), &mut z);
        assert_eq!(z, [0.5, 1.0]);
        let mut z = [-3.0];
        activate(Activation::for_task(TaskKind::Count), &mut z);
        assert_eq!(z, [-3.0]);
    }
}
