//! Inference for the seq2vec link without candle: the same embedding, LSTM and MLP head, read
//! from the trained candle variables and evaluated with plain f32 loops. A candle step costs
//! tens of microseconds of dispatch whatever its size; a 20-token input would spend
//! milliseconds there, here it spends the arithmetic.
//!
//! The embedding and the LSTM input projection are folded into one table at build time
//! (`table[v] = W_ih e_v + b_ih + b_hh`), so a step is one `W_hh h` product plus the gates.
//! Gate order is candle's (input, forget, cell, output).

use super::LinkError;
use super::mlp::{axpy, axpy4, dot};

/// The frozen weights of a seq2vec link, laid out for single-input inference.
#[derive(Clone, Debug)]
pub struct Seq2VecInfer {
    hidden: usize,
    vocab: usize,
    end: u32,
    /// `vocab x 4 hidden`: the gate pre-activations a token contributes.
    table: Vec<f32>,
    /// `hidden x 4 hidden`: candle's `weight_hh_l0` transposed, so that `W_hh h` is a sum of
    /// contiguous rows scaled by the entries of `h`.
    w_hh_t: Vec<f32>,
    /// Head: `hidden x hidden` then `out x hidden`, row-major (candle's `Linear` layout).
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

/// Named tensors the builder reads (candle variable name -> flat data and dims).
pub type Named<'a> = &'a dyn Fn(&str) -> Result<(Vec<f32>, Vec<usize>), LinkError>;

/// `e^x` for f32 by range reduction and a degree-6 polynomial (relative error about 1e-7),
/// written as straight-line arithmetic so that a loop over it vectorises; the library's
/// `expf` is a call per element.
#[inline(always)]
fn exp_poly(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    // Round x log2(e) to an integer by adding 1.5 * 2^23: the integer lands in the low
    // mantissa bits, which avoids a float-to-int conversion the vectoriser handles poorly.
    const SHIFTER: f32 = 12_582_912.0;
    let t = x * LOG2E + SHIFTER;
    let n = t - SHIFTER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let k = t.to_bits().wrapping_sub(SHIFTER.to_bits());
    y * f32::from_bits(k.wrapping_add(127) << 23)
}

/// The LSTM cell update for one step: `g` holds the gate pre-activations (input, forget,
/// cell, output; `hidden` each), `c` and `h` the state, updated in place.
#[inline(always)]
fn cell_update(g: &mut [f32], c: &mut [f32], h: &mut [f32]) {
    let n = h.len();
    let (gi, rest) = g.split_at_mut(n);
    let (gf, rest) = rest.split_at_mut(n);
    let (gc, go) = rest.split_at_mut(n);
    for k in 0..n {
        let i = 1.0 / (1.0 + exp_poly(-gi[k]));
        let f = 1.0 / (1.0 + exp_poly(-gf[k]));
        let cell = 2.0 / (1.0 + exp_poly(-2.0 * gc[k])) - 1.0;
        let o = 1.0 / (1.0 + exp_poly(-go[k]));
        c[k] = f * c[k] + i * cell;
        h[k] = o * (2.0 / (1.0 + exp_poly(-2.0 * c[k])) - 1.0);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn cell_update_avx2(g: &mut [f32], c: &mut [f32], h: &mut [f32]) {
    cell_update(g, c, h)
}

fn step_cell(g: &mut [f32], c: &mut [f32], h: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features `cell_update_avx2` is compiled for.
        unsafe { cell_update_avx2(g, c, h) };
        return;
    }
    cell_update(g, c, h)
}

impl Seq2VecInfer {
    /// Builds the inference form from the candle variables of a seq2vec network.
    pub fn build(get: Named<'_>, end: u32) -> Result<Self, LinkError> {
        let shape_err =
            |what: &str| LinkError::Numeric(format!("seq2vec {what}: unexpected shape"));
        let (emb, ed) = get("enc_embed.weight")?;
        let (w_ih, ihd) = get("enc_lstm.weight_ih_l0")?;
        let (w_hh, hhd) = get("enc_lstm.weight_hh_l0")?;
        let (b_ih, _) = get("enc_lstm.bias_ih_l0")?;
        let (b_hh, _) = get("enc_lstm.bias_hh_l0")?;
        let (w1, w1d) = get("head1.weight")?;
        let (b1, _) = get("head1.bias")?;
        let (w2, w2d) = get("head2.weight")?;
        let (b2, _) = get("head2.bias")?;
        let [vocab, edim] = ed[..] else {
            return Err(shape_err("embedding"));
        };
        let [g4, hidden] = hhd[..] else {
            return Err(shape_err("weight_hh"));
        };
        if g4 != 4 * hidden
            || ihd[..] != [g4, edim]
            || b_ih.len() != g4
            || b_hh.len() != g4
            || w1d[..] != [hidden, hidden]
            || b1.len() != hidden
            || w2d.len() != 2
            || w2d[1] != hidden
            || b2.len() != w2d[0]
        {
            return Err(shape_err("weights"));
        }
        let mut table = vec![0f32; vocab * g4];
        for v in 0..vocab {
            let e = &emb[v * edim..(v + 1) * edim];
            for g in 0..g4 {
                table[v * g4 + g] = dot(&w_ih[g * edim..(g + 1) * edim], e) + b_ih[g] + b_hh[g];
            }
        }
        let mut w_hh_t = vec![0f32; hidden * g4];
        for g in 0..g4 {
            for k in 0..hidden {
                w_hh_t[k * g4 + g] = w_hh[g * hidden + k];
            }
        }
        Ok(Self {
            hidden,
            vocab,
            end,
            table,
            w_hh_t,
            w1,
            b1,
            w2,
            b2,
        })
    }

    /// The head's pre-activation output (still in the standardised space for linear tasks)
    /// for one token sequence; the sequence is cut at its first end token and the end token is
    /// fed last, as in training.
    pub fn logits(&self, tokens: &[u32]) -> Result<Vec<f32>, LinkError> {
        let h_dim = self.hidden;
        let g4 = 4 * h_dim;
        let mut h = vec![0f32; h_dim];
        let mut c = vec![0f32; h_dim];
        let mut g = vec![0f32; g4];
        let body = crate::output::strip_end(tokens, Some(self.end));
        for &tok in body.iter().chain(std::iter::once(&self.end)) {
            let t = tok as usize;
            if t >= self.vocab {
                return Err(LinkError::Form(format!(
                    "token {tok} is outside the vocabulary of {}",
                    self.vocab
                )));
            }
            g.copy_from_slice(&self.table[t * g4..(t + 1) * g4]);
            let w = &self.w_hh_t;
            let row = |k: usize| &w[k * g4..(k + 1) * g4];
            let mut k = 0;
            while k + 4 <= h_dim {
                axpy4(
                    [h[k], h[k + 1], h[k + 2], h[k + 3]],
                    [row(k), row(k + 1), row(k + 2), row(k + 3)],
                    &mut g,
                );
                k += 4;
            }
            for (k, &hk) in h.iter().enumerate().skip(k) {
                axpy(hk, row(k), &mut g);
            }
            step_cell(&mut g, &mut c, &mut h);
        }
        let a: Vec<f32> = (0..h_dim)
            .map(|k| (self.b1[k] + dot(&self.w1[k * h_dim..(k + 1) * h_dim], &h)).max(0.0))
            .collect();
        Ok(self
            .b2
            .iter()
            .enumerate()
            .map(|(o, b)| b + dot(&self.w2[o * h_dim..(o + 1) * h_dim], &a))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomial_exp_is_within_a_few_ulps_of_the_library() {
        let mut worst = 0f64;
        for i in -8000..=8000 {
            let x = i as f32 * 0.01;
            let (got, want) = (exp_poly(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 1e-6, "relative error {worst}");
        // Saturation instead of overflow to infinity or NaN.
        assert!(exp_poly(1000.0).is_finite() && exp_poly(-1000.0) >= 0.0);
        let (mut g, mut c, mut h) = (vec![1e6, -1e6, 1e6, 1e6], vec![0.0], vec![0.0]);
        cell_update(&mut g, &mut c, &mut h);
        assert!((c[0] - 1.0).abs() < 1e-6 && (h[0] - 1f32.tanh()).abs() < 1e-6);
    }
}
