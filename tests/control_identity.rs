//! One Algorithm 2 for `mlink run` and `mlink eval`: a short trace of a file is recorded,
//! links are trained from it, and `mlink run --offline` on the same file with those links and
//! `mlink eval` on the trace make the same sequence of (frame, active set, cause) decisions,
//! with the bundle's view links serving on both sides; under the hybrid policy also the same
//! plans (every model's mode, trigger feature and threshold).
//! Needs `scripts/setup.sh` (models, footage, ONNX Runtime).

mod pipeline_support;

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
fn pipeline(dir: &Path, policy: &str) -> PathBuf {
    let m = root().join("models");
    let footage = root().join("data/footage/vtest.avi");
    assert!(footage.exists(), "run scripts/setup.sh first");
    let mut model_entries =
        pipeline_support::model_entries(&m, &["centernet", "nanodet", "efficientnet"]);
    if policy == "hybrid" {
        // A costly classifier in the paper's set leaves the hybrid compute to trigger the
        // counters in turns: the plans then hold triggers, thresholds and turns.
        model_entries = model_entries.replace(
            "{ memory_mb: 20, latency_ms: 15 }",
            "{ memory_mb: 20, latency_ms: 900 }",
        );
    }
    let text = format!(
        r#"version: 1
cameras:
  - id: lobby
    uri: {footage}
    sampling: {{ fps: 2 }}
models:
{model_entries}scheduler:
  policy: {policy}
  budget: {{ memory_mb: 30 }}
  period_s: 4
  profiling_ratio: 0.3
links:
  # Under the hybrid, the frames an engine started from links profiles for its curves.
  warmup_samples: 8
metrics:
  listen: null
"#,
        footage = footage.display()
    );
    let p = dir.join("pipeline.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Records 40 frames, trains links on them, and returns the decisions of `mlink run` and of
/// `mlink eval` with those links under `policy`.
fn decisions_of_run_and_eval(policy: &str) -> (Vec<Decision>, Vec<Decision>) {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), policy);
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
    // The trace records link views, so the bundle serves view links where the views are at
    // hand: both sides below predict through them.
    let links = mlink::link::LinkBundle::load(&bundle).expect("load the trained links");
    assert!(links.view_links().is_some(), "no view links were trained");
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
        "--curve-frames",
        "8",
        "--decisions",
        &s(&from_eval),
        "--decisions-policy",
        policy,
    ]);
    (decisions(&from_run), decisions(&from_eval))
}

#[test]
fn run_offline_and_eval_make_the_same_decisions() {
    let (run, eval) = decisions_of_run_and_eval("mlink");
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

#[test]
fn run_offline_and_eval_make_the_same_hybrid_plans() {
    let (run, eval) = decisions_of_run_and_eval("hybrid");
    // Started from links, the hybrid first profiles consecutive frames for its trigger's
    // curves and plans again (cause curves), then once a period.
    let causes: Vec<_> = run.iter().map(|d| d.cause).collect();
    assert_eq!(causes[0], mlink::control::Cause::Startup, "{run:?}");
    assert!(
        causes.contains(&mlink::control::Cause::Curves),
        "no plan from measured curves: {run:?}"
    );
    assert!(run.iter().all(|d| d.plan.is_some()), "{run:?}");
    assert!(
        run.iter()
            .filter_map(|d| d.plan.as_deref())
            .any(|p| p.contains(" on pixel >= ") && p.contains("in turns")),
        "no plan triggers a model in turns: {run:?}"
    );
    assert_eq!(run, eval);
}
