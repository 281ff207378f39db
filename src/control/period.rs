//! Periods in video time (frame PTS, trace time), never the wall clock: the same footage
//! gives the same periods live, offline and in a replay.

use serde::Serialize;

/// How long a period lasts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodLength {
    /// Seconds of video time; periods lie on a grid from the first frame's time.
    Seconds(f64),
    /// A fixed number of frames.
    Frames(u64),
}

/// What a frame means for the period clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick {
    /// The frame opens a new period.
    pub new_period: bool,
    /// Index of the frame's period (0 for the first).
    pub period: u64,
    /// Frames the new period profiles (only meaningful when `new_period`).
    pub profile_frames: u64,
}

/// Counts periods and decides how many of a period's first frames are profiled:
/// `max(min_frames, ceil(ratio * expected frames))`, where the expected frame count is the
/// period length in frames, the previous period's count, or (first period in seconds) the
/// length times `fps_hint`.
#[derive(Clone, Debug, PartialEq)]
pub struct PeriodClock {
    length: PeriodLength,
    ratio: f64,
    min_frames: u64,
    fps_hint: f64,
    origin: Option<f64>,
    index: u64,
    frames_in_period: u64,
    last_period_frames: Option<u64>,
}

impl PeriodClock {
    pub fn new(length: PeriodLength, ratio: f64, min_frames: u64, fps_hint: f64) -> Self {
        PeriodClock {
            length,
            ratio,
            min_frames,
            fps_hint,
            origin: None,
            index: 0,
            frames_in_period: 0,
            last_period_frames: None,
        }
    }

    /// Starts over: the next frame opens period 0 (after new links are installed).
    pub fn restart(&mut self) {
        *self = PeriodClock::new(self.length, self.ratio, self.min_frames, self.fps_hint);
    }

    pub fn length(&self) -> PeriodLength {
        self.length
    }

    /// The length of a quarter period in the clock's unit (drift probes' spacing).
    pub fn quarter(&self) -> PeriodLength {
        match self.length {
            PeriodLength::Seconds(s) => PeriodLength::Seconds(s / 4.0),
            PeriodLength::Frames(n) => PeriodLength::Frames((n / 4).max(1)),
        }
    }

    /// When the current period ends: the video time of the next period's first frame, or the
    /// frames still to come in this one (None before the first frame).
    pub fn next_period(&self) -> Option<NextPeriod> {
        let origin = self.origin?;
        Some(match self.length {
            PeriodLength::Seconds(len) => {
                NextPeriod::AtVideoS(origin + (self.index + 1) as f64 * len)
            }
            PeriodLength::Frames(len) => {
                NextPeriod::InFrames(len.max(1).saturating_sub(self.frames_in_period))
            }
        })
    }

    /// Advances to a frame at video time `time_s`.
    pub fn on_frame(&mut self, time_s: f64) -> Tick {
        let (new_period, index) = match (self.origin, self.length) {
            (None, _) => {
                self.origin = Some(time_s);
                (true, 0)
            }
            (Some(origin), PeriodLength::Seconds(len)) => {
                let idx = ((time_s - origin) / len).floor().max(0.0) as u64;
                (idx > self.index, idx.max(self.index))
            }
            (Some(_), PeriodLength::Frames(len)) => {
                let new = self.frames_in_period >= len.max(1);
                (new, self.index + u64::from(new))
            }
        };
        if new_period && self.origin.is_some() && index > 0 {
            self.last_period_frames = Some(self.frames_in_period);
            self.frames_in_period = 0;
        }
        self.index = index;
        self.frames_in_period += 1;
        let expected = match self.length {
            PeriodLength::Frames(n) => n as f64,
            PeriodLength::Seconds(s) => self
                .last_period_frames
                .map_or(s * self.fps_hint, |n| n as f64),
        };
        let wanted = (self.ratio * expected).ceil().max(0.0) as u64;
        Tick {
            new_period,
            period: index,
            profile_frames: wanted.max(self.min_frames),
        }
    }
}

/// Where the next period starts, in the clock's unit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NextPeriod {
    /// At this video time (seconds).
    AtVideoS(f64),
    /// After this many more frames.
    InFrames(u64),
}

/// A spacing in video time or in frames, measured from a mark.
#[derive(Clone, Debug, PartialEq)]
pub struct Spacing {
    every: PeriodLength,
    mark: Option<(f64, u64)>,
    frames: u64,
}

impl Spacing {
    pub fn new(every: PeriodLength) -> Self {
        Spacing {
            every,
            mark: None,
            frames: 0,
        }
    }

    /// Counts a frame at `time_s`; true when `every` has passed since the mark (the first
    /// frame only sets the mark).
    pub fn due(&mut self, time_s: f64) -> bool {
        self.frames += 1;
        let Some((t, n)) = self.mark else {
            self.mark = Some((time_s, self.frames));
            return false;
        };
        let due = match self.every {
            PeriodLength::Seconds(s) => time_s - t >= s,
            PeriodLength::Frames(f) => self.frames - n >= f,
        };
        if due {
            self.mark = Some((time_s, self.frames));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_periods_follow_video_time_on_a_grid() {
        let mut c = PeriodClock::new(PeriodLength::Seconds(10.0), 0.1, 1, 2.0);
        let t = c.on_frame(100.0);
        assert!(t.new_period);
        assert_eq!(t.period, 0);
        // First period: 10 s at 2 fps expected -> ceil(0.1 * 20) = 2 profiling frames.
        assert_eq!(t.profile_frames, 2);
        for i in 1..30 {
            let t = c.on_frame(100.0 + i as f64 * 0.5);
            assert_eq!(t.new_period, i == 20, "frame {i}");
        }
        // The second period held 30 - 20 = 10 frames so far; a gap jumps to period 4.
        let t = c.on_frame(141.0);
        assert!(t.new_period);
        assert_eq!(t.period, 4);
        // Expected frames: the previous period's 10 -> ceil(1.0) = 1.
        assert_eq!(t.profile_frames, 1);
    }

    #[test]
    fn frame_periods_count_frames_and_restart() {
        let mut c = PeriodClock::new(PeriodLength::Frames(5), 0.5, 1, 10.0);
        let news: Vec<bool> = (0..11).map(|i| c.on_frame(i as f64).new_period).collect();
        assert_eq!(
            news,
            [
                true, false, false, false, false, true, false, false, false, false, true
            ]
        );
        assert_eq!(c.on_frame(11.0).profile_frames, 3);
        c.restart();
        let t = c.on_frame(12.0);
        assert!(t.new_period);
        assert_eq!(t.period, 0);
    }

    #[test]
    fn spacing_marks_from_the_first_frame() {
        let mut s = Spacing::new(PeriodLength::Seconds(1.0));
        let due: Vec<bool> = [0.0, 0.5, 1.0, 1.2, 2.1]
            .iter()
            .map(|&t| s.due(t))
            .collect();
        assert_eq!(due, [false, false, true, false, true]);
        let mut f = Spacing::new(PeriodLength::Frames(2));
        let due: Vec<bool> = (0..5).map(|i| f.due(i as f64)).collect();
        assert_eq!(due, [false, false, true, false, true]);
    }
}
