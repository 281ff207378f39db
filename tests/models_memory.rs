//! Load, unload, load again: the memory of an unloaded session goes back.

mod models_support;

use mlink::config::{AdapterKind, HeadConfig};
use mlink::metrics::Metrics;
use mlink::models::{ModelRegistry, rss_bytes, synthetic_frame};
use models_support::*;
use std::sync::Arc;

#[test]
fn unloading_returns_the_memory() {
    let cfg = model(
        "nanodet",
        "nanodet.onnx",
        AdapterKind::Nanodet,
        HeadConfig::Count {
            classes: classes(&["person"]),
        },
    );
    let metrics = Arc::new(Metrics::new());
    let mut reg = ModelRegistry::new(std::slice::from_ref(&cfg), models_dir(), metrics.clone());
    let frame = synthetic_frame(768, 576);
    // A first cycle warms the runtime's process-wide state (thread pools, allocator pools).
    reg.load("nanodet").unwrap().infer(&frame, None).unwrap();
    reg.unload("nanodet").unwrap();
    let baseline = rss_bytes();
    reg.load("nanodet").unwrap().infer(&frame, None).unwrap();
    let loaded = rss_bytes();
    assert!(
        reg.memory_in_use_mb() > 10.0,
        "recorded {} MB",
        reg.memory_in_use_mb()
    );
    reg.unload("nanodet").unwrap();
    let after = rss_bytes();
    reg.load("nanodet").unwrap().infer(&frame, None).unwrap();
    reg.unload("nanodet").unwrap();
    let again = rss_bytes();
    eprintln!("baseline {baseline} loaded {loaded} after {after} again {again}");
    assert!(
        loaded > baseline + 10_000_000,
        "a loaded NanoDet should take memory: {baseline} -> {loaded}"
    );
    for (what, rss) in [("after unload", after), ("after a second cycle", again)] {
        let growth = rss as f64 / baseline as f64 - 1.0;
        assert!(
            growth.abs() <= 0.05,
            "{what}: RSS {rss} vs baseline {baseline} ({:.1}%)",
            growth * 100.0
        );
    }
    assert_eq!(metrics.model_loads.with_label_values(&["nanodet"]).get(), 3);
    assert_eq!(
        metrics.model_unloads.with_label_values(&["nanodet"]).get(),
        3
    );
    assert!(!reg.is_loaded("nanodet"));
    assert!(reg.unload("nanodet").is_err());
}
