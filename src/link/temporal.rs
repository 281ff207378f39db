//! Temporal link inputs (beyond the paper): besides a source's current view, its change over
//! its last `window` views, and, wherever the target has an exact output in the recent past
//! (a profiling frame, a frame where a hybrid schedule ran it), that output, its age and the
//! source's change since. A scene changes slowly, so the target's last exact output is often
//! the best predictor there is, and the source's change since tells when it went stale.
//!
//! The encoding has a fixed length for a source view of `d` values and a target of `m`:
//!
//! ```text
//! current view (d) | per past step k = 1..window: current - view[t-k] (d each)
//! | has exact (1) | last exact target (m, zeros without) | age (1, a / (1 + a) in seconds)
//! | current - view at the exact output (d, zeros without)
//! ```
//!
//! Before a camera's first frames the oldest available view stands in for the missing ones.
//! Any [`Learner`](super::learner::Learner) trains on the encoding ([`choose`](super::choose)
//! picks one like for any link).

/// One frame's temporal context for a link.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The source's current view.
    pub view: &'a [f32],
    /// The source's previous views, most recent first (at most `window` are used).
    pub past: &'a [&'a [f32]],
    /// The target's last exact output, if any: (value, age in seconds, the source's view on
    /// that frame).
    pub last_exact: Option<(&'a [f32], f64, &'a [f32])>,
}

/// The length of the encoding of a view of `d` values and a target of `m`.
pub fn encoded_len(d: usize, m: usize, window: usize) -> usize {
    d + window * d + 1 + m + 1 + d
}

/// Encodes `ctx` for a target of `m` values with `window` past steps.
pub fn encode(ctx: &Context<'_>, m: usize, window: usize) -> Vec<f32> {
    let d = ctx.view.len();
    let mut x = Vec::with_capacity(encoded_len(d, m, window));
    x.extend_from_slice(ctx.view);
    for k in 0..window {
        let past = ctx
            .past
            .get(k)
            .or_else(|| ctx.past.last())
            .copied()
            .unwrap_or(ctx.view);
        x.extend(
            ctx.view
                .iter()
                .zip(past.iter().chain(std::iter::repeat(&0.0)))
                .map(|(a, b)| a - b),
        );
    }
    match ctx.last_exact {
        Some((value, age_s, then)) => {
            x.push(1.0);
            x.extend((0..m).map(|i| value.get(i).copied().unwrap_or(0.0)));
            let a = age_s.max(0.0);
            x.push((a / (1.0 + a)) as f32);
            x.extend(
                ctx.view
                    .iter()
                    .zip(then.iter().chain(std::iter::repeat(&0.0)))
                    .map(|(a, b)| a - b),
            );
        }
        None => {
            x.push(0.0);
            x.extend(std::iter::repeat_n(0.0, m + 1 + d));
        }
    }
    x
}

/// The encodings of a run of frames of one camera in time order for training: the target's
/// exact output is taken as known on every `exact_every`-th frame (as profiling would give it),
/// and each frame sees the last one strictly before it.
pub fn encode_run(
    views: &[&[f32]],
    targets: &[&[f32]],
    times_s: &[f64],
    window: usize,
    exact_every: usize,
) -> Vec<Vec<f32>> {
    let m = targets.first().map_or(0, |t| t.len());
    let every = exact_every.max(1);
    let mut out = Vec::with_capacity(views.len());
    let mut last: Option<usize> = None;
    for f in 0..views.len() {
        let past: Vec<&[f32]> = (1..=window.min(f)).map(|k| views[f - k]).collect();
        let ctx = Context {
            view: views[f],
            past: &past,
            last_exact: last.map(|e| (targets[e], times_s[f] - times_s[e], views[e])),
        };
        out.push(encode(&ctx, m, window));
        if f % every == 0 {
            last = Some(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::choose::{Candidate, LinkData, choose, mean_score};
    use crate::link::net::TrainParams;
    use crate::output::{OutputSpec, TaskKind};

    #[test]
    fn the_layout_has_the_documented_length_and_parts() {
        let view = [3.0f32, 1.0];
        let p1 = [1.0f32, 1.0];
        let target = [2.0f32];
        let then = [2.0f32, 0.0];
        let x = encode(
            &Context {
                view: &view,
                past: &[&p1],
                last_exact: Some((&target, 1.0, &then)),
            },
            1,
            2,
        );
        assert_eq!(x.len(), encoded_len(2, 1, 2));
        // view | diff to t-1 | diff to t-2 (t-1 repeated) | flag | target | age | change since
        assert_eq!(
            x,
            vec![3.0, 1.0, 2.0, 0.0, 2.0, 0.0, 1.0, 2.0, 0.5, 1.0, 1.0]
        );
        let none = encode(
            &Context {
                view: &view,
                past: &[],
                last_exact: None,
            },
            1,
            1,
        );
        assert_eq!(none, vec![3.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn the_last_exact_output_predicts_what_the_view_cannot() {
        // The target count changes every 10 frames and the source's view is noise: only the
        // last exact output (every 3rd frame) carries it. It is stale on about 2 frames after
        // each change, so 80% is the best any link can do here.
        let n = 120;
        let targets: Vec<[f32; 1]> = (0..n).map(|f| [((f / 10) % 4) as f32]).collect();
        let views: Vec<[f32; 2]> = (0..n)
            .map(|f| [((f * 7) % 5) as f32, ((f * 3) % 2) as f32])
            .collect();
        let times: Vec<f64> = (0..n).map(|f| f as f64).collect();
        let v: Vec<&[f32]> = views.iter().map(|x| &x[..]).collect();
        let t: Vec<&[f32]> = targets.iter().map(|x| &x[..]).collect();
        let enc = encode_run(&v, &t, &times, 1, 3);
        let e: Vec<&[f32]> = enc.iter().map(|x| x.as_slice()).collect();
        let spec = OutputSpec::vector(1, TaskKind::Count);
        let params = TrainParams {
            epochs: 20,
            ..TrainParams::default()
        };
        let (train, test) = (0..80, 80..n);
        let fit = |x: &[&[f32]]| {
            let data = LinkData {
                view: x[train.clone()].to_vec(),
                head: x[train.clone()].to_vec(),
                target: t[train.clone()].to_vec(),
            };
            choose(&data, &spec, &params, &Candidate::all()).unwrap()
        };
        let temporal = fit(&e);
        let plain = fit(&v);
        let s_temporal = mean_score(
            temporal.learner.as_ref(),
            &e[test.clone()],
            &t[test.clone()],
            &spec,
        );
        let s_plain = mean_score(
            plain.learner.as_ref(),
            &v[test.clone()],
            &t[test.clone()],
            &spec,
        );
        assert!(s_temporal > 0.75, "temporal {s_temporal}");
        assert!(s_plain < 0.5, "plain {s_plain}");
    }
}
