//! Frame sampling by presentation timestamp.
//!
//! Sampling is done here rather than with GStreamer's `videorate` because `videorate` is
//! built to *produce* a constant rate: it duplicates frames to fill gaps and holds a frame
//! until the next one arrives to decide, so a camera giving one frame a minute would be
//! delayed by a minute and a stream with gaps would yield invented frames. Sampling by PTS
//! only ever drops: the first frame of every interval slot is kept, the decision is taken the
//! moment the frame is decoded, and dropped frames are never scaled or converted (the sampler
//! runs in a probe before `videoscale`).
//!
//! Timestamps are made continuous across discontinuities (a looping file starting over, a
//! reconnected stream starting from zero), so sequence and PTS stay monotonic per camera.

use crate::config::Sampling;

use super::IngestError;

/// Keeps every frame, or the first frame of each `interval` slot of the stream timeline.
#[derive(Clone, Debug)]
pub struct Sampler {
    interval_ns: Option<u64>,
    /// Added to raw timestamps to make them continuous.
    offset: i128,
    last_raw: Option<u64>,
    last_cont: Option<u64>,
    /// Duration of the last frame, or the last observed spacing when buffers carry none.
    last_step: u64,
    origin: Option<u64>,
    last_slot: Option<u64>,
    rebase: bool,
}

impl Sampler {
    /// Keeps every frame.
    pub fn every_frame() -> Self {
        Self::with_interval_ns(None)
    }

    /// Keeps one frame per `interval_ns` nanoseconds of stream time (`None`: every frame).
    pub fn with_interval_ns(interval_ns: Option<u64>) -> Self {
        Self {
            interval_ns: interval_ns.filter(|&n| n > 0),
            offset: 0,
            last_raw: None,
            last_cont: None,
            last_step: 0,
            origin: None,
            last_slot: None,
            rebase: false,
        }
    }

    /// The sampler for a camera's `sampling` setting, checking it.
    pub fn from_config(sampling: Option<&Sampling>) -> Result<Self, IngestError> {
        Ok(Self::with_interval_ns(interval_ns(sampling)?))
    }

    /// The kept-frame interval, `None` when every frame is kept.
    pub fn interval_ns(&self) -> Option<u64> {
        self.interval_ns
    }

    /// The next frame starts a new segment (new connection): its timestamp is rebased to
    /// follow the last one even if it does not go backwards.
    pub fn discontinuity(&mut self) {
        self.rebase = true;
    }

    /// Offers a decoded frame with raw timestamp `pts_ns` (and duration, if known). Returns the
    /// continuous timestamp when the frame is kept, `None` when it is sampled out.
    pub fn offer(&mut self, pts_ns: u64, duration_ns: Option<u64>) -> Option<u64> {
        if let (Some(last_raw), Some(last_cont)) = (self.last_raw, self.last_cont) {
            if self.rebase || pts_ns < last_raw {
                // Continue right after the previous frame.
                self.offset =
                    i128::from(last_cont) + i128::from(self.last_step.max(1)) - i128::from(pts_ns);
            } else if duration_ns.is_none() {
                self.last_step = pts_ns - last_raw;
            }
        }
        self.rebase = false;
        let cont = u64::try_from(i128::from(pts_ns) + self.offset).unwrap_or(u64::MAX);
        self.last_raw = Some(pts_ns);
        self.last_cont = Some(cont);
        if let Some(d) = duration_ns {
            self.last_step = d;
        }
        let Some(interval) = self.interval_ns else {
            return Some(cont);
        };
        let origin = *self.origin.get_or_insert(cont);
        let slot = cont.saturating_sub(origin) / interval;
        if self.last_slot.is_some_and(|last| slot <= last) {
            return None;
        }
        self.last_slot = Some(slot);
        Some(cont)
    }
}

/// The interval between kept frames for a `sampling` setting, checking it.
pub fn interval_ns(sampling: Option<&Sampling>) -> Result<Option<u64>, IngestError> {
    let Some(s) = sampling else {
        return Ok(None);
    };
    let seconds = match (s.fps, s.every_seconds) {
        (Some(fps), None) if fps.is_finite() && fps > 0.0 => 1.0 / fps,
        (None, Some(every)) if every.is_finite() && every > 0.0 => every,
        (Some(_), Some(_)) => {
            return Err(IngestError::Config(
                "sampling: set either `fps` or `every_seconds`, not both".into(),
            ));
        }
        (None, None) => return Ok(None),
        _ => {
            return Err(IngestError::Config(
                "sampling: `fps` and `every_seconds` must be positive numbers".into(),
            ));
        }
    };
    Ok(Some((seconds * 1e9).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn kept(s: &mut Sampler, pts: impl IntoIterator<Item = u64>) -> Vec<u64> {
        pts.into_iter().filter_map(|p| s.offer(p, None)).collect()
    }

    #[test]
    fn every_frame_keeps_all() {
        let mut s = Sampler::every_frame();
        assert_eq!(kept(&mut s, (0..10).map(|i| i * 100 * MS)).len(), 10);
    }

    #[test]
    fn fps_keeps_first_frame_of_each_slot() {
        // 10 fps for 7.95 s sampled at 5 fps and at 1 fps.
        let pts: Vec<u64> = (0..80).map(|i| i * 100 * MS).collect();
        let mut five = Sampler::with_interval_ns(Some(200 * MS));
        assert_eq!(kept(&mut five, pts.clone()).len(), 40);
        let mut one = Sampler::with_interval_ns(Some(1000 * MS));
        assert_eq!(
            kept(&mut one, pts),
            (0..8).map(|i| i * 1000 * MS).collect::<Vec<_>>()
        );
    }

    #[test]
    fn irregular_stream_never_invents_frames() {
        let mut s = Sampler::with_interval_ns(Some(1000 * MS));
        // A gap of 10 s yields one frame, not ten.
        assert_eq!(
            kept(&mut s, [0, 500 * MS, 10_000 * MS, 10_400 * MS, 11_000 * MS]).len(),
            3
        );
    }

    #[test]
    fn loops_and_reconnects_stay_monotonic() {
        let mut s = Sampler::every_frame();
        let first = kept(&mut s, [0, 100 * MS, 200 * MS]);
        // The file starts over.
        let second = kept(&mut s, [0, 100 * MS]);
        assert_eq!(second, vec![300 * MS, 400 * MS]);
        assert_eq!(first.len(), 3);
        // A new connection whose clock happens to go forwards is rebased too.
        s.discontinuity();
        assert_eq!(s.offer(5_000_000 * MS, None), Some(500 * MS));
    }

    #[test]
    fn config_is_checked() {
        let s = |fps, every| Sampling {
            fps,
            every_seconds: every,
        };
        assert_eq!(
            interval_ns(Some(&s(Some(5.0), None))).unwrap(),
            Some(200 * MS)
        );
        assert_eq!(
            interval_ns(Some(&s(None, Some(60.0)))).unwrap(),
            Some(60_000 * MS)
        );
        assert_eq!(interval_ns(None).unwrap(), None);
        assert!(interval_ns(Some(&s(Some(1.0), Some(1.0)))).is_err());
        assert!(interval_ns(Some(&s(Some(0.0), None))).is_err());
        assert!(interval_ns(Some(&s(None, Some(f64::NAN)))).is_err());
    }
}
