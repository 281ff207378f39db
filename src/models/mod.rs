//! ONNX Runtime sessions for the black-box models, per-family adapters and output heads.
//!
//! - [`init_runtime`] loads the ONNX Runtime shared library once per process.
//! - [`LoadedModel`] is one session with its family adapter and output head; [`LoadedModel::infer`]
//!   turns a [`Frame`](crate::frame::Frame) (or crops of another model's detections) into the
//!   head's [`OutputValue`](crate::output::OutputValue), the raw detections and a time split.
//! - [`ModelRegistry`] loads and unloads models explicitly, counting and logging both, and keeps
//!   the memory in use.
//! - [`head_spec`] gives a head's output spec from the configuration alone.
//! - [`profile_model`] measures a model's memory and latency.

mod adapters;
pub mod classes;
mod cost;
mod error;
mod heads;
mod loaded;
pub mod onnx_info;
pub mod postprocess;
pub mod preprocess;
mod registry;
mod runtime;
mod views;

pub use adapters::{Adapter, AdapterOutput, FACE_CROP_MARGIN, RawTensor, face_region};
pub use cost::{ModelCost, profile_model, release_freed_memory, rss_bytes, synthetic_frame};
pub use error::ModelError;
pub use heads::{Head, head_spec, view_names};
pub use loaded::{Inference, LoadedModel, Timing};
pub use postprocess::{Detection, Keypoint};
pub use registry::ModelRegistry;
pub use runtime::{RuntimeInfo, environment, init_runtime};
pub use views::View;
