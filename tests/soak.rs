//! The soak's 2-minute version (`scripts/soak.sh` runs 8 cameras for 30 minutes): two RTSP
//! cameras looping vtest.avi through `mlink serve-rtsp`, `mlink run` under a one-model budget
//! with links and online training. The engine must not crash, must stop cleanly on SIGINT,
//! and every served frame must have one record per model; every frame is served, counted
//! dropped, or was still queued at the stop. Needs `scripts/setup.sh` (models, footage).

mod soak_support;

use std::path::PathBuf;

#[test]
fn two_cameras_for_two_minutes_lose_no_record() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for f in ["centernet", "nanodet", "movenet-multipose"] {
        assert!(
            root.join(format!("models/{f}.onnx")).exists(),
            "models/{f}.onnx is missing: run scripts/setup.sh"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let cameras = 2;
    let report = soak_support::run(soak_support::SoakConfig {
        cameras,
        duration_s: 120,
        sample_every_s: 10,
        warm_s: 60,
        fps: 5.0,
        mlink: PathBuf::from(env!("CARGO_BIN_EXE_mlink")),
        footage: root.join("data/footage/vtest.avi"),
        models_dir: root.join("models"),
        out_dir: dir.path().to_path_buf(),
    });
    let s = &report.summary;
    let text = serde_json::to_string_pretty(s).unwrap();
    assert!(!s.crashed, "{}\n{text}", s.exit);
    assert!(
        report.samples.len() >= 10,
        "{} samples",
        report.samples.len()
    );
    assert!(s.frames_served > 0, "{text}");
    assert_eq!(s.frames_with_lost_records, 0, "{text}");
    assert_eq!(
        s.records,
        s.frames_served * soak_support::MODELS as u64,
        "{text}"
    );
    assert_eq!(s.sink_dropped, 0, "{text}");
    assert!(
        (0..=(cameras * soak_support::QUEUE) as i64).contains(&s.frames_unaccounted),
        "frames neither served nor counted dropped: {text}"
    );
    assert!(s.latency_p99_s.is_some(), "{text}");
    // The report is on disk, versioned, with its plot.
    let back: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(back["format"], soak_support::REPORT_FORMAT);
    assert_eq!(back["format_version"], soak_support::REPORT_VERSION);
    let svg = std::fs::read_to_string(dir.path().join("report.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("RSS"));
}
