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

    /// Checks a stored standardisation for `dim` values: one mean and one std per value, all
    /// finite, every std above 0 (a zero or negative std would divide by zero or flip signs).
    pub fn check(&self, dim: usize) -> Result<(), String> {
        if self.mean.len() != dim || self.std.len() != dim {
            return Err(format!(
                "{} means and {} stds for {dim} values",
                self.mean.len(),
                self.std.len()
            ));
        }
        if let Some(i) = self.mean.iter().position(|m| !m.is_finite()) {
            return Err(format!("mean {i} is not finite"));
        }
        if let Some(i) = self.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!(
                "std {i} is {}, not a finite value above 0",
                self.std[i]
            ));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_rejects_wrong_lengths_non_finite_values_and_non_positive_stds() {
        let ok = Norm {
            mean: vec![0.0, 1.0],
            std: vec![1.0, 0.5],
        };
        assert!(ok.check(2).is_ok());
        assert!(ok.check(3).unwrap_err().contains("for 3 values"));
        let mut bad = ok.clone();
        bad.mean[1] = f32::NAN;
        assert!(bad.check(2).unwrap_err().contains("mean 1"));
        for s in [0.0, -1.0, f32::INFINITY] {
            let mut bad = ok.clone();
            bad.std[0] = s;
            assert!(bad.check(2).unwrap_err().contains("std 0"), "{s}");
        }
        assert!(
            Norm::fit(2, [[1.0f32, 1.0].as_slice()].into_iter())
                .check(2)
                .is_ok()
        );
    }
}
