//! Pipeline-file pieces shared by the tests that start the engine: the model entries of the
//! real detectors and classifier, written once so every test declares the same costs and heads.

use std::path::Path;

/// The `models:` entries (YAML, indented for a top-level `models:` list) of the named models,
/// with their files under `models_dir`. Known ids: `centernet`, `nanodet`, `movenet` (person
/// counts) and `efficientnet` (label).
pub fn model_entries(models_dir: &Path, ids: &[&str]) -> String {
    let m = models_dir.display();
    ids.iter()
        .map(|id| {
            let (file, adapter, head, memory_mb, latency_ms) = match *id {
                "centernet" => ("centernet.onnx", "centernet", PERSONS, 25, 90),
                "nanodet" => ("nanodet.onnx", "nanodet", PERSONS, 20, 42),
                "movenet" => ("movenet-multipose.onnx", "movenet_multipose", PERSONS, 25, 226),
                "efficientnet" => ("efficientnet-lite0.onnx", "efficientnet_lite", "{ kind: label }", 20, 15),
                other => panic!("no test model entry for `{other}`"),
            };
            format!(
                "  - id: {id}\n    path: {m}/{file}\n    adapter: {adapter}\n    head: {head}\n    cost: {{ memory_mb: {memory_mb}, latency_ms: {latency_ms} }}\n"
            )
        })
        .collect()
}

const PERSONS: &str = "{ kind: count, classes: [person] }";
