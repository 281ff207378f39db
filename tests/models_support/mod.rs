//! Shared helpers of the model tests: real frames decoded with gst-launch-1.0, pipelines
//! written to temporary folders, loaded models.
#![allow(dead_code)]

use mlink::config::{AdapterKind, CostConfig, HeadConfig, ModelConfig};
use mlink::frame::Frame;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn footage(name: &str) -> PathBuf {
    root().join("data/footage").join(name)
}

/// Frames `frames` (0-based) of data/footage/NAME, decoded to RGB by GStreamer exactly as
/// models/make_reference.py decodes them.
pub fn decode(name: &str, frames: &[usize], width: u32, height: u32) -> Vec<Frame> {
    let dir = tempfile::tempdir().unwrap();
    let last = frames.iter().max().copied().unwrap_or(0);
    let mut args: Vec<String> = vec![
        "-q".into(),
        "filesrc".into(),
        format!("location={}", footage(name).display()),
        "!".into(),
        "decodebin".into(),
        "!".into(),
        "videoconvert".into(),
        "!".into(),
        "video/x-raw,format=RGB".into(),
        "!".into(),
    ];
    if !name.ends_with(".jpg") {
        args.extend([
            "identity".into(),
            format!("eos-after={}", last + 2),
            "!".into(),
        ]);
    }
    args.extend([
        "multifilesink".into(),
        format!("location={}/f%05d.rgb", dir.path().display()),
    ]);
    let status = std::process::Command::new("gst-launch-1.0")
        .args(&args)
        .status()
        .expect("gst-launch-1.0 runs");
    assert!(status.success(), "gst-launch-1.0 failed decoding {name}");
    let stride = (width as usize * 3).div_ceil(4) * 4;
    frames
        .iter()
        .map(|&f| {
            let raw = std::fs::read(dir.path().join(format!("f{f:05}.rgb"))).unwrap();
            assert_eq!(
                raw.len(),
                stride * height as usize,
                "{name} frame {f}: unexpected size"
            );
            let rgb: Vec<u8> = raw
                .chunks_exact(stride)
                .flat_map(|r| r[..width as usize * 3].to_vec())
                .collect();
            Frame::new(
                Arc::from(name),
                f as u64,
                None,
                width,
                height,
                Arc::from(rgb),
            )
            .unwrap()
        })
        .collect()
}

pub fn model(id: &str, file: &str, adapter: AdapterKind, head: HeadConfig) -> ModelConfig {
    ModelConfig {
        id: id.into(),
        path: PathBuf::from(file),
        adapter,
        head,
        crops_from: None,
        cost: CostConfig::Auto,
        min_score: 0.3,
        threads: 1,
        oracle: None,
        view: None,
    }
}

pub fn models_dir() -> PathBuf {
    root().join("models")
}

pub fn classes(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub fn count_of(value: &mlink::output::OutputValue) -> Vec<f32> {
    match value {
        mlink::output::OutputValue::Vector(v) => v.clone(),
        other => panic!("expected a vector, found {other:?}"),
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}
