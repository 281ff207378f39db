//! The vec2vec link network, written by hand for speed: a one-hidden-layer ReLU MLP with
//! dropout in training, trained with mini-batch RMSprop. All parameters live in one flat
//! vector (`w1` row-major `in x hidden`, `b1`, `w2` row-major `hidden x out`, `b2`), which is
//! what federated averaging exchanges. `tests` checks it against the same network in candle.

use super::optim::RmsProp;
use crate::output::{TaskKind, loss_and_grad};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};
use rand::Rng;
use rand::rngs::StdRng;

#[derive(Clone, Debug)]
pub struct Mlp {
    pub in_dim: usize,
    pub hidden: usize,
    pub out_dim: usize,
    pub params: Vec<f32>,
}

/// Scratch buffers reused across mini-batches so training allocates once.
pub struct Workspace {
    h: Array2<f32>,
    mask: Array2<f32>,
    z: Array2<f32>,
    dz: Array2<f32>,
    dh: Array2<f32>,
    grad: Vec<f32>,
}

impl Mlp {
    /// A network with Glorot-uniform weights and zero biases.
    pub fn new(in_dim: usize, hidden: usize, out_dim: usize, rng: &mut StdRng) -> Self {
        let mut params = vec![0.0; Self::param_count(in_dim, hidden, out_dim)];
        let l1 = (6.0 / (in_dim + hidden) as f32).sqrt();
        let l2 = (6.0 / (hidden + out_dim) as f32).sqrt();
        for p in &mut params[..in_dim * hidden] {
            *p = rng.random_range(-l1..l1);
        }
        let o = in_dim * hidden + hidden;
        for p in &mut params[o..o + hidden * out_dim] {
            *p = rng.random_range(-l2..l2);
        }
        Self {
            in_dim,
            hidden,
            out_dim,
            params,
        }
    }

    pub fn param_count(in_dim: usize, hidden: usize, out_dim: usize) -> usize {
        in_dim * hidden + hidden + hidden * out_dim + out_dim
    }

    fn offsets(&self) -> [usize; 4] {
        let a = self.in_dim * self.hidden;
        let b = a + self.hidden;
        let c = b + self.hidden * self.out_dim;
        [0, a, b, c]
    }

    fn views(&self) -> (ArrayView2<'_, f32>, &[f32], ArrayView2<'_, f32>, &[f32]) {
        let [_, a, b, c] = self.offsets();
        let p = &self.params;
        (
            ArrayView2::from_shape((self.in_dim, self.hidden), &p[..a]).expect("w1 shape"),
            &p[a..b],
            ArrayView2::from_shape((self.hidden, self.out_dim), &p[b..c]).expect("w2 shape"),
            &p[c..],
        )
    }

    /// Pre-activation output for one (already normalised) input, written to `out`.
    pub fn forward_one(&self, x: &[f32], hidden: &mut Vec<f32>, out: &mut [f32]) {
        let [_, a, b, c] = self.offsets();
        let p = &self.params;
        hidden.clear();
        hidden.extend_from_slice(&p[a..b]);
        for (i, &xi) in x.iter().enumerate() {
            if xi != 0.0 {
                let row = &p[i * self.hidden..(i + 1) * self.hidden];
                hidden.iter_mut().zip(row).for_each(|(h, w)| *h += xi * w);
            }
        }
        out.copy_from_slice(&p[c..]);
        for (k, &hk) in hidden.iter().enumerate() {
            if hk > 0.0 {
                let row = &p[b + k * self.out_dim..b + (k + 1) * self.out_dim];
                out.iter_mut().zip(row).for_each(|(o, w)| *o += hk * w);
            }
        }
    }

    pub fn workspace(&self, batch: usize) -> Workspace {
        Workspace {
            h: Array2::zeros((batch, self.hidden)),
            mask: Array2::zeros((batch, self.hidden)),
            z: Array2::zeros((batch, self.out_dim)),
            dz: Array2::zeros((batch, self.out_dim)),
            dh: Array2::zeros((batch, self.hidden)),
            grad: vec![0.0; self.params.len()],
        }
    }

    /// Forward and backward pass over a mini-batch `x` (rows, normalised) against targets `t`
    /// (rows, in the loss's space). Returns the mean loss; the gradient of the mean loss with
    /// respect to the parameters is left in `ws.grad`. `dropout` is the drop probability
    /// (0 disables it).
    pub fn batch_gradient(
        &self,
        task: TaskKind,
        x: ArrayView2<'_, f32>,
        t: ArrayView2<'_, f32>,
        dropout: f32,
        rng: &mut StdRng,
        ws: &mut Workspace,
    ) -> f32 {
        let n = x.nrows();
        let (w1, b1, w2, b2) = self.views();
        let mut h = ws.h.slice_mut(ndarray::s![..n, ..]);
        let mut mask = ws.mask.slice_mut(ndarray::s![..n, ..]);
        let mut z = ws.z.slice_mut(ndarray::s![..n, ..]);
        let mut dz = ws.dz.slice_mut(ndarray::s![..n, ..]);
        let mut dh = ws.dh.slice_mut(ndarray::s![..n, ..]);
        // h = relu(x w1 + b1), then inverted dropout; `mask` holds d(h_dropped)/d(pre-activation).
        for mut row in h.rows_mut() {
            row.iter_mut().zip(b1).for_each(|(v, b)| *v = *b);
        }
        general_mat_mul(1.0, &x, &w1, 1.0, &mut h);
        let keep = 1.0 - dropout;
        for (hv, m) in h.iter_mut().zip(mask.iter_mut()) {
            let alive = *hv > 0.0 && (dropout == 0.0 || rng.random::<f32>() < keep);
            *m = if alive { 1.0 / keep } else { 0.0 };
            *hv *= *m;
        }
        for mut row in z.rows_mut() {
            row.iter_mut().zip(b2).for_each(|(v, b)| *v = *b);
        }
        general_mat_mul(1.0, &h, &w2, 1.0, &mut z);
        let mut loss = 0.0;
        let inv_n = 1.0 / n as f32;
        for ((zr, tr), mut gr) in z.rows().into_iter().zip(t.rows()).zip(dz.rows_mut()) {
            let (zs, ts) = (zr.as_slice().expect("row"), tr.to_vec());
            let g = gr.as_slice_mut().expect("row");
            loss += loss_and_grad(task, zs, &ts, g);
            g.iter_mut().for_each(|v| *v *= inv_n);
        }
        // Backward.
        let [_, a, b, c] = self.offsets();
        let (g1, rest) = ws.grad.split_at_mut(a);
        let (gb1, rest) = rest.split_at_mut(b - a);
        let (g2, gb2) = rest.split_at_mut(c - b);
        let mut g2v = ArrayViewMut2::from_shape((self.hidden, self.out_dim), g2).expect("g2");
        general_mat_mul(1.0, &h.t(), &dz, 0.0, &mut g2v);
        for (gb, col) in gb2.iter_mut().zip(dz.axis_iter(Axis(1))) {
            *gb = col.sum();
        }
        general_mat_mul(1.0, &dz, &w2.t(), 0.0, &mut dh);
        dh *= &mask;
        let mut g1v = ArrayViewMut2::from_shape((self.in_dim, self.hidden), g1).expect("g1");
        general_mat_mul(1.0, &x.t(), &dh, 0.0, &mut g1v);
        for (gb, col) in gb1.iter_mut().zip(dh.axis_iter(Axis(1))) {
            *gb = col.sum();
        }
        loss * inv_n
    }

    /// One epoch of mini-batch RMSprop over `x`/`t` in the order of `order`.
    #[allow(clippy::too_many_arguments)]
    pub fn train_epoch(
        &mut self,
        task: TaskKind,
        x: &Array2<f32>,
        t: &Array2<f32>,
        order: &[usize],
        batch: usize,
        dropout: f32,
        opt: &mut RmsProp,
        rng: &mut StdRng,
        ws: &mut Workspace,
    ) -> f32 {
        let mut xb = Array2::zeros((batch, self.in_dim));
        let mut tb = Array2::zeros((batch, self.out_dim));
        let mut total = 0.0;
        for chunk in order.chunks(batch) {
            for (r, &i) in chunk.iter().enumerate() {
                xb.row_mut(r).assign(&x.row(i));
                tb.row_mut(r).assign(&t.row(i));
            }
            let n = chunk.len();
            let loss = self.batch_gradient(
                task,
                xb.slice(ndarray::s![..n, ..]),
                tb.slice(ndarray::s![..n, ..]),
                dropout,
                rng,
                ws,
            );
            total += loss * n as f32;
            opt.step(&mut self.params, &ws.grad);
        }
        total / order.len().max(1) as f32
    }
}

impl Workspace {
    /// The gradient left by the last [`Mlp::batch_gradient`].
    pub fn into_grad(self) -> Vec<f32> {
        self.grad
    }
}
