//! Ingest throughput: how fast a file decodes, scales and converts to RGB frames through the
//! real ingest path (pipeline, sampling probe, frame copy, queue).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{CameraConfig, OnEnd, RtspOptions};
use crate::metrics::Metrics;

use super::{IngestError, IngestManager, SourceOptions, SourceState};

/// One measured configuration.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct IngestThroughput {
    /// Output width and height of the frames.
    pub width: u32,
    pub height: u32,
    /// `native` or the requested `WxH`.
    pub label: String,
    pub frames: u64,
    pub seconds: f64,
    pub frames_per_second: f64,
}

/// Decodes all of `path` once as fast as possible, scaled to `size` (`None`: native size),
/// and reports the throughput.
pub fn measure(path: &Path, size: Option<(u32, u32)>) -> Result<IngestThroughput, IngestError> {
    let manager = IngestManager::with_options(
        Arc::new(Metrics::new()),
        SourceOptions {
            offline: true,
            ..SourceOptions::default()
        },
    )?;
    let camera = CameraConfig {
        id: "bench".into(),
        uri: path.to_string_lossy().into_owned(),
        sampling: None,
        width: size.map(|s| s.0),
        height: size.map(|s| s.1),
        rtsp: RtspOptions::default(),
        on_end: OnEnd::Stop,
        queue: 8,
    };
    let start = Instant::now();
    let frames = manager.add_camera(&camera, Path::new("."))?;
    let mut count = 0u64;
    let mut dims = (0, 0);
    for frame in frames.iter() {
        count += 1;
        dims = (frame.width, frame.height);
    }
    let seconds = start.elapsed().as_secs_f64();
    let status = manager
        .wait_for("bench", Duration::from_secs(5), |s| s.state.is_terminal())
        .map_err(|s| IngestError::Gst(format!("bench source did not end: {s:?}")))?;
    if status.state != SourceState::Finished || count == 0 {
        return Err(IngestError::Gst(format!(
            "{} could not be decoded: {}",
            path.display(),
            status.last_error.as_deref().unwrap_or("no frames")
        )));
    }
    Ok(IngestThroughput {
        width: dims.0,
        height: dims.1,
        label: size.map_or_else(|| "native".to_string(), |(w, h)| format!("{w}x{h}")),
        frames: count,
        seconds,
        frames_per_second: count as f64 / seconds.max(1e-9),
    })
}
