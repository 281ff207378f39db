//! GStreamer camera ingest: sources, sampling, bounded delivery, reconnection.
//!
//! Every camera of a pipeline runs its own GStreamer pipeline (see [`source`]) under a
//! supervisor thread that follows its bus, runs a stall watchdog and reconnects lost network
//! sources with capped exponential backoff and jitter. Decoded frames are sampled by
//! timestamp ([`sampler`]), scaled, converted to RGB and queued in a bounded per-camera
//! queue ([`delivery`]): when the consumer is behind, the oldest frame is dropped and counted
//! in `mlink_frames_dropped_total`. Each source exposes its [`SourceState`] in the logs, in
//! `mlink_source_state` and through [`IngestManager::status`].
//!
//! ## Receiving frames
//!
//! [`IngestManager::add_camera`] returns the camera's own receiver (a bounded crossbeam
//! channel of [`crate::frame::Frame`]s). Per-camera receivers keep cameras independent: a
//! busy camera can only drop its own frames. An engine serving several cameras can wait on
//! all of them with `crossbeam_channel::Select`. A receiver reports disconnection once its
//! source has reached a terminal state (stopped, finished, failed) and the queue is drained.
//!
//! ```no_run
//! # use mlink::ingest::IngestManager;
//! # fn demo(cam: &mlink::config::CameraConfig) -> Result<(), mlink::ingest::IngestError> {
//! let ingest = IngestManager::new(mlink::metrics::global())?;
//! let frames = ingest.add_camera(cam, std::path::Path::new("."))?;
//! for frame in frames.iter().take(10) {
//!     println!("{} #{} {}x{}", frame.camera, frame.seq, frame.width, frame.height);
//! }
//! ingest.shutdown();
//! # Ok(()) }
//! ```

pub mod bench;
mod camera;
pub mod delivery;
pub mod rtsp_server;
pub mod sampler;
pub mod source;
pub mod state;

use crossbeam_channel::{Receiver, Sender};
use gstreamer as gst;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::CameraConfig;
use crate::frame::Frame;
use crate::metrics::Metrics;

use camera::{CameraShared, Supervisor};
use delivery::FrameSender;
pub use rtsp_server::{RtspServerHandle, RtspServerOptions, ServeSource, start_rtsp_server};
use sampler::Sampler;
pub use source::SourceKind;
pub use state::{RetryPolicy, SourceState, SourceStatus};

/// Errors of the ingest module.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// GStreamer could not be initialised or lacks an element.
    #[error("GStreamer: {0}")]
    Gst(String),
    /// A camera setting that cannot work.
    #[error("invalid camera: {0}")]
    Config(String),
    #[error("camera `{0}` is already present")]
    DuplicateCamera(String),
    #[error("no camera `{0}`")]
    UnknownCamera(String),
    #[error("RTSP server: {0}")]
    RtspServer(String),
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), IngestError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|e| e.to_string()))
        .clone()
        .map_err(IngestError::Gst)
}

/// How sources are run and recovered. The defaults suit live cameras.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceOptions {
    /// Reconnection of lost network sources.
    pub retry: RetryPolicy,
    /// Lower bound of the stall watchdog; the actual limit is the larger of this and three
    /// times the camera's expected frame spacing.
    pub stall_timeout_min: Duration,
    /// How long a (re)connection may take to produce its first frame.
    pub startup_timeout: Duration,
    /// Offline processing: files decode as fast as the consumer takes frames, and a full
    /// queue makes the file wait instead of dropping (nothing is lost). Live sources are
    /// unaffected. When false, files play at their own frame rate like a camera.
    pub offline: bool,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            stall_timeout_min: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(20),
            offline: false,
        }
    }
}

struct CameraEntry {
    shared: Arc<CameraShared>,
    control: Sender<()>,
    thread: Option<JoinHandle<()>>,
    frames: Receiver<Frame>,
}

impl CameraEntry {
    fn stop(mut self) {
        let _ = self.control.try_send(());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!(camera = %self.shared.id, "camera supervisor panicked");
        }
    }
}

/// All camera sources of an engine. Cameras may be added and removed at any time.
pub struct IngestManager {
    metrics: Arc<Metrics>,
    defaults: SourceOptions,
    cameras: Mutex<HashMap<String, CameraEntry>>,
}

impl IngestManager {
    /// A manager with default [`SourceOptions`]; initialises GStreamer.
    pub fn new(metrics: Arc<Metrics>) -> Result<Self, IngestError> {
        Self::with_options(metrics, SourceOptions::default())
    }

    /// A manager whose cameras use `defaults` unless added with their own options.
    pub fn with_options(
        metrics: Arc<Metrics>,
        defaults: SourceOptions,
    ) -> Result<Self, IngestError> {
        init()?;
        Ok(Self {
            metrics,
            defaults,
            cameras: Mutex::new(HashMap::new()),
        })
    }

    fn cameras(&self) -> MutexGuard<'_, HashMap<String, CameraEntry>> {
        self.cameras.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a camera with the manager's options; relative file paths in its URI are
    /// resolved against `base_dir` (the pipeline file's folder). Returns its frame receiver.
    ///
    /// Settings that cannot work (bad URI, sampling, queue size, duplicate id) are errors;
    /// a source that cannot be opened (missing file, unreachable camera) is not: it shows up
    /// in its state (`failed` or `retrying`) with the error in [`SourceStatus::last_error`].
    pub fn add_camera(
        &self,
        camera: &CameraConfig,
        base_dir: &Path,
    ) -> Result<Receiver<Frame>, IngestError> {
        self.add_camera_with(camera, base_dir, self.defaults.clone())
    }

    /// [`add_camera`](Self::add_camera) with options for this camera.
    pub fn add_camera_with(
        &self,
        camera: &CameraConfig,
        base_dir: &Path,
        options: SourceOptions,
    ) -> Result<Receiver<Frame>, IngestError> {
        if camera.id.trim().is_empty() {
            return Err(IngestError::Config("camera id is empty".into()));
        }
        if camera.queue == 0 {
            return Err(IngestError::Config(format!(
                "camera `{}`: queue must hold at least 1 frame",
                camera.id
            )));
        }
        if camera.width == Some(0) || camera.height == Some(0) {
            return Err(IngestError::Config(format!(
                "camera `{}`: width and height must be positive",
                camera.id
            )));
        }
        let kind = SourceKind::parse(&camera.uri, base_dir)?;
        let sampler = Sampler::from_config(camera.sampling.as_ref())
            .map_err(|e| IngestError::Config(format!("camera `{}`: {e}", camera.id)))?;
        let mut cameras = self.cameras();
        if cameras.contains_key(&camera.id) {
            return Err(IngestError::DuplicateCamera(camera.id.clone()));
        }
        let backpressure = options.offline && matches!(kind, SourceKind::File(_));
        let (sender, frames) = FrameSender::bounded(
            camera.queue,
            backpressure,
            self.metrics
                .frames_ingested
                .with_label_values(&[&camera.id]),
            self.metrics.frames_dropped.with_label_values(&[&camera.id]),
        );
        let shared = CameraShared::new(&camera.id, self.metrics.clone(), sender, sampler);
        let (control, control_rx) = crossbeam_channel::bounded(1);
        let supervisor = Supervisor {
            shared: shared.clone(),
            kind,
            config: camera.clone(),
            options,
            control: control_rx,
        };
        let thread = std::thread::Builder::new()
            .name(format!("camera-{}", camera.id))
            .spawn(move || supervisor.run())?;
        cameras.insert(
            camera.id.clone(),
            CameraEntry {
                shared,
                control,
                thread: Some(thread),
                frames: frames.clone(),
            },
        );
        Ok(frames)
    }

    /// Stops a camera and waits for its pipeline to be torn down. Its receiver drains the
    /// frames still queued, then reports disconnection.
    pub fn remove_camera(&self, id: &str) -> Result<(), IngestError> {
        let entry = self
            .cameras()
            .remove(id)
            .ok_or_else(|| IngestError::UnknownCamera(id.to_string()))?;
        entry.stop();
        Ok(())
    }

    /// Another receiver of a camera's queue (receivers share the frames, they do not copy them).
    pub fn receiver(&self, id: &str) -> Option<Receiver<Frame>> {
        self.cameras().get(id).map(|e| e.frames.clone())
    }

    /// The current state of a camera.
    pub fn state(&self, id: &str) -> Option<SourceState> {
        self.status(id).map(|s| s.state)
    }

    /// A snapshot of a camera's state, error, counters.
    pub fn status(&self, id: &str) -> Option<SourceStatus> {
        self.cameras().get(id).map(|e| e.shared.status())
    }

    /// Waits up to `timeout` for a camera's status to satisfy `pred`; returns the status
    /// that satisfied it, or the last one seen (`Err`) on timeout or for an unknown camera.
    pub fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl FnMut(&SourceStatus) -> bool,
    ) -> Result<SourceStatus, Option<SourceStatus>> {
        let shared = self.cameras().get(id).map(|e| e.shared.clone());
        match shared {
            Some(s) => s.wait_for(timeout, pred).map_err(Some),
            None => Err(None),
        }
    }

    /// The ids of the cameras present.
    pub fn camera_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.cameras().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Stops every camera.
    pub fn shutdown(&self) {
        let entries: Vec<CameraEntry> = self.cameras().drain().map(|(_, e)| e).collect();
        // Ask all first so that the pipelines wind down in parallel.
        for e in &entries {
            let _ = e.control.try_send(());
        }
        for e in entries {
            e.stop();
        }
    }
}

impl Drop for IngestManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}
