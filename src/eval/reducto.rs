//! The Reducto baseline (Li et al., SIGCOMM 2020): per model, a frame is sent to the model
//! only when a low-level frame-difference feature (pixel, area, edge or corner) has changed by
//! at least a threshold since the last sent frame; a filtered frame reuses the model's last
//! exact output.
//!
//! Traces hold the difference between *consecutive* frames. The difference since the last sent
//! frame is approximated by the sum of the consecutive differences since then, as Reducto's own
//! offline evaluation does; the first frame of every camera is always sent.
//!
//! Thresholds are chosen on the training part of a trace: for a target accuracy (the paper's
//! 0.9), the largest threshold whose reused outputs still reach the target, and, per model,
//! the feature that sends the fewest frames at that accuracy. To compare at equal compute, a
//! single exchange rate between accuracy and model-milliseconds allocates the compute across
//! models (see [`allocate`]).

use serde::Serialize;

/// The frame-difference features, in the order traces store them.
pub const FEATURE_NAMES: [&str; 4] = ["pixel", "area", "edge", "corner"];

/// Per-frame input of the filter for one camera stream: the feature difference to the previous
/// frame of the same camera (ignored for the first frame) and a flag for a new camera stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiffStep {
    /// Index of the camera stream this frame belongs to (frames of different cameras are
    /// filtered independently).
    pub stream: usize,
    /// Video time of the frame (seconds), for the refresh of [`filter`]'s `max_age_s`.
    pub time_s: f64,
    /// Difference to the previous frame of the same stream.
    pub diff: f32,
}

/// One stream's trigger state: the difference accumulated since its last sent frame and that
/// frame's video time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SinceSent {
    change: f64,
    sent_at_s: f64,
}

impl SinceSent {
    /// The state just after a frame at `time_s` was sent (or run exactly for another reason).
    pub fn sent_at(time_s: f64) -> Self {
        SinceSent {
            change: 0.0,
            sent_at_s: time_s,
        }
    }
}

/// Whether a stream's frame with difference `diff` (negative or NaN: none) at `time_s` is sent,
/// updating the stream's `state` (None: nothing sent yet). The one rule of Reducto's filter,
/// the curves measured on it and the hybrid's trigger at serving: a frame is sent when the
/// accumulated difference since the last sent frame reaches the threshold (so a zero
/// threshold sends every frame), when it is the stream's first, or when the last sent frame
/// is `max_age_s` or more older (infinite: never; Reducto's own filter has no refresh).
pub fn trigger(
    state: &mut Option<SinceSent>,
    diff: f32,
    time_s: f64,
    threshold: f64,
    max_age_s: f64,
) -> bool {
    let send = match state {
        None => true,
        Some(s) => {
            s.change += f64::from(diff.max(0.0));
            s.change >= threshold || time_s - s.sent_at_s >= max_age_s
        }
    };
    if send {
        *state = Some(SinceSent::sent_at(time_s));
    }
    send
}

/// Which frames are sent for `threshold` ([`trigger`] per stream).
pub fn filter(steps: &[DiffStep], threshold: f64, max_age_s: f64) -> Vec<bool> {
    let mut streams: Vec<Option<SinceSent>> = Vec::new();
    steps
        .iter()
        .map(|s| {
            if streams.len() <= s.stream {
                streams.resize(s.stream + 1, None);
            }
            trigger(
                &mut streams[s.stream],
                s.diff,
                s.time_s,
                threshold,
                max_age_s,
            )
        })
        .collect()
}

/// Candidate thresholds for one feature: zero, then quantiles of the per-frame differences
/// multiplied by powers of two (accumulation lets useful thresholds exceed any single
/// difference). Sorted and without duplicates.
pub fn candidate_thresholds(diffs: &[f32]) -> Vec<f64> {
    let mut d: Vec<f64> = diffs
        .iter()
        .filter(|x| x.is_finite() && **x > 0.0)
        .map(|&x| f64::from(x))
        .collect();
    d.sort_by(f64::total_cmp);
    let mut out = vec![0.0];
    if d.is_empty() {
        return out;
    }
    for q in 1..=10 {
        let idx = ((d.len() - 1) * q) / 10;
        let base = d[idx];
        for m in [1.0, 2.0, 4.0, 8.0, 16.0, 32.0] {
            out.push(base * m);
        }
    }
    out.sort_by(f64::total_cmp);
    out.dedup_by(|a, b| (*a - *b).abs() <= 1e-12 * b.abs().max(1e-12));
    out
}

/// How a threshold does on a stretch of frames for one model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Operating {
    pub threshold: f64,
    /// Share of frames sent to the model.
    pub sent: f64,
    /// Mean score of the output used (exact when sent, reused otherwise) against the exact one.
    pub accuracy: f64,
}

/// Evaluates `threshold` on frames with per-frame `reuse_score(last_sent, frame)` (the score of
/// reusing the exact output of frame `last_sent` on frame `frame`; 1 when they are equal).
pub fn evaluate(
    steps: &[DiffStep],
    threshold: f64,
    max_age_s: f64,
    reuse_score: &mut dyn FnMut(usize, usize) -> f64,
) -> Operating {
    let sent = filter(steps, threshold, max_age_s);
    let mut last: Vec<Option<usize>> = Vec::new();
    let mut total = 0.0;
    let mut n_sent = 0usize;
    for (t, (s, &send)) in steps.iter().zip(&sent).enumerate() {
        if last.len() <= s.stream {
            last.resize(s.stream + 1, None);
        }
        if send {
            last[s.stream] = Some(t);
            n_sent += 1;
            total += 1.0;
        } else if let Some(l) = last[s.stream] {
            total += reuse_score(l, t);
        }
    }
    let n = steps.len().max(1) as f64;
    Operating {
        threshold,
        sent: n_sent as f64 / n,
        accuracy: total / n,
    }
}

/// The operating curve of one model on one feature: every candidate threshold, evaluated.
pub fn curve(
    steps: &[DiffStep],
    candidates: &[f64],
    max_age_s: f64,
    reuse_score: &mut dyn FnMut(usize, usize) -> f64,
) -> Vec<Operating> {
    candidates
        .iter()
        .map(|&t| evaluate(steps, t, max_age_s, reuse_score))
        .collect()
}

/// The largest threshold of a curve that reaches `target` accuracy (zero, which sends every
/// frame and so scores 1, always qualifies).
pub fn pick_for_target(curve: &[Operating], target: f64) -> Operating {
    curve
        .iter()
        .filter(|o| o.accuracy + 1e-12 >= target)
        .max_by(|a, b| {
            // Fewest frames sent first; among equals, the larger threshold.
            b.sent
                .total_cmp(&a.sent)
                .then(a.threshold.total_cmp(&b.threshold))
        })
        .copied()
        .unwrap_or(Operating {
            threshold: 0.0,
            sent: 1.0,
            accuracy: 1.0,
        })
}

/// Splits compute across models at one exchange rate `lambda` between accuracy and
/// model-milliseconds: each model takes the point of its curve maximising
/// `accuracy - lambda * sent * latency_ms`. A larger `lambda` spends less compute; sweeping it
/// traces the best accuracy-per-compute allocation the curves allow, which is how Reducto is
/// matched to another method's compute.
pub fn allocate(curves: &[Vec<Operating>], latency_ms: &[f64], lambda: f64) -> Vec<Operating> {
    curves
        .iter()
        .zip(latency_ms)
        .map(|(c, &lat)| {
            c.iter()
                .copied()
                .max_by(|a, b| {
                    let va = a.accuracy - lambda * a.sent * lat;
                    let vb = b.accuracy - lambda * b.sent * lat;
                    // Equal value: prefer less compute, then the larger threshold.
                    va.total_cmp(&vb)
                        .then(b.sent.total_cmp(&a.sent))
                        .then(a.threshold.total_cmp(&b.threshold))
                })
                .unwrap_or(Operating {
                    threshold: 0.0,
                    sent: 1.0,
                    accuracy: 1.0,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_stream(d: &[f32]) -> Vec<DiffStep> {
        d.iter()
            .enumerate()
            .map(|(i, &diff)| DiffStep {
                stream: 0,
                time_s: i as f64,
                diff,
            })
            .collect()
    }

    #[test]
    fn zero_threshold_sends_every_frame() {
        let s = one_stream(&[0.0, 0.0, 0.3, 0.0, 0.1]);
        assert!(filter(&s, 0.0, f64::INFINITY).iter().all(|&x| x));
    }

    #[test]
    fn differences_accumulate_since_the_last_sent_frame() {
        let s = one_stream(&[0.9, 0.1, 0.1, 0.1, 0.5, 0.05]);
        // first always sent; 0.1+0.1+0.1 = 0.3 reaches 0.3 at frame 3; 0.5 at frame 4.
        assert_eq!(
            filter(&s, 0.3, f64::INFINITY),
            vec![true, false, false, true, true, false]
        );
    }

    #[test]
    fn streams_are_filtered_independently() {
        let s = vec![
            DiffStep {
                stream: 0,
                time_s: 0.0,
                diff: 0.0,
            },
            DiffStep {
                stream: 1,
                time_s: 0.0,
                diff: 0.0,
            },
            DiffStep {
                stream: 0,
                time_s: 1.0,
                diff: 0.2,
            },
            DiffStep {
                stream: 1,
                time_s: 1.0,
                diff: 0.0,
            },
        ];
        assert_eq!(
            filter(&s, 0.1, f64::INFINITY),
            vec![true, true, true, false]
        );
    }

    #[test]
    fn a_stream_is_refreshed_once_its_last_sent_frame_is_max_age_old() {
        // One frame a second, nothing changes: only the age sends frames.
        let s = one_stream(&[0.0; 7]);
        assert_eq!(
            filter(&s, 1.0, 3.0),
            vec![true, false, false, true, false, false, true]
        );
        // A send on the difference restarts the age.
        let s = one_stream(&[0.0, 0.0, 2.0, 0.0, 0.0, 0.0]);
        assert_eq!(
            filter(&s, 1.0, 3.0),
            vec![true, false, true, false, false, true]
        );
        assert_eq!(
            filter(&s, 1.0, f64::INFINITY)
                .iter()
                .filter(|&&x| x)
                .count(),
            2
        );
    }

    #[test]
    fn evaluate_scores_reused_outputs_and_target_pick_is_the_cheapest_that_qualifies() {
        // Output changes at frame 2 only; the feature moves at frame 2 too.
        let outputs = [1, 1, 2, 2, 2];
        let s = one_stream(&[0.0, 0.01, 0.5, 0.01, 0.01]);
        let mut reuse = |a: usize, b: usize| f64::from(u8::from(outputs[a] == outputs[b]));
        let cands = candidate_thresholds(&[0.01, 0.5]);
        let c = curve(&s, &cands, f64::INFINITY, &mut reuse);
        let best = pick_for_target(&c, 1.0);
        assert_eq!(best.accuracy, 1.0);
        assert!((best.sent - 0.4).abs() < 1e-9, "{best:?}");
        let zero = evaluate(&s, 0.0, f64::INFINITY, &mut reuse);
        assert_eq!((zero.sent, zero.accuracy), (1.0, 1.0));
    }

    #[test]
    fn allocation_spends_less_as_the_rate_grows() {
        let c = vec![
            Operating {
                threshold: 0.0,
                sent: 1.0,
                accuracy: 1.0,
            },
            Operating {
                threshold: 1.0,
                sent: 0.5,
                accuracy: 0.95,
            },
            Operating {
                threshold: 2.0,
                sent: 0.1,
                accuracy: 0.6,
            },
        ];
        let curves = vec![c.clone(), c];
        let lat = [10.0, 100.0];
        let cost = |l: f64| -> f64 {
            allocate(&curves, &lat, l)
                .iter()
                .zip(lat)
                .map(|(o, t)| o.sent * t)
                .sum()
        };
        assert!(cost(0.0) >= cost(0.001));
        assert!(cost(0.001) >= cost(1.0));
        assert!((cost(0.0) - 110.0).abs() < 1e-9);
        assert!((cost(1.0) - 11.0).abs() < 1e-9);
    }
}
