//! Many cameras on one engine: frames of several cameras run through each model together
//! give the records frame-by-frame serving gives, and the cameras' offered rate budgets the
//! selection (the cheapest set serves, and it is said, when no set keeps up). Needs
//! `scripts/setup.sh` (models, footage, ONNX Runtime).

mod pipeline_support;

use mlink::engine::record::OutputRecord;
use mlink::engine::{self, RunOptions, RunSummary};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One vtest camera at `fps` and the named models under `budget_mb`.
fn pipeline(dir: &Path, fps: f64, models: &[&str], budget_mb: f64) -> PathBuf {
    let footage = root().join("data/footage/vtest.avi");
    assert!(
        footage.exists(),
        "data/footage/vtest.avi is missing: run scripts/setup.sh"
    );
    let entries = pipeline_support::model_entries(&root().join("models"), models);
    let text = format!(
        r#"version: 1
cameras:
  - id: cam
    uri: {footage}
    sampling: {{ fps: {fps} }}
    on_end: loop
models:
{entries}links:
  warmup_samples: 1000
scheduler:
  budget: {{ memory_mb: {budget_mb} }}
  period_s: 30
metrics:
  listen: null
"#,
        footage = footage.display()
    );
    let p = dir.join("pipeline.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run(p: &Path, opts: RunOptions) -> (RunSummary, Vec<OutputRecord>) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let opts = RunOptions {
        capture: Some(records.clone()),
        ..opts
    };
    let s = engine::run(p, opts, Arc::new(AtomicBool::new(false))).expect("engine run");
    let r = records.lock().unwrap().clone();
    (s, r)
}

#[test]
fn frames_of_several_cameras_run_together_give_the_records_of_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    // EfficientNet-Lite0 takes a batch (one run for the batch); NanoDet runs frame by frame.
    let p = pipeline(dir.path(), 5.0, &["nanodet", "efficientnet"], 100.0);
    let opts = |workers, batch| RunOptions {
        max_frames: Some(24),
        offline: true,
        unbounded: true,
        camera_copies: 3,
        workers,
        batch,
        ..RunOptions::default()
    };
    let (single, single_records) = run(&p, opts(1, 1));
    let (batched, batched_records) = run(&p, opts(2, 3));
    assert_eq!((single.workers, single.batch), (1, 1));
    assert_eq!((batched.workers, batched.batch), (2, 3));
    assert_eq!(single.frames, 24);
    assert_eq!(batched.frames, 24);
    let key = |r: &OutputRecord| (r.camera.clone(), r.seq, r.model.clone());
    let one_at_a_time: BTreeMap<_, _> = single_records.iter().map(|r| (key(r), r)).collect();
    let cameras: std::collections::BTreeSet<&str> =
        batched_records.iter().map(|r| r.camera.as_str()).collect();
    assert_eq!(
        cameras.len(),
        3,
        "every copy of the camera served: {cameras:?}"
    );
    let mut compared = 0;
    for r in &batched_records {
        assert!(r.is_exact(), "unbounded: every output exact: {r:?}");
        let Some(s) = one_at_a_time.get(&key(r)) else {
            continue;
        };
        compared += 1;
        assert_eq!(
            r.value, s.value,
            "{} frame {} of {}: batched and one at a time differ",
            r.model, r.seq, r.camera
        );
    }
    // The cameras' frames interleave differently from run to run; most are in both.
    assert!(compared >= 24, "only {compared} records in both runs");
}

#[test]
fn the_offered_rate_budgets_the_selection_and_says_when_no_set_keeps_up() {
    let dir = tempfile::tempdir().unwrap();
    // All three fit the memory; nanodet (42 ms) is the cheapest, movenet (226 ms) the dearest.
    let p = pipeline(
        dir.path(),
        10.0,
        &["centernet", "nanodet", "movenet"],
        100.0,
    );
    let live = |copies| RunOptions {
        max_frames: Some(3),
        duration: Some(Duration::from_secs(60)),
        camera_copies: copies,
        workers: 2,
        batch: 0,
        decisions: Some(dir.path().join(format!("decisions-{copies}.jsonl"))),
        ..RunOptions::default()
    };
    let cores = 2usize.min(engine::rate::machine_cores()) as f64;
    let allowed = |fps: f64| cores * 1000.0 * engine::rate::RATE_HEADROOM / fps;

    // One camera at 10 fps: 160 ms a frame per core; the three together (358 ms) do not fit
    // two cores' worth, so at most two models run.
    let (one, _) = run(&p, live(1));
    assert_eq!(one.offered_fps, 10.0);
    let budget = one.rate_budget_ms.expect("a live run has a rate budget");
    assert!((budget - allowed(10.0)).abs() < 1e-6, "{budget}");
    assert_eq!(one.rate_unmet_selections, 0, "{one:?}");
    assert!(
        !one.active.is_empty() && one.active.len() < 3,
        "{:?}",
        one.active
    );

    // Eight cameras at 10 fps: no model fits the time a frame may take; the cheapest serves.
    let (eight, _) = run(&p, live(8));
    assert_eq!(eight.offered_fps, 80.0);
    let budget = eight.rate_budget_ms.unwrap();
    assert!((budget - allowed(80.0)).abs() < 1e-6, "{budget}");
    assert!(
        budget < 42.0,
        "the test needs a budget below the cheapest model"
    );
    assert!(eight.rate_unmet_selections >= 1, "{eight:?}");
    assert_eq!(eight.active, vec!["nanodet".to_string()]);

    // Offline, frames wait for the engine: no rate budget.
    let (offline, _) = run(
        &p,
        RunOptions {
            offline: true,
            ..live(8)
        },
    );
    assert_eq!(offline.rate_budget_ms, None);
    assert_eq!(offline.rate_unmet_selections, 0);
}

/// Under a memory budget that holds one of two models, the warm-up's kept frames run in turns
/// (both models loaded one after the other, the serving one unloaded): the frames the camera
/// delivers meanwhile wait in the backlog and are served afterwards, in order, instead of
/// overflowing the camera's 4-frame queue.
#[test]
fn frames_arriving_while_the_models_run_in_turns_are_served_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let footage = root().join("data/footage/vtest.avi");
    assert!(
        footage.exists(),
        "data/footage/vtest.avi is missing: run scripts/setup.sh"
    );
    let entries =
        pipeline_support::model_entries(&root().join("models"), &["nanodet", "efficientnet"]);
    let p = dir.path().join("pipeline.yaml");
    std::fs::write(
        &p,
        format!(
            r#"version: 1
cameras:
  - id: cam
    uri: {footage}
    sampling: {{ fps: 5 }}
    queue: 4
    on_end: loop
models:
{entries}links:
  warmup_samples: 12
scheduler:
  budget: {{ memory_mb: 25 }}
  period_s: 30
metrics:
  listen: null
"#,
            footage = footage.display()
        ),
    )
    .unwrap();
    let (s, records) = run(
        &p,
        RunOptions {
            max_frames: Some(40),
            duration: Some(Duration::from_secs(120)),
            workers: 2,
            batch: 0,
            ..RunOptions::default()
        },
    );
    assert!(s.frames >= 12, "{s:?}");
    assert!(
        s.backlog_frames > 0,
        "no frame arrived while the models ran in turns: {s:?}"
    );
    assert_eq!(
        s.frames_dropped_in_turns, 0,
        "frames were dropped while the models ran in turns: {s:?}"
    );
    // Served in the order the camera delivered them.
    let mut seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    seqs.dedup();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}
