//! Links that learn from few samples, over link views: per link g_ij a learner chosen on a
//! held-out block at the end of the training frames ([`choose`](super::choose)), and per
//! target a choice between the best single link of the sources present (the ensemble's
//! fallback in the paper) and a joint multi-source link ([`joint`](super::joint)) on the same
//! held-out block, over every subset of the target's sources.
//!
//! Inputs are frames in time order; per model its link view and its head output (vectors).
//! Targets with a token-sequence head are not handled here (the paper's bundle is).
//!
//! [`ViewLinks::state`] and [`ViewLinks::restore`] are the links' stored form and its checked
//! way back: a restored set predicts exactly as the trained one.

use super::choose::{Candidate, Chosen, Input, LinkData, choose, held_out_start};
use super::joint::{JointKind, JointLink, JointState};
use super::learner::LearnerState;
use super::net::TrainParams;
use crate::output::{OutputForm, OutputSpec, OutputValue, score};
use serde::{Deserialize, Serialize};

/// Frames view links need at least (a held-out block and something to fit before it).
pub const MIN_FRAMES: usize = 8;

/// Ridge penalty of the joint linear link.
const JOINT_RIDGE_LAMBDA: f64 = 10.0;

/// One model's inputs on one frame.
#[derive(Clone, Copy, Debug)]
pub struct ModelInput<'a> {
    pub view: &'a [f32],
    pub head: &'a [f32],
}

/// How a target is predicted when several sources ran.
#[derive(Clone, Debug, PartialEq)]
pub enum Combiner {
    /// The link of the source whose link scored best on the held-out block.
    BestLink,
    /// The joint link over the sources present.
    Joint(String),
}

/// What was chosen for one link, for reports.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkChoice {
    pub source: usize,
    pub target: usize,
    /// The chosen learner and its input, e.g. `knn(k=3):view`.
    pub learner: String,
    /// Its score on the held-out block (None: too few pairs to hold any out).
    pub held_out: Option<f64>,
}

pub struct ViewLinks {
    specs: Vec<OutputSpec>,
    /// Per model, the length of the link view its links were trained on.
    view_dims: Vec<usize>,
    /// Indexed by `source * k + target`.
    links: Vec<Option<Chosen>>,
    joints: Vec<Option<JointLink>>,
    combiners: Vec<Combiner>,
    /// Frames the links were trained on (None: restored from a file that did not say).
    frames: Option<usize>,
}

fn vector_len(spec: &OutputSpec) -> Option<usize> {
    match spec.form {
        OutputForm::Vector { len } => Some(len),
        OutputForm::Sequence { .. } => None,
    }
}

impl ViewLinks {
    /// Whether every model has a vector head (what these links handle).
    pub fn supports(specs: &[OutputSpec]) -> bool {
        specs.iter().all(|s| vector_len(s).is_some())
    }

    /// Trains every link and chooses every target's combiner from `frames` (time order,
    /// `frames[f][m]`: model m's inputs on frame f, every model present).
    pub fn train(
        specs: &[OutputSpec],
        frames: &[Vec<ModelInput<'_>>],
        params: &TrainParams,
    ) -> Self {
        let k = specs.len();
        let candidates = Candidate::all();
        let mut links: Vec<Option<Chosen>> = (0..k * k).map(|_| None).collect();
        for i in 0..k {
            for j in (0..k).filter(|&j| j != i) {
                let data = LinkData {
                    view: frames.iter().map(|f| f[i].view).collect(),
                    head: frames.iter().map(|f| f[i].head).collect(),
                    target: frames.iter().map(|f| f[j].head).collect(),
                };
                let p = TrainParams {
                    seed: params.seed ^ ((i * k + j) as u64).wrapping_mul(0x9e37_79b9),
                    ..params.clone()
                };
                links[i * k + j] = choose(&data, &specs[j], &p, &candidates);
            }
        }
        let n = frames.len();
        let cut = held_out_start(n);
        let mut joints = Vec::with_capacity(k);
        let mut combiners = Vec::with_capacity(k);
        for j in 0..k {
            let sources: Vec<usize> = (0..k).filter(|&i| i != j).collect();
            let views = |range: std::ops::Range<usize>| -> Vec<Vec<&[f32]>> {
                frames[range]
                    .iter()
                    .map(|f| sources.iter().map(|&i| f[i].view).collect())
                    .collect()
            };
            let targets: Vec<&[f32]> = frames.iter().map(|f| f[j].head).collect();
            let p = TrainParams {
                seed: params.seed ^ (0x7017 + j as u64),
                ..params.clone()
            };
            if sources.len() < 2 || cut >= n {
                joints.push(None);
                combiners.push(Combiner::BestLink);
                continue;
            }
            // Held-out comparison over every non-empty subset of the sources.
            let subsets: Vec<Vec<usize>> = (1u32..(1 << sources.len()))
                .map(|bits| {
                    (0..sources.len())
                        .filter(|b| bits >> b & 1 == 1)
                        .map(|b| sources[b])
                        .collect()
                })
                .collect();
            let exact = |f: usize| OutputValue::Vector(frames[f][j].head.to_vec());
            let mut best_link_total = 0.0;
            for subset in &subsets {
                let Some(&by) = subset.iter().max_by(|&&a, &&b| {
                    let s = |i: usize| links[i * k + j].as_ref().and_then(|c| c.held_out);
                    s(a).unwrap_or(0.0).total_cmp(&s(b).unwrap_or(0.0))
                }) else {
                    continue;
                };
                if let Some(c) = &links[by * k + j] {
                    for (h, f) in (cut..n).enumerate() {
                        if let Some(pred) = c.held_out_predictions.get(h) {
                            best_link_total +=
                                score(&specs[j], &OutputValue::Vector(pred.clone()), &exact(f));
                        }
                    }
                }
            }
            let mut best: (f64, Option<JointKind>) = (best_link_total, None);
            for kind in [JointKind::Ridge(JOINT_RIDGE_LAMBDA), JointKind::Mlp] {
                let Some(jl) = JointLink::fit(
                    kind,
                    &sources,
                    &views(0..cut),
                    &targets[..cut],
                    &specs[j],
                    &p,
                ) else {
                    continue;
                };
                let mut total = 0.0;
                for subset in &subsets {
                    for (f, frame) in frames.iter().enumerate().skip(cut) {
                        let present: Vec<(usize, &[f32])> =
                            subset.iter().map(|&i| (i, frame[i].view)).collect();
                        if let Some(pred) = jl.predict(&present) {
                            total += score(&specs[j], &OutputValue::Vector(pred), &exact(f));
                        }
                    }
                }
                if total > best.0 + 1e-9 {
                    best = (total, Some(kind));
                }
            }
            match best.1 {
                Some(kind) => {
                    let jl = JointLink::fit(kind, &sources, &views(0..n), &targets, &specs[j], &p);
                    combiners.push(match &jl {
                        Some(jl) => Combiner::Joint(jl.name()),
                        None => Combiner::BestLink,
                    });
                    joints.push(jl);
                }
                None => {
                    joints.push(None);
                    combiners.push(Combiner::BestLink);
                }
            }
        }
        ViewLinks {
            specs: specs.to_vec(),
            view_dims: (0..k)
                .map(|m| frames.first().map_or(0, |f| f[m].view.len()))
                .collect(),
            links,
            joints,
            combiners,
            frames: Some(n),
        }
    }

    /// The prediction of `target` from the sources that ran (`(model index, inputs)`); None
    /// when no source has a link to it.
    pub fn predict(&self, target: usize, sources: &[(usize, ModelInput<'_>)]) -> Option<Vec<f32>> {
        let k = self.specs.len();
        let used: Vec<&(usize, ModelInput<'_>)> = sources
            .iter()
            .filter(|(i, _)| *i != target && *i < k && self.links[i * k + target].is_some())
            .collect();
        if used.is_empty() {
            return None;
        }
        if used.len() > 1
            && let Some(j) = &self.joints[target]
        {
            let present: Vec<(usize, &[f32])> = used.iter().map(|(i, m)| (*i, m.view)).collect();
            return j.predict(&present);
        }
        let (i, m) = used.iter().max_by(|a, b| {
            let s = |i: usize| self.links[i * k + target].as_ref().and_then(|c| c.held_out);
            s(a.0).unwrap_or(0.0).total_cmp(&s(b.0).unwrap_or(0.0))
        })?;
        let c = self.links[i * k + target].as_ref()?;
        let x = match c.input {
            Input::View => m.view,
            Input::Head => m.head,
        };
        Some(c.learner.predict(x))
    }

    /// Numbers the link `source -> target` holds (None without that link): its memory is
    /// 4 bytes each.
    pub fn link_parameters(&self, source: usize, target: usize) -> Option<usize> {
        let k = self.specs.len();
        if source >= k || target >= k {
            return None;
        }
        self.links[source * k + target]
            .as_ref()
            .map(|c| c.learner.parameters())
    }

    /// Numbers the joint link to `target` holds, when one serves.
    pub fn joint_parameters(&self, target: usize) -> Option<usize> {
        match self.combiners.get(target) {
            Some(Combiner::Joint(_)) => {
                self.joints.get(target)?.as_ref().map(JointLink::parameters)
            }
            _ => None,
        }
    }

    /// What was chosen for every link.
    pub fn choices(&self) -> Vec<LinkChoice> {
        let k = self.specs.len();
        self.links
            .iter()
            .enumerate()
            .filter_map(|(at, c)| {
                c.as_ref().map(|c| LinkChoice {
                    source: at / k,
                    target: at % k,
                    learner: format!("{}:{}", c.learner.name(), c.input.name()),
                    held_out: c.held_out,
                })
            })
            .collect()
    }

    /// Per target, how several sources are combined.
    pub fn combiners(&self) -> &[Combiner] {
        &self.combiners
    }

    /// Per model, the length of the link view its links read.
    pub fn view_dims(&self) -> &[usize] {
        &self.view_dims
    }

    /// The held-out score of predicting `target` from `sources`: with several sources the
    /// best link serves, or a joint link that beat it on the same block, so the best single
    /// link's score is the prior either way. None without a scored link from them.
    pub fn held_out(&self, sources: &[usize], target: usize) -> Option<f64> {
        let k = self.specs.len();
        if target >= k {
            return None;
        }
        sources
            .iter()
            .filter(|&&i| i < k && i != target)
            .filter_map(|&i| self.links[i * k + target].as_ref().and_then(|c| c.held_out))
            .reduce(f64::max)
    }

    /// Online: the links trained again on `frames` (time order; the labelled samples held,
    /// newest last) from the frames where every model's view has the length these links
    /// read; None (keep these) with fewer than `at_least` such frames, or fewer than
    /// [`MIN_FRAMES`].
    pub fn retrained(
        &self,
        frames: Vec<Vec<ModelInput<'_>>>,
        params: &TrainParams,
        at_least: usize,
    ) -> Option<ViewLinks> {
        let dims = &self.view_dims;
        let frames: Vec<Vec<ModelInput<'_>>> = frames
            .into_iter()
            .filter(|f| {
                f.len() == dims.len() && f.iter().zip(dims).all(|(m, &d)| m.view.len() == d)
            })
            .collect();
        (frames.len() >= at_least.max(MIN_FRAMES))
            .then(|| ViewLinks::train(&self.specs, &frames, params))
    }

    /// Frames the links were trained on, where known.
    pub fn trained_frames(&self) -> Option<usize> {
        self.frames
    }

    /// The stored form of every link and joint link, JSON-serialisable (link bundles of
    /// format 3 hold it beside the paper's links).
    pub fn state(&self) -> ViewLinksState {
        let k = self.specs.len();
        ViewLinksState {
            view_dims: self.view_dims.clone(),
            links: self
                .links
                .iter()
                .enumerate()
                .filter_map(|(at, c)| {
                    c.as_ref().map(|c| LinkState {
                        source: at / k,
                        target: at % k,
                        input: c.input,
                        held_out: c.held_out,
                        learner: c.learner.state(),
                    })
                })
                .collect(),
            joints: self
                .joints
                .iter()
                .enumerate()
                .filter_map(|(j, jl)| jl.as_ref().map(|jl| (j, jl.state())))
                .collect(),
            frames: self.frames,
        }
    }

    /// The links back from their stored form, for models of `specs`, checking every index,
    /// length and score against them.
    pub fn restore(specs: &[OutputSpec], state: ViewLinksState) -> Result<Self, String> {
        let k = specs.len();
        if !Self::supports(specs) {
            return Err("a model's output is a token sequence".into());
        }
        if state.view_dims.len() != k {
            return Err(format!(
                "{} view lengths for {k} models",
                state.view_dims.len()
            ));
        }
        let mut links: Vec<Option<Chosen>> = (0..k * k).map(|_| None).collect();
        for l in state.links {
            let (i, j) = (l.source, l.target);
            if i >= k || j >= k || i == j || links[i * k + j].is_some() {
                return Err(format!("link {i} -> {j} is out of range or stored twice"));
            }
            if let Some(s) = l.held_out
                && !(0.0..=1.0).contains(&s)
            {
                return Err(format!(
                    "link {i} -> {j}: held-out score {s} is not in [0, 1]"
                ));
            }
            let want = match l.input {
                Input::View => state.view_dims[i],
                Input::Head => vector_len(&specs[i]).unwrap_or(0),
            };
            if l.learner.in_dim().is_some_and(|d| d != want) {
                return Err(format!(
                    "link {i} -> {j}: its learner does not read the {want}-long {}",
                    l.input.name()
                ));
            }
            let learner = l
                .learner
                .restore(&specs[j])
                .map_err(|e| format!("link {i} -> {j}: {e}"))?;
            links[i * k + j] = Some(Chosen {
                learner,
                input: l.input,
                held_out: l.held_out,
                scores: Vec::new(),
                held_out_predictions: Vec::new(),
            });
        }
        let mut joints: Vec<Option<JointLink>> = (0..k).map(|_| None).collect();
        let mut combiners = vec![Combiner::BestLink; k];
        for (j, js) in state.joints {
            if j >= k || joints[j].is_some() || js.sources.iter().any(|&s| s >= k || s == j) {
                return Err(format!("the joint link of model {j} is out of range"));
            }
            let jl = JointLink::restore(js, &state.view_dims, &specs[j])
                .map_err(|e| format!("joint link of model {j}: {e}"))?;
            combiners[j] = Combiner::Joint(jl.name());
            joints[j] = Some(jl);
        }
        Ok(ViewLinks {
            specs: specs.to_vec(),
            view_dims: state.view_dims,
            links,
            joints,
            combiners,
            frames: state.frames,
        })
    }
}

/// The stored form of [`ViewLinks`]: JSON-serialisable, restored by [`ViewLinks::restore`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewLinksState {
    pub view_dims: Vec<usize>,
    pub links: Vec<LinkState>,
    /// (target, its joint link) for the targets a joint link serves.
    pub joints: Vec<(usize, JointState)>,
    /// Frames the links were trained on (absent in bundles written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<usize>,
}

/// One link's stored form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkState {
    pub source: usize,
    pub target: usize,
    pub input: Input,
    pub held_out: Option<f64>,
    pub learner: LearnerState,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::TaskKind;

    /// Per frame, per model: its link view and its head.
    type Rows = Vec<Vec<(Vec<f32>, Vec<f32>)>>;

    /// Three models over 48 frames: a person count (view: counts at two thresholds and a
    /// constant), a vehicle count and a 3-class scene label, related so that links have
    /// something to learn.
    fn frames() -> (Vec<OutputSpec>, Rows) {
        let specs = vec![
            OutputSpec::vector(1, TaskKind::Count),
            OutputSpec::vector(1, TaskKind::Count),
            OutputSpec::vector(3, TaskKind::SingleLabel),
        ];
        let rows = (0..48)
            .map(|f| {
                let persons = (f % 4) as f32;
                let vehicles = ((f / 3) % 3) as f32;
                let mut label = vec![0.0; 3];
                label[(f % 4).min(2)] = 1.0;
                vec![
                    (vec![persons, persons + 1.0, 1.0], vec![persons]),
                    (vec![vehicles, (f % 2) as f32], vec![vehicles]),
                    (label.iter().map(|p| 0.8 * p + 0.05).collect(), label),
                ]
            })
            .collect();
        (specs, rows)
    }

    fn inputs(rows: &Rows) -> Vec<Vec<ModelInput<'_>>> {
        rows.iter()
            .map(|f| {
                f.iter()
                    .map(|(v, h)| ModelInput { view: v, head: h })
                    .collect()
            })
            .collect()
    }

    fn trained() -> (Vec<OutputSpec>, Rows, ViewLinks) {
        let (specs, rows) = frames();
        let params = TrainParams {
            epochs: 5,
            ..TrainParams::default()
        };
        let links = ViewLinks::train(&specs, &inputs(&rows), &params);
        (specs, rows, links)
    }

    #[test]
    fn restored_links_predict_exactly_as_the_trained_ones() {
        let (specs, rows, links) = trained();
        let json = serde_json::to_string(&links.state()).unwrap();
        let state: ViewLinksState = serde_json::from_str(&json).unwrap();
        let restored = ViewLinks::restore(&specs, state).unwrap();
        assert_eq!(restored.choices(), links.choices());
        assert_eq!(restored.combiners(), links.combiners());
        let all = inputs(&rows);
        let mut predicted = 0;
        for frame in &all {
            for target in 0..3 {
                for bits in 1u32..8 {
                    let sources: Vec<(usize, ModelInput<'_>)> = (0..3)
                        .filter(|&i| i != target && bits >> i & 1 == 1)
                        .map(|i| (i, frame[i]))
                        .collect();
                    let a = links.predict(target, &sources);
                    assert_eq!(a, restored.predict(target, &sources));
                    predicted += usize::from(a.is_some());
                }
            }
        }
        assert!(predicted > 0);
    }

    #[test]
    fn a_damaged_stored_form_is_refused_with_the_reason() {
        let (specs, _, links) = trained();
        let good = links.state();
        assert!(ViewLinks::restore(&specs, good.clone()).is_ok());

        let mut wrong_dims = good.clone();
        wrong_dims.view_dims[0] += 1;
        let e = ViewLinks::restore(&specs, wrong_dims).err().unwrap();
        assert!(e.contains("link 0 ->") || e.contains("joint"), "{e}");

        let mut bad_index = good.clone();
        bad_index.links[0].target = 7;
        assert!(ViewLinks::restore(&specs, bad_index).is_err());

        let mut bad_score = good.clone();
        bad_score.links[0].held_out = Some(1.5);
        let e = ViewLinks::restore(&specs, bad_score).err().unwrap();
        assert!(e.contains("[0, 1]"), "{e}");

        // A non-finite number anywhere in a learner's state.
        let mut poisoned = 0;
        for at in 0..good.links.len() {
            let mut s = good.clone();
            let changed = match &mut s.links[at].learner {
                LearnerState::Knn { x, .. } => {
                    x[0][0] = f64::NAN;
                    true
                }
                LearnerState::Ridge { w, .. } if !w.is_empty() => {
                    w[0] = f64::INFINITY;
                    true
                }
                LearnerState::Mlp { params, .. } => {
                    params[0] = f32::NAN;
                    true
                }
                LearnerState::Majority { value } => {
                    value[0] = f32::NAN;
                    true
                }
                LearnerState::Ridge { .. } => false,
            };
            if changed {
                poisoned += 1;
                assert!(ViewLinks::restore(&specs, s).is_err(), "link {at}");
            }
        }
        assert!(poisoned > 0);

        // Models that are not the ones trained for.
        let other = vec![OutputSpec::vector(2, TaskKind::Count); 3];
        assert!(ViewLinks::restore(&other, good).is_err());
    }
}
