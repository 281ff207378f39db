//! The status API over real HTTP against `mlink run` on vtest.avi: every endpoint, snapshots
//! (plain and with the detectors' boxes), the link matrix, and the camera API: refused without
//! or with a wrong token and on malformed or invalid input (the pipeline file and the running
//! cameras unchanged), applied through hot reload and written to the pipeline file when valid.
//! Needs `scripts/setup.sh` (models, footage, ONNX Runtime).

mod status_support;

use status_support::{Engine, TOKEN, camera_ids, start_engine};
use std::time::Duration;

const AUTH: (&str, &str) = ("Authorization", "Bearer s3cret-token-for-tests");

fn jpeg(a: &status_support::Answer) -> bool {
    a.status == 200
        && a.header("content-type") == Some("image/jpeg")
        && a.body.starts_with(&[0xFF, 0xD8])
        && a.body.ends_with(&[0xFF, 0xD9])
}

/// A refused mutation: its status, a JSON error, and neither the file nor the cameras changed.
fn refused(e: &Engine, a: status_support::Answer, status: u16, before: &str, what: &str) -> String {
    assert_eq!(
        a.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&a.body)
    );
    let msg = a.error();
    assert_eq!(
        e.pipeline_text(),
        before,
        "{what} changed the pipeline file"
    );
    let ids: Vec<String> = e.status()["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["cam"], "{what} changed the running cameras");
    msg
}

#[test]
fn status_api_serves_every_endpoint_and_guards_camera_changes() {
    assert_eq!(TOKEN, AUTH.1.trim_start_matches("Bearer "));
    let e = start_engine(&["centernet", "nanodet"]);

    // The page and its assets come from the binary.
    let page = e.get("/");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(String::from_utf8_lossy(&page.body).contains("/status.js"));
    for (asset, kind) in [
        ("/status.js", "text/javascript"),
        ("/status.css", "text/css"),
    ] {
        let a = e.get(asset);
        assert_eq!(a.status, 200, "{asset}");
        assert!(
            a.header("content-type").unwrap().starts_with(kind),
            "{asset}"
        );
        assert!(!a.body.is_empty());
    }
    assert_eq!(e.get("/metrics").status, 200, "metrics still served");

    // Status: the pipeline's camera and models.
    let s = e.status();
    assert_eq!(s["v"], 1);
    assert_eq!(s["mutations_enabled"], true);
    let models: Vec<&str> = s["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["centernet", "nanodet"]);
    e.wait_for("a served frame of cam", Duration::from_secs(120), |e| {
        e.camera("cam").is_some_and(|c| {
            c["frames"].as_u64() > Some(0) && !c["outputs"].as_array().unwrap().is_empty()
        })
    });
    let cam = e.camera("cam").unwrap();
    assert_eq!(cam["width"], 768);
    assert_eq!(cam["height"], 576);
    for r in cam["outputs"].as_array().unwrap() {
        assert_eq!(r["camera"], "cam");
        assert!(["exact", "predicted", "unavailable"].contains(&r["how"].as_str().unwrap()));
    }

    // Snapshots are encoded only on request: frames flow, the count stays.
    let encoded = e.status()["snapshots_encoded"].as_u64().unwrap();
    let frames = cam["frames"].as_u64().unwrap();
    e.wait_for("five more frames", Duration::from_secs(60), |e| {
        e.camera("cam").unwrap()["frames"].as_u64().unwrap() >= frames + 5
    });
    assert_eq!(e.status()["snapshots_encoded"].as_u64().unwrap(), encoded);

    // Snapshots: plain, and with the exact detectors' boxes drawn.
    let plain = e.get("/api/v1/cameras/cam/snapshot.jpg");
    assert!(
        jpeg(&plain),
        "status {} {:?}",
        plain.status,
        plain.header("content-type")
    );
    e.wait_for("boxes of an exact detector", Duration::from_secs(60), |e| {
        e.camera("cam").unwrap()["boxes"]
            .as_array()
            .is_some_and(|b| !b.is_empty())
    });
    let overlay = e.get("/api/v1/cameras/cam/snapshot.jpg?overlay=1");
    assert!(jpeg(&overlay));
    assert_eq!(
        e.status()["snapshots_encoded"].as_u64().unwrap(),
        encoded + 2,
        "one encoding per request"
    );
    let bad = e.get("/api/v1/cameras/cam/snapshot.jpg?overlay=maybe");
    assert_eq!(bad.status, 400);
    assert!(bad.error().contains("overlay"));
    let missing = e.get("/api/v1/cameras/nope/snapshot.jpg");
    assert_eq!(missing.status, 404);
    assert!(missing.error().contains("nope"));

    // The link matrix: every model, a square matrix with an empty diagonal.
    let l = e.get("/api/v1/links");
    assert_eq!(l.status, 200);
    let l = l.json();
    assert_eq!(l["models"], serde_json::json!(["centernet", "nanodet"]));
    let scores = l["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 2);
    for (i, row) in scores.iter().enumerate() {
        assert_eq!(row.as_array().unwrap().len(), 2);
        assert!(row[i].is_null());
    }

    // Unknown endpoints answer JSON too.
    let nope = e.get("/api/v1/nothing");
    assert_eq!(nope.status, 404);
    nope.error();

    // Refused camera changes leave everything as it was.
    let before = e.pipeline_text();
    let cam2 = serde_json::json!({
        "id": "second", "uri": "vtest.avi",
        "sampling": {"fps": 5}, "on_end": "loop"
    })
    .to_string();
    let json = ("Content-Type", "application/json");
    let msg = refused(
        &e,
        e.send("POST", "/api/v1/cameras", &[json], cam2.as_bytes()),
        401,
        &before,
        "no token",
    );
    assert!(msg.contains("Bearer"), "{msg}");
    refused(
        &e,
        e.send(
            "POST",
            "/api/v1/cameras",
            &[json, ("Authorization", "Bearer wrong")],
            cam2.as_bytes(),
        ),
        401,
        &before,
        "a wrong token",
    );
    refused(
        &e,
        e.send("DELETE", "/api/v1/cameras/cam", &[], b""),
        401,
        &before,
        "an unauthenticated delete",
    );
    let msg = refused(
        &e,
        e.send("POST", "/api/v1/cameras", &[json, AUTH], b"{\"id\": "),
        400,
        &before,
        "broken JSON",
    );
    assert!(msg.contains("JSON"), "{msg}");
    let msg = refused(
        &e,
        e.send(
            "POST",
            "/api/v1/cameras",
            &[json, AUTH],
            br#"{"id": "x", "uri": "test:ball", "fsp": 5}"#,
        ),
        400,
        &before,
        "an unknown field",
    );
    assert!(msg.contains("fsp"), "{msg}");
    refused(
        &e,
        e.send("POST", "/api/v1/cameras", &[json, AUTH], br#"[1, 2]"#),
        400,
        &before,
        "not an object",
    );
    let msg = refused(
        &e,
        e.send(
            "POST",
            "/api/v1/cameras",
            &[json, AUTH],
            br#"{"id": "x", "uri": "no/such/file.avi"}"#,
        ),
        422,
        &before,
        "a missing file",
    );
    assert!(msg.contains("uri"), "{msg}");
    refused(
        &e,
        e.send(
            "POST",
            "/api/v1/cameras",
            &[json, AUTH],
            br#"{"id": "cam", "uri": "test:ball"}"#,
        ),
        409,
        &before,
        "a duplicate id",
    );
    refused(
        &e,
        e.send("DELETE", "/api/v1/cameras/nope", &[AUTH], b""),
        404,
        &before,
        "an unknown camera",
    );
    let msg = refused(
        &e,
        e.send("DELETE", "/api/v1/cameras/cam", &[AUTH], b""),
        422,
        &before,
        "the last camera",
    );
    assert!(msg.contains("at least one camera"), "{msg}");

    // A valid camera is added: in the file, then running and on the status page.
    let added = e.send("POST", "/api/v1/cameras", &[json, AUTH], cam2.as_bytes());
    assert_eq!(
        added.status,
        201,
        "{}",
        String::from_utf8_lossy(&added.body)
    );
    assert_eq!(added.json()["added"], "second");
    assert_eq!(camera_ids(&e.pipeline), ["cam", "second"]);
    assert!(
        e.pipeline_text()
            .starts_with("# Status page test pipeline.")
    );
    e.wait_for("frames of the added camera", Duration::from_secs(60), |e| {
        e.camera("second")
            .is_some_and(|c| c["frames"].as_u64() > Some(0))
    });
    let snap = e.get("/api/v1/cameras/second/snapshot.jpg?overlay=1");
    assert!(jpeg(&snap));

    // ... and removed again.
    let removed = e.send("DELETE", "/api/v1/cameras/second", &[AUTH], b"");
    assert_eq!(
        removed.status,
        200,
        "{}",
        String::from_utf8_lossy(&removed.body)
    );
    assert_eq!(removed.json()["removed"], "second");
    assert_eq!(camera_ids(&e.pipeline), ["cam"]);
    assert!(e.camera("second").is_none());
    assert_eq!(e.get("/api/v1/cameras/second/snapshot.jpg").status, 404);
    assert!(e.camera("cam").is_some());
}

/// Without `metrics.api_token_env` the camera API refuses every change (403), whatever the
/// request carries, and the file stays as it was. The page's server alone, over real HTTP.
#[test]
fn camera_changes_are_refused_when_no_token_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(dir.path().join("m.onnx"), b"x").unwrap();
    let text = "version: 1\ncameras:\n  - id: a\n    uri: test:ball\nmodels:\n  - id: m\n    path: m.onnx\n    adapter: centernet\n    head: { kind: count, classes: [person] }\n    cost: { memory_mb: 1, latency_ms: 1 }\nscheduler:\n  budget: { memory_mb: 10 }\n";
    std::fs::write(&file, text).unwrap();
    let cfg = mlink::config::load_and_validate(&file).unwrap();
    assert!(cfg.metrics.api_token_env.is_none());
    let metrics = std::sync::Arc::new(mlink::metrics::Metrics::new());
    let board = std::sync::Arc::new(mlink::status::StatusBoard::new(
        &file,
        &cfg,
        metrics.clone(),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    rt.spawn(mlink::metrics::serve(
        listener,
        metrics,
        mlink::status::api::router(board),
        std::future::pending(),
    ));
    let post = status_support::request(
        &addr,
        "POST",
        "/api/v1/cameras",
        &[AUTH, ("Content-Type", "application/json")],
        br#"{"id": "b", "uri": "test:smpte"}"#,
    )
    .expect("no answer");
    assert_eq!(post.status, 403);
    assert!(post.error().contains("api_token_env"));
    let delete = status_support::request(&addr, "DELETE", "/api/v1/cameras/a", &[AUTH], b"")
        .expect("no answer");
    assert_eq!(delete.status, 403);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    // Read-only calls are open: the status lists the configured camera before any frame.
    let s = status_support::request(&addr, "GET", "/api/v1/status", &[], b"").unwrap();
    assert_eq!(s.status, 200);
    assert_eq!(s.json()["cameras"][0]["id"], "a");
    assert_eq!(s.json()["mutations_enabled"], false);
    let snap =
        status_support::request(&addr, "GET", "/api/v1/cameras/a/snapshot.jpg", &[], b"").unwrap();
    assert_eq!(snap.status, 503, "no frame yet");
    snap.error();
}
