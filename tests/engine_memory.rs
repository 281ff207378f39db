//! The memory budget held in real memory, not only in declared costs: the engine runs three
//! models under a budget that holds one, loading and unloading them in turns every period,
//! and the host memory (RSS) each session measurably took at its creation, summed over the
//! sessions loaded at once, stays within the budget plus a stated tolerance. One engine in
//! this process (its own test binary), so no other test's allocations land in the RSS.
//! Needs `scripts/setup.sh` (models, footage, ONNX Runtime).

mod pipeline_support;

use mlink::engine::{self, RunOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Page and allocator granularity and the runtime's per-session buffers, over the declared
/// costs the budget is planned with.
const TOLERANCE: f64 = 0.2;

#[test]
fn the_sessions_loaded_at_once_take_no_more_real_memory_than_the_budget() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let footage = root.join("data/footage/vtest.avi");
    assert!(
        footage.exists(),
        "data/footage/vtest.avi is missing: run scripts/setup.sh"
    );
    let entries =
        pipeline_support::model_entries(&root.join("models"), &["centernet", "nanodet", "movenet"]);
    let budget_mb = 30.0;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"version: 1
cameras:
  - id: lobby
    uri: {footage}
    sampling: {{ fps: 5 }}
models:
{entries}links:
  warmup_samples: 12
  epochs: 30
  seed: 3
scheduler:
  budget: {{ memory_mb: {budget_mb} }}
  period_s: 2
  profiling_ratio: 0.2
metrics:
  listen: null
"#,
        footage = footage.display()
    );
    let p = dir.path().join("pipeline.yaml");
    std::fs::write(&p, text).unwrap();
    let opts = RunOptions {
        max_frames: Some(60),
        offline: true,
        links_out: Some(dir.path().join("links.bundle")),
        ..RunOptions::default()
    };
    let s = engine::run(&p, opts, Arc::new(AtomicBool::new(false))).expect("engine run");
    eprintln!(
        "peak measured session memory {:.1} MB, accounted {:.1} MB, budget {budget_mb} MB",
        s.peak_measured_memory_mb, s.peak_memory_mb
    );
    assert!(s.profiling_frames > 0, "the models ran in turns: {s:?}");
    assert!(
        s.peak_measured_memory_mb > 1.0,
        "no memory measured at the loads: {s:?}"
    );
    assert!(
        s.peak_measured_memory_mb <= budget_mb * (1.0 + TOLERANCE),
        "the sessions loaded at once took {:.1} MB of RSS, over the {budget_mb} MB budget + {}%",
        s.peak_measured_memory_mb,
        TOLERANCE * 100.0
    );
}
