//! The vec2vec link network, written by hand for speed: a one-hidden-layer ReLU MLP with
//! dropout in training, trained with mini-batch RMSprop. All parameters live in one flat
//! vector (`w1` row-major `in x hidden`, `b1`, `w2` row-major `hidden x out`, `b2`), which is
//! what federated averaging exchanges. `tests` checks it against the same network in candle.

use super::optim::RmsProp;
use crate::output::{TaskKind, loss_and_grad};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
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
    /// Flat indices (row * hidden + unit) of the hidden units alive after ReLU and dropout.
    live: Vec<u32>,
    xb: Array2<f32>,
    tb: Array2<f32>,
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
                axpy(xi, row, hidden);
            }
        }
        out.copy_from_slice(&p[c..]);
        for (k, &hk) in hidden.iter().enumerate() {
            if hk > 0.0 {
                let row = &p[b + k * self.out_dim..b + (k + 1) * self.out_dim];
                axpy(hk, row, out);
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
            live: Vec::with_capacity(batch * self.hidden),
            xb: Array2::zeros((batch, self.in_dim)),
            tb: Array2::zeros((batch, self.out_dim)),
            grad: vec![0.0; self.params.len()],
        }
    }

    /// Forward and backward pass over a mini-batch `x` (rows, normalised) against targets `t`
    /// (rows, in the loss's space). Returns the mean loss; the gradient of the mean loss with
    /// respect to the parameters is left in `ws.grad`. `dropout` is the drop probability
    /// (0 disables it).
    ///
    /// After ReLU and dropout about three hidden units in four are zero, so everything past
    /// the first layer runs over the live units only (row-wise axpy and dot products over
    /// contiguous rows of `w2`); only `x w1` and `x^T dh` are dense matrix products.
    pub fn batch_gradient(
        &self,
        task: TaskKind,
        x: ArrayView2<'_, f32>,
        t: ArrayView2<'_, f32>,
        dropout: f32,
        rng: &mut StdRng,
        ws: &mut Workspace,
    ) -> f32 {
        let out = self.out_dim;
        self.batch_gradient_by(x, dropout, rng, ws, |z, dz| {
            let inv_n = 1.0 / x.nrows() as f32;
            let mut loss = 0.0;
            for ((zs, tr), g) in z
                .chunks_exact(out)
                .zip(t.rows())
                .zip(dz.chunks_exact_mut(out))
            {
                loss += match tr.as_slice() {
                    Some(ts) => loss_and_grad(task, zs, ts, g),
                    None => loss_and_grad(task, zs, &tr.to_vec(), g),
                };
                g.iter_mut().for_each(|v| *v *= inv_n);
            }
            loss * inv_n
        })
    }

    /// [`batch_gradient`](Self::batch_gradient) with any loss over the batch: `loss(z, dz)`
    /// gets the pre-activation outputs (rows of `out_dim`, flat) and writes the gradient of
    /// the returned batch loss with respect to them into `dz`.
    pub fn batch_gradient_by(
        &self,
        x: ArrayView2<'_, f32>,
        dropout: f32,
        rng: &mut StdRng,
        ws: &mut Workspace,
        loss: impl FnOnce(&[f32], &mut [f32]) -> f32,
    ) -> f32 {
        let n = x.nrows();
        let (hid, out) = (self.hidden, self.out_dim);
        let (w1, b1, _, b2) = self.views();
        let [_, a, b, c] = self.offsets();
        let w2 = &self.params[b..c];
        let mut h = ws.h.slice_mut(ndarray::s![..n, ..]);
        // h = relu(x w1 + b1), then inverted dropout; `mask` holds d(h_dropped)/d(pre-activation).
        for mut row in h.rows_mut() {
            row.iter_mut().zip(b1).for_each(|(v, b)| *v = *b);
        }
        general_mat_mul(1.0, &x, &w1, 1.0, &mut h);
        let keep = 1.0 - dropout;
        let scale = 1.0 / keep;
        // A fast generator for the mask, seeded from the caller's (reproducible) one.
        let mut bits = FastBits::new(rng.random::<u64>(), keep);
        let hs = h.as_slice_mut().expect("contiguous workspace");
        let mask = &mut ws.mask.as_slice_mut().expect("contiguous workspace")[..n * hid];
        ws.live.clear();
        for (e, (hv, m)) in hs.iter_mut().zip(mask.iter_mut()).enumerate() {
            let alive = *hv > 0.0 && (dropout == 0.0 || bits.keep());
            if alive {
                *m = scale;
                *hv *= scale;
                ws.live.push(e as u32);
            } else {
                *m = 0.0;
                *hv = 0.0;
            }
        }
        // z = h w2 + b2 over the live units.
        let z = &mut ws.z.as_slice_mut().expect("contiguous workspace")[..n * out];
        for row in z.chunks_exact_mut(out) {
            row.copy_from_slice(b2);
        }
        for &e in &ws.live {
            let (r, k) = (e as usize / hid, e as usize % hid);
            axpy(
                hs[e as usize],
                &w2[k * out..(k + 1) * out],
                &mut z[r * out..(r + 1) * out],
            );
        }
        let dz = &mut ws.dz.as_slice_mut().expect("contiguous workspace")[..n * out];
        let batch_loss = loss(z, dz);
        // Backward: g2 = h^T dz and dh = (dz w2^T) * mask, both over the live units.
        let (g1, rest) = ws.grad.split_at_mut(a);
        let (gb1, rest) = rest.split_at_mut(b - a);
        let (g2, gb2) = rest.split_at_mut(c - b);
        g2.fill(0.0);
        gb2.fill(0.0);
        for g in dz.chunks_exact(out) {
            gb2.iter_mut().zip(g).for_each(|(s, v)| *s += v);
        }
        let dh = &mut ws.dh.as_slice_mut().expect("contiguous workspace")[..n * hid];
        dh.fill(0.0);
        for &e in &ws.live {
            let e = e as usize;
            let (r, k) = (e / hid, e % hid);
            let dzr = &dz[r * out..(r + 1) * out];
            axpy(hs[e], dzr, &mut g2[k * out..(k + 1) * out]);
            dh[e] = mask[e] * dot(dzr, &w2[k * out..(k + 1) * out]);
        }
        gb1.fill(0.0);
        for row in dh.chunks_exact(hid) {
            gb1.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
        let dhv = ArrayView2::from_shape((n, hid), &*dh).expect("dh shape");
        let mut g1v = ArrayViewMut2::from_shape((self.in_dim, hid), g1).expect("g1");
        general_mat_mul(1.0, &x.t(), &dhv, 0.0, &mut g1v);
        batch_loss
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
        let mut total = 0.0;
        for chunk in order.chunks(batch) {
            let mut xb = std::mem::take(&mut ws.xb);
            let mut tb = std::mem::take(&mut ws.tb);
            if xb.nrows() < chunk.len() {
                xb = Array2::zeros((chunk.len(), self.in_dim));
                tb = Array2::zeros((chunk.len(), self.out_dim));
            }
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
            ws.xb = xb;
            ws.tb = tb;
            total += loss * n as f32;
            opt.step(&mut self.params, &ws.grad);
        }
        total / order.len().max(1) as f32
    }
}

/// Whether the CPU has AVX2 and FMA (checked once by the standard library, then cached).
#[inline]
fn wide_simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `y += a x`.
#[inline]
pub(crate) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if wide_simd() {
        // SAFETY: the CPU supports the features `axpy_fma` is compiled for (checked above).
        unsafe { axpy_fma(a, x, y) };
        return;
    }
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn axpy_fma(a: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut()
        .zip(x)
        .for_each(|(y, x)| *y = a.mul_add(*x, *y));
}

/// `y += a[0] x[0] + a[1] x[1] + a[2] x[2] + a[3] x[3]`: four axpy passes fused into one,
/// so `y` is loaded and stored once per four rows (a matrix-vector product's inner step).
#[inline]
pub(crate) fn axpy4(a: [f32; 4], x: [&[f32]; 4], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if wide_simd() {
        // SAFETY: the CPU supports the features `axpy4_fma` is compiled for (checked above).
        unsafe { axpy4_fma(a, x, y) };
        return;
    }
    let n = y.len();
    let [x0, x1, x2, x3] = x.map(|r| &r[..n]);
    for i in 0..n {
        y[i] += a[0] * x0[i] + a[1] * x1[i] + a[2] * x2[i] + a[3] * x3[i];
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn axpy4_fma(a: [f32; 4], x: [&[f32]; 4], y: &mut [f32]) {
    let n = y.len();
    let [x0, x1, x2, x3] = x.map(|r| &r[..n]);
    for i in 0..n {
        y[i] = a[3].mul_add(
            x3[i],
            a[2].mul_add(x2[i], a[1].mul_add(x1[i], a[0].mul_add(x0[i], y[i]))),
        );
    }
}

/// Dot product with eight independent accumulators (so that it vectorises), using AVX2 and
/// FMA where the CPU has them (the portable build targets plain x86-64).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if wide_simd() {
        // SAFETY: the CPU supports the features `dot_fma` is compiled for (checked above).
        return unsafe { dot_fma(a, b) };
    }
    dot_portable(a, b)
}

#[inline]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_fma(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..16 {
            acc[k] = x[k].mul_add(y[k], acc[k]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s = x.mul_add(*y, s);
    }
    s
}

/// Dropout decisions from an xorshift generator: cheap enough to draw one per hidden unit
/// and sample, where the caller's cryptographic-grade generator would dominate training.
struct FastBits {
    state: u64,
    threshold: u32,
}

impl FastBits {
    fn new(seed: u64, keep: f32) -> Self {
        Self {
            state: seed | 1,
            threshold: (keep.clamp(0.0, 1.0) as f64 * u32::MAX as f64) as u32,
        }
    }

    #[inline]
    fn keep(&mut self) -> bool {
        let mut s = self.state;
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        self.state = s;
        ((s >> 32) as u32) < self.threshold
    }
}

impl Mlp {
    /// Hidden activations `relu(x w1 + b1)` of every row of `x`, without dropout.
    pub fn hidden_batch(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        let (w1, b1, _, _) = self.views();
        let mut h = Array2::zeros((x.nrows(), self.hidden));
        for mut row in h.rows_mut() {
            row.iter_mut().zip(b1).for_each(|(v, b)| *v = *b);
        }
        general_mat_mul(1.0, &x, &w1, 1.0, &mut h);
        h.mapv_inplace(|v| v.max(0.0));
        h
    }

    /// Refits the output layer (`w2`, `b2`) of a linear-output network by ridge least squares
    /// on the hidden activations of the training inputs, without dropout (given at least two
    /// samples per coefficient).
    ///
    /// Why: under dropout, the mean squared error of a linear output adds the variance that
    /// the dropped units cause, a penalty that shrinks the weights and pulls predictions
    /// toward the mean (a count of 0 predicted as 0.7, one of 10 as 9.3), and a constant
    /// learning rate leaves the head jittering around its optimum. With the hidden layer as
    /// trained, the best linear head in the sense of the training loss has a closed form;
    /// using it keeps dropout's regularisation of the features and drops its bias on the
    /// output. Returns false (and keeps the trained head) when the system is singular.
    pub fn refit_linear_head(&mut self, x: ArrayView2<'_, f32>, t: ArrayView2<'_, f32>) -> bool {
        let n = x.nrows();
        let d = self.hidden + 1; // the hidden units and a constant for the bias
        // With fewer than two samples per coefficient (a short fine-tuning batch) the least
        // squares head would fit the noise of those samples; keep the trained one.
        if n < 2 * d || t.ncols() != self.out_dim {
            return false;
        }
        let h = self.hidden_batch(x);
        let mut a = vec![0f64; d * d];
        let mut rhs = vec![0f64; d * self.out_dim];
        let mut row = vec![0f64; d];
        for (hr, tr) in h.rows().into_iter().zip(t.rows()) {
            for (r, v) in row.iter_mut().zip(hr.iter()) {
                *r = *v as f64;
            }
            row[d - 1] = 1.0;
            for i in 0..d {
                if row[i] == 0.0 {
                    continue;
                }
                for j in 0..=i {
                    a[i * d + j] += row[i] * row[j];
                }
                for (o, tv) in tr.iter().enumerate() {
                    rhs[i * self.out_dim + o] += row[i] * *tv as f64;
                }
            }
        }
        // A light ridge (relative to the sample count) keeps dead or collinear units harmless.
        let ridge = 1e-3 * n as f64;
        for i in 0..d - 1 {
            a[i * d + i] += ridge;
        }
        a[(d - 1) * d + d - 1] += 1e-9 * n as f64;
        let Some(sol) = cholesky_solve(&mut a, d, &mut rhs, self.out_dim) else {
            return false;
        };
        if sol.iter().any(|v| !v.is_finite()) {
            return false;
        }
        let [_, _, b, c] = self.offsets();
        for k in 0..self.hidden {
            for o in 0..self.out_dim {
                self.params[b + k * self.out_dim + o] = sol[k * self.out_dim + o] as f32;
            }
        }
        for o in 0..self.out_dim {
            self.params[c + o] = sol[(d - 1) * self.out_dim + o] as f32;
        }
        true
    }
}

/// Solves `A X = B` for symmetric positive definite `A` (`d x d`, lower triangle filled,
/// overwritten) and `B` (`d x m`, row-major, overwritten with `X`). None when `A` is not
/// positive definite.
fn cholesky_solve(a: &mut [f64], d: usize, b: &mut [f64], m: usize) -> Option<Vec<f64>> {
    for j in 0..d {
        let mut s = a[j * d + j];
        for k in 0..j {
            s -= a[j * d + k] * a[j * d + k];
        }
        if s <= 0.0 || !s.is_finite() {
            return None;
        }
        let l = s.sqrt();
        a[j * d + j] = l;
        for i in j + 1..d {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = s / l;
        }
    }
    // Forward (L y = b), then backward (L^T x = y), column by column.
    for c in 0..m {
        for i in 0..d {
            let mut s = b[i * m + c];
            for k in 0..i {
                s -= a[i * d + k] * b[k * m + c];
            }
            b[i * m + c] = s / a[i * d + i];
        }
        for i in (0..d).rev() {
            let mut s = b[i * m + c];
            for k in i + 1..d {
                s -= a[k * d + i] * b[k * m + c];
            }
            b[i * m + c] = s / a[i * d + i];
        }
    }
    Some(b.to_vec())
}

impl Workspace {
    /// The gradient left by the last [`Mlp::batch_gradient`], flat like the parameters.
    pub fn grad(&self) -> &[f32] {
        &self.grad
    }

    /// The gradient left by the last [`Mlp::batch_gradient`].
    pub fn into_grad(self) -> Vec<f32> {
        self.grad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_known_system_and_rejects_an_indefinite_one() {
        // A = [[4, 2], [2, 3]], X = [[1, -1], [2, 0.5]] so B = A X.
        let mut a = vec![4.0, 0.0, 2.0, 3.0];
        let mut b = vec![8.0, -3.0, 8.0, -0.5];
        let x = cholesky_solve(&mut a, 2, &mut b, 2).unwrap();
        for (got, want) in x.iter().zip([1.0, -1.0, 2.0, 0.5]) {
            assert!((got - want).abs() < 1e-12, "{x:?}");
        }
        let mut a = vec![1.0, 0.0, 2.0, 1.0]; // [[1, 2], [2, 1]]: eigenvalue -1
        let mut b = vec![1.0, 1.0];
        assert!(cholesky_solve(&mut a, 2, &mut b, 1).is_none());
    }

    #[test]
    fn simd_kernels_match_the_portable_ones() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - exact).abs() < 1e-5);
        assert!((dot_portable(&a, &b) as f64 - exact).abs() < 1e-5);
        let mut y = b.clone();
        axpy4([0.5, -1.0, 2.0, 0.25], [&a, &b, &a, &b], &mut y);
        for (i, v) in y.iter().enumerate() {
            let want = b[i] + 0.5 * a[i] - b[i] + 2.0 * a[i] + 0.25 * b[i];
            assert!((v - want).abs() < 1e-5);
        }
    }
}
