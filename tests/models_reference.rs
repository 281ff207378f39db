//! The Rust adapters against the reference computed with Python ONNX Runtime on the same
//! frames (tests/fixtures/models/reference.json, made by models/make_reference.py): raw
//! outputs within 1e-4 (relative to the value's magnitude when above 1), counts exactly.

mod models_support;

use mlink::config::{AdapterKind, HeadConfig};
use mlink::metrics::Metrics;
use mlink::models::LoadedModel;
use models_support::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn reference() -> Value {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/models/reference.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format_version"], 1);
    v
}

fn adapter_of(model: &str) -> (AdapterKind, &'static str, HeadConfig) {
    let all = || HeadConfig::Count {
        classes: mlink::models::classes::COCO_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    match model {
        "centernet" => (AdapterKind::Centernet, "centernet.onnx", all()),
        "nanodet" => (AdapterKind::Nanodet, "nanodet.onnx", all()),
        "movenet-multipose" => (
            AdapterKind::MovenetMultipose,
            "movenet-multipose.onnx",
            HeadConfig::Count {
                classes: classes(&["person"]),
            },
        ),
        "blazeface" => (
            AdapterKind::Blazeface,
            "blazeface.onnx",
            HeadConfig::Count {
                classes: classes(&["face"]),
            },
        ),
        "efficientnet-lite0" => (
            AdapterKind::EfficientnetLite,
            "efficientnet-lite0.onnx",
            HeadConfig::Label { groups: vec![] },
        ),
        other => panic!("unknown model {other}"),
    }
}

fn close(a: f32, b: f64) -> bool {
    (f64::from(a) - b).abs() <= 1e-4 * b.abs().max(1.0)
}

#[test]
fn adapters_reproduce_the_python_reference() {
    let r = reference();
    let cases = r["cases"].as_array().unwrap();
    assert!(cases.len() >= 11);
    let mut checked = 0;
    for c in cases {
        let model = c["model"].as_str().unwrap();
        let footage_name = c["footage"].as_str().unwrap();
        let (w, h) = (
            c["width"].as_u64().unwrap() as u32,
            c["height"].as_u64().unwrap() as u32,
        );
        let frame = decode(footage_name, &[c["frame"].as_u64().unwrap() as usize], w, h).remove(0);
        let sha = format!("{:x}", Sha256::digest(&frame.rgb[..]));
        assert_eq!(
            sha,
            c["frame_sha256"].as_str().unwrap(),
            "{footage_name}: the decoder gives a different frame than when the reference was made"
        );
        let (adapter, file, head) = adapter_of(model);
        let mut cfg = model_cfg(model, file, adapter, head);
        cfg.min_score = r["min_score"].as_f64().unwrap() as f32;
        let mut m = LoadedModel::load(&cfg, &models_dir(), &Metrics::new()).unwrap();
        let raw = m.run_raw(&frame, None).unwrap();
        let want = c["outputs"].as_array().unwrap();
        assert_eq!(raw.len(), want.len(), "{model}: number of outputs");
        for (got, want) in raw.iter().zip(want) {
            let name = want["name"].as_str().unwrap();
            assert_eq!(
                got.data.len() as u64,
                want["len"].as_u64().unwrap(),
                "{model} {name}: length"
            );
            let step = want["step"].as_u64().unwrap() as usize;
            for (i, v) in want["values"].as_array().unwrap().iter().enumerate() {
                let (g, v) = (got.data[i * step], v.as_f64().unwrap());
                assert!(
                    close(g, v),
                    "{model} {name}[{}]: {g} vs reference {v}",
                    i * step
                );
            }
            let sum: f64 = got.data.iter().map(|&x| f64::from(x)).sum();
            let ref_sum = want["sum"].as_f64().unwrap();
            assert!(
                (sum - ref_sum).abs()
                    <= 1e-4 * (got.data.len() as f64).sqrt().max(1.0) * ref_sum.abs().max(1.0),
                "{model} {name}: sum {sum} vs {ref_sum}"
            );
        }
        let inf = m.infer(&frame, None).unwrap();
        match c["count"].as_u64() {
            Some(n) => assert_eq!(
                count_of(&inf.value),
                vec![n as f32],
                "{model} {footage_name}#{}: count",
                c["frame"]
            ),
            None => {
                let v = count_of(&inf.value);
                assert_eq!(
                    v.iter().position(|&x| x == 1.0),
                    c["top1"].as_u64().map(|t| t as usize)
                );
            }
        }
        checked += 1;
    }
    assert_eq!(checked, cases.len());
}

fn model_cfg(
    id: &str,
    file: &str,
    adapter: AdapterKind,
    head: HeadConfig,
) -> mlink::config::ModelConfig {
    model(id, file, adapter, head)
}
