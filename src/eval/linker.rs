//! The replay's view of trained links: predict one target from the exact outputs of a set of
//! sources, with links and ensembles trained on the training part of a trace.

use super::EvalError;
use super::problem::Problem;
use crate::link::{LinkBundle, Sample, TrainParams};
use crate::output::{OutputSpec, OutputValue};

/// Predictions of non-executed models from executed ones.
pub trait Linker {
    /// The prediction of model `target` from `sources` (model index, exact output); with one
    /// source this is the single link `g_{source,target}`, with more the ensemble
    /// `h_{A,target}`. `None` when no prediction can be made.
    fn predict(&self, target: usize, sources: &[(usize, &OutputValue)]) -> Option<OutputValue>;
}

impl Linker for LinkBundle {
    fn predict(&self, target: usize, sources: &[(usize, &OutputValue)]) -> Option<OutputValue> {
        LinkBundle::predict(self, target, sources)
            .ok()
            .map(|p| p.value)
    }
}

/// Trains every link and ensemble on `samples` (one complete output row per training frame),
/// with the pipeline defaults and the given seed. The bundle's own validation split is kept
/// (its validation scores are not used by the replay, which measures on profiling frames).
pub fn train(
    problem: &Problem,
    samples: &[&[OutputValue]],
    seed: u64,
) -> Result<Box<dyn Linker>, EvalError> {
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
    Ok(Box::new(bundle))
}

/// Share of the training frames the bundle holds out for its own validation scores.
const VALIDATION_SPLIT: f64 = 0.2;
