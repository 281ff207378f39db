//! The link bundle replaced by a corrupt file while the engine runs with hot reload on: the
//! engine keeps serving predictions from the links it holds, a pipeline edit is still applied,
//! and SIGINT stops it cleanly. Needs `scripts/setup.sh` (models, footage, ONNX Runtime).

mod pipeline_support;

use mlink::engine::record::OutputRecord;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

fn pipeline_text(comment: &str) -> String {
    let m = root().join("models");
    let f = root().join("data/footage/vtest.avi");
    for p in ["centernet.onnx", "nanodet.onnx"] {
        assert!(
            m.join(p).exists(),
            "models/{p} is missing: run scripts/setup.sh"
        );
    }
    assert!(
        f.exists(),
        "data/footage/vtest.avi is missing: run scripts/setup.sh"
    );
    let model_entries = pipeline_support::model_entries(&m, &["centernet", "nanodet"]);
    format!(
        r#"version: 1
# {comment}
cameras:
  - id: cam
    uri: {f}
    sampling: {{ fps: 5 }}
    on_end: loop
models:
{model_entries}links:
  warmup_samples: 12
  epochs: 20
  seed: 3
scheduler:
  budget: {{ memory_mb: 30 }}
  period_s: 2
  profiling_ratio: 0.2
sinks:
  - kind: jsonl
    path: out.jsonl
metrics:
  listen: 127.0.0.1:{port}
"#,
        f = f.display(),
        port = free_port()
    )
}

fn write_atomically(p: &Path, bytes: &[u8]) {
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, p).unwrap();
}

fn predicted(out: &Path) -> usize {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<OutputRecord>(l).ok())
        .filter(|r| !r.is_exact())
        .count()
}

#[test]
fn a_corrupt_bundle_under_hot_reload_leaves_the_engine_on_its_old_links() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pipeline.yaml");
    write_atomically(&p, pipeline_text("first").as_bytes());
    let links = dir.path().join("links.bundle");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlink"))
        .arg("run")
        .arg(&p)
        .arg("--links-out")
        .arg(&links)
        .args(["--reload-check", "1"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = dir.path().join("out.jsonl");
    let deadline = Instant::now() + Duration::from_secs(180);
    while !(links.exists() && predicted(&out) > 5) {
        assert!(Instant::now() < deadline, "links never trained");
        assert!(child.try_wait().unwrap().is_none(), "the engine exited");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Damage the bundle in place (same size, garbage bytes), then edit the pipeline so that
    // the reload path runs.
    let size = std::fs::metadata(&links).unwrap().len() as usize;
    write_atomically(&links, &vec![0x5a; size]);
    write_atomically(&p, pipeline_text("edited").as_bytes());

    let before = predicted(&out);
    let deadline = Instant::now() + Duration::from_secs(120);
    while predicted(&out) < before + 10 {
        assert!(
            Instant::now() < deadline,
            "predictions stopped after the bundle was damaged ({before} -> {})",
            predicted(&out)
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the engine exited after the bundle was damaged"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        serde_json::from_str::<OutputRecord>(line).unwrap();
    }
}
