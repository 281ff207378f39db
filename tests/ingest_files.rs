//! File and test-pattern sources on real footage: exact frame counts under sampling, looping,
//! missing files, slow consumers, cameras added and removed while others run.

mod ingest_support;

use ingest_support::*;
use mlink::config::OnEnd;
use mlink::ingest::{IngestError, IngestManager, SourceOptions, SourceState};
use mlink::metrics::Metrics;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const VTEST_FRAMES: usize = 795;
const FRAME_NS: u64 = 100_000_000; // vtest.avi is 10 fps

fn offline_manager() -> (IngestManager, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let m = IngestManager::with_options(
        metrics.clone(),
        SourceOptions {
            offline: true,
            ..SourceOptions::default()
        },
    )
    .unwrap();
    (m, metrics)
}

fn vtest_uri() -> String {
    footage("vtest.avi").to_string_lossy().into_owned()
}

#[test]
fn vtest_every_frame_is_delivered_once_in_order() {
    let (ingest, metrics) = offline_manager();
    let rx = ingest
        .add_camera(&camera("vtest", &vtest_uri()), Path::new("/"))
        .unwrap();
    let frames = drain(&rx, Duration::from_secs(120));
    assert_eq!(frames.len(), VTEST_FRAMES);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.seq, i as u64);
        assert_eq!(&*f.camera, "vtest");
        assert_eq!((f.width, f.height), (768, 576));
        assert_eq!(f.rgb.len(), 768 * 576 * 3);
        assert_eq!(f.pts_ns, Some(i as u64 * FRAME_NS));
    }
    // Real pictures, not a blank buffer.
    let mid = &frames[400];
    assert!(mid.rgb.iter().any(|&b| b > 40) && mid.rgb.iter().any(|&b| b < 200));
    let status = ingest.status("vtest").unwrap();
    assert_eq!(status.state, SourceState::Finished);
    assert_eq!(status.frames, VTEST_FRAMES as u64);
    assert_eq!(status.dropped, 0);
    let text = metrics.render();
    assert!(
        text.contains("mlink_frames_ingested_total{camera=\"vtest\"} 795"),
        "{text}"
    );
    assert!(text.contains("mlink_source_state{camera=\"vtest\",state=\"finished\"} 1"));
}

/// 795 frames at 10 fps span PTS 0 .. 79.4 s: one kept frame per 0.2 s slot is 398 frames.
#[test]
fn vtest_sampled_at_5_fps() {
    let (ingest, _) = offline_manager();
    let mut cam = camera("five", &vtest_uri());
    cam.sampling = fps(5.0);
    cam.width = Some(192);
    cam.height = Some(144);
    let rx = ingest.add_camera(&cam, Path::new("/")).unwrap();
    let frames = drain(&rx, Duration::from_secs(120));
    assert_eq!(frames.len(), 398);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.seq, i as u64);
        assert_eq!(f.pts_ns, Some(i as u64 * 2 * FRAME_NS));
        assert_eq!((f.width, f.height, f.rgb.len()), (192, 144, 192 * 144 * 3));
    }
    assert_eq!(ingest.state("five"), Some(SourceState::Finished));
}

/// One frame per second over 0 .. 79.4 s: 80 frames, at 0 s, 1 s, ... 79 s.
#[test]
fn vtest_sampled_every_second() {
    let (ingest, _) = offline_manager();
    let mut cam = camera("one", &vtest_uri());
    cam.sampling = every_seconds(1.0);
    cam.width = Some(192);
    cam.height = Some(144);
    let rx = ingest.add_camera(&cam, Path::new("/")).unwrap();
    let frames = drain(&rx, Duration::from_secs(120));
    assert_eq!(frames.len(), 80);
    let pts: Vec<u64> = frames.iter().map(|f| f.pts_ns.unwrap()).collect();
    assert_eq!(pts, (0..80).map(|s| s * 10 * FRAME_NS).collect::<Vec<_>>());
}

#[test]
fn looping_file_keeps_sequence_and_timestamps_monotonic() {
    let (ingest, _) = offline_manager();
    let mut cam = camera("loop", &vtest_uri());
    cam.on_end = OnEnd::Loop;
    cam.sampling = fps(2.0);
    cam.width = Some(96);
    cam.height = Some(72);
    let rx = ingest.add_camera(&cam, Path::new("/")).unwrap();
    // 160 frames per pass at 2 fps: 400 frames cross the end of the file twice.
    let frames: Vec<_> = (0..400)
        .map(|_| next_frame(&rx, Duration::from_secs(60)))
        .collect();
    for w in frames.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert!(
            w[1].pts_ns > w[0].pts_ns,
            "{:?} then {:?}",
            w[0].pts_ns,
            w[1].pts_ns
        );
    }
    assert_eq!(ingest.state("loop"), Some(SourceState::Running));
    ingest.remove_camera("loop").unwrap();
    // The queue drains and then reports that the camera is gone.
    drain(&rx, Duration::from_secs(10));
    assert_eq!(ingest.state("loop"), None);
}

#[test]
fn missing_file_fails_with_a_clear_error() {
    let (ingest, metrics) = offline_manager();
    let rx = ingest
        .add_camera(
            &camera("ghost", "footage/never-recorded.avi"),
            Path::new("/nowhere"),
        )
        .unwrap();
    let status = ingest
        .wait_for("ghost", Duration::from_secs(10), |s| s.state.is_terminal())
        .expect("a missing file ends the source");
    assert_eq!(status.state, SourceState::Failed);
    let err = status.last_error.unwrap();
    assert!(
        err.contains("/nowhere/footage/never-recorded.avi") && err.contains("does not exist"),
        "{err}"
    );
    assert!(drain(&rx, Duration::from_secs(5)).is_empty());
    assert!(
        metrics
            .render()
            .contains("mlink_source_state{camera=\"ghost\",state=\"failed\"} 1")
    );
}

#[test]
fn invalid_cameras_are_rejected_up_front() {
    let (ingest, _) = offline_manager();
    let bad_pattern = ingest.add_camera(&camera("a", "test:plaid"), Path::new("/"));
    assert!(matches!(bad_pattern, Err(IngestError::Config(ref m)) if m.contains("plaid")));
    let mut zero = camera("b", "test:ball");
    zero.queue = 0;
    assert!(matches!(
        ingest.add_camera(&zero, Path::new("/")),
        Err(IngestError::Config(_))
    ));
    let mut both = camera("c", "test:ball");
    both.sampling = Some(mlink::config::Sampling {
        fps: Some(1.0),
        every_seconds: Some(1.0),
    });
    assert!(ingest.add_camera(&both, Path::new("/")).is_err());
    assert!(
        ingest
            .add_camera(&camera("d", "http://x/y"), Path::new("/"))
            .is_err()
    );
    ingest
        .add_camera(&camera("e", "test:ball"), Path::new("/"))
        .unwrap();
    assert!(matches!(
        ingest.add_camera(&camera("e", "test:ball"), Path::new("/")),
        Err(IngestError::DuplicateCamera(_))
    ));
    assert!(matches!(
        ingest.remove_camera("zz"),
        Err(IngestError::UnknownCamera(_))
    ));
}

#[test]
fn slow_consumer_drops_oldest_frames_and_memory_stays_bounded() {
    let metrics = Arc::new(Metrics::new());
    let ingest = IngestManager::new(metrics.clone()).unwrap();
    let mut cam = camera("busy", "test:ball");
    cam.width = Some(160);
    cam.height = Some(120);
    cam.queue = 3;
    let rx = ingest.add_camera(&cam, Path::new("/")).unwrap();
    let mut seqs = Vec::new();
    // The source produces 30 frames/s; the consumer takes 5/s.
    for _ in 0..12 {
        assert!(rx.len() <= 3, "queue holds {} frames", rx.len());
        seqs.push(next_frame(&rx, Duration::from_secs(20)).seq);
        std::thread::sleep(Duration::from_millis(200));
        assert!(rx.len() <= 3, "queue holds {} frames", rx.len());
    }
    assert!(seqs.windows(2).all(|w| w[1] > w[0]));
    // Drop-oldest: consecutive frames taken are far apart, the newest ones survive.
    assert!(seqs.windows(2).any(|w| w[1] - w[0] > 3), "{seqs:?}");
    let status = ingest.status("busy").unwrap();
    assert!(status.dropped > 0);
    let dropped = metrics.frames_dropped.with_label_values(&["busy"]).get();
    assert!(
        dropped >= status.dropped && dropped > 10,
        "dropped {dropped}"
    );
    assert_eq!(status.state, SourceState::Running);
}

#[test]
fn cameras_come_and_go_while_another_runs() {
    let metrics = Arc::new(Metrics::new());
    let ingest = IngestManager::new(metrics.clone()).unwrap();
    let mut a = camera("a", "test:ball");
    a.width = Some(64);
    a.height = Some(48);
    let rx_a = ingest.add_camera(&a, Path::new("/")).unwrap();
    let first = next_frame(&rx_a, Duration::from_secs(20));
    assert_eq!((first.width, first.height), (64, 48));
    assert_eq!(&*first.camera, "a");

    let mut b = camera("b", "test:smpte");
    b.sampling = fps(10.0);
    let rx_b = ingest.add_camera(&b, Path::new("/")).unwrap();
    let fb = next_frame(&rx_b, Duration::from_secs(20));
    // The test pattern's own size when none is set.
    assert_eq!((fb.width, fb.height, &*fb.camera), (640, 480, "b"));
    assert_eq!(ingest.camera_ids(), ["a", "b"]);
    ingest
        .wait_for("b", Duration::from_secs(10), |s| {
            s.state == SourceState::Running
        })
        .unwrap();

    ingest.remove_camera("b").unwrap();
    drain(&rx_b, Duration::from_secs(10));
    assert_eq!(ingest.camera_ids(), ["a"]);
    assert!(
        metrics
            .render()
            .contains("mlink_source_state{camera=\"b\",state=\"stopped\"} 1")
    );

    // Camera a never noticed.
    while rx_a.try_recv().is_ok() {}
    let later = next_frame(&rx_a, Duration::from_secs(20));
    assert!(later.seq > first.seq);
    assert_eq!(ingest.state("a"), Some(SourceState::Running));
    ingest.shutdown();
    drain(&rx_a, Duration::from_secs(10));
    assert!(ingest.camera_ids().is_empty());
}

#[test]
fn file_uri_played_like_a_camera() {
    // Default options: the file plays at its own rate and a slow consumer would lose frames.
    let ingest = IngestManager::new(Arc::new(Metrics::new())).unwrap();
    let uri = format!("file://{}", footage("vtest.avi").display());
    let mut cam = camera("replay", &uri);
    cam.width = Some(320);
    cam.height = Some(240);
    cam.queue = 16;
    let rx = ingest.add_camera(&cam, Path::new("/")).unwrap();
    for i in 0..8u64 {
        let f = next_frame(&rx, Duration::from_secs(20));
        assert_eq!(f.pts_ns, Some(i * FRAME_NS));
        assert_eq!((f.width, f.height), (320, 240));
    }
    assert_eq!(ingest.state("replay"), Some(SourceState::Running));
}
