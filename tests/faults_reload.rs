//! The link bundle replaced by a corrupt file while the engine watches it with hot reload
//! on: the engine rejects it (logged, counted in `mlink_link_reloads_total`), keeps serving
//! predictions from the links it holds, still applies a pipeline edit, installs a readable
//! bundle written there afterwards, and SIGINT stops it cleanly. Needs `scripts/setup.sh`
//! (models, footage, ONNX Runtime).

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

fn pipeline_text(comment: &str, port: u16) -> String {
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
    )
}

fn write_atomically(p: &Path, bytes: &[u8]) {
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, p).unwrap();
}

/// `mlink_link_reloads_total` for `result`, as the engine's /metrics serves it now.
fn link_reloads(port: u16, result: &str) -> f64 {
    pipeline_support::http_get(port, "/metrics")
        .map(|body| {
            pipeline_support::metric(
                &body,
                &format!("mlink_link_reloads_total{{result=\"{result}\"}}"),
            )
        })
        .unwrap_or(0.0)
}

/// Waits until the engine has made `more` predictions beyond `before` and `done` holds.
fn wait_for(
    child: &mut std::process::Child,
    out: &Path,
    more: usize,
    what: &str,
    done: &dyn Fn() -> bool,
) {
    let before = predicted(out);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(predicted(out) >= before + more && done()) {
        assert!(
            Instant::now() < deadline,
            "{what}: {before} -> {} predictions, condition {}",
            predicted(out),
            done()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the engine exited ({what})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
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
    let port = free_port();
    write_atomically(&p, pipeline_text("first", port).as_bytes());
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
    assert_eq!(link_reloads(port, "rejected"), 0.0);
    assert_eq!(link_reloads(port, "installed"), 0.0);

    // Damage the bundle (same size, garbage bytes), then edit the pipeline so that the
    // pipeline's reload path runs too.
    let good = std::fs::read(&links).unwrap();
    write_atomically(&links, &vec![0x5a; good.len()]);
    write_atomically(&p, pipeline_text("edited", port).as_bytes());
    wait_for(
        &mut child,
        &out,
        10,
        "after the bundle was damaged",
        &|| link_reloads(port, "rejected") >= 1.0,
    );
    assert_eq!(
        link_reloads(port, "installed"),
        0.0,
        "a damaged bundle was installed"
    );
    // The engine must not have written over the damaged file behind the operator's back
    // unless its online trainer saved (none runs here: adaptation is off).
    assert_eq!(std::fs::read(&links).unwrap(), vec![0x5a; good.len()]);

    // A readable bundle written there afterwards is served.
    write_atomically(&links, &good);
    wait_for(
        &mut child,
        &out,
        10,
        "after the bundle was restored",
        &|| link_reloads(port, "installed") >= 1.0,
    );
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
