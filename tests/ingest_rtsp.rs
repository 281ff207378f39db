//! RTSP cameras against the in-process RTSP server: TCP and UDP transport, ten server
//! restarts with reconnection, and an unreachable camera that gives up.

mod ingest_support;

use ingest_support::*;
use mlink::config::RtspTransport;
use mlink::ingest::{
    IngestManager, RetryPolicy, RtspServerOptions, ServeSource, SourceOptions, SourceState,
    start_rtsp_server,
};
use mlink::metrics::Metrics;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn quick_recovery(max_retries: Option<u32>) -> SourceOptions {
    SourceOptions {
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            max_retries,
            ..RetryPolicy::default()
        },
        stall_timeout_min: Duration::from_secs(2),
        startup_timeout: Duration::from_secs(15),
        offline: false,
    }
}

fn server_options(port: u16) -> RtspServerOptions {
    RtspServerOptions {
        port,
        mount: "/cam".into(),
        test_width: 320,
        test_height: 240,
        test_fps: 15,
        ..RtspServerOptions::default()
    }
}

fn receives_the_served_file(transport: RtspTransport, size: Option<(u32, u32)>) {
    let server =
        start_rtsp_server(ServeSource::File(footage("vtest.avi")), server_options(0)).unwrap();
    assert!(server.url().starts_with("rtsp://127.0.0.1:"));
    let ingest =
        IngestManager::with_options(Arc::new(Metrics::new()), quick_recovery(Some(3))).unwrap();
    let mut cam = camera("street", server.url());
    cam.rtsp.transport = transport;
    cam.width = size.map(|s| s.0);
    cam.height = size.map(|s| s.1);
    let rx = ingest.add_camera(&cam, Path::new("/")).unwrap();
    let (w, h) = size.unwrap_or((768, 576));
    let mut last = None;
    for _ in 0..10 {
        let f = next_frame(&rx, Duration::from_secs(30));
        assert_eq!(
            (f.width, f.height, f.rgb.len()),
            (w, h, (w * h * 3) as usize)
        );
        assert!(last.is_none_or(|(seq, pts)| f.seq > seq && f.pts_ns > pts));
        last = Some((f.seq, f.pts_ns));
    }
    assert_eq!(ingest.state("street"), Some(SourceState::Running));
}

#[test]
fn rtsp_over_tcp_delivers_scaled_frames() {
    receives_the_served_file(RtspTransport::Tcp, Some((320, 240)));
}

#[test]
fn rtsp_over_udp_delivers_native_frames() {
    receives_the_served_file(RtspTransport::Udp, None);
}

#[test]
fn source_recovers_from_ten_server_restarts() {
    let port = free_port();
    let metrics = Arc::new(Metrics::new());
    let ingest = IngestManager::with_options(metrics.clone(), quick_recovery(None)).unwrap();
    let mut server =
        Some(start_rtsp_server(ServeSource::Test("ball".into()), server_options(port)).unwrap());
    let url = server.as_ref().unwrap().url().to_string();
    let rx = ingest
        .add_camera(&camera("lobby", &url), Path::new("/"))
        .unwrap();
    let mut last_seq = next_frame(&rx, Duration::from_secs(30)).seq;
    for round in 1..=10u64 {
        ingest
            .wait_for("lobby", Duration::from_secs(30), |s| {
                s.state == SourceState::Running
            })
            .unwrap_or_else(|s| panic!("round {round}: not running: {s:?}"));
        server.take().unwrap().stop();
        let lost = ingest
            .wait_for("lobby", Duration::from_secs(20), |s| {
                s.state == SourceState::Retrying
            })
            .unwrap_or_else(|s| panic!("round {round}: loss not noticed: {s:?}"));
        assert!(lost.last_error.is_some());
        while let Ok(f) = rx.try_recv() {
            last_seq = f.seq;
        }
        server = Some(
            start_rtsp_server(ServeSource::Test("ball".into()), server_options(port)).unwrap(),
        );
        let back = ingest
            .wait_for("lobby", Duration::from_secs(30), |s| {
                s.state == SourceState::Running
            })
            .unwrap_or_else(|s| panic!("round {round}: did not come back: {s:?}"));
        assert_eq!(back.reconnects, round);
        let resumed = next_frame(&rx, Duration::from_secs(30));
        assert!(
            resumed.seq > last_seq,
            "round {round}: frames did not resume"
        );
        assert_eq!((resumed.width, resumed.height), (320, 240));
        last_seq = resumed.seq;
    }
    assert_eq!(ingest.status("lobby").unwrap().reconnects, 10);
    assert_eq!(
        metrics
            .source_reconnects
            .with_label_values(&["lobby"])
            .get(),
        10
    );
    assert!(
        metrics
            .render()
            .contains("mlink_source_state{camera=\"lobby\",state=\"running\"} 1")
    );
}

#[test]
fn unreachable_camera_gives_up_after_its_retries() {
    let url = format!("rtsp://127.0.0.1:{}/never", free_port());
    let ingest =
        IngestManager::with_options(Arc::new(Metrics::new()), quick_recovery(Some(2))).unwrap();
    let rx = ingest
        .add_camera(&camera("gone", &url), Path::new("/"))
        .unwrap();
    let status = ingest
        .wait_for("gone", Duration::from_secs(60), |s| s.state.is_terminal())
        .expect("the source gives up");
    assert_eq!(status.state, SourceState::Failed);
    let err = status.last_error.unwrap();
    assert!(err.contains("gave up after 3 failed attempts"), "{err}");
    assert_eq!(status.reconnects, 0);
    assert!(drain(&rx, Duration::from_secs(5)).is_empty());
}

#[test]
fn server_rejects_what_it_cannot_serve() {
    assert!(ServeSource::parse("/no/such/file.avi").is_err());
    assert!(ServeSource::parse("test:plaid").is_err());
    assert_eq!(
        ServeSource::parse("test:ball").unwrap(),
        ServeSource::Test("ball".into())
    );
    let bad_mount = start_rtsp_server(
        ServeSource::Test("ball".into()),
        RtspServerOptions {
            mount: "cam".into(),
            ..server_options(0)
        },
    );
    assert!(bad_mount.is_err());
}

/// A TCP forwarder that can go silent without closing anything, like a link that stops
/// carrying packets.
struct Link {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Link {
    fn to(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let f = f.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            while f.load(Ordering::Acquire) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { port, frozen }
    }
}

#[test]
fn silent_stream_is_detected_as_stalled_and_reconnected() {
    let server = start_rtsp_server(ServeSource::Test("ball".into()), server_options(0)).unwrap();
    let link = Link::to(server.port());
    let ingest = IngestManager::with_options(
        Arc::new(Metrics::new()),
        SourceOptions {
            stall_timeout_min: Duration::from_secs(1),
            ..quick_recovery(None)
        },
    )
    .unwrap();
    let url = format!("rtsp://127.0.0.1:{}/cam", link.port);
    let rx = ingest
        .add_camera(&camera("yard", &url), Path::new("/"))
        .unwrap();
    next_frame(&rx, Duration::from_secs(30));
    ingest
        .wait_for("yard", Duration::from_secs(10), |s| {
            s.state == SourceState::Running
        })
        .unwrap();
    link.frozen.store(true, Ordering::Release);
    // No error, no end of stream: only the watchdog can notice.
    let lost = ingest
        .wait_for("yard", Duration::from_secs(20), |s| s.stalls == 1)
        .unwrap_or_else(|s| panic!("stall not detected: {s:?}"));
    assert!(lost.last_error.unwrap().contains("stall timeout"));
    ingest
        .wait_for("yard", Duration::from_secs(10), |s| {
            s.state == SourceState::Retrying
        })
        .unwrap();
    link.frozen.store(false, Ordering::Release);
    let back = ingest
        .wait_for("yard", Duration::from_secs(30), |s| {
            s.state == SourceState::Running
        })
        .unwrap_or_else(|s| panic!("did not recover: {s:?}"));
    assert_eq!(back.reconnects, 1);
    while rx.try_recv().is_ok() {}
    next_frame(&rx, Duration::from_secs(30));
}

#[test]
fn camera_that_accepts_but_never_answers_fails_instead_of_hanging() {
    // The kernel completes the TCP handshake; nobody ever speaks RTSP.
    let black_hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "rtsp://127.0.0.1:{}/cam",
        black_hole.local_addr().unwrap().port()
    );
    let ingest = IngestManager::with_options(
        Arc::new(Metrics::new()),
        SourceOptions {
            startup_timeout: Duration::from_secs(1),
            ..quick_recovery(Some(1))
        },
    )
    .unwrap();
    let rx = ingest
        .add_camera(&camera("mute", &url), Path::new("/"))
        .unwrap();
    let status = ingest
        .wait_for("mute", Duration::from_secs(30), |s| s.state.is_terminal())
        .expect("the source gives up");
    assert_eq!(status.state, SourceState::Failed);
    let err = status.last_error.unwrap();
    assert!(
        err.contains("no frame within") && err.contains("gave up after 2"),
        "{err}"
    );
    assert!(drain(&rx, Duration::from_secs(5)).is_empty());
}

#[test]
fn served_file_loops_without_ending_the_stream() {
    // 120 frames (about 4 s): 150 frames need the server to start the file over.
    let server = start_rtsp_server(
        ServeSource::File(footage("carphone_pristine.mp4")),
        server_options(0),
    )
    .unwrap();
    let ingest =
        IngestManager::with_options(Arc::new(Metrics::new()), quick_recovery(Some(0))).unwrap();
    let mut cam = camera("loop", server.url());
    cam.width = Some(88);
    cam.height = Some(72);
    cam.queue = 256;
    let rx = ingest.add_camera(&cam, Path::new("/")).unwrap();
    let frames: Vec<_> = (0..150)
        .map(|_| next_frame(&rx, Duration::from_secs(30)))
        .collect();
    assert!(
        frames
            .windows(2)
            .all(|w| w[1].seq == w[0].seq + 1 && w[1].pts_ns > w[0].pts_ns)
    );
    let status = ingest.status("loop").unwrap();
    assert_eq!((status.state, status.reconnects), (SourceState::Running, 0));
}
