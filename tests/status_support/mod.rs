//! A running `mlink run` on vtest.avi with the real detectors, for the status page and API
//! tests, and a plain HTTP/1.1 client over a TCP socket. Needs `scripts/setup.sh` (models,
//! footage, ONNX Runtime).
#![allow(dead_code)]

#[path = "../pipeline_support/mod.rs"]
mod pipeline_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The variable the test pipelines name as `metrics.api_token_env`, and its value.
pub const TOKEN_ENV: &str = "MLINK_STATUS_TEST_TOKEN";
pub const TOKEN: &str = "s3cret-token-for-tests";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn vtest() -> PathBuf {
    let f = root().join("data/footage/vtest.avi");
    assert!(
        f.exists(),
        "data/footage/vtest.avi is missing: run scripts/setup.sh"
    );
    f
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One engine process; killed when dropped.
pub struct Engine {
    pub child: Child,
    pub addr: String,
    pub pipeline: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `mlink run` on a pipeline of camera `cam` (vtest.avi at 5 fps, looping) and the
/// named models under a budget that holds one of them, with the API token set.
pub fn start_engine(models: &[&str]) -> Engine {
    let m = root().join("models");
    let entries = pipeline_support::model_entries(&m, models);
    let port = free_port();
    let text = format!(
        r#"# Status page test pipeline.
version: 1
cameras:
  - id: cam
    uri: vtest.avi
    sampling: {{ fps: 5 }}
    on_end: loop
models:
{entries}links:
  warmup_samples: 12
  epochs: 20
  seed: 3
scheduler:
  budget: {{ memory_mb: 30 }}
  period_s: 4
  profiling_ratio: 0.2
sinks:
  - kind: jsonl
    path: out.jsonl
metrics:
  listen: 127.0.0.1:{port}
  api_token_env: {TOKEN_ENV}
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    // The footage beside the pipeline file: a relative URI, as operators write them.
    std::os::unix::fs::symlink(vtest(), dir.path().join("vtest.avi")).unwrap();
    let pipeline = dir.path().join("vtest.yaml");
    std::fs::write(&pipeline, text).unwrap();
    let log = std::fs::File::create(dir.path().join("engine.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mlink"))
        .arg("run")
        .arg(&pipeline)
        .arg("--links-out")
        .arg(dir.path().join("links.bundle"))
        .env(TOKEN_ENV, TOKEN)
        .env("MLINK_LOG", "info")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("cannot start mlink run");
    let engine = Engine {
        child,
        addr: format!("127.0.0.1:{port}"),
        pipeline,
        dir,
    };
    engine.wait_for("the status API to answer", Duration::from_secs(120), |e| {
        e.try_get("/api/v1/status").is_some_and(|r| r.status == 200)
    });
    engine
}

/// One HTTP answer.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The message of a JSON error answer (and that it is one).
    pub fn error(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "errors are JSON"
        );
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {}", self.json()))
            .to_string()
    }
}

/// A request over a fresh connection (`Connection: close`), read to the end. None when the
/// engine does not accept connections.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Answer> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Some(Answer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..(start + size).min(b.len())]);
        b = &b[(start + size + 2).min(b.len())..];
    }
    out
}

impl Engine {
    pub fn try_get(&self, path: &str) -> Option<Answer> {
        request(&self.addr, "GET", path, &[], b"")
    }

    pub fn get(&self, path: &str) -> Answer {
        self.try_get(path)
            .unwrap_or_else(|| panic!("GET {path}: no answer; log:\n{}", self.log()))
    }

    pub fn status(&self) -> serde_json::Value {
        let a = self.get("/api/v1/status");
        assert_eq!(a.status, 200);
        a.json()
    }

    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        request(&self.addr, method, path, headers, body)
            .unwrap_or_else(|| panic!("{method} {path}: no answer; log:\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("engine.log")).unwrap_or_default()
    }

    /// Polls `ok` until it holds, or fails the test with the engine's log after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&Engine) -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if ok(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out waiting for {what}; engine log:\n{}", self.log());
    }

    /// Camera `id` in the status answer, if listed.
    pub fn camera(&self, id: &str) -> Option<serde_json::Value> {
        self.status()["cameras"]
            .as_array()?
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
    }

    pub fn pipeline_text(&self) -> String {
        std::fs::read_to_string(&self.pipeline).unwrap()
    }
}

/// The camera ids a pipeline file lists, as `mlink run` reads them.
pub fn camera_ids(pipeline: &Path) -> Vec<String> {
    mlink::config::load(pipeline)
        .unwrap_or_else(|e| panic!("{}: {e:?}", pipeline.display()))
        .cameras
        .into_iter()
        .map(|c| c.id)
        .collect()
}
