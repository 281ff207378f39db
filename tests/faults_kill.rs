//! SIGKILL while links or a trace are being written: afterwards the file on disk is the
//! previous complete file or the new complete one, never a torn one.
//!
//! The writers run in a child process (this test binary again, told by an environment variable
//! to loop over the real save code) that is killed at seeded random moments, many times, so
//! that kills land inside writes; then `mlink record` itself is killed in the middle of a
//! recording on real footage and models.

use mlink::link::sample::Sample;
use mlink::link::trace::{
    TraceHeader, TraceModel, TraceReader, TraceRecord, TraceWriter, partial_path, read_all,
};
use mlink::link::{LinkBundle, TrainParams};
use mlink::output::{OutputSpec, OutputValue, TaskKind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the child: which writer loop to run, and where.
const CHILD_ENV: &str = "MLINK_FAULT_WRITER";
const CHILD_PATH_ENV: &str = "MLINK_FAULT_PATH";
/// Kills per writer.
const KILLS: u64 = 12;

fn models() -> Vec<(String, OutputSpec)> {
    vec![
        ("a".into(), OutputSpec::vector(3, TaskKind::SingleLabel)),
        ("b".into(), OutputSpec::vector(2, TaskKind::Count)),
    ]
}

/// Two different bundles: the file on disk must always load as one of them.
fn bundles() -> [LinkBundle; 2] {
    let samples = |shift: usize| -> Vec<Sample> {
        (0..40)
            .map(|i| {
                let c = (i + shift) % 3;
                let mut p = vec![0.1f32; 3];
                p[c] = 0.8;
                Sample::new(vec![
                    Some(OutputValue::Vector(p)),
                    Some(OutputValue::Vector(vec![c as f32, 1.0])),
                ])
            })
            .collect()
    };
    let params = |v: usize| TrainParams {
        epochs: 2 + v,
        seed: 1 + v as u64,
        ..TrainParams::default()
    };
    [0, 1].map(|v| {
        LinkBundle::train(&models(), &samples(v), &params(v), 0.25, 1, &|_| {})
            .expect("a bundle trains")
    })
}

fn trace_header() -> TraceHeader {
    TraceHeader {
        models: vec![TraceModel {
            id: "counter".into(),
            spec: OutputSpec::vector(2, TaskKind::Count),
            memory_mb: None,
            latency_ms: None,
            crops_from: None,
            view: vec![],
        }],
        frame_feature_names: vec![],
        source: "kill test".into(),
        thumbnail: None,
    }
}

fn trace_record(seq: u64) -> TraceRecord {
    TraceRecord {
        camera: "cam".into(),
        seq,
        time_s: seq as f64,
        outputs: vec![Some(OutputValue::Vector(vec![seq as f32, 1.0]))],
        frame_features: vec![],
        thumbnail: None,
        views: vec![],
    }
}

/// Records per finished trace in the child's loop.
const TRACE_RECORDS: u64 = 400;

/// The child's side: when the environment says so, write forever (until killed).
#[test]
fn writer_child() {
    let (Ok(kind), Ok(path)) = (std::env::var(CHILD_ENV), std::env::var(CHILD_PATH_ENV)) else {
        return; // an ordinary test run: nothing to do
    };
    let path = PathBuf::from(path);
    match kind.as_str() {
        "links" => {
            let b = bundles();
            for i in 0.. {
                b[i % 2].save(&path).expect("save");
            }
        }
        "trace" => loop {
            let mut w = TraceWriter::create(&path, &trace_header()).expect("create");
            for seq in 0..TRACE_RECORDS {
                w.append(&trace_record(seq)).expect("append");
                if seq % 50 == 0 {
                    w.flush().expect("flush");
                }
            }
            w.finish().expect("finish");
        },
        other => panic!("unknown writer {other}"),
    }
}

fn spawn_writer(kind: &str, path: &Path) -> Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "writer_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, kind)
        .env(CHILD_PATH_ENV, path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the writer starts")
}

/// Waits until `ready` holds (the child has written at least once), then a seeded random
/// extra time, then kills the child with SIGKILL.
fn kill_after(mut child: Child, ready: impl Fn() -> bool, extra: Duration) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "the writer never wrote its first file"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the writer exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(extra);
    child.kill().expect("SIGKILL");
    child.wait().expect("the writer is reaped");
}

/// SplitMix64 delays in 0..max_ms, the same on every run.
fn delays(seed: u64, max_ms: u64) -> impl Iterator<Item = Duration> {
    let mut s = seed;
    std::iter::repeat_with(move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Duration::from_millis((z ^ (z >> 31)) % max_ms)
    })
}

#[test]
fn links_killed_while_saving_are_the_old_or_the_new_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.bundle");
    // The two bundles the file may hold, told apart by their weights (training is
    // deterministic; the training time stamp is not).
    let weights = |b: &LinkBundle| (b.link_params(0, 1).unwrap(), b.link_params(1, 0).unwrap());
    let expected: Vec<_> = bundles().iter().map(weights).collect();
    assert_ne!(expected[0], expected[1]);
    for (n, extra) in delays(7, 400).take(KILLS as usize).enumerate() {
        let child = spawn_writer("links", &path);
        kill_after(child, || path.exists(), extra);
        let loaded = LinkBundle::load(&path).unwrap_or_else(|e| panic!("kill {n}: {e}"));
        assert!(
            expected.contains(&weights(&loaded)),
            "kill {n}: the bundle on disk is neither complete version"
        );
    }
    // Temporary files of interrupted saves may be left next to it, never in its place.
    let others: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "links.bundle" && !n.starts_with("expected"))
        .collect();
    assert!(
        others.iter().all(|n| n.starts_with(".tmp")),
        "unexpected files: {others:?}"
    );
}

#[test]
fn traces_killed_while_recording_are_complete_or_readable_up_to_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.trace");
    let partial = partial_path(&path);
    for (n, extra) in delays(11, 300).take(KILLS as usize).enumerate() {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&partial);
        let child = spawn_writer("trace", &path);
        kill_after(child, || partial.exists() || path.exists(), extra);
        if path.exists() {
            let (_, records) = read_all(&path).unwrap_or_else(|e| panic!("kill {n}: {e}"));
            assert_eq!(records.len() as u64, TRACE_RECORDS, "kill {n}");
        }
        if partial.exists() {
            let mut reader = TraceReader::open_partial(&partial)
                .unwrap_or_else(|e| panic!("kill {n}: the partial trace does not open: {e}"));
            let mut seq = 0;
            for r in reader.by_ref() {
                let r = r.unwrap_or_else(|e| panic!("kill {n}: record {seq}: {e}"));
                assert_eq!(r, trace_record(seq), "kill {n}");
                seq += 1;
            }
            // The interrupted recording can be continued and finished.
            let mut w = TraceWriter::resume(&path).unwrap_or_else(|e| panic!("kill {n}: {e}"));
            assert_eq!(w.records(), seq);
            w.append(&trace_record(seq)).unwrap();
            w.finish().unwrap();
            let (_, records) = read_all(&path).unwrap();
            assert_eq!(records.len() as u64, seq + 1, "kill {n}");
        }
    }
}

#[test]
fn mlink_record_killed_mid_recording_leaves_a_readable_partial_trace() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let pipeline = root.join("pipelines/record-vtest.yaml");
    for m in [
        "centernet",
        "nanodet",
        "movenet-multipose",
        "efficientnet-lite0",
    ] {
        assert!(
            root.join(format!("models/{m}.onnx")).exists(),
            "models/{m}.onnx is missing: run scripts/setup.sh"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vtest.trace");
    let partial = partial_path(&out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlink"))
        .arg("record")
        .arg(&pipeline)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once a few records are on disk (the recorder flushes as it goes).
    let deadline = Instant::now() + Duration::from_secs(240);
    let records_on_disk = || {
        TraceReader::open_partial(&partial)
            .map(|r| r.filter(|x| x.is_ok()).count())
            .unwrap_or(0)
    };
    while records_on_disk() < 3 {
        assert!(Instant::now() < deadline, "no records within 240 s");
        assert!(child.try_wait().unwrap().is_none(), "record exited early");
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "a killed recording must not look finished");
    let reader = TraceReader::open_partial(&partial).unwrap();
    let header = reader.header().clone();
    assert_eq!(header.models.len(), 4);
    let records: Vec<TraceRecord> = reader.map(|r| r.unwrap()).collect();
    assert!(records.len() >= 3);
    assert!(records.windows(2).all(|w| w[0].seq < w[1].seq));
}
