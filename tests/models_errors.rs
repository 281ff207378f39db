//! Bad models and a missing runtime give clear errors, never panics.

mod models_support;

use mlink::config::{AdapterKind, HeadConfig};
use mlink::metrics::Metrics;
use mlink::models::{LoadedModel, ModelError};
use models_support::*;

fn load_err(
    dir: &std::path::Path,
    file: &str,
    adapter: AdapterKind,
    head: HeadConfig,
) -> ModelError {
    match LoadedModel::load(&model("m", file, adapter, head), dir, &Metrics::new()) {
        Ok(_) => panic!("loading {file} should fail"),
        Err(e) => e,
    }
}

fn count() -> HeadConfig {
    HeadConfig::Count {
        classes: classes(&["person"]),
    }
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_err(dir.path(), "nothing.onnx", AdapterKind::Centernet, count());
    assert!(matches!(e, ModelError::MissingFile { .. }), "{e:?}");
    assert!(
        e.to_string().contains("nothing.onnx") && e.to_string().contains("does not exist"),
        "{e}"
    );
}

#[test]
fn truncated_and_corrupt_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(models_dir().join("blazeface.onnx")).unwrap();
    write(dir.path(), "half.onnx", "");
    std::fs::write(dir.path().join("half.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(
        dir.path(),
        "half.onnx",
        AdapterKind::Blazeface,
        HeadConfig::Count {
            classes: classes(&["face"]),
        },
    );
    assert!(
        matches!(e, ModelError::BadFile { .. } | ModelError::Session { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("half.onnx"), "{e}");

    write(
        dir.path(),
        "junk.onnx",
        "this is not an ONNX model, just text pretending to be one",
    );
    let e = load_err(
        dir.path(),
        "junk.onnx",
        AdapterKind::Blazeface,
        HeadConfig::Count {
            classes: classes(&["face"]),
        },
    );
    assert!(e.to_string().contains("junk.onnx"), "{e}");
}

#[test]
fn a_model_that_does_not_fit_its_adapter_says_why() {
    // BlazeFace's file declared as CenterNet.
    let e = load_err(
        &models_dir(),
        "blazeface.onnx",
        AdapterKind::Centernet,
        count(),
    );
    assert!(matches!(e, ModelError::Mismatch { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("centernet") && msg.contains("[1, N, 6]"),
        "{msg}"
    );
    // The gender classifier declared as EfficientNet.
    let e = load_err(
        &models_dir(),
        "gender.onnx",
        AdapterKind::EfficientnetLite,
        HeadConfig::Probs { groups: vec![] },
    );
    assert!(e.to_string().contains("[N, 1280]"), "{e}");
}

#[test]
fn a_head_that_does_not_fit_the_family_is_rejected_without_loading() {
    let cfg = model(
        "m",
        "centernet.onnx",
        AdapterKind::Centernet,
        HeadConfig::Probs { groups: vec![] },
    );
    let e = mlink::models::head_spec(&cfg, &models_dir()).unwrap_err();
    assert!(e.to_string().contains("probs"), "{e}");
    let cfg = model(
        "g",
        "gender.onnx",
        AdapterKind::FaceAttribute,
        HeadConfig::Probs { groups: vec![] },
    );
    let spec = mlink::models::head_spec(&cfg, &models_dir()).unwrap();
    assert_eq!(
        spec,
        mlink::output::OutputSpec::vector(2, mlink::output::TaskKind::SingleLabel)
    );
}

#[test]
fn missing_runtime_library_is_a_clear_error_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        models_dir().join("blazeface.onnx"),
        dir.path().join("blazeface.onnx"),
    )
    .unwrap();
    let p = write(
        dir.path(),
        "p.yaml",
        "version: 1\ncameras:\n  - id: cam\n    uri: test:smpte\nmodels:\n  - id: faces\n    path: blazeface.onnx\n    adapter: blazeface\n    head: {kind: count, classes: [face]}\nscheduler:\n  budget: {memory_mb: 100}\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlink"))
        .args(["profile", p.to_str().unwrap()])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ONNX Runtime library not found")
            && stderr.contains("/nonexistent/libonnxruntime.so"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn profile_measures_every_model_of_a_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let models = models_dir();
    let p = write(
        dir.path(),
        "p.yaml",
        &format!(
            "version: 1\ncameras:\n  - id: cam\n    uri: test:smpte\n    width: 320\n    height: 240\nmodels:\n  - id: faces\n    path: {m}/blazeface.onnx\n    adapter: blazeface\n    head: {{kind: count, classes: [face]}}\n  - id: gender\n    path: {m}/gender.onnx\n    adapter: face_attribute\n    head: {{kind: probs}}\n    crops_from: faces\n    cost: {{memory_mb: 3, latency_ms: 1.5}}\nscheduler:\n  budget: {{memory_mb: 100}}\n",
            m = models.display()
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlink"))
        .args(["profile", p.to_str().unwrap(), "--json", "--runs", "3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["models"].as_array().unwrap();
    assert_eq!(rows[0]["model"], "faces");
    assert_eq!(rows[0]["source"], "measured");
    assert!(rows[0]["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(rows[0]["memory_mb"].as_f64().unwrap() >= 0.0);
    assert_eq!(rows[1]["source"], "declared");
    assert_eq!(rows[1]["latency_ms"], 1.5);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlink"))
        .args(["bench", "models", p.to_str().unwrap(), "--runs", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("faces") && text.contains("gender") && text.contains("pre+post"),
        "{text}"
    );
}
