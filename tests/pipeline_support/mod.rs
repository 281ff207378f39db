//! Pipeline-file pieces shared by the tests that start the engine: the model entries of the
//! real detectors and classifier, written once so every test declares the same costs and heads.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// The body of a plain HTTP/1.1 GET on 127.0.0.1 (None: no connection or no answer in 5 s).
#[allow(dead_code)]
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The sum of the Prometheus samples whose line starts with `prefix`.
#[allow(dead_code)]
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `models:` entries (YAML, indented for a top-level `models:` list) of the named models,
/// with their files under `models_dir`. Known ids: `centernet`, `nanodet`, `movenet` (person
/// counts) and `efficientnet` (label).
pub fn model_entries(models_dir: &Path, ids: &[&str]) -> String {
    let m = models_dir.display();
    ids.iter()
        .map(|id| {
            let (file, adapter, head, memory_mb, latency_ms) = match *id {
                "centernet" => ("centernet.onnx", "centernet", PERSONS, 25, 90),
                "nanodet" => ("nanodet.onnx", "nanodet", PERSONS, 20, 42),
                "movenet" => ("movenet-multipose.onnx", "movenet_multipose", PERSONS, 25, 226),
                "efficientnet" => ("efficientnet-lite0.onnx", "efficientnet_lite", "{ kind: label }", 20, 15),
                other => panic!("no test model entry for `{other}`"),
            };
            format!(
                "  - id: {id}\n    path: {m}/{file}\n    adapter: {adapter}\n    head: {head}\n    cost: {{ memory_mb: {memory_mb}, latency_ms: {latency_ms} }}\n"
            )
        })
        .collect()
}

const PERSONS: &str = "{ kind: count, classes: [person] }";
