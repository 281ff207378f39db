//! Reducto's frame-difference features on real frames of data/footage/vtest.avi, decoded with
//! the GStreamer command-line tools.
#![cfg(feature = "opencv")]

use mlink::eval::features::{FEATURE_NAMES, FrameDiffer, frame_features, rgb_features};
use mlink::frame::Frame;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

const W: u32 = 768;
const H: u32 = 576;

/// Decodes the first `n` frames of vtest.avi into packed RGB buffers.
///
/// The decoder writes raw frames to a pipe and exactly `n` frames are read from it, then the
/// decoder is stopped. Stopping the pipeline from inside (`identity eos-after=N` into
/// `multifilesink`) is not deterministic: `eos-after` now and then lets the whole file
/// through or ends before the last frame file is written.
fn decode_vtest(n: usize) -> Vec<Vec<u8>> {
    let footage = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/footage/vtest.avi");
    assert!(
        footage.exists(),
        "{} is missing: run scripts/setup.sh",
        footage.display()
    );
    let mut child = Command::new("gst-launch-1.0")
        .arg("-q")
        .arg("filesrc")
        .arg(format!("location={}", footage.display()))
        .args([
            "!",
            "decodebin",
            "!",
            "videoconvert",
            "!",
            "video/x-raw,format=RGB",
            "!",
            "fdsink",
            "fd=1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gst-launch-1.0 must be installed");
    let mut out = child.stdout.take().expect("stdout is piped");
    let frames = (0..n)
        .map(|i| {
            let mut b = vec![0u8; (W * H * 3) as usize];
            out.read_exact(&mut b).unwrap_or_else(|e| {
                panic!("frame {i}: the decoder gave fewer than {n} {W}x{H} RGB frames: {e}")
            });
            b
        })
        .collect();
    // The rest of the file is not needed: stop the decoder (it may already have exited).
    drop(out);
    let _ = child.kill();
    child.wait().expect("gst-launch-1.0 can be waited for");
    frames
}

fn frame(seq: u64, rgb: &[u8]) -> Frame {
    Frame::new(Arc::from("vtest"), seq, None, W, H, Arc::from(rgb)).unwrap()
}

#[test]
fn identical_frames_give_zero_and_different_frames_positive_differences() {
    let frames = decode_vtest(10);
    let a = frame(0, &frames[0]);
    let same = frame(1, &frames[0]);
    // Ten frames apart at 10 fps: a second of walking pedestrians.
    let later = frame(9, &frames[9]);

    let zero = frame_features(&a, &same).unwrap();
    assert_eq!(zero.len(), FEATURE_NAMES.len());
    assert!(zero.iter().all(|&x| x == 0.0), "identical frames: {zero:?}");

    let moved = frame_features(&a, &later).unwrap();
    for (name, v) in FEATURE_NAMES.iter().zip(&moved) {
        assert!(
            *v > 0.0 && *v <= 1.0,
            "{name} difference is {v}, expected in (0, 1]"
        );
    }
    // Pedestrians are a small part of the view: most pixels must not count as changed.
    assert!(
        moved[0] < 0.5,
        "pixel difference {} is implausibly large",
        moved[0]
    );

    // The streaming extractor agrees with the pairwise function and starts at zero.
    let mut d = FrameDiffer::new();
    assert_eq!(d.push(W, H, &frames[0]).unwrap(), vec![0.0; 4]);
    assert_eq!(d.push(W, H, &frames[9]).unwrap(), moved);
    assert_eq!(rgb_features(W, H, &frames[0], &frames[9]).unwrap(), moved);
}

#[test]
fn consecutive_frames_differ_less_than_frames_far_apart() {
    let frames = decode_vtest(10);
    let near = rgb_features(W, H, &frames[0], &frames[1]).unwrap();
    let far = rgb_features(W, H, &frames[0], &frames[9]).unwrap();
    // Pixel and area changes grow as pedestrians walk further.
    assert!(far[0] > near[0], "pixel: near {} far {}", near[0], far[0]);
    assert!(far[1] >= near[1], "area: near {} far {}", near[1], far[1]);
}

#[test]
fn mismatched_buffers_are_errors() {
    let frames = decode_vtest(1);
    assert!(rgb_features(W, H, &frames[0], &frames[0][..100]).is_err());
    assert!(rgb_features(0, 0, &[], &[]).is_err());
}
