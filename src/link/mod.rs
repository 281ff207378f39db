//! Model links (paper sections 3.4 to 3.6): networks mapping one model's output to another's,
//! multi-source ensembles, training, traces and link bundles.
//!
//! Pure Rust: no GStreamer, no ONNX Runtime.

pub mod mlp;
pub mod optim;
pub mod trace;
