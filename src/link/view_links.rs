//! Links that learn from few samples, over link views: per link g_ij a learner chosen on a
//! held-out block at the end of the training frames ([`choose`](super::choose)), and per
//! target a choice between the best single link of the sources present (the ensemble's
//! fallback in the paper) and a joint multi-source link ([`joint`](super::joint)) on the same
//! held-out block, over every subset of the target's sources.
//!
//! Inputs are frames in time order; per model its link view and its head output (vectors).
//! Targets with a token-sequence head are not handled here (the paper's bundle is).

use super::choose::{Candidate, Chosen, Input, LinkData, choose, held_out_start};
use super::joint::{JointKind, JointLink};
use super::net::TrainParams;
use crate::output::{OutputForm, OutputSpec, OutputValue, score};

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
    /// Indexed by `source * k + target`.
    links: Vec<Option<Chosen>>,
    joints: Vec<Option<JointLink>>,
    combiners: Vec<Combiner>,
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
            links,
            joints,
            combiners,
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
}
