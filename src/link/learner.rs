//! What the small-sample learners share: a learned map from a fixed-length input (a link
//! view, or a head's vector) to a target model's vector output, with the standardisation of
//! its inputs and the decoding of its raw output into a value of the target's task.
//!
//! Learners: [`ridge`](super::ridge) (a regularised linear map), [`knn`](super::knn) (a
//! nearest-neighbour lookup over the profiled samples), [`Majority`] (the most frequent
//! target, the floor every learner must beat), and the paper's MLP ([`MlpLearner`], a
//! [`LinkNet`]). [`choose`](super::choose) picks one per link on a held-out block in time.

use super::LinkError;
use super::knn::Knn;
use super::net::{LinkNet, TrainParams};
use super::norm::Norm;
use super::ridge::Ridge;
use crate::output::{OutputForm, OutputSpec, OutputValue, TaskKind};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

/// A trained map from an input vector to a target value (already decoded for the task).
pub trait Learner: Send + Sync {
    /// A short description, e.g. `ridge(l=10)`.
    fn name(&self) -> String;
    /// The predicted target value for input `x` (as long as the training inputs).
    fn predict(&self, x: &[f32]) -> Vec<f32>;
    /// Numbers it holds to predict (weights, standardisation, stored samples): what the
    /// scheduler charges as the link's memory (4 bytes each).
    fn parameters(&self) -> usize;
    /// Its stored form ([`LearnerState::restore`] gives it back).
    fn state(&self) -> LearnerState;
}

/// A learner's stored form: everything it predicts with, so that a restored learner
/// predicts exactly as the trained one. The target's spec is not stored: the link knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "learner", rename_all = "snake_case")]
pub enum LearnerState {
    Majority {
        value: Vec<f32>,
    },
    Knn {
        k: usize,
        norm: Standardise,
        /// The stored samples' standardised inputs.
        x: Vec<Vec<f64>>,
        t: Vec<Vec<f32>>,
    },
    Ridge {
        lambda: f64,
        norm: Standardise,
        /// Input length x target length weights, row-major.
        w: Vec<f64>,
        y_mean: Vec<f64>,
    },
    Mlp {
        /// What it reads: `view`, `head` or `joint`.
        input: String,
        in_dim: usize,
        hidden_factor: usize,
        in_norm: Norm,
        out_norm: Option<Norm>,
        params: Vec<f32>,
        /// A label target's classes the network predicts, in order (absent: every class);
        /// see [`MlpLearner`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        classes: Option<Vec<usize>>,
    },
}

/// The length of a vector spec's values; an error for a token sequence.
fn target_len(target: &OutputSpec) -> Result<usize, String> {
    match target.form {
        OutputForm::Vector { len } => Ok(len),
        OutputForm::Sequence { .. } => Err("the target's output is a token sequence".into()),
    }
}

/// An error naming the first non-finite value of `v`, if any.
pub(super) fn check_finite<T: Into<f64> + Copy>(what: &str, v: &[T]) -> Result<(), String> {
    match v.iter().position(|x| !(*x).into().is_finite()) {
        Some(i) => Err(format!("{what}: value {i} is not finite")),
        None => Ok(()),
    }
}

impl LearnerState {
    /// The input length it reads (None: it reads none, the majority).
    pub fn in_dim(&self) -> Option<usize> {
        match self {
            LearnerState::Majority { .. } => None,
            LearnerState::Knn { norm, .. } | LearnerState::Ridge { norm, .. } => Some(norm.len()),
            LearnerState::Mlp { in_dim, .. } => Some(*in_dim),
        }
    }

    /// The learner back, predicting values of `target`, after checking every length and
    /// value it predicts with (a stored form that loads cannot index out of bounds).
    pub fn restore(self, target: &OutputSpec) -> Result<Box<dyn Learner>, String> {
        let m = target_len(target)?;
        match self {
            LearnerState::Majority { value } => {
                if value.len() != m {
                    return Err(format!("majority of {} values for {m}", value.len()));
                }
                check_finite("majority", &value)?;
                Ok(Box::new(Majority { value }))
            }
            LearnerState::Knn { k, norm, x, t } => {
                Knn::from_parts(k, target.task, norm, x, t, m).map(|l| Box::new(l) as _)
            }
            LearnerState::Ridge {
                lambda,
                norm,
                w,
                y_mean,
            } => {
                Ridge::from_parts(lambda, target.task, norm, w, y_mean, m).map(|l| Box::new(l) as _)
            }
            LearnerState::Mlp {
                input,
                in_dim,
                hidden_factor,
                in_norm,
                out_norm,
                params,
                classes,
            } => {
                let input = match input.as_str() {
                    "view" => "view",
                    "head" => "head",
                    "joint" => "joint",
                    other => return Err(format!("mlp input {other:?} is not view, head or joint")),
                };
                if hidden_factor == 0 || hidden_factor > 1024 {
                    return Err(format!("mlp hidden factor {hidden_factor} is out of range"));
                }
                in_norm
                    .check(in_dim)
                    .map_err(|e| format!("mlp input norm: {e}"))?;
                if let Some(c) = &classes {
                    check_classes(c, m, target.task)?;
                }
                let net_target = net_target(target, classes.as_deref());
                let out_len = target_len(&net_target)?;
                if let Some(n) = &out_norm {
                    n.check(out_len)
                        .map_err(|e| format!("mlp output norm: {e}"))?;
                }
                let src = OutputSpec::vector(in_dim, TaskKind::Regression);
                let mut rng = StdRng::seed_from_u64(0);
                let mut net = LinkNet::with_norms(
                    &src,
                    &net_target,
                    hidden_factor,
                    Some(in_norm),
                    out_norm,
                    &mut rng,
                )
                .map_err(|e| e.to_string())?;
                net.set_params(&params).map_err(|e| format!("mlp: {e}"))?;
                Ok(Box::new(MlpLearner {
                    net,
                    input,
                    hidden_factor,
                    in_dim,
                    classes,
                    out_len: m,
                }))
            }
        }
    }
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

    /// Checks a stored one: a scale per mean, all finite, no negative scale.
    pub fn check(&self) -> Result<(), String> {
        if self.mean.len() != self.inv_std.len() {
            return Err(format!(
                "{} means and {} scales",
                self.mean.len(),
                self.inv_std.len()
            ));
        }
        check_finite("standardisation mean", &self.mean)?;
        check_finite("standardisation scale", &self.inv_std)?;
        if self.inv_std.iter().any(|s| *s < 0.0) {
            return Err("a standardisation scale is negative".into());
        }
        Ok(())
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
    fn state(&self) -> LearnerState {
        LearnerState::Majority {
            value: self.value.clone(),
        }
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

/// Label targets with more classes than this are learned over the classes their training
/// targets hold (see [`MlpLearner`]).
pub const MAX_FULL_LABEL_CLASSES: usize = 64;

/// The paper's link network (an MLP, [`LinkNet`]) on the same inputs as the other learners.
///
/// A label target with many classes (an ImageNet classifier's 1,000) is learned over the
/// classes its training targets hold, a handful on a short clip: the network's output layer,
/// and its hidden layer (a multiple of the output length), are then that many wide instead of
/// 1,000, which is what makes a link to such a classifier affordable to train several times
/// over in a choice. A class no training target holds is one the full-width network is only
/// ever taught to score low, so it predicts the same classes.
pub struct MlpLearner {
    net: LinkNet,
    input: &'static str,
    hidden_factor: usize,
    in_dim: usize,
    /// The target's classes the network predicts, in order (None: the target as it is).
    classes: Option<Vec<usize>>,
    /// The target's length.
    out_len: usize,
}

/// The classes a label target's training values hold (a one-hot or multi-hot vector per
/// value), in order; None when the target is not a label of more than
/// [`MAX_FULL_LABEL_CLASSES`] classes or every class appears.
fn seen_classes(t: &[&[f32]], target: &OutputSpec) -> Option<Vec<usize>> {
    if !matches!(target.task, TaskKind::SingleLabel | TaskKind::MultiLabel) {
        return None;
    }
    let len = target_len(target).ok()?;
    if len <= MAX_FULL_LABEL_CLASSES {
        return None;
    }
    let mut seen = vec![false; len];
    for row in t {
        for (s, v) in seen.iter_mut().zip(row.iter()) {
            *s |= *v > 0.0;
        }
    }
    let mut classes: Vec<usize> = (0..len).filter(|&i| seen[i]).collect();
    // A single-label network needs two outputs to rank; a class no target holds is added.
    if classes.len() < 2 {
        let extra = (0..len).find(|i| !classes.contains(i))?;
        classes.push(extra);
        classes.sort_unstable();
    }
    (classes.len() < len).then_some(classes)
}

/// The spec the network learns: the target, or its kept classes.
fn net_target(target: &OutputSpec, classes: Option<&[usize]>) -> OutputSpec {
    match classes {
        Some(c) => OutputSpec::vector(c.len(), target.task),
        None => target.clone(),
    }
}

/// Checks a stored class list: at least two classes, increasing, within the target.
fn check_classes(classes: &[usize], len: usize, task: TaskKind) -> Result<(), String> {
    if !matches!(task, TaskKind::SingleLabel | TaskKind::MultiLabel) {
        return Err("mlp classes are kept for a target that is not a label".into());
    }
    if classes.len() < 2 {
        return Err(format!("mlp keeps {} classes, fewer than 2", classes.len()));
    }
    if classes.windows(2).any(|w| w[0] >= w[1]) {
        return Err("mlp classes are not increasing".into());
    }
    match classes.last() {
        Some(&c) if c >= len => Err(format!("mlp class {c} is outside the target's {len}")),
        _ => Ok(()),
    }
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
        let out_len = target_len(target).map_err(LinkError::Form)?;
        let src = OutputSpec::vector(d, TaskKind::Regression);
        let classes = seen_classes(t, target);
        let net_target = net_target(target, classes.as_deref());
        let xs: Vec<OutputValue> = x.iter().map(|r| OutputValue::Vector(r.to_vec())).collect();
        let ts: Vec<OutputValue> = t
            .iter()
            .map(|r| match &classes {
                Some(c) => OutputValue::Vector(
                    c.iter()
                        .map(|&i| r.get(i).copied().unwrap_or(0.0))
                        .collect(),
                ),
                None => OutputValue::Vector(r.to_vec()),
            })
            .collect();
        let xr: Vec<&OutputValue> = xs.iter().collect();
        let tr: Vec<&OutputValue> = ts.iter().collect();
        let mut rng = StdRng::seed_from_u64(params.seed ^ 0x006d_6c70);
        let mut net = LinkNet::new(&src, &net_target, params, &xr, &tr, &mut rng)?;
        net.fit(&xr, &tr, params, &mut rng)?;
        Ok(Self {
            net,
            input,
            hidden_factor: params.hidden_factor,
            in_dim: d,
            classes,
            out_len,
        })
    }
}

impl Learner for MlpLearner {
    fn name(&self) -> String {
        format!("mlp({})", self.input)
    }
    fn parameters(&self) -> usize {
        self.net.params().len() + self.classes.as_ref().map_or(0, Vec::len)
    }
    fn predict(&self, x: &[f32]) -> Vec<f32> {
        let v = match self.net.predict(&OutputValue::Vector(x.to_vec())) {
            Ok(OutputValue::Vector(v)) => v,
            _ => return Vec::new(),
        };
        match &self.classes {
            Some(classes) => {
                let mut full = vec![0.0; self.out_len];
                for (&c, value) in classes.iter().zip(v) {
                    full[c] = value;
                }
                full
            }
            None => v,
        }
    }
    fn state(&self) -> LearnerState {
        LearnerState::Mlp {
            input: self.input.to_string(),
            in_dim: self.in_dim,
            hidden_factor: self.hidden_factor,
            in_norm: self
                .net
                .in_norm()
                .cloned()
                .unwrap_or_else(|| Norm::identity(self.in_dim)),
            out_norm: self.net.out_norm().cloned(),
            params: self.net.params(),
            classes: self.classes.clone(),
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

    /// 40 frames of a one-dimensional input whose sign decides between two of a 200-class
    /// label's classes (17 and 150).
    fn wide_label_pairs() -> (Vec<Vec<f32>>, Vec<Vec<f32>>, OutputSpec) {
        let spec = OutputSpec::vector(200, TaskKind::SingleLabel);
        let x: Vec<Vec<f32>> = (0..40)
            .map(|i| vec![if i % 2 == 0 { 1.0 } else { -1.0 }])
            .collect();
        let t = x
            .iter()
            .map(|r| {
                let mut v = vec![0.0; 200];
                v[if r[0] > 0.0 { 17 } else { 150 }] = 1.0;
                v
            })
            .collect();
        (x, t, spec)
    }

    #[test]
    fn a_wide_label_target_is_learned_over_its_seen_classes_and_restored() {
        let (x, t, spec) = wide_label_pairs();
        let xr: Vec<&[f32]> = x.iter().map(Vec::as_slice).collect();
        let tr: Vec<&[f32]> = t.iter().map(Vec::as_slice).collect();
        let params = TrainParams {
            epochs: 60,
            ..TrainParams::default()
        };
        let m = MlpLearner::fit(&xr, &tr, &spec, &params, "view").unwrap();
        // Two kept classes: the net is 2 wide (hidden 16), not 200 (hidden 400).
        assert_eq!(m.classes.as_deref(), Some(&[17, 150][..]));
        assert!(m.parameters() < 100, "{} parameters", m.parameters());
        for (xi, ti) in x.iter().zip(&t) {
            let p = m.predict(xi);
            assert_eq!(p.len(), 200);
            assert_eq!(&decode(spec.task, p), ti);
        }
        let state = m.state();
        let json = serde_json::to_string(&state).unwrap();
        let back: LearnerState = serde_json::from_str(&json).unwrap();
        let restored = back.restore(&spec).unwrap();
        for xi in &x {
            assert_eq!(restored.predict(xi), m.predict(xi));
        }
        // A stored form whose classes are damaged is refused with the reason.
        let with_classes = |c: Vec<usize>| {
            let mut damaged = state.clone();
            if let LearnerState::Mlp { classes, .. } = &mut damaged {
                *classes = Some(c);
            }
            damaged
        };
        for (classes, reason) in [
            (vec![17, 200], "outside"),
            (vec![150, 17], "increasing"),
            (vec![17], "fewer than 2"),
        ] {
            let err = with_classes(classes).restore(&spec).err().unwrap();
            assert!(err.contains(reason), "{err}");
        }
        let count = OutputSpec::vector(200, TaskKind::Count);
        let err = state.clone().restore(&count).err().unwrap();
        assert!(err.contains("not a label"), "{err}");
        // Three classes against a net trained on two: the output norm or the parameter count
        // says so.
        assert!(with_classes(vec![1, 17, 150]).restore(&spec).is_err());
    }

    #[test]
    fn a_narrow_label_target_keeps_every_class() {
        let (x, t, _) = wide_label_pairs();
        // The same task over a label of MAX_FULL_LABEL_CLASSES classes: learned as it is.
        let spec = OutputSpec::vector(MAX_FULL_LABEL_CLASSES, TaskKind::SingleLabel);
        let t: Vec<Vec<f32>> = t
            .iter()
            .map(|r| {
                let mut v = vec![0.0; MAX_FULL_LABEL_CLASSES];
                v[if r[17] > 0.0 { 3 } else { 40 }] = 1.0;
                v
            })
            .collect();
        let tr: Vec<&[f32]> = t.iter().map(Vec::as_slice).collect();
        assert_eq!(seen_classes(&tr, &spec), None);
        let xr: Vec<&[f32]> = x.iter().map(Vec::as_slice).collect();
        let m = MlpLearner::fit(&xr, &tr, &spec, &TrainParams::default(), "view").unwrap();
        assert_eq!(m.classes, None);
        assert!(matches!(m.state(), LearnerState::Mlp { classes: None, .. }));
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
