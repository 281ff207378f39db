//! The replay's view of trained links: predict one target from the exact outputs of a set of
//! sources, with links and ensembles trained on the training part of a trace.
//!
//! Two kinds ([`LinkLearners`]): the paper's link bundle (MLPs on the sources' heads and the
//! weighted ensemble), and the few-sample links over the sources' link views
//! ([`ViewLinks`]: a learner chosen per link on a held-out block, joint multi-source links).

use super::EvalError;
use super::problem::{FrameRow, Problem};
use crate::link::view_links::{Combiner, ModelInput, ViewLinks};
use crate::link::{LinkBundle, Sample, TrainParams};
use crate::output::{OutputSpec, OutputValue};
use serde::Serialize;

/// Which links the replay trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LinkLearners {
    /// The paper's: an MLP per link on the source's head, the weighted ensemble.
    Paper,
    /// Per link the best of the paper's MLP and small-sample learners (ridge, nearest
    /// neighbours, on the link view or the head) on a held-out block in time; per target the
    /// best link or a joint multi-source link. The paper's where a head is a token sequence.
    #[default]
    Chosen,
}

/// Predictions of non-executed models from executed ones.
pub trait Linker {
    /// The prediction of model `target` from `sources` (model index, exact output); with one
    /// source this is the single link `g_{source,target}`, with more the ensemble
    /// `h_{A,target}`. `None` when no prediction can be made.
    fn predict(&self, target: usize, sources: &[(usize, &OutputValue)]) -> Option<OutputValue>;

    /// The prediction of `target` on a recorded frame from the models `sources` (which ran
    /// on it): links that read more than the heads (the link views) override this.
    fn predict_frame(
        &self,
        target: usize,
        sources: &[usize],
        frame: &FrameRow,
    ) -> Option<OutputValue> {
        let inputs: Vec<(usize, &OutputValue)> =
            sources.iter().map(|&i| (i, &frame.outputs[i])).collect();
        self.predict(target, &inputs)
    }

    /// What each link learned with, for reports (`source -> target: learner (held-out
    /// score)`, then per target its multi-source combiner); empty for the paper's links.
    fn describe(&self, _models: &[String]) -> Vec<String> {
        Vec::new()
    }

    /// The prediction from the sources' heads and, where known, every model's link view
    /// (`views[m]`; empty when unknown).
    fn predict_viewed(
        &self,
        target: usize,
        sources: &[(usize, &OutputValue)],
        views: &[Vec<f32>],
    ) -> Option<OutputValue> {
        let _ = views;
        self.predict(target, sources)
    }

    /// The score of predicting `target` from `sources` on held-out training frames, when
    /// known (the scheduler's prior before any profiling frame).
    fn held_out(&self, _sources: &[usize], _target: usize) -> Option<f64> {
        None
    }

    /// Numbers the link `source -> target` holds (its memory at 4 bytes each), when known.
    fn link_parameters(&self, _source: usize, _target: usize) -> Option<usize> {
        None
    }
}

impl Linker for ViewLinks {
    fn predict(&self, target: usize, sources: &[(usize, &OutputValue)]) -> Option<OutputValue> {
        // Without views the heads stand in for them.
        let inputs: Vec<(usize, ModelInput<'_>)> = sources
            .iter()
            .filter_map(|(i, v)| match v {
                OutputValue::Vector(x) => Some((*i, ModelInput { view: x, head: x })),
                OutputValue::Tokens(_) => None,
            })
            .collect();
        ViewLinks::predict(self, target, &inputs).map(OutputValue::Vector)
    }

    fn predict_frame(
        &self,
        target: usize,
        sources: &[usize],
        frame: &FrameRow,
    ) -> Option<OutputValue> {
        let inputs: Vec<(usize, ModelInput<'_>)> = sources
            .iter()
            .filter_map(|&i| match &frame.outputs[i] {
                OutputValue::Vector(head) => Some((
                    i,
                    ModelInput {
                        view: &frame.views[i],
                        head,
                    },
                )),
                OutputValue::Tokens(_) => None,
            })
            .collect();
        ViewLinks::predict(self, target, &inputs).map(OutputValue::Vector)
    }

    fn predict_viewed(
        &self,
        target: usize,
        sources: &[(usize, &OutputValue)],
        views: &[Vec<f32>],
    ) -> Option<OutputValue> {
        let inputs: Vec<(usize, ModelInput<'_>)> = sources
            .iter()
            .filter_map(|(i, v)| match v {
                OutputValue::Vector(head) => Some((
                    *i,
                    ModelInput {
                        view: views.get(*i).map_or(head.as_slice(), Vec::as_slice),
                        head,
                    },
                )),
                OutputValue::Tokens(_) => None,
            })
            .collect();
        ViewLinks::predict(self, target, &inputs).map(OutputValue::Vector)
    }

    fn held_out(&self, sources: &[usize], target: usize) -> Option<f64> {
        ViewLinks::held_out(self, sources, target)
    }

    fn link_parameters(&self, source: usize, target: usize) -> Option<usize> {
        ViewLinks::link_parameters(self, source, target)
    }

    fn describe(&self, models: &[String]) -> Vec<String> {
        let name = |m: usize| models.get(m).map_or("?", String::as_str);
        let mut out: Vec<String> = self
            .choices()
            .iter()
            .map(|c| {
                format!(
                    "{} -> {}: {}{}",
                    name(c.source),
                    name(c.target),
                    c.learner,
                    c.held_out
                        .map(|s| format!(" (held out {:.1}%)", 100.0 * s))
                        .unwrap_or_default()
                )
            })
            .collect();
        for (j, c) in self.combiners().iter().enumerate() {
            out.push(format!(
                "several sources -> {}: {}",
                name(j),
                match c {
                    Combiner::BestLink => "the best link".to_string(),
                    Combiner::Joint(n) => n.clone(),
                }
            ));
        }
        out
    }
}

/// The few-sample links over the views (`learners` = chosen) trained on the training frames
/// `frames` (time order), with the pipeline defaults and the given seed; None for the paper's
/// links, or where a head is a token sequence (the paper's bundle serves those).
pub fn train_chosen(
    problem: &Problem,
    frames: &[FrameRow],
    seed: u64,
    learners: LinkLearners,
) -> Option<ViewLinks> {
    let specs: Vec<OutputSpec> = problem.models.iter().map(|m| m.spec.clone()).collect();
    if learners != LinkLearners::Chosen || !ViewLinks::supports(&specs) {
        return None;
    }
    let inputs: Vec<Vec<ModelInput<'_>>> = frames
        .iter()
        .map(|f| {
            f.outputs
                .iter()
                .zip(&f.views)
                .map(|(o, v)| ModelInput {
                    view: v,
                    head: match o {
                        OutputValue::Vector(h) => h,
                        OutputValue::Tokens(_) => &[],
                    },
                })
                .collect()
        })
        .collect();
    let params = TrainParams {
        seed,
        ..TrainParams::default()
    };
    Some(ViewLinks::train(&specs, &inputs, &params))
}

/// Trains every link and ensemble on `samples` (one complete output row per training frame),
/// with the pipeline defaults and the given seed. The bundle's own validation split is kept
/// (its validation scores are the scheduler's prior before the first profiling frames).
pub fn train(
    problem: &Problem,
    samples: &[&[OutputValue]],
    seed: u64,
) -> Result<LinkBundle, EvalError> {
    let models: Vec<(String, OutputSpec)> = problem
        .models
        .iter()
        .map(|m| (m.id.clone(), m.spec.clone()))
        .collect();
    let rows: Vec<Sample> = samples
        .iter()
        .map(|s| Sample::complete(s.iter().cloned()))
        .collect();
    let params = TrainParams {
        seed,
        ..TrainParams::default()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let bundle = LinkBundle::train(&models, &rows, &params, VALIDATION_SPLIT, threads, &|_| {})
        .map_err(|e| EvalError::Links(e.to_string()))?;
    Ok(bundle)
}

/// Share of the training frames the bundle holds out for its own validation scores.
const VALIDATION_SPLIT: f64 = 0.2;
