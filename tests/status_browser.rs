//! The status page in a real browser: headless Chromium (Debian's `chromium`, installed by
//! scripts/setup.sh) loads `/` from `mlink run` on vtest.avi, runs the page's JavaScript
//! against the JSON API, and the rendered DOM must show every camera and every model; a
//! screenshot is taken too (with `MLINK_UPDATE_SCREENSHOT=1` it replaces
//! docs/img/status-page.png), and a camera added through the API then shows on the page.
//! Outside CI a missing chromium skips the test loudly; in CI it fails. Needs
//! `scripts/setup.sh` (models, footage, ONNX Runtime, chromium).

mod status_support;
mod tools_support;

use status_support::start_engine;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const MODELS: &[&str] = &["centernet", "nanodet", "movenet"];

/// Runs headless Chromium on `url` with `args` (no network beyond the engine, a fresh
/// profile), returning its standard output.
fn chromium(bin: &Path, profile: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // Lets the page's fetches and first refreshes run before the DOM is taken.
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn status_page_renders_every_camera_and_model_in_chromium() {
    let Some(bin) = tools_support::require_tool("chromium", &["/usr/bin/chromium"]) else {
        return;
    };
    let e = start_engine(MODELS);
    // Links trained and serving: the page then shows exact and predicted outputs.
    e.wait_for(
        "the engine to serve with links",
        Duration::from_secs(300),
        |e| {
            e.status()["phase"] == "serving"
                && e.camera("cam").is_some_and(|c| {
                    c["outputs"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|r| r["how"] == "predicted"))
                })
        },
    );
    let url = format!("http://{}/", e.addr);
    let profile = tempfile::tempdir().unwrap();
    let dom = chromium(&bin, profile.path(), &url, &["--dump-dom"]);

    // The static page names no camera or model: these come from the script's rendering.
    let page = String::from_utf8_lossy(&e.get("/").body).into_owned();
    assert!(!page.contains("data-camera="));
    assert!(
        dom.contains(r#"data-camera="cam""#),
        "camera `cam` missing from the rendered page:\n{dom}"
    );
    for m in MODELS {
        assert!(
            dom.contains(&format!(r#"data-model="{m}""#)),
            "model `{m}` missing from the rendered page:\n{dom}"
        );
    }
    assert!(
        dom.contains("/api/v1/cameras/cam/snapshot.jpg?overlay=1"),
        "no snapshot image"
    );
    assert!(
        dom.contains(r#"class="how-predicted""#),
        "no predicted output shown"
    );
    assert!(
        dom.contains(r#"class="how-exact""#),
        "no exact output shown"
    );
    assert!(!dom.contains("cannot reach the engine"), "{dom}");

    let shot = profile.path().join("status-page.png");
    chromium(
        &bin,
        profile.path(),
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,840",
        ],
    );
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a {} byte screenshot is blank",
        png.len()
    );
    if std::env::var_os("MLINK_UPDATE_SCREENSHOT").is_some() {
        let docs = status_support::root().join("docs/img/status-page.png");
        std::fs::copy(&shot, &docs).unwrap();
        eprintln!("wrote {}", docs.display());
    }

    // A camera added through the API appears on the page once it delivers frames.
    let added = e.send(
        "POST",
        "/api/v1/cameras",
        &[
            (
                "Authorization",
                &format!("Bearer {}", status_support::TOKEN),
            ),
            ("Content-Type", "application/json"),
        ],
        br#"{"id": "gate", "uri": "vtest.avi", "sampling": {"fps": 2}, "on_end": "loop"}"#,
    );
    assert_eq!(
        added.status,
        201,
        "{}",
        String::from_utf8_lossy(&added.body)
    );
    e.wait_for("frames of the added camera", Duration::from_secs(60), |e| {
        e.camera("gate")
            .is_some_and(|c| c["frames"].as_u64() > Some(0))
    });
    let dom = chromium(&bin, profile.path(), &url, &["--dump-dom"]);
    for cam in ["cam", "gate"] {
        assert!(
            dom.contains(&format!(r#"data-camera="{cam}""#)),
            "camera `{cam}` missing from the rendered page:\n{dom}"
        );
    }
    assert!(dom.contains("/api/v1/cameras/gate/snapshot.jpg?overlay=1"));
}
