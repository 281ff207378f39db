//! A joint multi-source link (beside the paper's weighted ensemble): one learner over the
//! concatenated views of every source of a target, each preceded by a presence flag. Sources
//! that did not run are zero (after standardising each source's view, zero is its training
//! mean) with the flag 0. Training copies every frame with random subsets of its sources
//! dropped, so one trained link serves any subset without retraining.

use super::learner::{Learner, LearnerState, MlpLearner, Standardise};
use super::net::TrainParams;
use super::ridge::Ridge;
use crate::output::OutputSpec;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Copies of each training frame with random source drop-out (besides the complete one).
pub const DROPOUT_COPIES: usize = 6;

/// The learner inside a joint link.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JointKind {
    /// The paper's MLP over the joint input.
    Mlp,
    /// A ridge map over the joint input.
    Ridge(f64),
}

pub struct JointLink {
    kind: JointKind,
    /// Model indices of the sources, in input order.
    sources: Vec<usize>,
    norms: Vec<Standardise>,
    learner: Box<dyn Learner>,
}

impl JointLink {
    /// Trains on `views[f][s]` (frame f, source s in `sources` order) and `targets[f]`.
    pub fn fit(
        kind: JointKind,
        sources: &[usize],
        views: &[Vec<&[f32]>],
        targets: &[&[f32]],
        spec: &OutputSpec,
        params: &TrainParams,
    ) -> Option<Self> {
        if views.is_empty() || sources.is_empty() {
            return None;
        }
        let norms: Vec<Standardise> = (0..sources.len())
            .map(|s| Standardise::fit(&views.iter().map(|f| f[s]).collect::<Vec<_>>()))
            .collect();
        let mut rng = StdRng::seed_from_u64(params.seed ^ 0x101a_7000 ^ sources.len() as u64);
        let mut x: Vec<Vec<f32>> = Vec::new();
        let mut t: Vec<&[f32]> = Vec::new();
        let all = vec![true; sources.len()];
        for (f, target) in views.iter().zip(targets) {
            x.push(encode(&norms, f, &all));
            t.push(target);
            for _ in 0..DROPOUT_COPIES {
                let mut present: Vec<bool> =
                    (0..sources.len()).map(|_| rng.random_bool(0.5)).collect();
                if !present.contains(&true) {
                    let keep = rng.random_range(0..sources.len());
                    present[keep] = true;
                }
                x.push(encode(&norms, f, &present));
                t.push(target);
            }
        }
        let xr: Vec<&[f32]> = x.iter().map(|v| v.as_slice()).collect();
        let learner: Box<dyn Learner> = match kind {
            JointKind::Mlp => Box::new(MlpLearner::fit(&xr, &t, spec, params, "joint").ok()?),
            JointKind::Ridge(l) => Box::new(Ridge::fit(&xr, &t, l, spec.task)?),
        };
        Some(Self {
            kind,
            sources: sources.to_vec(),
            norms,
            learner,
        })
    }

    /// Numbers it holds (the learner's and the sources' standardisations).
    pub fn parameters(&self) -> usize {
        self.learner.parameters()
            + self
                .norms
                .iter()
                .map(Standardise::parameters)
                .sum::<usize>()
    }

    pub fn name(&self) -> String {
        match self.kind {
            JointKind::Mlp => "joint(mlp)".into(),
            JointKind::Ridge(l) => format!("joint(ridge l={l})"),
        }
    }

    /// The prediction from the views of the sources present (`(model index, view)`); sources
    /// it does not know are ignored, None when none is known.
    pub fn predict(&self, present: &[(usize, &[f32])]) -> Option<Vec<f32>> {
        let mut views: Vec<&[f32]> = Vec::with_capacity(self.sources.len());
        let mut mask = Vec::with_capacity(self.sources.len());
        for (s, m) in self.sources.iter().enumerate() {
            match present.iter().find(|(i, _)| i == m) {
                Some((_, v)) if v.len() == self.norms[s].len() => {
                    views.push(v);
                    mask.push(true);
                }
                _ => {
                    views.push(&[]);
                    mask.push(false);
                }
            }
        }
        if !mask.contains(&true) {
            return None;
        }
        Some(self.learner.predict(&encode(&self.norms, &views, &mask)))
    }
}

/// A joint link's stored form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JointState {
    pub kind: JointKind,
    pub sources: Vec<usize>,
    pub norms: Vec<Standardise>,
    pub learner: LearnerState,
}

impl JointLink {
    pub fn state(&self) -> JointState {
        JointState {
            kind: self.kind,
            sources: self.sources.clone(),
            norms: self.norms.clone(),
            learner: self.learner.state(),
        }
    }

    /// A stored joint link back, checked against the models' view lengths (`view_dims[m]`)
    /// and the target's spec.
    pub fn restore(
        state: JointState,
        view_dims: &[usize],
        target: &OutputSpec,
    ) -> Result<Self, String> {
        if state.sources.is_empty() || state.sources.len() != state.norms.len() {
            return Err(format!(
                "{} sources and {} standardisations",
                state.sources.len(),
                state.norms.len()
            ));
        }
        for (s, n) in state.sources.iter().zip(&state.norms) {
            n.check()?;
            match view_dims.get(*s) {
                Some(&d) if d == n.len() => {}
                _ => {
                    return Err(format!(
                        "source {s}'s view does not match its standardisation"
                    ));
                }
            }
        }
        // The kind names the learner in reports: a stored pair that disagrees would describe
        // one learner and serve another.
        let kind_matches = match (state.kind, &state.learner) {
            (JointKind::Mlp, LearnerState::Mlp { .. }) => true,
            (JointKind::Ridge(l), LearnerState::Ridge { lambda, .. }) => l == *lambda,
            _ => false,
        };
        if !kind_matches {
            return Err("its learner is not of the kind it names".into());
        }
        let input: usize = state.norms.iter().map(|n| n.len() + 1).sum();
        if state.learner.in_dim() != Some(input) {
            return Err(format!(
                "its learner does not read the {input}-long joint input"
            ));
        }
        Ok(Self {
            kind: state.kind,
            sources: state.sources,
            norms: state.norms,
            learner: state.learner.restore(target)?,
        })
    }
}

/// Flag, then the standardised view (zeros when absent), per source.
fn encode(norms: &[Standardise], views: &[&[f32]], present: &[bool]) -> Vec<f32> {
    let mut x = Vec::with_capacity(norms.iter().map(|n| n.len() + 1).sum());
    for ((n, v), &p) in norms.iter().zip(views).zip(present) {
        if p {
            x.push(1.0);
            x.extend(n.apply(v).into_iter().map(|z| z as f32));
        } else {
            x.push(0.0);
            x.extend(std::iter::repeat_n(0.0, n.len()));
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::TaskKind;

    #[test]
    fn any_subset_of_sources_predicts_without_retraining() {
        // Two sources that each carry the target count (source 1 adds noise-free offset 1).
        let a: Vec<[f32; 2]> = (0..30).map(|i| [(i % 4) as f32, 0.5]).collect();
        let b: Vec<[f32; 1]> = (0..30).map(|i| [(i % 4) as f32 + 1.0]).collect();
        let t: Vec<[f32; 1]> = (0..30).map(|i| [(i % 4) as f32]).collect();
        let views: Vec<Vec<&[f32]>> = (0..30).map(|f| vec![&a[f][..], &b[f][..]]).collect();
        let targets: Vec<&[f32]> = t.iter().map(|v| &v[..]).collect();
        let spec = OutputSpec::vector(1, TaskKind::Count);
        let j = JointLink::fit(
            JointKind::Ridge(0.1),
            &[3, 5],
            &views,
            &targets,
            &spec,
            &TrainParams::default(),
        )
        .unwrap();
        assert_eq!(j.predict(&[(3, &[2.0, 0.5])]), Some(vec![2.0]));
        assert_eq!(j.predict(&[(5, &[4.0])]), Some(vec![3.0]));
        assert_eq!(j.predict(&[(3, &[1.0, 0.5]), (5, &[2.0])]), Some(vec![1.0]));
        assert_eq!(j.predict(&[(7, &[1.0])]), None);

        // Stored and restored, it predicts the same; against other view lengths it is refused.
        let json = serde_json::to_string(&j.state()).unwrap();
        let state: JointState = serde_json::from_str(&json).unwrap();
        let dims = [0, 0, 0, 2, 0, 1];
        let back = JointLink::restore(state.clone(), &dims, &spec).unwrap();
        assert_eq!(back.name(), j.name());
        for present in [
            vec![(3, &[2.0f32, 0.5][..])],
            vec![(5, &[4.0f32][..])],
            vec![(3, &[1.0f32, 0.5][..]), (5, &[2.0f32][..])],
        ] {
            assert_eq!(back.predict(&present), j.predict(&present));
        }
        assert!(JointLink::restore(state.clone(), &[0, 0, 0, 3, 0, 1], &spec).is_err());
        // A kind that is not its learner's is refused with the reason.
        for kind in [JointKind::Mlp, JointKind::Ridge(0.2)] {
            let e = JointLink::restore(
                JointState {
                    kind,
                    ..state.clone()
                },
                &dims,
                &spec,
            )
            .err()
            .unwrap_or_default();
            assert!(e.contains("not of the kind"), "{kind:?}: {e:?}");
        }
    }
}
