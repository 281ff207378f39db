//! Offline evaluation: replay of scheduling methods over recorded traces, baselines and reports.
//!
//! Pure Rust apart from the optional OpenCV frame features (feature `opencv`): no GStreamer,
//! no ONNX Runtime.

#[cfg(feature = "opencv")]
pub mod features;
pub mod reducto;
pub mod stats;
