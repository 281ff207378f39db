//! Frames taken from the cameras while the models run in turns.
//!
//! A run in turns (profiling, labelling, the hybrid's kept frames under a memory budget that
//! holds fewer than all models) unloads the serving set and takes seconds. Without help, the
//! cameras' short drop-oldest queues overflow meanwhile and those frames are lost although
//! the engine could serve them once the turns end. [`Intake::while_busy`] runs such work
//! while a thread keeps taking the cameras' frames into a backlog bounded in bytes; the frame
//! loop serves the backlog, oldest first and in batches, before it takes new frames. Frames
//! keep their order per camera, so the controller sees them as it would have.

use crate::frame::Frame;
use crate::metrics::Metrics;
use crossbeam_channel::{Receiver, Select};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The default bound of the backlog, in MB of decoded frames (about 270 frames of 640x480).
pub const DEFAULT_BACKLOG_MB: f64 = 256.0;

/// How often the intake thread checks whether the work has ended.
const POLL: Duration = Duration::from_millis(20);

/// The cameras' queues, and the frames taken from them while the models were busy.
pub struct Intake {
    /// One receiver per camera (clones of the frame loop's; refreshed when cameras change).
    pub cameras: Vec<Receiver<Frame>>,
    backlog: VecDeque<Frame>,
    bytes: usize,
    /// Most bytes of frames the backlog holds; 0: no backlog (the work blocks ingest).
    cap_bytes: usize,
    metrics: Arc<Metrics>,
    /// Frames the backlog took, and those it dropped over its bound (counted as the camera's
    /// dropped frames too).
    pub taken: u64,
    pub dropped: u64,
    /// The most frames it held at once.
    pub peak_frames: usize,
}

impl Intake {
    /// An intake bounded at `cap_mb` MB of frames (0 disables it).
    pub fn new(cap_mb: f64, metrics: Arc<Metrics>) -> Self {
        let cap_bytes = if cap_mb.is_finite() && cap_mb > 0.0 {
            (cap_mb * 1e6) as usize
        } else {
            0
        };
        Intake {
            cameras: Vec::new(),
            backlog: VecDeque::new(),
            bytes: 0,
            cap_bytes,
            metrics,
            taken: 0,
            dropped: 0,
            peak_frames: 0,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.cap_bytes > 0
    }

    pub fn len(&self) -> usize {
        self.backlog.len()
    }

    pub fn is_empty(&self) -> bool {
        self.backlog.is_empty()
    }

    /// Up to `max` frames from the backlog, oldest first. The frames the cameras delivered
    /// since join the backlog first: while it is served they would otherwise overflow the
    /// cameras' short queues.
    pub fn take(&mut self, max: usize) -> Vec<Frame> {
        let mut arrived = Vec::new();
        for rx in &self.cameras {
            arrived.extend(rx.try_iter());
        }
        let mut drain = Drain::holding(self);
        for f in arrived {
            drain.push(f, &self.metrics);
        }
        drain.give_back(self);
        let n = max.min(self.backlog.len());
        let frames: Vec<Frame> = self.backlog.drain(..n).collect();
        self.bytes -= frames.iter().map(frame_bytes).sum::<usize>();
        frames
    }

    /// Counts the frames still held as their cameras' dropped frames and lets them go (the
    /// run ends: they will not be served).
    pub fn discard(&mut self) {
        for f in self.backlog.drain(..) {
            count_dropped(&self.metrics, &f);
            self.dropped += 1;
        }
        self.bytes = 0;
    }

    /// Runs `work` while a thread takes the cameras' frames into the backlog; without a
    /// backlog or cameras, runs it alone.
    pub fn while_busy<T>(&mut self, work: impl FnOnce() -> T) -> T {
        if !self.is_enabled() || self.cameras.is_empty() {
            return work();
        }
        let done = AtomicBool::new(false);
        let mut drain = Drain::holding(self);
        let cameras = &self.cameras;
        let metrics = &self.metrics;
        let result = std::thread::scope(|s| {
            let intake = s.spawn(|| {
                drain.run(cameras, &done, metrics);
                drain
            });
            let result = work();
            done.store(true, Ordering::Release);
            (result, intake.join())
        });
        let (result, drained) = result;
        match drained {
            Ok(d) => d.give_back(self),
            Err(_) => {
                // The thread only moves frames; a panic there loses its frames, not the run.
                tracing::error!("the camera intake thread failed; its frames are lost");
                self.bytes = 0;
            }
        }
        result
    }
}

/// Counts a frame taken from its camera and never served as one of the camera's dropped
/// frames (`mlink_frames_dropped_total`).
pub fn count_dropped(metrics: &Metrics, frame: &Frame) {
    metrics
        .frames_dropped
        .with_label_values(&[&frame.camera])
        .inc();
}

fn frame_bytes(f: &Frame) -> usize {
    f.rgb.len()
}

/// The intake thread's state while the work runs.
struct Drain {
    backlog: VecDeque<Frame>,
    bytes: usize,
    cap_bytes: usize,
    taken: u64,
    dropped: u64,
    peak: usize,
}

impl Drain {
    /// Takes over the intake's backlog.
    fn holding(intake: &mut Intake) -> Self {
        Drain {
            backlog: std::mem::take(&mut intake.backlog),
            bytes: intake.bytes,
            cap_bytes: intake.cap_bytes,
            taken: 0,
            dropped: 0,
            peak: intake.peak_frames,
        }
    }

    /// Hands the backlog and the counts back to the intake.
    fn give_back(self, intake: &mut Intake) {
        intake.backlog = self.backlog;
        intake.bytes = self.bytes;
        intake.taken += self.taken;
        intake.dropped += self.dropped;
        intake.peak_frames = self.peak;
    }

    fn run(&mut self, cameras: &[Receiver<Frame>], done: &AtomicBool, metrics: &Metrics) {
        let mut sel = Select::new();
        for rx in cameras {
            sel.recv(rx);
        }
        while !done.load(Ordering::Acquire) {
            let Ok(op) = sel.select_timeout(POLL) else {
                continue;
            };
            let i = op.index();
            match op.recv(&cameras[i]) {
                Ok(frame) => self.push(frame, metrics),
                // A camera that ended: stop watching it.
                Err(_) => sel.remove(i),
            }
        }
    }

    /// Adds a frame; over the bound, the oldest frames go (as the cameras' queues do).
    fn push(&mut self, frame: Frame, metrics: &Metrics) {
        self.bytes += frame_bytes(&frame);
        self.backlog.push_back(frame);
        self.taken += 1;
        while self.bytes > self.cap_bytes && self.backlog.len() > 1 {
            let Some(old) = self.backlog.pop_front() else {
                break;
            };
            self.bytes -= frame_bytes(&old);
            self.dropped += 1;
            count_dropped(metrics, &old);
        }
        self.peak = self.peak.max(self.backlog.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn frame(camera: &str, seq: u64) -> Frame {
        Frame::new(camera.into(), seq, None, 10, 10, vec![0u8; 300].into()).unwrap()
    }

    /// Sends `n` frames a camera, one every `gap`, on a thread of its own.
    fn cameras(n: u64, gap: Duration) -> (Vec<Receiver<Frame>>, std::thread::JoinHandle<()>) {
        let (ta, ra) = crossbeam_channel::bounded(2);
        let (tb, rb) = crossbeam_channel::bounded(2);
        let producer = std::thread::spawn(move || {
            for seq in 0..n {
                // The queues are short, as the cameras' are: without the intake they fill.
                let _ = ta.send_timeout(frame("a", seq), Duration::from_secs(5));
                let _ = tb.send_timeout(frame("b", seq), Duration::from_secs(5));
                std::thread::sleep(gap);
            }
        });
        (vec![ra, rb], producer)
    }

    #[test]
    fn frames_arriving_while_busy_are_kept_in_order_per_camera() {
        let metrics = Arc::new(Metrics::new());
        let mut intake = Intake::new(1.0, metrics);
        let (rxs, producer) = cameras(20, Duration::from_millis(2));
        intake.cameras = rxs;
        // Busy until every frame has been sent: far longer than two-frame queues hold.
        let started = Instant::now();
        let out = intake.while_busy(|| {
            producer.join().unwrap();
            7
        });
        assert_eq!(out, 7);
        assert!(started.elapsed() >= Duration::from_millis(20));
        // What is left in the queues after the work ended is the frame loop's to take.
        let mut got = intake.take(usize::MAX);
        for rx in &intake.cameras {
            got.extend(rx.try_iter());
        }
        assert!(intake.is_empty());
        for cam in ["a", "b"] {
            let seqs: Vec<u64> = got
                .iter()
                .filter(|f| &*f.camera == cam)
                .map(|f| f.seq)
                .collect();
            assert_eq!(seqs, (0..20).collect::<Vec<_>>(), "camera {cam}");
        }
        assert_eq!(intake.dropped, 0);
        assert!(intake.taken >= 36, "{}", intake.taken);
        assert!(intake.peak_frames >= 36, "{}", intake.peak_frames);
    }

    #[test]
    fn over_its_bound_the_backlog_drops_the_oldest_and_counts_them() {
        let metrics = Arc::new(Metrics::new());
        // 3,000 bytes: ten frames of 300 bytes.
        let mut intake = Intake::new(0.003, metrics.clone());
        let (rxs, producer) = cameras(30, Duration::from_millis(1));
        intake.cameras = rxs;
        intake.while_busy(|| producer.join().unwrap());
        assert_eq!(intake.len(), 10);
        let left: u64 = intake.cameras.iter().map(|rx| rx.len() as u64).sum();
        assert_eq!(intake.taken, 60 - left);
        assert_eq!(intake.dropped, intake.taken - 10);
        let counted: u64 = ["a", "b"]
            .iter()
            .map(|c| metrics.frames_dropped.with_label_values(&[c]).get())
            .sum();
        assert_eq!(
            counted, intake.dropped,
            "drops are the cameras' dropped frames"
        );
        // The newest frames remain, oldest first.
        let kept = intake.take(usize::MAX);
        let last_a: Vec<u64> = kept
            .iter()
            .filter(|f| &*f.camera == "a")
            .map(|f| f.seq)
            .collect();
        assert!(last_a.windows(2).all(|w| w[0] < w[1]), "{last_a:?}");
        assert!(last_a.iter().all(|&s| s >= 20), "{last_a:?}");
    }

    #[test]
    fn without_a_bound_the_work_runs_alone_and_the_queues_are_untouched() {
        let mut intake = Intake::new(0.0, Arc::new(Metrics::new()));
        let (tx, rx) = crossbeam_channel::bounded(4);
        tx.send(frame("a", 0)).unwrap();
        intake.cameras = vec![rx.clone()];
        intake.while_busy(|| std::thread::sleep(Duration::from_millis(30)));
        assert!(intake.is_empty());
        assert_eq!(rx.len(), 1);
    }
}
