//! Fusion of links that predict the same target (paper sections 4.3 and 6.5), through the
//! multi-source ensemble of section 3.5 ([`Ensemble`]: per-dimension softmax weights over the
//! members' pre-activation outputs, activated by the target's task).
//!
//! - *Local-global fusion*: a link `g^L` trained on this site's samples and the global link
//!   `g^G` aggregated across sites, both `source -> target`, fused with weights trained on
//!   the local samples. Both members read the same source output.
//! - *Cross-task fusion*: links from models of different tasks to one target (e.g. object
//!   counting and person counting to action classification); each member reads its own
//!   source's output.
//!
//! The members are any [`LinkNet`]s (from different bundles, with their own standardisations);
//! a [`Fusion`] holds only the weights, so the caller keeps the members where they live.
//!
//! After fitting, the fused prediction is compared with each member alone on the fitting
//! samples; when one member alone scores better there (the *dominance* case of section 5:
//! one source carries all the information and mixing only adds noise), the weights are set to
//! select it. Fusion thus never does worse than its best member on the samples it was fitted
//! on.

use crate::link::LinkNet;
use crate::link::ensemble::{Ensemble, EnsembleSample};
use crate::output::{OutputForm, OutputSpec, OutputValue, try_mean_score};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[derive(Debug, thiserror::Error)]
pub enum FusionError {
    #[error("fusion needs a vector target; {0:?} is not one")]
    NotVector(OutputSpec),
    #[error("fusion needs at least two member links, not {0}")]
    TooFewMembers(usize),
    #[error("sample {sample}: {got} inputs for {members} member links")]
    Arity {
        sample: usize,
        got: usize,
        members: usize,
    },
    #[error("no sample has an input for any member link")]
    NoSamples,
    #[error("member link {member}: {source}")]
    Link {
        member: usize,
        #[source]
        source: crate::link::LinkError,
    },
    #[error("no member link has an input")]
    NoInput,
}

/// One fitting sample: each member's input (None when its source did not run) and the exact
/// target output.
pub struct FusionSample<'a> {
    pub inputs: Vec<Option<&'a OutputValue>>,
    pub target: &'a OutputValue,
}

/// Training settings of the fusion weights.
#[derive(Clone, Debug, PartialEq)]
pub struct FusionParams {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f32,
    pub seed: u64,
}

impl Default for FusionParams {
    fn default() -> Self {
        Self {
            epochs: 200,
            batch_size: 16,
            learning_rate: 0.05,
            seed: 0,
        }
    }
}

/// Trained fusion weights over `members` links to a target of `spec`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fusion {
    pub spec: OutputSpec,
    ensemble: Ensemble,
    /// Set when one member dominated on the fitting samples and was selected alone.
    pub selected: Option<usize>,
}

/// Softmax logit given to members a dominating member replaces: their weight is e^-40, i.e. 0
/// in f32 arithmetic next to the selected one.
const DESELECTED: f32 = -40.0;

impl Fusion {
    /// Fits the weights (eq. 3) on `samples`.
    pub fn fit(
        spec: &OutputSpec,
        members: &[&LinkNet],
        samples: &[FusionSample<'_>],
        params: &FusionParams,
    ) -> Result<Self, FusionError> {
        let dim = match spec.form {
            OutputForm::Vector { len } => len,
            OutputForm::Sequence { .. } => return Err(FusionError::NotVector(spec.clone())),
        };
        if members.len() < 2 {
            return Err(FusionError::TooFewMembers(members.len()));
        }
        let mut data: Vec<EnsembleSample> = Vec::with_capacity(samples.len());
        let mut targets = Vec::with_capacity(samples.len());
        for (n, s) in samples.iter().enumerate() {
            let OutputValue::Vector(t) = s.target else {
                continue;
            };
            let parts = logits_of(members, &s.inputs, n)?;
            if parts.iter().any(Option::is_some) {
                data.push((parts, t.clone()));
                targets.push(s.target);
            }
        }
        if data.is_empty() {
            return Err(FusionError::NoSamples);
        }
        let mut ensemble = Ensemble::new(0, (0..members.len()).collect(), dim);
        let mut rng = StdRng::seed_from_u64(params.seed ^ 0xf0_5e);
        ensemble.fit(
            spec.task,
            &data,
            params.epochs,
            params.batch_size,
            params.learning_rate,
            &mut rng,
        );
        let mut fusion = Self {
            spec: spec.clone(),
            ensemble,
            selected: None,
        };
        // Dominance guard: keep the fused weights unless one member alone does better.
        let fused = fusion.mean_score(&data, &targets, None)?;
        let mut best: Option<(usize, f64)> = None;
        for m in 0..members.len() {
            let s = fusion.mean_score(&data, &targets, Some(m))?;
            if s > fused && best.is_none_or(|(_, b)| s > b) {
                best = Some((m, s));
            }
        }
        if let Some((m, _)) = best {
            for (k, row) in fusion.ensemble.logit_weights.iter_mut().enumerate() {
                row.iter_mut()
                    .for_each(|w| *w = if k == m { 0.0 } else { DESELECTED });
            }
            fusion.selected = Some(m);
        }
        Ok(fusion)
    }

    /// Mean score on the fitting data, of the fusion or of member `only` alone.
    fn mean_score(
        &self,
        data: &[EnsembleSample],
        targets: &[&OutputValue],
        only: Option<usize>,
    ) -> Result<f64, FusionError> {
        let usable = data.iter().zip(targets).filter_map(|((parts, _), exact)| {
            let present: Vec<(usize, &[f32])> = parts
                .iter()
                .enumerate()
                .filter(|(k, _)| only.is_none_or(|m| m == *k))
                .filter_map(|(k, z)| z.as_deref().map(|z| (k, z)))
                .collect();
            (!present.is_empty()).then_some((present, *exact))
        });
        let mean = try_mean_score(
            &self.spec,
            usable.map(|(present, exact)| {
                let v = self
                    .ensemble
                    .predict(self.spec.task, &present)
                    .map_err(|source| FusionError::Link { member: 0, source })?;
                Ok((OutputValue::Vector(v), exact))
            }),
        )?;
        Ok(mean.map_or(0.0, |m| m.score))
    }

    /// The fused prediction from the members' inputs (absent members are left out and the
    /// weights of the others renormalised).
    pub fn predict(
        &self,
        members: &[&LinkNet],
        inputs: &[Option<&OutputValue>],
    ) -> Result<OutputValue, FusionError> {
        let parts = logits_of(members, inputs, 0)?;
        let present: Vec<(usize, &[f32])> = parts
            .iter()
            .enumerate()
            .filter_map(|(k, z)| z.as_deref().map(|z| (k, z)))
            .collect();
        if present.is_empty() {
            return Err(FusionError::NoInput);
        }
        let v = self
            .ensemble
            .predict(self.spec.task, &present)
            .map_err(|source| FusionError::Link { member: 0, source })?;
        Ok(OutputValue::Vector(v))
    }

    /// The normalised weight of each member per output dimension (all members present).
    pub fn weights(&self) -> Vec<Vec<f32>> {
        let w = &self.ensemble.logit_weights;
        let dim = w.first().map_or(0, Vec::len);
        let mut out = vec![vec![0.0; dim]; w.len()];
        for d in 0..dim {
            let m = w.iter().map(|r| r[d]).fold(f32::NEG_INFINITY, f32::max);
            let norm: f32 = w.iter().map(|r| (r[d] - m).exp()).sum();
            for (k, r) in w.iter().enumerate() {
                out[k][d] = (r[d] - m).exp() / norm;
            }
        }
        out
    }

    /// Each member's weight averaged over the output dimensions.
    pub fn mean_weights(&self) -> Vec<f32> {
        self.weights()
            .iter()
            .map(|r| r.iter().sum::<f32>() / r.len().max(1) as f32)
            .collect()
    }
}

fn logits_of(
    members: &[&LinkNet],
    inputs: &[Option<&OutputValue>],
    sample: usize,
) -> Result<Vec<Option<Vec<f32>>>, FusionError> {
    if inputs.len() != members.len() {
        return Err(FusionError::Arity {
            sample,
            got: inputs.len(),
            members: members.len(),
        });
    }
    members
        .iter()
        .zip(inputs)
        .enumerate()
        .map(|(k, (net, x))| {
            x.map(|x| net.logits(x))
                .transpose()
                .map_err(|source| FusionError::Link { member: k, source })
        })
        .collect()
}
