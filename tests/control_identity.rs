//! One Algorithm 2 for `mlink run` and `mlink eval`: a short trace of a file is recorded,
//! links are trained from it, and `mlink run --offline` on the same file with those links and
//! `mlink eval` on the trace make the same sequence of (frame, active set, cause) decisions.
//! Needs `scripts/setup.sh` (models, footage, ONNX Runtime).

use mlink::control::Decision;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn mlink(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_mlink"))
        .args(args)
        .output()
        .expect("start mlink");
    assert!(
        out.status.success(),
        "mlink {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn decisions(p: &Path) -> Vec<Decision> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// Three models of which the 30 MB budget holds one: profiling runs them in turns.
fn pipeline(dir: &Path) -> PathBuf {
    let m = root().join("models");
    let footage = root().join("data/footage/vtest.avi");
    assert!(footage.exists(), "run scripts/setup.sh first");
    let text = format!(
        r#"version: 1
cameras:
  - id: lobby
    uri: {footage}
    sampling: {{ fps: 2 }}
models:
  - id: centernet
    path: {m}/centernet.onnx
    adapter: centernet
    head: {{ kind: count, classes: [person] }}
    cost: {{ memory_mb: 25, latency_ms: 90 }}
  - id: nanodet
    path: {m}/nanodet.onnx
    adapter: nanodet
    head: {{ kind: count, classes: [person] }}
    cost: {{ memory_mb: 20, latency_ms: 42 }}
  - id: efficientnet
    path: {m}/efficientnet-lite0.onnx
    adapter: efficientnet_lite
    head: {{ kind: label }}
    cost: {{ memory_mb: 20, latency_ms: 15 }}
scheduler:
  budget: {{ memory_mb: 30 }}
  period_s: 4
  profiling_ratio: 0.3
metrics:
  listen: null
"#,
        footage = footage.display(),
        m = m.display()
    );
    let p = dir.join("pipeline.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn run_offline_and_eval_make_the_same_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let trace = dir.path().join("t.trace");
    let bundle = dir.path().join("t.links");
    let from_run = dir.path().join("run.jsonl");
    let from_eval = dir.path().join("eval.jsonl");
    mlink(&["record", &s(&p), "--out", &s(&trace), "--max-frames", "40"]);
    mlink(&[
        "train",
        &s(&trace),
        "--out",
        &s(&bundle),
        "--epochs",
        "20",
        "--seed",
        "0",
    ]);
    mlink(&[
        "run",
        &s(&p),
        "--offline",
        "--max-frames",
        "40",
        "--reload-check",
        "0",
        "--bundle",
        &s(&bundle),
        "--decisions",
        &s(&from_run),
    ]);
    mlink(&[
        "eval",
        &s(&trace),
        "--bundle",
        &s(&bundle),
        "--budget-mb",
        "30",
        "--period-s",
        "4",
        "--profile-fraction",
        "0.3",
        "--decisions",
        &s(&from_eval),
    ]);
    let run = decisions(&from_run);
    let eval = decisions(&from_eval);
    // 40 frames at 2 fps are 20 s: the start-up selection and one per 4 s period.
    assert_eq!(
        run.iter()
            .filter(|d| d.cause == mlink::control::Cause::Period)
            .count(),
        5,
        "{run:?}"
    );
    assert_eq!(run, eval);
}
