//! A nearest-neighbour lookup over the profiled samples: the k training inputs closest to the
//! input (Euclidean, after standardisation) vote for the target value (the most frequent of
//! their targets for counts and labels, ties to the nearer; the mean for regressions). With
//! few samples of a discrete target it is the learnt form of the ceiling's lookup table.

use super::learner::{Learner, LearnerState, Standardise, check_finite, decode, mode};
use crate::output::TaskKind;

pub struct Knn {
    k: usize,
    task: TaskKind,
    norm: Standardise,
    x: Vec<Vec<f64>>,
    t: Vec<Vec<f32>>,
}

impl Knn {
    /// None without samples.
    pub fn fit(x: &[&[f32]], t: &[&[f32]], k: usize, task: TaskKind) -> Option<Self> {
        if x.is_empty() || x.len() != t.len() {
            return None;
        }
        let norm = Standardise::fit(x);
        Some(Self {
            k: k.max(1),
            task,
            x: x.iter().map(|r| norm.apply(r)).collect(),
            t: t.iter().map(|r| r.to_vec()).collect(),
            norm,
        })
    }

    /// A stored lookup back ([`LearnerState::Knn`]), checked: at least one sample, every
    /// input as long as the standardisation, every target `m` long, all finite.
    pub fn from_parts(
        k: usize,
        task: TaskKind,
        norm: Standardise,
        x: Vec<Vec<f64>>,
        t: Vec<Vec<f32>>,
        m: usize,
    ) -> Result<Self, String> {
        norm.check()?;
        if k == 0 || x.is_empty() || x.len() != t.len() {
            return Err(format!(
                "knn with k={k}, {} inputs and {} targets",
                x.len(),
                t.len()
            ));
        }
        for (i, (a, b)) in x.iter().zip(&t).enumerate() {
            if a.len() != norm.len() || b.len() != m {
                return Err(format!("knn sample {i} has the wrong length"));
            }
            check_finite("knn input", a)?;
            check_finite("knn target", b)?;
        }
        Ok(Self {
            k,
            task,
            norm,
            x,
            t,
        })
    }
}

impl Learner for Knn {
    fn name(&self) -> String {
        format!("knn(k={})", self.k)
    }
    fn parameters(&self) -> usize {
        let stored: usize =
            self.x.iter().map(Vec::len).sum::<usize>() + self.t.iter().map(Vec::len).sum::<usize>();
        stored + self.norm.parameters()
    }
    fn state(&self) -> LearnerState {
        LearnerState::Knn {
            k: self.k,
            norm: self.norm.clone(),
            x: self.x.clone(),
            t: self.t.clone(),
        }
    }

    fn predict(&self, x: &[f32]) -> Vec<f32> {
        let z = self.norm.apply(x);
        let mut d: Vec<(f64, usize)> = self
            .x
            .iter()
            .enumerate()
            .map(|(i, r)| (r.iter().zip(&z).map(|(a, b)| (a - b).powi(2)).sum(), i))
            .collect();
        d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        d.truncate(self.k);
        let raw = match self.task {
            TaskKind::Count | TaskKind::SingleLabel | TaskKind::MultiLabel => {
                mode(d.iter().map(|(dist, i)| (self.t[*i].as_slice(), *dist))).unwrap_or_default()
            }
            _ => {
                let m = self.t[0].len();
                let mut mean = vec![0.0f32; m];
                for (_, i) in &d {
                    for (a, v) in mean.iter_mut().zip(&self.t[*i]) {
                        *a += v / d.len() as f32;
                    }
                }
                mean
            }
        };
        decode(self.task, raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_vote_and_the_nearer_wins_a_tie() {
        let rows = [[0.0f32], [0.2], [1.0], [1.1], [5.0]];
        let targets = [[0.0f32], [0.0], [1.0], [1.0], [3.0]];
        let x: Vec<&[f32]> = rows.iter().map(|r| &r[..]).collect();
        let t: Vec<&[f32]> = targets.iter().map(|r| &r[..]).collect();
        let k3 = Knn::fit(&x, &t, 3, TaskKind::Count).unwrap();
        assert_eq!(k3.predict(&[0.9]), vec![1.0]);
        assert_eq!(k3.predict(&[0.1]), vec![0.0]);
        let k1 = Knn::fit(&x, &t, 1, TaskKind::Count).unwrap();
        assert_eq!(k1.predict(&[4.0]), vec![3.0]);
        let k2 = Knn::fit(&x, &t, 2, TaskKind::Count).unwrap();
        // Neighbours 0.2 (target 0) and 1.0 (target 1) tie one vote each: the nearer wins.
        assert_eq!(k2.predict(&[0.55]), vec![0.0]);
        assert_eq!(k2.predict(&[0.65]), vec![1.0]);
    }
}
