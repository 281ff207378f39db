//! Per-source state machine, status and retry policy.

use std::fmt;
use std::time::Duration;

/// Where a camera source stands. Exported as `mlink_source_state{camera, state}`.
///
/// ```text
/// starting --first frame--> running --error/stall--> (stalled) --> retrying --first frame--> running
///     |                        |                                      |
///     +--fatal error-----------+--end of file--> finished             +--max retries--> failed
/// any state --remove/shutdown--> stopped
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceState {
    /// The pipeline is being built or connected and no frame has arrived yet.
    Starting,
    /// Frames are flowing.
    Running,
    /// No frame arrived within the stall timeout; a reconnection follows.
    Stalled,
    /// The source was lost (error, end of a live stream or stall) and is being reconnected,
    /// with backoff, until a frame arrives again.
    Retrying,
    /// Stopped on request (camera removed or ingest shut down).
    Stopped,
    /// A file source reached its end (`on_end: stop`).
    Finished,
    /// The source gave up: a missing or undecodable file, or a network source whose retries
    /// ran out. [`SourceStatus::last_error`] says why.
    Failed,
}

impl SourceState {
    /// The label used in logs and in the `state` label of `mlink_source_state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stalled => "stalled",
            Self::Retrying => "retrying",
            Self::Stopped => "stopped",
            Self::Finished => "finished",
            Self::Failed => "failed",
        }
    }

    /// True for the states a source never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Stopped | Self::Finished | Self::Failed)
    }
}

impl fmt::Display for SourceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of one camera source.
#[derive(Clone, Debug)]
pub struct SourceStatus {
    pub state: SourceState,
    /// The last error or the reason of the last reconnection, if any.
    pub last_error: Option<String>,
    /// Successful reconnections (back to `running` after a loss).
    pub reconnects: u64,
    /// Failed attempts since the source last ran.
    pub consecutive_failures: u32,
    /// Times the stall watchdog fired.
    pub stalls: u64,
    /// Frames delivered after sampling.
    pub frames: u64,
    /// Frames dropped because the consumer was behind.
    pub dropped: u64,
}

impl SourceStatus {
    pub(crate) fn new() -> Self {
        Self {
            state: SourceState::Starting,
            last_error: None,
            reconnects: 0,
            consecutive_failures: 0,
            stalls: 0,
            frames: 0,
            dropped: 0,
        }
    }
}

/// How a lost network source is retried: capped exponential backoff with jitter.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Wait before the first retry.
    pub initial_backoff: Duration,
    /// Upper bound of the wait between retries.
    pub max_backoff: Duration,
    /// Growth factor of the wait after each failed attempt.
    pub multiplier: f64,
    /// Relative jitter: each wait is scaled by a uniform factor in `[1 - jitter, 1 + jitter]`,
    /// so that many cameras behind one failed switch do not reconnect in lockstep.
    pub jitter: f64,
    /// Failed attempts in a row after which the source is `failed`; `None` retries forever.
    pub max_retries: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
            max_retries: None,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1 for the first retry), with `unit` a uniform
    /// draw in `[0, 1)` that supplies the jitter.
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.max(1.0).powi(exp);
        let capped = base.min(self.max_backoff.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * unit.clamp(0.0, 1.0);
        Duration::from_secs_f64((capped * factor).min(self.max_backoff.as_secs_f64()))
    }

    /// True when `failures` failed attempts in a row exhaust the policy.
    pub fn gives_up_after(&self, failures: u32) -> bool {
        self.max_retries.is_some_and(|max| failures > max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff(1, 0.5), Duration::from_millis(500));
        assert_eq!(p.backoff(2, 0.5), Duration::from_secs(1));
        assert_eq!(p.backoff(4, 0.5), Duration::from_secs(4));
        assert_eq!(p.backoff(20, 0.5), Duration::from_secs(30));
        assert_eq!(p.backoff(u32::MAX, 0.5), Duration::from_secs(30));
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let p = RetryPolicy::default();
        let lo = p.backoff(2, 0.0);
        let hi = p.backoff(2, 0.999_999);
        assert_eq!(lo, Duration::from_millis(800));
        assert!(hi > Duration::from_millis(1199) && hi <= Duration::from_millis(1200));
        // Jitter never pushes the wait past the cap.
        assert_eq!(p.backoff(30, 0.999), Duration::from_secs(30));
    }

    #[test]
    fn max_retries_gives_up() {
        let p = RetryPolicy {
            max_retries: Some(2),
            ..RetryPolicy::default()
        };
        assert!(!p.gives_up_after(2));
        assert!(p.gives_up_after(3));
        assert!(!RetryPolicy::default().gives_up_after(u32::MAX));
    }

    #[test]
    fn terminal_states() {
        let terminal: Vec<_> = [
            SourceState::Starting,
            SourceState::Running,
            SourceState::Stalled,
            SourceState::Retrying,
            SourceState::Stopped,
            SourceState::Finished,
            SourceState::Failed,
        ]
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(SourceState::as_str)
        .collect();
        assert_eq!(terminal, ["stopped", "finished", "failed"]);
        for s in crate::metrics::SOURCE_STATES {
            assert!(
                [
                    "starting", "running", "stalled", "retrying", "stopped", "finished", "failed"
                ]
                .contains(s)
            );
        }
    }
}
