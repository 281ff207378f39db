//! One camera: the supervisor thread that runs its pipeline, watches it and reconnects it,
//! and the streaming-thread callbacks that sample frames and hand them to the queue.

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use prometheus::IntCounter;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{CameraConfig, OnEnd};
use crate::frame::Frame;
use crate::metrics::Metrics;

use super::SourceOptions;
use super::delivery::{Delivered, FrameSender};
use super::sampler::Sampler;
use super::source::{self, BuildOptions, SourceKind};
use super::state::{SourceState, SourceStatus};

/// How often the supervisor looks at its bus, its control channel and the watchdog.
const POLL: Duration = Duration::from_millis(50);
const NO_PTS: u64 = u64::MAX;

/// State shared between a camera's supervisor, its streaming threads and the manager.
pub(crate) struct CameraShared {
    pub id: Arc<str>,
    status: Mutex<SourceStatus>,
    changed: Condvar,
    metrics: Arc<Metrics>,
    reconnects: IntCounter,
    /// The queue's producing side; taken (closing the queue) when the source ends.
    sender: Mutex<Option<FrameSender>>,
    sampler: Mutex<Sampler>,
    /// Continuous PTS of the frame the probe just let through, read by the appsink callback
    /// in the same streaming thread.
    kept_pts: AtomicU64,
    seq: AtomicU64,
    dropped: AtomicU64,
    /// Monotonic time (ns since `epoch`) of the last decoded frame, sampled out or not.
    last_activity: AtomicU64,
    /// Decoded frames in the current attempt.
    attempt_frames: AtomicU64,
    /// Largest spacing seen recently between decoded frames (ns), for the watchdog.
    observed_gap: AtomicU64,
    /// Set while a pipeline is being torn down, so that a blocked send gives up.
    teardown: AtomicBool,
    epoch: Instant,
}

impl CameraShared {
    pub fn new(
        id: &str,
        metrics: Arc<Metrics>,
        sender: FrameSender,
        sampler: Sampler,
    ) -> Arc<Self> {
        let reconnects = metrics.source_reconnects.with_label_values(&[id]);
        let shared = Arc::new(Self {
            id: id.into(),
            status: Mutex::new(SourceStatus::new()),
            changed: Condvar::new(),
            metrics,
            reconnects,
            sender: Mutex::new(Some(sender)),
            sampler: Mutex::new(sampler),
            kept_pts: AtomicU64::new(NO_PTS),
            seq: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_activity: AtomicU64::new(0),
            attempt_frames: AtomicU64::new(0),
            observed_gap: AtomicU64::new(0),
            teardown: AtomicBool::new(false),
            epoch: Instant::now(),
        });
        shared
            .metrics
            .set_source_state(id, SourceState::Starting.as_str());
        shared
    }

    fn lock_status(&self) -> MutexGuard<'_, SourceStatus> {
        // A panic elsewhere cannot leave the status half-written: recover the value.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A snapshot of the status.
    pub fn status(&self) -> SourceStatus {
        let mut s = self.lock_status().clone();
        s.frames = self.seq.load(Ordering::Acquire);
        s.dropped = self.dropped.load(Ordering::Acquire);
        s
    }

    /// Waits until `pred` holds for the status or `timeout` passes; returns the last status.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&SourceStatus) -> bool,
    ) -> Result<SourceStatus, SourceStatus> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock_status();
        loop {
            let mut snapshot = guard.clone();
            snapshot.frames = self.seq.load(Ordering::Acquire);
            snapshot.dropped = self.dropped.load(Ordering::Acquire);
            if pred(&snapshot) {
                return Ok(snapshot);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(snapshot);
            }
            // Frame counters change without a notification: look again at least every 20 ms.
            let wait = (deadline - now).min(Duration::from_millis(20));
            guard = self
                .changed
                .wait_timeout(guard, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Changes state and other status fields in one step, so that a waiter never sees the
    /// new state without its counters and error.
    fn transition(
        &self,
        state: SourceState,
        error: Option<String>,
        also: impl FnOnce(&mut SourceStatus),
    ) {
        let mut s = self.lock_status();
        also(&mut s);
        if let Some(e) = error {
            s.last_error = Some(e);
        }
        if s.state != state {
            match state {
                SourceState::Failed | SourceState::Stalled | SourceState::Retrying => {
                    tracing::warn!(
                        camera = %self.id,
                        from = %s.state,
                        to = %state,
                        error = s.last_error.as_deref().unwrap_or(""),
                        "camera source state"
                    )
                }
                _ => {
                    tracing::info!(camera = %self.id, from = %s.state, to = %state, "camera source state")
                }
            }
            s.state = state;
            self.metrics.set_source_state(&self.id, state.as_str());
        }
        drop(s);
        self.changed.notify_all();
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Probe on decoded frames: records activity and decides whether the frame is kept.
    fn on_decoded(&self, buffer: &gst::BufferRef) -> bool {
        let now = self.now_ns();
        let prev = self.last_activity.swap(now, Ordering::AcqRel);
        if self.attempt_frames.fetch_add(1, Ordering::AcqRel) > 0 {
            // A slowly decaying maximum of the spacing between frames.
            let gap = now.saturating_sub(prev);
            let old = self.observed_gap.load(Ordering::Acquire);
            self.observed_gap
                .store(gap.max(old - old / 8), Ordering::Release);
        }
        let pts = buffer.pts().map(|t| t.nseconds()).unwrap_or(now);
        let duration = buffer.duration().map(|t| t.nseconds());
        let kept = self
            .sampler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .offer(pts, duration);
        self.kept_pts
            .store(kept.unwrap_or(NO_PTS), Ordering::Release);
        kept.is_some()
    }

    /// Appsink callback: copies the RGB frame out and queues it.
    fn on_sample(&self, sink: &gst_app::AppSink) -> Result<gst::FlowSuccess, gst::FlowError> {
        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
        let frame = match self.frame_from_sample(&sample) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(camera = %self.id, "skipping undecodable frame: {e}");
                return Ok(gst::FlowSuccess::Ok);
            }
        };
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = sender.as_ref() else {
            return Err(gst::FlowError::Flushing);
        };
        match sender.send(frame, &self.teardown) {
            Delivered::Queued { dropped } => {
                if dropped > 0 {
                    self.dropped.fetch_add(dropped, Ordering::AcqRel);
                }
                Ok(gst::FlowSuccess::Ok)
            }
            Delivered::Abandoned => Err(gst::FlowError::Flushing),
        }
    }

    fn frame_from_sample(&self, sample: &gst::Sample) -> Result<Frame, String> {
        let caps = sample.caps().ok_or("sample without caps")?;
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
        let buffer = sample.buffer().ok_or("sample without buffer")?;
        let vframe = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|e| e.to_string())?;
        let (w, h) = (info.width() as usize, info.height() as usize);
        let row = w * 3;
        let stride = usize::try_from(vframe.plane_stride()[0]).map_err(|_| "negative stride")?;
        let data = vframe.plane_data(0).map_err(|e| e.to_string())?;
        if h > 0 && data.len() < stride * (h - 1) + row {
            return Err(format!(
                "RGB plane of {} bytes is too small for {w}x{h}",
                data.len()
            ));
        }
        let rgb: Arc<[u8]> = if stride == row {
            Arc::from(&data[..row * h])
        } else {
            let mut packed = Vec::with_capacity(row * h);
            for y in 0..h {
                packed.extend_from_slice(&data[y * stride..y * stride + row]);
            }
            Arc::from(packed)
        };
        let pts = self.kept_pts.load(Ordering::Acquire);
        let seq = self.seq.fetch_add(1, Ordering::AcqRel);
        Frame::new(
            self.id.clone(),
            seq,
            (pts != NO_PTS).then_some(pts),
            info.width(),
            info.height(),
            rgb,
        )
        .map_err(|e| e.to_string())
    }
}

/// How one attempt at running the pipeline ended.
enum Outcome {
    /// Stop requested.
    Stopped,
    /// End of a file or test source.
    Finished,
    /// An error not worth retrying.
    Fatal(String),
    /// The source was lost and may come back.
    Lost(String),
}

/// Everything the supervisor thread needs.
pub(crate) struct Supervisor {
    pub shared: Arc<CameraShared>,
    pub kind: SourceKind,
    pub config: CameraConfig,
    pub options: SourceOptions,
    pub control: Receiver<()>,
}

impl Supervisor {
    /// Runs attempts until the source stops, finishes or fails; then closes the queue.
    pub fn run(self) {
        let shared = &self.shared;
        let mut failures = 0u32;
        let mut reconnecting = false;
        let final_state = loop {
            let (outcome, ran) = self.attempt(reconnecting);
            if ran {
                failures = 0;
            }
            match outcome {
                Outcome::Stopped => break (SourceState::Stopped, None),
                Outcome::Finished => break (SourceState::Finished, None),
                Outcome::Fatal(e) => break (SourceState::Failed, Some(e)),
                Outcome::Lost(e) => {
                    failures += 1;
                    if self.options.retry.gives_up_after(failures) {
                        let e = format!("{e} (gave up after {failures} failed attempts)");
                        break (SourceState::Failed, Some(e));
                    }
                    shared.transition(SourceState::Retrying, Some(e), |s| {
                        s.consecutive_failures = failures
                    });
                    let wait = self.options.retry.backoff(failures, rand::random::<f64>());
                    match self.control.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                            break (SourceState::Stopped, None);
                        }
                    }
                    reconnecting = true;
                }
            }
        };
        shared.transition(final_state.0, final_state.1, |s| {
            s.consecutive_failures = failures
        });
        // Closing the queue tells the consumer that no more frames will come; the final state
        // is already visible when it notices.
        shared
            .sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    fn stall_timeout(&self, caps_interval: Option<Duration>) -> Duration {
        let sampling = self
            .shared
            .sampler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .interval_ns()
            .map(Duration::from_nanos);
        let observed = Duration::from_nanos(self.shared.observed_gap.load(Ordering::Acquire));
        stall_limit(
            self.options.stall_timeout_min,
            [sampling, caps_interval, Some(observed)],
        )
    }

    fn attempt(&self, reconnecting: bool) -> (Outcome, bool) {
        let shared = &self.shared;
        if let SourceKind::File(path) = &self.kind
            && !path.is_file()
        {
            let why = if path.exists() {
                "is not a regular file"
            } else {
                "does not exist"
            };
            return (Outcome::Fatal(format!("{} {why}", path.display())), false);
        }
        let built = match source::build(
            &self.kind,
            &self.config,
            BuildOptions {
                realtime_files: !self.options.offline,
            },
        ) {
            Ok(b) => b,
            Err(e) => return (Outcome::Fatal(e.to_string()), false),
        };
        shared.teardown.store(false, Ordering::Release);
        shared.attempt_frames.store(0, Ordering::Release);
        shared.observed_gap.store(0, Ordering::Release);
        shared
            .sampler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .discontinuity();
        let probe_shared = Arc::downgrade(shared);
        built
            .decoded
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                let keep = match (probe_shared.upgrade(), info.buffer()) {
                    (Some(s), Some(b)) => s.on_decoded(b),
                    _ => true,
                };
                if keep {
                    gst::PadProbeReturn::Ok
                } else {
                    // Consume the buffer here: with `Drop`, GStreamer 1.22 and the Rust probe
                    // trampoline both release it and the core logs a critical per dropped frame.
                    info.data = None;
                    gst::PadProbeReturn::Handled
                }
            });
        let sink_shared = Arc::downgrade(shared);
        built.appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| match sink_shared.upgrade() {
                    Some(s) => s.on_sample(sink),
                    None => Err(gst::FlowError::Flushing),
                })
                .build(),
        );
        let pipeline = Teardown {
            pipeline: built.pipeline,
            shared,
        };
        let outcome = self.watch(&pipeline.pipeline, reconnecting);
        let ran = shared.attempt_frames.load(Ordering::Acquire) > 0;
        drop(pipeline);
        (outcome, ran)
    }

    /// Plays the pipeline and follows it until it ends.
    fn watch(&self, pipeline: &gst::Pipeline, reconnecting: bool) -> Outcome {
        let shared = &self.shared;
        let Some(bus) = pipeline.bus() else {
            return Outcome::Fatal("pipeline has no bus".into());
        };
        if pipeline.set_state(gst::State::Playing).is_err() {
            let detail = bus
                .pop_filtered(&[gst::MessageType::Error])
                .and_then(|m| match m.view() {
                    gst::MessageView::Error(e) => Some(describe_error(e)),
                    _ => None,
                })
                .unwrap_or_else(|| "the pipeline refused to start".into());
            return self.lost_or_fatal(detail);
        }
        let started = shared.now_ns();
        let mut running = false;
        let mut caps_interval = None;
        loop {
            match self.control.try_recv() {
                Ok(()) | Err(TryRecvError::Disconnected) => return Outcome::Stopped,
                Err(TryRecvError::Empty) => {}
            }
            if let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(POLL.as_nanos() as u64))
            {
                match msg.view() {
                    gst::MessageView::Eos(_) => match (&self.kind, self.config.on_end) {
                        (SourceKind::File(_), OnEnd::Loop) => {
                            if let Err(e) = pipeline.seek_simple(
                                gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                                gst::ClockTime::ZERO,
                            ) {
                                return Outcome::Fatal(format!("cannot loop the file: {e}"));
                            }
                            tracing::debug!(camera = %shared.id, "file looped");
                        }
                        (SourceKind::Rtsp(_), _) => {
                            return Outcome::Lost("the stream ended".into());
                        }
                        _ => return Outcome::Finished,
                    },
                    gst::MessageView::Error(e) => return self.lost_or_fatal(describe_error(e)),
                    gst::MessageView::Warning(w) => {
                        tracing::debug!(camera = %shared.id, "{}", w.error());
                    }
                    _ => {}
                }
            }
            if !running && shared.attempt_frames.load(Ordering::Acquire) > 0 {
                running = true;
                caps_interval = frame_interval(pipeline);
                if reconnecting {
                    shared.reconnects.inc();
                }
                shared.transition(SourceState::Running, None, |s| {
                    s.consecutive_failures = 0;
                    s.reconnects += u64::from(reconnecting);
                });
            }
            // Files never stall on their own: a file source waits for its consumer.
            if matches!(self.kind, SourceKind::File(_)) {
                continue;
            }
            let last = shared.last_activity.load(Ordering::Acquire).max(started);
            let idle = Duration::from_nanos(shared.now_ns().saturating_sub(last));
            if running {
                let limit = self.stall_timeout(caps_interval);
                if idle > limit {
                    let why = format!("no frame for {:.1} s (stall timeout)", idle.as_secs_f64());
                    shared.transition(SourceState::Stalled, Some(why.clone()), |s| s.stalls += 1);
                    return Outcome::Lost(why);
                }
            } else if idle > self.options.startup_timeout {
                return Outcome::Lost(format!(
                    "no frame within {:.1} s of connecting",
                    idle.as_secs_f64()
                ));
            }
        }
    }

    fn lost_or_fatal(&self, detail: String) -> Outcome {
        if self.kind.is_network() {
            Outcome::Lost(detail)
        } else {
            Outcome::Fatal(detail)
        }
    }
}

/// Sets the pipeline to NULL when an attempt ends, releasing any send blocked on backpressure
/// first so that the streaming threads can stop.
struct Teardown<'a> {
    pipeline: gst::Pipeline,
    shared: &'a CameraShared,
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        self.shared.teardown.store(true, Ordering::Release);
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The watchdog limit once frames flow: at least `min`, and three times each expected frame
/// spacing (sampling interval, declared frame rate, recently observed gaps), so that a
/// one-frame-a-minute camera is not declared stalled.
fn stall_limit(min: Duration, spacings: [Option<Duration>; 3]) -> Duration {
    spacings
        .into_iter()
        .flatten()
        .map(|d| d.saturating_mul(3))
        .fold(min, Duration::max)
}

fn describe_error(e: &gst::message::Error) -> String {
    let src = e
        .src()
        .map(|s| s.path_string().to_string())
        .unwrap_or_default();
    match e.debug() {
        Some(debug) => format!("{} (from {src}: {debug})", e.error()),
        None => format!("{} (from {src})", e.error()),
    }
}

/// The frame interval the decoded caps declare, if any (0/1 means variable).
fn frame_interval(pipeline: &gst::Pipeline) -> Option<Duration> {
    let sink = pipeline
        .iterate_sinks()
        .into_iter()
        .flatten()
        .next()?
        .static_pad("sink")?;
    let caps = sink.current_caps()?;
    let fr = caps.structure(0)?.get::<gst::Fraction>("framerate").ok()?;
    (fr.numer() > 0 && fr.denom() > 0)
        .then(|| Duration::from_secs_f64(fr.denom() as f64 / fr.numer() as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_follows_the_expected_frame_spacing() {
        let s = Duration::from_secs;
        // A 30 fps camera: the minimum applies.
        assert_eq!(
            stall_limit(s(5), [None, Some(Duration::from_millis(33)), None]),
            s(5)
        );
        // One frame a minute: three minutes before declaring a stall.
        assert_eq!(stall_limit(s(5), [Some(s(60)), None, None]), s(180));
        // A camera observed to send a frame every 10 s although it declares 25 fps.
        assert_eq!(
            stall_limit(s(5), [None, Some(Duration::from_millis(40)), Some(s(10))]),
            s(30)
        );
    }
}
