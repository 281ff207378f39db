//! mlink: a streaming video-analytics engine that executes the vision models it can afford
//! and predicts the outputs of the others with small learned *model links*.
//!
//! Module map (see `README.md` for the full layout):
//! - [`config`]: pipeline files, strict validation with file:line:column errors.
//! - [`ingest`]: GStreamer camera sources producing [`frame::Frame`]s (feature `gst`).
//! - [`models`]: ONNX Runtime sessions, per-family adapters, output heads, cost profiling.
//! - [`output`]: black-box output values and specs, task kinds, losses and metrics (pure).
//! - [`link`]: model links, multi-source ensembles, training, traces and bundles (pure).
//! - [`schedule`]: activation probability, budgeted selection, profiling plans (pure).
//! - [`adapt`]: online training policies, oracle links, federated aggregation.
//! - [`engine`]: the live system behind `mlink run`.
//! - [`metrics`]: the Prometheus registry and the `/metrics` endpoint.
//! - [`status`]: the operator's status page, snapshots and camera API beside `/metrics`.
//! - [`eval`]: trace replay, baselines and reports (pure).
//! - [`versioned`]: versioned files: format peek, newer-version errors, checksums, atomic
//!   writes (pure).

pub mod adapt;
pub mod cli;
pub mod config;
pub mod control;
pub mod engine;
pub mod eval;
pub mod frame;
pub mod fsutil;
#[cfg(feature = "gst")]
pub mod ingest;
pub mod link;
pub mod metrics;
pub mod models;
pub mod output;
pub mod schedule;
pub mod status;
pub mod versioned;
