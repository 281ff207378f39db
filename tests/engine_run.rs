//! The engine end to end on real footage and real models: records for every model on every
//! served frame, exact only for the active ones; the memory budget held at every load;
//! re-selection every period; /metrics over real HTTP; hot reload; Ctrl-C; RTSP with a server
//! restart. Needs `scripts/setup.sh` (models, footage, ONNX Runtime).

mod pipeline_support;

use mlink::engine::record::{OutputRecord, Provenance};
use mlink::engine::{self, RunOptions, RunSummary};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A pipeline of three person counters under a budget that holds one, on `cameras`
/// (YAML list items), writing to `out.jsonl` in `dir`.
fn pipeline(dir: &Path, cameras: &str, budget_mb: f64, metrics_port: u16, extra: &str) -> PathBuf {
    let m = root().join("models");
    for f in ["centernet.onnx", "nanodet.onnx", "movenet-multipose.onnx"] {
        assert!(
            m.join(f).exists(),
            "models/{f} is missing: run scripts/setup.sh"
        );
    }
    let model_entries = pipeline_support::model_entries(&m, &["centernet", "nanodet", "movenet"]);
    let text = format!(
        r#"version: 1
cameras:
{cameras}
models:
{model_entries}links:
  warmup_samples: 12
  epochs: 30
  seed: 3
scheduler:
  budget: {{ memory_mb: {budget_mb} }}
  period_s: 2
  profiling_ratio: 0.2
{extra}
sinks:
  - kind: jsonl
    path: out.jsonl
metrics:
  listen: 127.0.0.1:{metrics_port}
"#
    );
    let p = dir.join("pipeline.yaml");
    write_atomically(&p, &text);
    p
}

fn write_atomically(p: &Path, text: &str) {
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, p).unwrap();
}

fn vtest_camera(id: &str) -> String {
    let f = root().join("data/footage/vtest.avi");
    assert!(
        f.exists(),
        "data/footage/vtest.avi is missing: run scripts/setup.sh"
    );
    format!(
        "  - id: {id}\n    uri: {}\n    sampling: {{ fps: 5 }}\n",
        f.display()
    )
}

fn read_records(p: &Path) -> Vec<OutputRecord> {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record line {l:?}: {e}")))
        .collect()
}

fn run_in_thread(
    path: PathBuf,
    opts: RunOptions,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<RunSummary>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || engine::run(&path, opts, s).expect("engine run"));
    (stop, h)
}

#[test]
fn budgeted_run_predicts_the_inactive_models_and_reselects_every_period() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let p = pipeline(dir.path(), &vtest_camera("lobby"), 30.0, port, "");
    // Offline: periods follow video time, and live pacing on a busy machine would drop
    // frames while the three models load in turns every 2 s period.
    let opts = RunOptions {
        max_frames: Some(60),
        links_out: Some(dir.path().join("links.bundle")),
        offline: true,
        ..RunOptions::default()
    };
    let (_stop, handle) = run_in_thread(p, opts);

    // /metrics over HTTP while the engine runs.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut scraped = String::new();
    while Instant::now() < deadline && !handle.is_finished() {
        if let Some(body) = pipeline_support::http_get(port, "/metrics")
            && pipeline_support::metric(&body, "mlink_model_predictions_total") > 0.0
        {
            scraped = body;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let summary = handle.join().unwrap();
    assert!(
        !scraped.is_empty(),
        "never scraped predictions from /metrics"
    );
    assert!(
        pipeline_support::metric(&scraped, "mlink_frames_ingested_total{camera=\"lobby\"}") > 0.0
    );
    assert!(pipeline_support::metric(&scraped, "mlink_model_executions_total") > 0.0);
    assert!(scraped.contains("mlink_source_state{camera=\"lobby\",state=\"running\"} 1"));
    assert!(pipeline_support::metric(&scraped, "mlink_budget{resource=\"memory_mb\"}") == 30.0);
    assert!(
        pipeline_support::metric(&scraped, "mlink_budget_used{resource=\"memory_mb\"}") <= 30.0
    );

    assert_eq!(summary.frames, 60);
    assert!(
        summary.peak_memory_mb <= 30.0,
        "peak {} MB over the 30 MB budget",
        summary.peak_memory_mb
    );
    // Real memory (RSS) against the budget: tests/engine_memory.rs, one engine a process.
    assert!(
        summary.reselections >= 2,
        "trained + at least one period: {summary:?}"
    );
    assert!(summary.predicted_outputs > 0);

    let records = read_records(&dir.path().join("out.jsonl"));
    let mut by_frame: BTreeMap<u64, Vec<&OutputRecord>> = BTreeMap::new();
    for r in &records {
        by_frame.entry(r.seq).or_default().push(r);
    }
    assert_eq!(by_frame.len(), 60, "one set of records per served frame");
    let mut served_with_links = 0;
    for (seq, recs) in &by_frame {
        let models: Vec<&str> = recs.iter().map(|r| r.model.as_str()).collect();
        assert_eq!(
            models.len(),
            3,
            "frame {seq}: a record for every model: {models:?}"
        );
        let profiling = recs
            .iter()
            .all(|r| matches!(r.provenance, Provenance::Exact { profiling: true }));
        if profiling {
            continue;
        }
        let exact = recs.iter().filter(|r| r.is_exact()).count();
        assert!(
            exact <= 1,
            "frame {seq}: only the one model the budget holds runs: {recs:?}"
        );
        for r in recs.iter().filter(|r| !r.is_exact()) {
            match &r.provenance {
                Provenance::Predicted { sources, score, .. } => {
                    served_with_links += 1;
                    assert!(!sources.is_empty() && !sources.contains(&r.model));
                    assert!((0.0..=1.0).contains(score));
                    assert!(r.value.is_some());
                }
                Provenance::Unavailable { reason } => assert!(!reason.is_empty()),
                Provenance::Exact { .. } => unreachable!(),
                Provenance::Reused { .. } => panic!("only the hybrid policy reuses outputs: {r:?}"),
            }
        }
    }
    assert!(served_with_links > 0);
    // The trained links were saved and load again.
    mlink::link::LinkBundle::load(&dir.path().join("links.bundle")).unwrap();
}

#[test]
fn pool_refuses_a_load_over_the_budget() {
    use mlink::engine::exec::{ExecError, ModelPool};
    mlink::models::init_runtime().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &vtest_camera("c"), 30.0, free_port(), "");
    let cfg = mlink::config::load_and_validate(&p).unwrap();
    let metrics = Arc::new(mlink::metrics::Metrics::new());
    let mut pool = ModelPool::new(
        &cfg.models,
        vec![25.0, 20.0, 25.0],
        Some(30.0),
        dir.path(),
        metrics,
    );
    pool.load(1).unwrap();
    match pool.load(0) {
        Err(ExecError::OverBudget {
            model, would_be_mb, ..
        }) => {
            assert_eq!(model, "centernet");
            assert_eq!(would_be_mb, 45.0);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(pool.accounted_mb(), 20.0);
    assert!(pool.loaded().contains(1) && !pool.loaded().contains(0));
    pool.unload(1).unwrap();
    pool.load(0).unwrap();
    assert_eq!(pool.peak_mb(), 25.0);
}

/// A run in turns keeps the models to keep loaded when the group fits beside them, and
/// unloads them for the group (loading them again after) when it does not.
#[test]
fn a_turn_keeps_the_loaded_models_when_it_fits_beside_them() {
    use mlink::engine::exec::ModelPool;
    use mlink::schedule::ModelSet;
    mlink::models::init_runtime().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &vtest_camera("c"), 30.0, free_port(), "");
    let cfg = mlink::config::load_and_validate(&p).unwrap();
    let frame =
        mlink::frame::Frame::new("c".into(), 0, None, 64, 48, vec![90u8; 64 * 48 * 3].into())
            .unwrap();
    for (budget, nanodet_loads) in [(45.0, 1), (40.0, 2)] {
        let metrics = Arc::new(mlink::metrics::Metrics::new());
        let mut pool = ModelPool::new(
            &cfg.models,
            vec![25.0, 20.0, 25.0],
            Some(budget),
            dir.path(),
            metrics.clone(),
        );
        pool.load(1).unwrap();
        let keep = ModelSet::from_indices(3, [1]);
        // CenterNet's turn: 25 MB beside NanoDet's 20.
        let outs = pool
            .run_all_in_turns(&[vec![0]], std::slice::from_ref(&frame), &keep)
            .unwrap();
        assert!(outs[0].values[0].is_some(), "the turn ran CenterNet");
        let loads = |id: &str| metrics.model_loads.with_label_values(&[id]).get();
        assert_eq!(loads("nanodet"), nanodet_loads, "budget {budget} MB");
        assert_eq!(loads("centernet"), 1);
        assert_eq!(
            pool.loaded(),
            &keep,
            "the kept set is loaded after the turn"
        );
        assert!(pool.peak_mb() <= budget);
    }
}

#[test]
fn hot_reload_adds_a_camera_and_rejects_an_invalid_edit() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let p = pipeline(dir.path(), &vtest_camera("first"), 30.0, port, "");
    // Periods of 30 s of video: with 2 s ones the models load in turns nearly all the time
    // and the file checks between frames can miss the short-lived invalid edit.
    let text = std::fs::read_to_string(&p).unwrap();
    write_atomically(&p, &text.replace("period_s: 2\n", "period_s: 30\n"));
    let opts = RunOptions {
        duration: Some(Duration::from_secs(200)),
        links_out: Some(dir.path().join("links.bundle")),
        reload_check_s: 0.2,
        ..RunOptions::default()
    };
    let (stop, handle) = run_in_thread(p.clone(), opts);
    let out = dir.path().join("out.jsonl");
    let wait_for = |what: &dyn Fn(&[OutputRecord]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(150);
        while Instant::now() < deadline {
            if what(&read_records(&out)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    };
    assert!(
        wait_for(&|r| r.iter().any(|r| r.camera == "first")),
        "no records from the first camera"
    );

    // An invalid edit is rejected and the engine keeps running on the old configuration.
    let good = std::fs::read_to_string(&p).unwrap();
    write_atomically(&p, &good.replace("memory_mb: 30", "memory_mb: lots"));
    std::thread::sleep(Duration::from_millis(800));
    assert!(!handle.is_finished(), "an invalid edit stopped the engine");

    // A valid edit adds a camera without a restart.
    let two = good.replace(
        "cameras:\n",
        &format!("cameras:\n{}", vtest_camera("second")),
    );
    write_atomically(&p, &two);
    assert!(
        wait_for(&|r| r.iter().any(|r| r.camera == "second")),
        "the added camera never produced records"
    );
    stop.store(true, Ordering::SeqCst);
    let summary = handle.join().unwrap();
    assert!(summary.reloads_rejected >= 1, "{summary:?}");
    assert!(summary.reloads_applied >= 1, "{summary:?}");
}

#[test]
fn sigint_leaves_valid_links_and_complete_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &vtest_camera("cam"), 30.0, free_port(), "");
    let links = dir.path().join("links.bundle");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mlink"))
        .arg("run")
        .arg(&p)
        .arg("--links-out")
        .arg(&links)
        .arg("--reload-check")
        .arg("0")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = dir.path().join("out.jsonl");
    let deadline = Instant::now() + Duration::from_secs(150);
    while Instant::now() < deadline {
        let predicted = read_records(&out).iter().filter(|r| !r.is_exact()).count();
        if links.exists() && predicted > 6 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(links.exists(), "links never trained");
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    mlink::link::LinkBundle::load(&links).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.ends_with('\n'), "the last JSON line is incomplete");
    for line in text.lines() {
        serde_json::from_str::<OutputRecord>(line).unwrap();
    }
}

#[test]
fn rtsp_camera_resumes_after_the_server_restarts() {
    use mlink::ingest::rtsp_server::{RtspServerOptions, ServeSource, start_rtsp_server};
    let dir = tempfile::tempdir().unwrap();
    let rtsp_port = free_port();
    let src = root().join("data/footage/vtest.avi");
    let serve = || {
        start_rtsp_server(
            ServeSource::parse(src.to_str().unwrap()).unwrap(),
            RtspServerOptions {
                port: rtsp_port,
                mount: "/cam".into(),
                ..RtspServerOptions::default()
            },
        )
        .unwrap()
    };
    let server = serve();
    let cam = format!(
        "  - id: street\n    uri: rtsp://127.0.0.1:{rtsp_port}/cam\n    sampling: {{ fps: 5 }}\n"
    );
    let p = pipeline(dir.path(), &cam, 30.0, free_port(), "");
    let opts = RunOptions {
        duration: Some(Duration::from_secs(240)),
        links_out: Some(dir.path().join("links.bundle")),
        ..RunOptions::default()
    };
    let (stop, handle) = run_in_thread(p, opts);
    let out = dir.path().join("out.jsonl");
    let count = || read_records(&out).len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while count() < 30 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(count() >= 30, "no records from the RTSP camera");
    server.stop();
    std::thread::sleep(Duration::from_secs(2));
    let before = count();
    let server = serve();
    let deadline = Instant::now() + Duration::from_secs(120);
    while count() < before + 30 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    let after = count();
    let summary = handle.join().unwrap();
    server.stop();
    assert!(
        after >= before + 30,
        "records did not resume after the restart ({before} -> {after}); {summary:?}"
    );
}

#[test]
fn an_oracle_link_corrects_the_model_output_the_engine_serves() {
    use mlink::adapt::oracle::{LabelEncoding, LabelledFrames, OracleLink};
    use mlink::output::{OutputSpec, OutputValue, TaskKind};
    let dir = tempfile::tempdir().unwrap();
    // An oracle that learned "the ground truth is one more person than the model counts".
    let spec = OutputSpec::vector(1, TaskKind::Count);
    let pairs: Vec<(OutputValue, OutputValue)> = (0..300)
        .map(|i| {
            let c = (i % 10) as f32;
            (
                OutputValue::Vector(vec![c]),
                OutputValue::Vector(vec![c + 1.0]),
            )
        })
        .collect();
    let frames = LabelledFrames {
        model: "nanodet".into(),
        model_spec: spec.clone(),
        spec: spec.clone(),
        encoding: LabelEncoding::Direct,
        pairs,
    };
    let params = mlink::link::TrainParams {
        epochs: 200,
        ..mlink::link::TrainParams::default()
    };
    let oracle = OracleLink::train(&frames, &params, 0.2).unwrap();
    let oracle_path = dir.path().join("nanodet.oracle");
    oracle.save(&oracle_path).unwrap();

    let m = root().join("models");
    let video = root().join("data/footage/vtest.avi");
    let write = |name: &str, oracle_line: &str| {
        let text = format!(
            "version: 1\ncameras:\n  - id: c\n    uri: {}\n    sampling: {{ fps: 5 }}\nmodels:\n  - id: nanodet\n    path: {}/nanodet.onnx\n    adapter: nanodet\n    head: {{ kind: count, classes: [person] }}\n    cost: {{ memory_mb: 20, latency_ms: 42 }}\n{oracle_line}scheduler:\n  budget: {{ memory_mb: 100 }}\nsinks: []\nmetrics: {{ listen: null }}\n",
            video.display(),
            m.display()
        );
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let raw = write("raw.yaml", "");
    let fixed = write(
        "fixed.yaml",
        &format!("    oracle: {}\n", oracle_path.display()),
    );
    let run = |p: &Path| {
        let records = Arc::new(std::sync::Mutex::new(Vec::new()));
        let opts = RunOptions {
            max_frames: Some(8),
            offline: true,
            unbounded: true,
            capture: Some(records.clone()),
            ..RunOptions::default()
        };
        engine::run(p, opts, Arc::new(AtomicBool::new(false))).unwrap();
        let v = records.lock().unwrap().clone();
        v.into_iter()
            .map(|r| (r.seq, r.value.unwrap()))
            .collect::<BTreeMap<u64, OutputValue>>()
    };
    let (before, after) = (run(&raw), run(&fixed));
    assert_eq!(before.len(), 8);
    for (seq, v) in &before {
        let expected = oracle.apply(v).unwrap();
        let (OutputValue::Vector(e), OutputValue::Vector(a)) = (&expected, &after[seq]) else {
            panic!()
        };
        assert!(
            (e[0] - a[0]).abs() < 1e-4,
            "frame {seq}: served {a:?}, oracle(model) = {e:?}"
        );
        let OutputValue::Vector(raw) = v else {
            panic!()
        };
        assert!(
            (a[0] - (raw[0] + 1.0)).abs() < 0.5,
            "frame {seq}: the oracle should add one person: {raw:?} -> {a:?}"
        );
    }
}

/// 70 frames of vtest at 5 frames a second (14 s of video, several 2 s periods) through a
/// 30 MB pipeline with the given adaptation section; the links are saved to the returned
/// path. Offline, so that a busy machine does not drop frames until every frame starts a
/// period.
fn run_offline_adapting(dir: &Path, adaptation: &str) -> (RunSummary, PathBuf) {
    let p = pipeline(dir, &vtest_camera("cam"), 30.0, free_port(), adaptation);
    let links = dir.join("links.bundle");
    let opts = RunOptions {
        max_frames: Some(70),
        links_out: Some(links.clone()),
        offline: true,
        ..RunOptions::default()
    };
    let (_stop, handle) = run_in_thread(p, opts);
    (handle.join().unwrap(), links)
}

#[test]
fn loss_prediction_queues_hard_frames_and_fine_tunes_the_links_online() {
    let dir = tempfile::tempdir().unwrap();
    let adaptation = "adaptation:\n  policy: loss_prediction\n  uncertainty_threshold: 0.000001\n";
    let (summary, links) = run_offline_adapting(dir.path(), adaptation);
    let trained_at = || std::fs::metadata(&links).and_then(|m| m.modified()).ok();
    assert!(
        summary.online_training_runs >= 1,
        "no online training run: {summary:?}"
    );
    // The fine-tuned links were saved over the initial ones and still load.
    assert!(trained_at().is_some());
    mlink::link::LinkBundle::load(&links).unwrap();
}

/// Periodic adaptation reaches the links that serve: the view links, first trained on the
/// 12 warm-up samples, learn again from those and every period's profiling samples.
#[test]
fn periodic_adaptation_trains_the_serving_view_links_again_on_profiling_samples() {
    let dir = tempfile::tempdir().unwrap();
    // 12 warm-up frames, then 2 s periods with 2 profiling frames each.
    let (summary, links) = run_offline_adapting(dir.path(), "adaptation:\n  policy: periodic\n");
    assert!(
        summary.online_training_runs >= 1,
        "no online training run: {summary:?}"
    );
    let bundle = mlink::link::LinkBundle::load(&links).unwrap();
    let view_links = bundle
        .view_links()
        .expect("the saved links have view links");
    let frames = view_links.trained_frames().expect("a frame count is saved");
    // More than the warm-up's 12: the profiling samples were learned from, beside the
    // warm-up samples the engine handed over (without those there would be too few).
    assert!(frames >= 14, "view links trained on {frames} frames");
}

#[test]
fn the_uncertainty_policy_queues_frames_with_one_active_model() {
    // 30 MB fits one model: every prediction has a single source, so there is no spread
    // between sources; the link's predicted error is what makes a frame uncertain.
    let dir = tempfile::tempdir().unwrap();
    let adaptation = "adaptation:\n  policy: uncertainty\n  uncertainty_threshold: 0.000001\n";
    let p = pipeline(
        dir.path(),
        &vtest_camera("cam"),
        30.0,
        free_port(),
        adaptation,
    );
    let opts = RunOptions {
        max_frames: Some(70),
        links_out: Some(dir.path().join("links.bundle")),
        ..RunOptions::default()
    };
    let (_stop, handle) = run_in_thread(p, opts);
    let summary = handle.join().unwrap();
    assert!(
        summary.online_training_runs >= 1,
        "no uncertain frame was queued and trained on: {summary:?}"
    );
    let records = read_records(&dir.path().join("out.jsonl"));
    let single_source = records.iter().any(|r| {
        matches!(&r.provenance, Provenance::Predicted { sources, uncertainty, .. }
            if sources.len() == 1 && *uncertainty > 0.0)
    });
    assert!(
        single_source,
        "no single-source prediction with an uncertainty"
    );
}

#[test]
fn an_engine_with_an_aggregator_takes_part_in_federated_rounds() {
    use mlink::adapt::aggregate::{
        AggregatorClient, AggregatorConfig, AggregatorServer, EdgeTokens, RoundPolicy, Token,
    };
    use mlink::adapt::export::{export_link, link_id};
    let dir = tempfile::tempdir().unwrap();
    // Links from a short warm-up run, as a site would have before joining.
    let links = dir.path().join("links.bundle");
    let p = pipeline(dir.path(), &vtest_camera("cam"), 30.0, free_port(), "");
    let warm = RunOptions {
        max_frames: Some(14),
        offline: true,
        links_out: Some(links.clone()),
        ..RunOptions::default()
    };
    engine::run(&p, warm, Arc::new(AtomicBool::new(false))).unwrap();
    let bundle = mlink::link::LinkBundle::load(&links).unwrap();
    let init = export_link(&bundle, "nanodet", "centernet").unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let token = Token::new("a-long-enough-edge-secret");
    let server = AggregatorServer::open(AggregatorConfig {
        state_path: dir.path().join("aggregator.json"),
        tokens: EdgeTokens::from_pairs([("site-a".to_string(), token.clone())]).unwrap(),
        links: vec![init.clone()],
        policy: RoundPolicy {
            deadline: Duration::from_secs(60),
            quorum: 1,
            server_lr: 1.0,
        },
        max_body_bytes: None,
    })
    .unwrap();
    let running = rt
        .block_on(server.spawn("127.0.0.1:0".parse().unwrap()))
        .unwrap();

    // SAFETY: set before the engine's threads start; nextest runs each test in its own process.
    unsafe { std::env::set_var("MLINK_TEST_EDGE_TOKEN", "a-long-enough-edge-secret") };
    let extra = format!(
        "adaptation:\n  aggregator:\n    url: {}\n    token_env: MLINK_TEST_EDGE_TOKEN\n    edge_id: site-a\n",
        running.url()
    );
    let p = pipeline(dir.path(), &vtest_camera("cam"), 30.0, free_port(), &extra);
    let opts = RunOptions {
        max_frames: Some(40),
        bundle: Some(links.clone()),
        ..RunOptions::default()
    };
    let summary = engine::run(&p, opts, Arc::new(AtomicBool::new(false))).unwrap();
    assert!(summary.federated_rounds >= 1, "{summary:?}");

    let client = AggregatorClient::new(&running.url(), "site-a", token).unwrap();
    let global = rt
        .block_on(client.pull(&link_id("nanodet", "centernet")))
        .unwrap();
    assert!(global.round >= 1, "the edge's update closed a round");
    assert_ne!(global.params.0, init.params.0, "the global link moved");
    rt.block_on(running.stop()).unwrap();
}

/// The hybrid policy in the engine: a model its plan triggers and keeps loaded runs on the
/// frames its trigger selects, and between them its last exact output on the camera is
/// served (`how: reused`), never older than `max_output_age_s`; the same from a link bundle,
/// where the trigger's curves come from frames profiled at start-up.
///
/// The declared costs make the plan deterministic: NanoDet's count is cheap (exact on every
/// frame), EfficientNet's label is declared far too slow to run on every frame within the
/// time budget, while the memory budget holds both; on vtest the label barely changes between
/// frames, so reusing it beats predicting it from the count.
#[test]
fn the_hybrid_serves_a_triggered_models_last_output_between_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let m = root().join("models");
    let f = root().join("data/footage/vtest.avi");
    assert!(
        f.exists(),
        "data/footage/vtest.avi is missing: run scripts/setup.sh"
    );
    let max_age_s = 1.0;
    let text = format!(
        r#"version: 1
cameras:
  - id: path
    uri: {footage}
    sampling: {{ fps: 5 }}
models:
  - id: people
    path: {m}/nanodet.onnx
    adapter: nanodet
    head: {{ kind: count, classes: [person] }}
    cost: {{ memory_mb: 20, latency_ms: 15 }}
  - id: scene
    path: {m}/efficientnet-lite0.onnx
    adapter: efficientnet_lite
    head: {{ kind: label }}
    cost: {{ memory_mb: 20, latency_ms: 2500 }}
links:
  warmup_samples: 12
  seed: 3
scheduler:
  budget: {{ memory_mb: 40, ms_per_frame: 1000 }}
  period_s: 4
  profiling_ratio: 0.1
  policy: hybrid
  max_output_age_s: {max_age_s}
sinks:
  - kind: jsonl
    path: out.jsonl
metrics:
  listen: 127.0.0.1:{port}
"#,
        footage = f.display(),
        m = m.display(),
        port = free_port(),
    );
    let p = dir.path().join("pipeline.yaml");
    write_atomically(&p, &text);
    let bundle = dir.path().join("links.bundle");
    let decisions = dir.path().join("decisions.jsonl");
    // First with links trained on the warm-up (whose samples give the trigger its curves),
    // then from those links, where consecutive frames are profiled for the curves first.
    for from_bundle in [false, true] {
        let out = dir.path().join("out.jsonl");
        let _ = std::fs::remove_file(&out);
        let opts = RunOptions {
            max_frames: Some(60),
            offline: true,
            links_out: Some(bundle.clone()),
            bundle: from_bundle.then(|| bundle.clone()),
            decisions: from_bundle.then(|| decisions.clone()),
            ..RunOptions::default()
        };
        let (_stop, handle) = run_in_thread(p.clone(), opts);
        let summary = handle.join().unwrap();
        assert_eq!(summary.frames, 60);
        check_reuse(&read_records(&out), &summary, max_age_s);
    }
    let causes = std::fs::read_to_string(&decisions).unwrap();
    assert!(
        causes.contains("\"cause\":\"curves\""),
        "no selection after the curves were measured: {causes}"
    );
}

/// The hybrid's records: some reused, each the exact value of an earlier frame of the same
/// model and never older than `max_age_s`; the triggered model ran outside profiling frames
/// (it was loaded beside the exact one) and nothing failed for want of loading.
fn check_reuse(records: &[OutputRecord], summary: &RunSummary, max_age_s: f64) {
    assert!(summary.reused_outputs > 0, "{summary:?}");
    let exact: BTreeMap<(String, u64), &OutputRecord> = records
        .iter()
        .filter(|r| r.is_exact())
        .map(|r| ((r.model.clone(), r.seq), r))
        .collect();
    let mut reused = 0;
    for r in records {
        if let Provenance::Unavailable { reason } = &r.provenance {
            assert!(
                !reason.contains("not loaded"),
                "a model the plan keeps loaded was not: {r:?}"
            );
        }
        let Provenance::Reused { from_seq, age_s } = &r.provenance else {
            continue;
        };
        reused += 1;
        assert!(*from_seq < r.seq, "{r:?}");
        let source = exact
            .get(&(r.model.clone(), *from_seq))
            .unwrap_or_else(|| panic!("no exact record at seq {from_seq} for {r:?}"));
        assert_eq!(source.value, r.value, "the reused value is the exact one");
        let age = age_s.expect("vtest frames carry presentation times");
        assert!(
            age <= max_age_s + 1e-6,
            "reused for longer than max_output_age_s: {r:?}"
        );
    }
    assert_eq!(reused, summary.reused_outputs);
    // The triggered model ran outside the profiling frames: it was loaded beside the exact one.
    let triggered_runs = records
        .iter()
        .filter(|r| r.model == "scene")
        .filter(|r| matches!(r.provenance, Provenance::Exact { profiling: false }))
        .count();
    assert!(triggered_runs > 0);
}
