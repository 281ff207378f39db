//! Per-dimension standardisation fitted on the training split and stored with the link, so
//! that counts and raw features reach the network on a comparable scale.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Norm {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Norm {
    /// Fits mean and standard deviation per dimension; a constant dimension gets std 1 so it
    /// maps to 0 rather than to infinity.
    pub fn fit<'a>(dim: usize, rows: impl Iterator<Item = &'a [f32]>) -> Self {
        let mut sum = vec![0f64; dim];
        let mut sq = vec![0f64; dim];
        let mut n = 0usize;
        for r in rows {
            for ((s, q), &x) in sum.iter_mut().zip(sq.iter_mut()).zip(r) {
                *s += x as f64;
                *q += (x as f64) * (x as f64);
            }
            n += 1;
        }
        let n = n.max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let std = sum
            .iter()
            .zip(&sq)
            .map(|(s, q)| {
                let var = (q / n - (s / n) * (s / n)).max(0.0);
                let sd = var.sqrt() as f32;
                if sd > 1e-6 { sd } else { 1.0 }
            })
            .collect();
        Self { mean, std }
    }

    pub fn identity(dim: usize) -> Self {
        Self {
            mean: vec![0.0; dim],
            std: vec![1.0; dim],
        }
    }

    pub fn apply(&self, x: &[f32], out: &mut [f32]) {
        for (((o, &v), m), s) in out.iter_mut().zip(x).zip(&self.mean).zip(&self.std) {
            *o = (v - m) / s;
        }
    }

    pub fn invert_in_place(&self, z: &mut [f32]) {
        for ((v, m), s) in z.iter_mut().zip(&self.mean).zip(&self.std) {
            *v = *v * s + m;
        }
    }
}
