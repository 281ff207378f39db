//! Shared helpers of the adaptation tests: synthetic traces written with the real trace
//! writer, and the `mlink` binary.
#![allow(dead_code)]

use mlink::link::trace::{TraceHeader, TraceModel, TraceRecord, TraceWriter};
use mlink::output::{OutputSpec, OutputValue};
use std::path::Path;
use std::process::Output;

pub fn model(id: &str, spec: OutputSpec) -> TraceModel {
    TraceModel {
        id: id.into(),
        spec,
        memory_mb: None,
        latency_ms: None,
        crops_from: None,
        view: vec![],
    }
}

pub fn record(camera: &str, seq: u64, outputs: Vec<Option<Vec<f32>>>) -> TraceRecord {
    TraceRecord {
        camera: camera.into(),
        seq,
        time_s: seq as f64 * 0.1,
        outputs: outputs
            .into_iter()
            .map(|o| o.map(OutputValue::Vector))
            .collect(),
        views: vec![],
        frame_features: Vec::new(),
        thumbnail: None,
    }
}

pub fn write_trace(path: &Path, models: Vec<TraceModel>, records: &[TraceRecord]) {
    let header = TraceHeader {
        models,
        frame_feature_names: Vec::new(),
        source: "synthetic".into(),
        thumbnail: None,
    };
    let mut w = TraceWriter::create(path, &header).unwrap();
    for r in records {
        w.append(r).unwrap();
    }
    w.finish().unwrap();
}

pub fn mlink(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mlink"))
        .args(args)
        .env("MLINK_LOG", "warn")
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
