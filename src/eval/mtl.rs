//! The MTL baseline (the paper's Table V): one multi-task network with a shared convolutional
//! backbone and one head per model ([`super::pixelnet`]), trained on the thumbnails of the
//! training part to reproduce every model's exact output, then run on every test frame in place
//! of all the models. Its cost is its own: the measured time of its forward pass on each test
//! frame (on this machine, in this build) and its parameter memory. It needs a trace recorded
//! with thumbnails (`mlink record --thumbnails WxH`).

use super::EvalError;
use super::pixelnet::{NetConfig, PixelNet};
use super::replay::{Outcome, Replay};
use super::stats::mean;
use crate::output::OutputValue;
use std::time::Instant;

/// The trained multi-task network and what it was trained on.
pub struct Mtl {
    pub net: PixelNet,
    pub train_frames: usize,
}

/// Trains the multi-task network on the replay's training part.
pub fn train(replay: &Replay, cfg: &NetConfig) -> Result<Mtl, EvalError> {
    let problem = replay.problem();
    let size = problem
        .thumbnail
        .filter(|_| problem.has_thumbnails())
        .ok_or_else(|| {
            EvalError::Invalid(
            "the trace holds no frame thumbnails; record it with `mlink record --thumbnails 32x32`"
                .into(),
        )
        })?;
    let frames = &problem.frames[replay.train_range()];
    let thumbs: Vec<&[u8]> = frames
        .iter()
        .filter_map(|f| f.thumbnail.as_deref())
        .collect();
    let targets: Vec<Vec<&OutputValue>> =
        frames.iter().map(|f| f.outputs.iter().collect()).collect();
    let specs: Vec<_> = problem.models.iter().map(|m| m.spec.clone()).collect();
    let ids: Vec<String> = problem.models.iter().map(|m| m.id.clone()).collect();
    let net = PixelNet::train(
        (size.width as usize, size.height as usize),
        &thumbs,
        &targets,
        &specs,
        &ids,
        cfg,
    )?;
    Ok(Mtl {
        net,
        train_frames: frames.len(),
    })
}

/// Serves the test part with the network alone: no model runs, every output is the network's.
pub fn run(replay: &Replay, mtl: &Mtl) -> Result<Outcome, EvalError> {
    let problem = replay.problem();
    let k = problem.n_models();
    let mut per_model = vec![0.0; k];
    let mut ms = 0.0;
    let test = replay.test_range();
    for t in test.clone() {
        let frame = &problem.frames[t];
        let thumb = frame
            .thumbnail
            .as_deref()
            .ok_or_else(|| EvalError::Invalid(format!("frame {} holds no thumbnail", frame.seq)))?;
        let start = Instant::now();
        let predicted = mtl.net.predict(thumb)?;
        ms += start.elapsed().as_secs_f64() * 1e3;
        for (j, p) in predicted.iter().enumerate() {
            per_model[j] += super::score(&problem.models[j].spec, p, &frame.outputs[j]);
        }
    }
    let n = test.len().max(1) as f64;
    let model_accuracy: Vec<f64> = per_model.iter().map(|s| s / n).collect();
    Ok(Outcome {
        accuracy: mean(model_accuracy.iter().copied()),
        model_accuracy,
        ms_per_frame: ms / n,
        executions_saved: 1.0,
        active: Vec::new(),
        detail: format!(
            "shared 3-layer convolutional backbone and {k} heads, {} parameters ({:.3} MB), trained on {} \
             thumbnails; time measured per test frame",
            mtl.net.param_count(),
            mtl.net.memory_mb(),
            mtl.train_frames
        ),
        decisions: Vec::new(),
        link_retrainings: 0,
        adapted_links: Vec::new(),
    })
}
