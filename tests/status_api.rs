//! The status API over real HTTP against `mlink run` on vtest.avi: every endpoint, snapshots
//! (plain and with the detectors' boxes), the link matrix, and the camera API: refused without
//! or with a wrong token and on malformed or invalid input (the pipeline file and the running
//! cameras unchanged), applied through hot reload and written to the pipeline file when valid.
//! Needs `scripts/setup.sh` (models, footage, ONNX Runtime).

mod status_support;

use status_support::{Engine, TOKEN, camera_ids, start_engine, vtest};
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
    assert_eq!(e.pipeline_text(), before, "{what} changed the pipeline file");
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
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(String::from_utf8_lossy(&page.body).contains("/status.js"));
    for (asset, kind) in [("/status.js", "text/javascript"), ("/status.css", "text/css")] {
        let a = e.get(asset);
        assert_eq!(a.status, 200, "{asset}");
        assert!(a.header("content-type").unwrap().starts_with(kind), "{asset}");
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
        e.camera("cam")
            .is_some_and(|c| c["frames"].as_u64() > Some(0) && !c["outputs"].as_array().unwrap().is_empty())
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
    assert!(jpeg(&plain), "status {} {:?}", plain.status, plain.header("content-type"));
    e.wait_for("boxes of an exact detector", Duration::from_secs(60), |e| {
        e.camera("cam").unwrap()["boxes"].as_array().is_some_and(|b| !b.is_empty())
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
        "id": "second", "uri": vtest().display().to_string(),
        "sampling": {"fps": 5}, "on_end": "loop"
    })
    .to_string();
    let json = ("Content-Type", "application/json");
    let msg = refused(&e, e.send("POST", "/api/v1/cameras", &[json], cam2.as_bytes()), 401, &before, "no token");
    assert!(msg.contains("Bearer"), "{msg}");
    refused(
        &e,
        e.send("POST", "/api/v1/cameras", &[json, ("Authorization", "Bearer wrong")], cam2.as_bytes()),
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
    let msg = refused(&e, e.send("POST", "/api/v1/cameras", &[json, AUTH], b"{\"id\": "), 400, &before, "broken JSON");
    assert!(msg.contains("JSON"), "{msg}");
    let msg = refused(
        &e,
        e.send("POST", "/api/v1/cameras", &[json, AUTH], br#"{"id": "x", "uri": "test:ball", "fsp": 5}"#),
        400,
        &before,
        "an unknown field",
    );
    assert!(msg.contains("fsp"), "{msg}");
    refused(&e, e.send("POST", "/api/v1/cameras", &[json, AUTH], br#"[1, 2]"#), 400, &before, "not an object");
    let msg = refused(
        &e,
        e.send("POST", "/api/v1/cameras", &[json, AUTH], br#"{"id": "x", "uri": "no/such/file.avi"}"#),
        422,
        &before,
        "a missing file",
    );
    assert!(msg.contains("uri"), "{msg}");
    refused(
        &e,
        e.send("POST", "/api/v1/cameras", &[json, AUTH], br#"{"id": "cam", "uri": "test:ball"}"#),
        409,
        &before,
        "a duplicate id",
    );
    refused(&e, e.send("DELETE", "/api/v1/cameras/nope", &[AUTH], b""), 404, &before, "an unknown camera");
    let msg = refused(&e, e.send("DELETE", "/api/v1/cameras/cam", &[AUTH], b""), 422, &before, "the last camera");
    assert!(msg.contains("at least one camera"), "{msg}");

    // A valid camera is added: in the file, then running and on the status page.
    let added = e.send("POST", "/api/v1/cameras", &[json, AUTH], cam2.as_bytes());
    assert_eq!(added.status, 201, "{}", String::from_utf8_lossy(&added.body));
    assert_eq!(added.json()["added"], "second");
    assert_eq!(camera_ids(&e.pipeline), ["cam", "second"]);
    assert!(e.pipeline_text().starts_with("# Status page test pipeline."));
    e.wait_for("frames of the added camera", Duration::from_secs(60), |e| {
        e.camera("second").is_some_and(|c| c["frames"].as_u64() > Some(0))
    });
    let snap = e.get("/api/v1/cameras/second/snapshot.jpg?overlay=1");
    assert!(jpeg(&snap));

    // ... and removed again.
    let removed = e.send("DELETE", "/api/v1/cameras/second", &[AUTH], b"");
    assert_eq!(removed.status, 200, "{}", String::from_utf8_lossy(&removed.body));
    assert_eq!(removed.json()["removed"], "second");
    assert_eq!(camera_ids(&e.pipeline), ["cam"]);
    assert!(e.camera("second").is_none());
    assert_eq!(e.get("/api/v1/cameras/second/snapshot.jpg").status, 404);
    assert!(e.camera("cam").is_some());
}
