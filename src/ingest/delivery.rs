//! Bounded per-camera frame queue: drop-oldest when the consumer is behind, or (offline file
//! processing) backpressure that still gives up when the source is torn down.

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use prometheus::IntCounter;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::frame::Frame;

/// How long a backpressured send waits before checking whether the source is being torn down.
const BACKPRESSURE_POLL: Duration = Duration::from_millis(50);

/// What happened to a frame handed to [`FrameSender::send`].
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Queued; `dropped` older frames were discarded to make room.
    Queued { dropped: u64 },
    /// Not queued: the source is being torn down (backpressure mode only).
    Abandoned,
}

/// The producing side of a camera's queue.
pub struct FrameSender {
    tx: Sender<Frame>,
    /// A receiver of the same queue, used to discard the oldest frame (drop-oldest mode only).
    oldest: Option<Receiver<Frame>>,
    ingested: IntCounter,
    dropped: IntCounter,
}

impl FrameSender {
    /// A queue of `capacity` frames. With `backpressure`, a full queue makes the sender wait
    /// instead of dropping (for offline work on files, where waiting loses nothing).
    pub fn bounded(
        capacity: usize,
        backpressure: bool,
        ingested: IntCounter,
        dropped: IntCounter,
    ) -> (Self, Receiver<Frame>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let oldest = (!backpressure).then(|| rx.clone());
        (
            Self {
                tx,
                oldest,
                ingested,
                dropped,
            },
            rx,
        )
    }

    /// Queues `frame`. Never blocks in drop-oldest mode; in backpressure mode it waits until
    /// there is room or `teardown` is set.
    pub fn send(&self, mut frame: Frame, teardown: &AtomicBool) -> Delivered {
        let Some(oldest) = &self.oldest else {
            loop {
                match self.tx.send_timeout(frame, BACKPRESSURE_POLL) {
                    Ok(()) => {
                        self.ingested.inc();
                        return Delivered::Queued { dropped: 0 };
                    }
                    Err(SendTimeoutError::Timeout(f)) if !teardown.load(Ordering::Acquire) => {
                        frame = f
                    }
                    Err(_) => return Delivered::Abandoned,
                }
            }
        };
        let mut dropped = 0;
        loop {
            match self.tx.try_send(frame) {
                Ok(()) => {
                    self.ingested.inc();
                    return Delivered::Queued { dropped };
                }
                Err(TrySendError::Full(f)) => {
                    frame = f;
                    // The consumer may take a frame between the two calls; then nothing is
                    // dropped and the next try succeeds.
                    if oldest.try_recv().is_ok() {
                        dropped += 1;
                        self.dropped.inc();
                    }
                }
                // Unreachable while `oldest` holds a receiver; treat as a discarded frame.
                Err(TrySendError::Disconnected(_)) => {
                    self.dropped.inc();
                    return Delivered::Queued {
                        dropped: dropped + 1,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn frame(seq: u64) -> Frame {
        Frame::new("c".into(), seq, Some(seq), 1, 1, Arc::from(vec![0u8; 3])).unwrap()
    }

    fn counters() -> (IntCounter, IntCounter) {
        (
            IntCounter::new("i", "i").unwrap(),
            IntCounter::new("d", "d").unwrap(),
        )
    }

    #[test]
    fn drop_oldest_keeps_the_newest_frames() {
        let (ing, drop) = counters();
        let (tx, rx) = FrameSender::bounded(3, false, ing.clone(), drop.clone());
        let stop = AtomicBool::new(false);
        for seq in 0..10 {
            tx.send(frame(seq), &stop);
            assert!(rx.len() <= 3);
        }
        let seqs: Vec<u64> = rx.try_iter().map(|f| f.seq).collect();
        assert_eq!(seqs, vec![7, 8, 9]);
        assert_eq!(drop.get(), 7);
        assert_eq!(ing.get(), 10);
    }

    #[test]
    fn backpressure_waits_then_gives_up_on_teardown() {
        let (ing, drop) = counters();
        let (tx, rx) = FrameSender::bounded(1, true, ing.clone(), drop.clone());
        let stop = AtomicBool::new(false);
        assert_eq!(tx.send(frame(0), &stop), Delivered::Queued { dropped: 0 });
        let _keep_open = rx.clone();
        let consumer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(120));
            rx.recv().unwrap().seq
        });
        // Blocks until the consumer takes frame 0.
        assert_eq!(tx.send(frame(1), &stop), Delivered::Queued { dropped: 0 });
        assert_eq!(consumer.join().unwrap(), 0);
        stop.store(true, Ordering::Release);
        assert_eq!(tx.send(frame(2), &stop), Delivered::Abandoned);
        assert_eq!(drop.get(), 0);
        assert_eq!(ing.get(), 2);
    }
}
