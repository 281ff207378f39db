//! What the small-sample learners share: a learned map from a fixed-length input (a link
//! view, or a head's vector) to a target model's vector output, with the standardisation of
//! its inputs and the decoding of its raw output into a value of the target's task.
//!
//! Learners: [`ridge`](super::ridge) (a regularised linear map), [`knn`](super::knn) (a
//! nearest-neighbour lookup over the profiled samples), [`Majority`] (the most frequent
//! target, the floor every learner must beat), and the paper's MLP ([`MlpLearner`], a
//! [`LinkNet`]). [`choose`](super::choose) picks one per link on a held-out block in time.

use super::LinkError;
use super::net::{LinkNet, TrainParams};
use crate::output::{OutputSpec, OutputValue, TaskKind};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// A trained map from an input vector to a target value (already decoded for the task).
pub trait Learner: Send + Sync {
    /// A short description, e.g. `ridge(l=10)`.
    fn name(&self) -> String;
    /// The predicted target value for input `x` (as long as the training inputs).
    fn predict(&self, x: &[f32]) -> Vec<f32>;
    /// Numbers it holds to predict (weights, standardisation, stored samples): what the
    /// scheduler charges as the link's memory (4 bytes each).
    fn parameters(&self) -> usize;
}

/// Turns a learner's raw output into a value of the target's task: counts are rounded to
/// non-negative integers (a count is right when within 0.5), single labels become the one-hot
/// top class, multi-label scores are clamped to [0, 1], regressions are left as they are.
pub fn decode(task: TaskKind, mut raw: Vec<f32>) -> Vec<f32> {
    match task {
        TaskKind::Count => {
            for v in &mut raw {
                *v = v.round().max(0.0);
            }
            raw
        }
        TaskKind::SingleLabel => {
            let top = raw
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                .map_or(0, |(i, _)| i);
            raw.iter()
                .enumerate()
                .map(|(i, _)| if i == top { 1.0 } else { 0.0 })
                .collect()
        }
        TaskKind::MultiLabel => {
            for v in &mut raw {
                *v = v.clamp(0.0, 1.0);
            }
            raw
        }
        _ => raw,
    }
}

/// Per-dimension standardisation fitted on training inputs; constant dimensions map to 0.
#[derive(Clone, Debug)]
pub struct Standardise {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
}

impl Standardise {
    pub fn fit(x: &[&[f32]]) -> Self {
        let d = x.first().map_or(0, |r| r.len());
        let n = x.len().max(1) as f64;
        let mut mean = vec![0.0; d];
        for r in x {
            for (m, v) in mean.iter_mut().zip(r.iter()) {
                *m += f64::from(*v) / n;
            }
        }
        let mut var = vec![0.0; d];
        for r in x {
            for ((s, v), m) in var.iter_mut().zip(r.iter()).zip(&mean) {
                *s += (f64::from(*v) - m).powi(2) / n;
            }
        }
        let inv_std = var
            .into_iter()
            .map(|v| if v > 1e-12 { 1.0 / v.sqrt() } else { 0.0 })
            .collect();
        Self { mean, inv_std }
    }

    /// The input length it was fitted on.
    pub fn len(&self) -> usize {
        self.mean.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }

    /// Numbers it holds (a mean and a scale per dimension).
    pub fn parameters(&self) -> usize {
        2 * self.mean.len()
    }

    pub fn apply(&self, x: &[f32]) -> Vec<f64> {
        x.iter()
            .zip(&self.mean)
            .zip(&self.inv_std)
            .map(|((v, m), s)| (f64::from(*v) - m) * s)
            .collect()
    }
}

/// The most frequent training target (a constant prediction).
pub struct Majority {
    value: Vec<f32>,
}

impl Majority {
    pub fn fit(t: &[&[f32]]) -> Self {
        Self {
            value: mode(t.iter().map(|r| (*r, 0.0))).unwrap_or_default(),
        }
    }
}

impl Learner for Majority {
    fn name(&self) -> String {
        "majority".into()
    }
    fn parameters(&self) -> usize {
        self.value.len()
    }
    fn predict(&self, _: &[f32]) -> Vec<f32> {
        self.value.clone()
    }
}

/// The most frequent vector among `(value, tie-break key)` pairs; ties go to the smallest
/// summed key (e.g. distance). None when there are none.
pub fn mode<'a>(items: impl Iterator<Item = (&'a [f32], f64)>) -> Option<Vec<f32>> {
    let mut groups: Vec<(&'a [f32], usize, f64)> = Vec::new();
    for (v, key) in items {
        match groups.iter_mut().find(|(g, _, _)| *g == v) {
            Some(g) => {
                g.1 += 1;
                g.2 += key;
            }
            None => groups.push((v, 1, key)),
        }
    }
    groups
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .map(|(v, _, _)| v.to_vec())
}

/// The paper's link network (an MLP, [`LinkNet`]) on the same inputs as the other learners.
pub struct MlpLearner {
    net: LinkNet,
    input: &'static str,
}

impl MlpLearner {
    /// Trains a vec2vec link from inputs of `x` (vectors) to targets of spec `target`.
    pub fn fit(
        x: &[&[f32]],
        t: &[&[f32]],
        target: &OutputSpec,
        params: &TrainParams,
        input: &'static str,
    ) -> Result<Self, LinkError> {
        let d = x.first().map_or(0, |r| r.len());
        let src = OutputSpec::vector(d, TaskKind::Regression);
        let xs: Vec<OutputValue> = x.iter().map(|r| OutputValue::Vector(r.to_vec())).collect();
        let ts: Vec<OutputValue> = t.iter().map(|r| OutputValue::Vector(r.to_vec())).collect();
        let xr: Vec<&OutputValue> = xs.iter().collect();
        let tr: Vec<&OutputValue> = ts.iter().collect();
        let mut rng = StdRng::seed_from_u64(params.seed ^ 0x006d_6c70);
        let mut net = LinkNet::new(&src, target, params, &xr, &tr, &mut rng)?;
        net.fit(&xr, &tr, params, &mut rng)?;
        Ok(Self { net, input })
    }
}

impl Learner for MlpLearner {
    fn name(&self) -> String {
        format!("mlp({})", self.input)
    }
    fn parameters(&self) -> usize {
        self.net.params().len()
    }
    fn predict(&self, x: &[f32]) -> Vec<f32> {
        match self.net.predict(&OutputValue::Vector(x.to_vec())) {
            Ok(OutputValue::Vector(v)) => v,
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_follows_the_task() {
        assert_eq!(
            decode(TaskKind::Count, vec![1.4, -0.7, 2.6]),
            vec![1.0, 0.0, 3.0]
        );
        assert_eq!(
            decode(TaskKind::SingleLabel, vec![0.1, 0.7, 0.2]),
            vec![0.0, 1.0, 0.0]
        );
        assert_eq!(decode(TaskKind::Regression, vec![0.25]), vec![0.25]);
    }

    #[test]
    fn majority_and_mode_break_ties_by_key() {
        let a = [1.0f32];
        let b = [2.0f32];
        let t: Vec<&[f32]> = vec![&a, &b, &b, &a, &b];
        assert_eq!(Majority::fit(&t).predict(&[]), vec![2.0]);
        let m = mode([(&a[..], 0.1), (&b[..], 0.5)].into_iter()).unwrap();
        assert_eq!(m, vec![1.0]);
    }

    #[test]
    fn standardising_centres_and_scales_and_zeroes_constants() {
        let r1 = [1.0f32, 5.0];
        let r2 = [3.0f32, 5.0];
        let s = Standardise::fit(&[&r1, &r2]);
        let z = s.apply(&[3.0, 7.0]);
        assert!((z[0] - 1.0).abs() < 1e-9 && z[1] == 0.0);
    }
}
