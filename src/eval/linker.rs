//! The replay's links: links and ensembles trained on the training part of a trace, in the
//! trace's model order.

use super::EvalError;
use super::problem::Problem;
use crate::link::{LinkBundle, Sample, TrainParams};
use crate::output::{OutputSpec, OutputValue};

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
