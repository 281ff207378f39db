//! Several frames in one call: a model whose input has a free batch dimension runs the
//! frames' images in one ONNX Runtime run, a fixed-batch model one run per frame, and both give
//! what one frame at a time gives. Needs `scripts/setup.sh` (models, ONNX Runtime).

mod models_support;

use mlink::config::{AdapterKind, HeadConfig, ModelConfig};
use mlink::frame::Frame;
use mlink::metrics::Metrics;
use mlink::models::{LoadedModel, synthetic_frame};
use models_support::*;

fn load(cfg: &ModelConfig) -> LoadedModel {
    LoadedModel::load(cfg, &models_dir(), &Metrics::new()).unwrap()
}

/// Three different pictures (the synthetic texture at three sizes).
fn frames() -> Vec<Frame> {
    vec![
        synthetic_frame(640, 480),
        synthetic_frame(320, 240),
        synthetic_frame(768, 576),
    ]
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn a_batched_run_gives_each_frame_what_a_run_on_it_alone_gives() {
    let cfg = model(
        "feat",
        "efficientnet-lite0.onnx",
        AdapterKind::EfficientnetLite,
        HeadConfig::Features,
    );
    let mut m = load(&cfg);
    assert!(
        m.accepts_batch(),
        "EfficientNet-Lite0's input is [N, 3, 224, 224]"
    );
    let frames = frames();
    let alone: Vec<Vec<f32>> = frames
        .iter()
        .map(|f| count_of(&m.infer(f, None).unwrap().value))
        .collect();
    let jobs: Vec<(&Frame, Option<&[mlink::models::Detection]>)> =
        frames.iter().map(|f| (f, None)).collect();
    let batched = m.infer_many(&jobs, 2);
    assert_eq!(batched.len(), 3);
    for (i, (b, a)) in batched.into_iter().zip(&alone).enumerate() {
        let b = count_of(&b.unwrap().value);
        let d = max_difference(&b, a);
        assert!(d < 1e-3, "frame {i}: features differ by {d}");
    }
    // The frames differ, so a mix-up of the batch's rows would show.
    assert!(max_difference(&alone[0], &alone[1]) > 1e-2);
}

#[test]
fn a_fixed_batch_model_runs_frame_by_frame_with_the_same_results() {
    let cfg = model(
        "nanodet",
        "nanodet.onnx",
        AdapterKind::Nanodet,
        HeadConfig::Count {
            classes: classes(&["person"]),
        },
    );
    let mut m = load(&cfg);
    assert!(!m.accepts_batch(), "NanoDet's input is [1, 3, 416, 416]");
    let frames = frames();
    let alone: Vec<_> = frames.iter().map(|f| m.infer(f, None).unwrap()).collect();
    let jobs: Vec<(&Frame, Option<&[mlink::models::Detection]>)> =
        frames.iter().map(|f| (f, None)).collect();
    for (b, a) in m.infer_many(&jobs, 2).into_iter().zip(&alone) {
        let b = b.unwrap();
        assert_eq!(b.value, a.value);
        assert_eq!(b.detections.len(), a.detections.len());
        assert!(max_difference(&b.view, &a.view) < 1e-3);
    }
}

#[test]
fn the_declared_batch_dimension_says_which_models_take_a_batch() {
    let takes = |file: &str, adapter: AdapterKind, head: HeadConfig| {
        load(&model("m", file, adapter, head)).accepts_batch()
    };
    let count = || HeadConfig::Count {
        classes: classes(&["person"]),
    };
    assert!(!takes("centernet.onnx", AdapterKind::Centernet, count()));
    assert!(!takes(
        "movenet-multipose.onnx",
        AdapterKind::MovenetMultipose,
        count()
    ));
    assert!(takes(
        "efficientnet-lite0.onnx",
        AdapterKind::EfficientnetLite,
        HeadConfig::Label { groups: vec![] }
    ));
}
