//! Helpers shared by the ingest tests: footage paths, camera configs, ports, frame draining.
#![allow(dead_code)]

use crossbeam_channel::{Receiver, RecvTimeoutError};
use mlink::config::{CameraConfig, OnEnd, RtspOptions, Sampling};
use mlink::frame::Frame;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A file of the test footage (`scripts/setup.sh` downloads it).
pub fn footage(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data/footage")
        .join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

pub fn camera(id: &str, uri: &str) -> CameraConfig {
    CameraConfig {
        id: id.into(),
        uri: uri.into(),
        sampling: None,
        width: None,
        height: None,
        rtsp: RtspOptions::default(),
        on_end: OnEnd::Stop,
        queue: 4,
    }
}

pub fn fps(fps: f64) -> Option<Sampling> {
    Some(Sampling {
        fps: Some(fps),
        every_seconds: None,
    })
}

pub fn every_seconds(s: f64) -> Option<Sampling> {
    Some(Sampling {
        fps: None,
        every_seconds: Some(s),
    })
}

/// A TCP port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every frame until the queue disconnects; panics if that takes longer than `limit`.
pub fn drain(rx: &Receiver<Frame>, limit: Duration) -> Vec<Frame> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(f) => out.push(f),
            Err(RecvTimeoutError::Disconnected) => return out,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "the source did not end within {limit:?} ({} frames)",
                    out.len()
                )
            }
        }
    }
}

/// The next frame, within `limit`.
pub fn next_frame(rx: &Receiver<Frame>, limit: Duration) -> Frame {
    rx.recv_timeout(limit)
        .unwrap_or_else(|e| panic!("no frame within {limit:?}: {e}"))
}
