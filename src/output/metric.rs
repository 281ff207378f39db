//! Evaluation metrics per task, and the single per-sample [`score`] in [0, 1] that link
//! validation, ensembles, the scheduler and the evaluation reports all use.

use super::{OutputForm, OutputSpec, OutputValue, TaskKind};
use std::borrow::Borrow;
use std::convert::Infallible;

/// The name of the metric [`score`] computes for a task (for reports).
pub fn metric_name(task: TaskKind) -> &'static str {
    match task {
        TaskKind::SingleLabel => "top-1 accuracy",
        TaskKind::MultiLabel => "average precision",
        TaskKind::Regression => "1/(1+MAE)",
        TaskKind::Localization => "IoU",
        TaskKind::Count => "count accuracy (|error| < 0.5)",
        TaskKind::Sequence => "1 - WER",
    }
}

/// How well `predicted` matches `exact` on one sample, in [0, 1] (1 is perfect):
/// - single-label: 1 when the top classes agree, else 0 (top-1 accuracy);
/// - multi-label: the average precision of the predicted scores ranked against the exact
///   labels (exact probability >= 0.5 is a positive); with no positive, 1 minus the share of
///   classes predicted positive;
/// - regression: `1 / (1 + MAE)` (MAE over the vector), so 0.5 means a mean error of one unit;
/// - localization: the mean IoU over the boxes (groups of four coordinates; two empty boxes
///   score 1, an empty and a non-empty box 0);
/// - count: the share of counts within 0.5 of the exact count (for one count: 1 or 0);
/// - sequence: `max(0, 1 - WER)`, tokens compared up to the end token.
///
/// A value of the wrong form scores 0.
pub fn score(spec: &OutputSpec, predicted: &OutputValue, exact: &OutputValue) -> f64 {
    match (predicted, exact) {
        (OutputValue::Vector(p), OutputValue::Vector(e)) if p.len() == e.len() => {
            vector_score(spec.task, p, e)
        }
        (OutputValue::Tokens(p), OutputValue::Tokens(e)) => {
            let end = match spec.form {
                OutputForm::Sequence { end_token, .. } => Some(end_token),
                OutputForm::Vector { .. } => None,
            };
            (1.0 - wer(strip_end(p, end), strip_end(e, end))).max(0.0)
        }
        _ => 0.0,
    }
}

fn vector_score(task: TaskKind, p: &[f32], e: &[f32]) -> f64 {
    if p.is_empty() {
        return 1.0;
    }
    match task {
        TaskKind::SingleLabel => (argmax(p) == argmax(e)) as u8 as f64,
        TaskKind::MultiLabel => {
            let labels: Vec<bool> = e.iter().map(|&x| x >= 0.5).collect();
            if labels.iter().any(|&l| l) {
                average_precision(p, &labels)
            } else {
                1.0 - p.iter().filter(|&&x| x >= 0.5).count() as f64 / p.len() as f64
            }
        }
        TaskKind::Regression => {
            let mae = p
                .iter()
                .zip(e)
                .map(|(a, b)| (a - b).abs() as f64)
                .sum::<f64>()
                / p.len() as f64;
            1.0 / (1.0 + mae)
        }
        TaskKind::Localization => {
            let boxes = p.len() / 4;
            if boxes == 0 {
                return 1.0;
            }
            (0..boxes)
                .map(|b| box_iou(&p[4 * b..4 * b + 4], &e[4 * b..4 * b + 4]))
                .sum::<f64>()
                / boxes as f64
        }
        TaskKind::Count => {
            p.iter()
                .zip(e)
                .filter(|(a, b)| (*a - *b).abs() < 0.5)
                .count() as f64
                / p.len() as f64
        }
        TaskKind::Sequence => 0.0,
    }
}

/// A mean [`score`] and the number of samples it was measured on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanScore {
    pub score: f64,
    pub samples: usize,
}

/// A prediction as [`mean_score`] takes it: a value, or none for a prediction that could not
/// be made (it scores 0, like a value of the wrong form).
pub trait Predicted {
    fn predicted(&self) -> Option<&OutputValue>;
}

impl Predicted for OutputValue {
    fn predicted(&self) -> Option<&OutputValue> {
        Some(self)
    }
}

impl<T: Predicted + ?Sized> Predicted for &T {
    fn predicted(&self) -> Option<&OutputValue> {
        (**self).predicted()
    }
}

impl<T: Predicted> Predicted for Option<T> {
    fn predicted(&self) -> Option<&OutputValue> {
        self.as_ref().and_then(Predicted::predicted)
    }
}

/// The mean [`score`] of predictions against exact outputs over samples, stopping at the first
/// error (a prediction that failed). None without any sample: 0 would read as "always wrong".
pub fn try_mean_score<P: Predicted, X: Borrow<OutputValue>, E>(
    spec: &OutputSpec,
    pairs: impl IntoIterator<Item = Result<(P, X), E>>,
) -> Result<Option<MeanScore>, E> {
    let (mut sum, mut n) = (0.0, 0usize);
    for pair in pairs {
        let (predicted, exact) = pair?;
        if let Some(p) = predicted.predicted() {
            sum += score(spec, p, exact.borrow());
        }
        n += 1;
    }
    Ok((n > 0).then(|| MeanScore {
        score: sum / n as f64,
        samples: n,
    }))
}

/// [`try_mean_score`] of predictions that cannot fail.
pub fn mean_score<P: Predicted, X: Borrow<OutputValue>>(
    spec: &OutputSpec,
    pairs: impl IntoIterator<Item = (P, X)>,
) -> Option<MeanScore> {
    match try_mean_score(spec, pairs.into_iter().map(Ok::<_, Infallible>)) {
        Ok(m) => m,
        Err(never) => match never {},
    }
}

/// The mean [`score`] over pairs (None for no pairs).
pub fn evaluate<'a>(
    spec: &OutputSpec,
    pairs: impl IntoIterator<Item = (&'a OutputValue, &'a OutputValue)>,
) -> Option<f64> {
    mean_score(spec, pairs).map(|m| m.score)
}

pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// A box is empty when it has no area (the all-zero "no box" included).
fn box_area(b: &[f32]) -> f64 {
    (b[2] - b[0]).max(0.0) as f64 * (b[3] - b[1]).max(0.0) as f64
}

/// Intersection over union of two (x1, y1, x2, y2) boxes; two empty boxes agree (1), an empty
/// and a non-empty box do not (0).
pub fn box_iou(a: &[f32], b: &[f32]) -> f64 {
    let (aa, ab) = (box_area(a), box_area(b));
    match (aa > 0.0, ab > 0.0) {
        (false, false) => return 1.0,
        (true, false) | (false, true) => return 0.0,
        _ => {}
    }
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0) as f64;
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0) as f64;
    let inter = iw * ih;
    inter / (aa + ab - inter)
}

/// Average precision of `scores` ranked against binary `labels` (1 when there is no positive).
pub fn average_precision(scores: &[f32], labels: &[bool]) -> f64 {
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 {
        return 1.0;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut hits, mut sum) = (0usize, 0.0);
    for (rank, &i) in order.iter().enumerate() {
        if labels[i] {
            hits += 1;
            sum += hits as f64 / (rank + 1) as f64;
        }
    }
    sum / positives as f64
}

/// Mean average precision over classes for a set of multi-label predictions (the dataset-level
/// metric of multi-label classification; classes without a positive are skipped).
pub fn mean_average_precision(predicted: &[&[f32]], exact: &[&[f32]]) -> Option<f64> {
    let classes = predicted.first()?.len();
    let (mut sum, mut n) = (0.0, 0);
    for c in 0..classes {
        let scores: Vec<f32> = predicted.iter().map(|p| p[c]).collect();
        let labels: Vec<bool> = exact.iter().map(|e| e[c] >= 0.5).collect();
        if labels.iter().any(|&l| l) {
            sum += average_precision(&scores, &labels);
            n += 1;
        }
    }
    (n > 0).then(|| sum / n as f64)
}

/// The tokens before the first end token.
pub fn strip_end(tokens: &[u32], end: Option<u32>) -> &[u32] {
    match end.and_then(|e| tokens.iter().position(|&t| t == e)) {
        Some(i) => &tokens[..i],
        None => tokens,
    }
}

/// Word error rate: the edit distance from `predicted` to `exact` over the length of `exact`
/// (0 when both are empty, 1 per inserted token when `exact` is empty).
pub fn wer(predicted: &[u32], exact: &[u32]) -> f64 {
    if exact.is_empty() {
        return predicted.len() as f64;
    }
    let mut prev: Vec<usize> = (0..=predicted.len()).collect();
    let mut cur = vec![0; predicted.len() + 1];
    for (i, e) in exact.iter().enumerate() {
        cur[0] = i + 1;
        for (j, p) in predicted.iter().enumerate() {
            let sub = prev[j] + (e != p) as usize;
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[predicted.len()] as f64 / exact.len() as f64
}

/// Shannon entropy (nats) of a probability vector, the uncertainty of a class prediction.
pub fn entropy(p: &[f32]) -> f64 {
    p.iter()
        .filter(|&&x| x > 0.0)
        .map(|&x| -(x as f64) * (x as f64).ln())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: &[f32]) -> OutputValue {
        OutputValue::Vector(x.to_vec())
    }

    #[test]
    fn scores_per_task() {
        let s = OutputSpec::vector(3, TaskKind::SingleLabel);
        assert_eq!(score(&s, &v(&[0.1, 0.7, 0.2]), &v(&[0.2, 0.5, 0.3])), 1.0);
        assert_eq!(score(&s, &v(&[0.8, 0.1, 0.1]), &v(&[0.2, 0.5, 0.3])), 0.0);
        let c = OutputSpec::vector(1, TaskKind::Count);
        assert_eq!(score(&c, &v(&[2.4]), &v(&[2.0])), 1.0);
        assert_eq!(score(&c, &v(&[2.6]), &v(&[2.0])), 0.0);
        let r = OutputSpec::vector(2, TaskKind::Regression);
        assert!((score(&r, &v(&[1.0, 3.0]), &v(&[0.0, 3.0])) - 1.0 / 1.5).abs() < 1e-9);
        let m = OutputSpec::vector(3, TaskKind::MultiLabel);
        assert_eq!(score(&m, &v(&[0.9, 0.1, 0.8]), &v(&[1.0, 0.0, 1.0])), 1.0);
        assert!(score(&m, &v(&[0.1, 0.9, 0.8]), &v(&[1.0, 0.0, 1.0])) < 1.0);
        let q = OutputSpec::sequence(5, 6, 0);
        let t = |x: &[u32]| OutputValue::Tokens(x.to_vec());
        assert_eq!(score(&q, &t(&[1, 2, 3, 0]), &t(&[1, 2, 3, 0, 4])), 1.0);
        assert!((score(&q, &t(&[1, 2, 0]), &t(&[1, 2, 3, 4])) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn iou_handles_the_empty_box() {
        let b = [0.1, 0.1, 0.5, 0.5];
        let empty = [0.0; 4];
        assert_eq!(box_iou(&b, &b), 1.0);
        assert_eq!(box_iou(&empty, &empty), 1.0);
        assert_eq!(box_iou(&b, &empty), 0.0);
        let half = [0.1, 0.1, 0.3, 0.5];
        assert!((box_iou(&b, &half) - 0.5).abs() < 1e-6);
        let l = OutputSpec::vector(8, TaskKind::Localization);
        let p = v(&[0.1, 0.1, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]);
        let e = v(&[0.1, 0.1, 0.5, 0.5, 0.2, 0.2, 0.4, 0.4]);
        assert!((score(&l, &p, &e) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn wer_and_map() {
        assert_eq!(wer(&[1, 2, 3], &[1, 2, 3]), 0.0);
        assert!((wer(&[1, 3], &[1, 2, 3]) - 1.0 / 3.0).abs() < 1e-9);
        assert!((wer(&[1, 9, 3, 4], &[1, 2, 3]) - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(wer(&[], &[]), 0.0);
        let p: Vec<&[f32]> = vec![&[0.9, 0.2], &[0.1, 0.8], &[0.6, 0.7]];
        let e: Vec<&[f32]> = vec![&[1.0, 0.0], &[0.0, 1.0], &[0.0, 1.0]];
        // class 0: positive ranked first -> AP 1; class 1: positives ranked 1st and 2nd -> AP 1.
        assert_eq!(mean_average_precision(&p, &e), Some(1.0));
        assert!((entropy(&[0.5, 0.5]) - std::f64::consts::LN_2).abs() < 1e-9);
    }

    #[test]
    fn mean_score_counts_missing_predictions_as_zero_and_stops_at_errors() {
        let c = OutputSpec::vector(1, TaskKind::Count);
        let (two, three) = (v(&[2.0]), v(&[3.0]));
        let m = mean_score(
            &c,
            [(Some(&two), &two), (None, &two), (Some(&three), &three)],
        );
        assert_eq!(
            m,
            Some(MeanScore {
                score: 2.0 / 3.0,
                samples: 3
            })
        );
        assert_eq!(
            mean_score(&c, Vec::<(&OutputValue, &OutputValue)>::new()),
            None
        );
        let failed = try_mean_score(&c, [Ok((two.clone(), &two)), Err("no link")]);
        assert_eq!(failed, Err("no link"));
        assert_eq!(evaluate(&c, [(&two, &three)]), Some(0.0));
    }
}
