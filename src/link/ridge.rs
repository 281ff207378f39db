//! A regularised (ridge) linear map from a standardised input to a target's vector, the
//! learner that suits a few tens of samples with many input dimensions. Solved in closed form:
//! in the primal (d x d system) when there are at least as many samples as dimensions, in the
//! dual (n x n system, `w = X^T (X X^T + l I)^-1 Y`) otherwise, so a 1,000-long classifier view
//! with 28 samples costs a 28 x 28 solve.

use super::learner::{Learner, LearnerState, Standardise, check_finite, decode};
use crate::output::TaskKind;

pub struct Ridge {
    lambda: f64,
    task: TaskKind,
    norm: Standardise,
    /// d x m weights, row-major.
    w: Vec<f64>,
    y_mean: Vec<f64>,
    m: usize,
}

impl Ridge {
    /// Fits the map on `x` (n inputs of length d) to `t` (n targets of length m). None when
    /// there are no samples or the system cannot be solved.
    pub fn fit(x: &[&[f32]], t: &[&[f32]], lambda: f64, task: TaskKind) -> Option<Self> {
        let n = x.len();
        if n == 0 || t.len() != n {
            return None;
        }
        let d = x[0].len();
        let m = t[0].len();
        let norm = Standardise::fit(x);
        let xs: Vec<Vec<f64>> = x.iter().map(|r| norm.apply(r)).collect();
        let mut y_mean = vec![0.0; m];
        for r in t {
            for (a, v) in y_mean.iter_mut().zip(r.iter()) {
                *a += f64::from(*v) / n as f64;
            }
        }
        let ys: Vec<Vec<f64>> = t
            .iter()
            .map(|r| {
                r.iter()
                    .zip(&y_mean)
                    .map(|(v, a)| f64::from(*v) - a)
                    .collect()
            })
            .collect();
        let mut w = vec![0.0; d * m];
        if d <= n {
            // (X^T X + l I) W = X^T Y
            let mut a = vec![0.0; d * d];
            let mut b = vec![0.0; d * m];
            for (xr, yr) in xs.iter().zip(&ys) {
                for i in 0..d {
                    for j in 0..d {
                        a[i * d + j] += xr[i] * xr[j];
                    }
                    for k in 0..m {
                        b[i * m + k] += xr[i] * yr[k];
                    }
                }
            }
            for i in 0..d {
                a[i * d + i] += lambda;
            }
            w = cholesky_solve(&a, d, &b, m)?;
        } else {
            // W = X^T (X X^T + l I)^-1 Y
            let mut g = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    g[i * n + j] = dot(&xs[i], &xs[j]);
                }
                g[i * n + i] += lambda;
            }
            let y: Vec<f64> = ys.iter().flatten().copied().collect();
            let alpha = cholesky_solve(&g, n, &y, m)?;
            for (s, xr) in xs.iter().enumerate() {
                for i in 0..d {
                    for k in 0..m {
                        w[i * m + k] += xr[i] * alpha[s * m + k];
                    }
                }
            }
        }
        Some(Self {
            lambda,
            task,
            norm,
            w,
            y_mean,
            m,
        })
    }

    /// A stored map back ([`LearnerState::Ridge`]), checked: input length x `m` finite
    /// weights and `m` target means.
    pub fn from_parts(
        lambda: f64,
        task: TaskKind,
        norm: Standardise,
        w: Vec<f64>,
        y_mean: Vec<f64>,
        m: usize,
    ) -> Result<Self, String> {
        norm.check()?;
        if y_mean.len() != m || w.len() != norm.len().saturating_mul(m) {
            return Err(format!(
                "ridge with {} weights and {} means for {} inputs and {m} outputs",
                w.len(),
                y_mean.len(),
                norm.len()
            ));
        }
        check_finite("ridge weight", &w)?;
        check_finite("ridge mean", &y_mean)?;
        if !lambda.is_finite() {
            return Err("ridge penalty is not finite".into());
        }
        Ok(Self {
            lambda,
            task,
            norm,
            w,
            y_mean,
            m,
        })
    }
}

impl Learner for Ridge {
    fn name(&self) -> String {
        format!("ridge(l={})", self.lambda)
    }
    fn parameters(&self) -> usize {
        self.w.len() + self.y_mean.len() + self.norm.parameters()
    }
    fn state(&self) -> LearnerState {
        LearnerState::Ridge {
            lambda: self.lambda,
            norm: self.norm.clone(),
            w: self.w.clone(),
            y_mean: self.y_mean.clone(),
        }
    }

    fn predict(&self, x: &[f32]) -> Vec<f32> {
        let z = self.norm.apply(x);
        let mut y = self.y_mean.clone();
        for (i, zi) in z.iter().enumerate() {
            if *zi == 0.0 {
                continue;
            }
            for (k, yk) in y.iter_mut().enumerate() {
                *yk += zi * self.w[i * self.m + k];
            }
        }
        decode(self.task, y.into_iter().map(|v| v as f32).collect())
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solves `A X = B` for a symmetric positive definite `A` (n x n) and `B` (n x m), both
/// row-major, by Cholesky factorisation. None when `A` is not positive definite.
fn cholesky_solve(a: &[f64], n: usize, b: &[f64], m: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    let mut x = b.to_vec();
    for c in 0..m {
        // L y = b, then L^T x = y.
        for i in 0..n {
            let mut s = x[i * m + c];
            for k in 0..i {
                s -= l[i * n + k] * x[k * m + c];
            }
            x[i * m + c] = s / l[i * n + i];
        }
        for i in (0..n).rev() {
            let mut s = x[i * m + c];
            for k in i + 1..n {
                s -= l[k * n + i] * x[k * m + c];
            }
            x[i * m + c] = s / l[i * n + i];
        }
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_linear_count_in_primal_and_dual_form() {
        // target = x0 + 2 x1 (a count), plus an irrelevant dimension.
        let rows: Vec<[f32; 3]> = (0..20)
            .map(|i| [(i % 3) as f32, (i % 2) as f32, ((i * 7) % 5) as f32])
            .collect();
        let targets: Vec<[f32; 1]> = rows.iter().map(|r| [r[0] + 2.0 * r[1]]).collect();
        let x: Vec<&[f32]> = rows.iter().map(|r| &r[..]).collect();
        let t: Vec<&[f32]> = targets.iter().map(|r| &r[..]).collect();
        let primal = Ridge::fit(&x, &t, 0.01, TaskKind::Count).unwrap();
        assert_eq!(primal.predict(&[2.0, 1.0, 0.0]), vec![4.0]);
        // Dual: fewer samples than dimensions (pad the input with copies).
        let wide: Vec<Vec<f32>> = rows[..6]
            .iter()
            .map(|r| r.iter().cycle().take(12).copied().collect())
            .collect();
        let xw: Vec<&[f32]> = wide.iter().map(|r| &r[..]).collect();
        let dual = Ridge::fit(&xw, &t[..6], 0.01, TaskKind::Count).unwrap();
        let probe: Vec<f32> = [1.0f32, 1.0, 3.0]
            .iter()
            .cycle()
            .take(12)
            .copied()
            .collect();
        assert_eq!(dual.predict(&probe), vec![3.0]);
    }

    #[test]
    fn labels_come_out_one_hot() {
        let rows = [[0.0f32], [0.1], [0.9], [1.0]];
        let targets = [[1.0f32, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]];
        let x: Vec<&[f32]> = rows.iter().map(|r| &r[..]).collect();
        let t: Vec<&[f32]> = targets.iter().map(|r| &r[..]).collect();
        let r = Ridge::fit(&x, &t, 0.1, TaskKind::SingleLabel).unwrap();
        assert_eq!(r.predict(&[0.95]), vec![0.0, 1.0]);
        assert_eq!(r.predict(&[0.05]), vec![1.0, 0.0]);
    }
}
