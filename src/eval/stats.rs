//! Small statistics shared by the replay and the reports.

use crate::output::{OutputSpec, OutputValue, TaskKind};
use std::collections::BTreeMap;

/// One number per output for correlation tables, as the paper's Table II does it: the arg-max
/// class for classifiers, 0/1 for "a box is present" for localisation, the first component for
/// counts and regressions; `None` for token sequences (skipped) and malformed values.
pub fn scalar_of(spec: &OutputSpec, value: &OutputValue) -> Option<f64> {
    let OutputValue::Vector(v) = value else {
        return None;
    };
    match spec.task {
        TaskKind::SingleLabel | TaskKind::MultiLabel => v
            .iter()
            .enumerate()
            .filter(|(_, x)| x.is_finite())
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as f64),
        TaskKind::Localization => Some(if v.iter().any(|&x| x != 0.0) {
            1.0
        } else {
            0.0
        }),
        TaskKind::Count | TaskKind::Regression => v.first().map(|&x| f64::from(x)),
        TaskKind::Sequence => None,
    }
}

/// Pearson's correlation coefficient of paired samples; `None` with fewer than two pairs or
/// when either side is constant (the coefficient is undefined).
pub fn pearson(pairs: &[(f64, f64)]) -> Option<f64> {
    let n = pairs.len();
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mx = pairs.iter().map(|p| p.0).sum::<f64>() / nf;
    let my = pairs.iter().map(|p| p.1).sum::<f64>() / nf;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for &(x, y) in pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    Some(sxy / (sxx.sqrt() * syy.sqrt()))
}

/// The accuracy of the best lookup table from a discrete source value to a discrete target
/// value on these very pairs: per source value, the most frequent target value is predicted
/// (ties: the smallest). Fitted on the pairs it scores, it bounds from above what any
/// deterministic function of the source can reach on them; `None` for no pairs.
pub fn lookup_ceiling(pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.is_empty() {
        return None;
    }
    let mut by_source: BTreeMap<u64, BTreeMap<u64, usize>> = BTreeMap::new();
    for &(x, y) in pairs {
        *by_source
            .entry(x.to_bits())
            .or_default()
            .entry(y.to_bits())
            .or_default() += 1;
    }
    let right: usize = by_source
        .values()
        .map(|targets| targets.values().copied().max().unwrap_or(0))
        .sum();
    Some(right as f64 / pairs.len() as f64)
}

/// The scalar view of an output when it holds everything its task's metric looks at, so that
/// a lookup table over it is a fair ceiling: a single count (scored by |error| < 0.5, so
/// integral counts are right exactly when equal) or a one-hot class (scored by top-1).
pub fn discrete_scalar(spec: &OutputSpec, value: &OutputValue) -> Option<f64> {
    let OutputValue::Vector(v) = value else {
        return None;
    };
    match spec.task {
        TaskKind::Count if v.len() == 1 && v[0].fract() == 0.0 => Some(f64::from(v[0])),
        TaskKind::SingleLabel
            if v.iter().all(|&x| x == 0.0 || x == 1.0)
                && v.iter().filter(|&&x| x == 1.0).count() == 1 =>
        {
            scalar_of(spec, value)
        }
        _ => None,
    }
}

/// The mean of `values`, 0 for none.
pub fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (s, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { s / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_of_linear_and_anti_linear_pairs() {
        let up: Vec<_> = (0..10).map(|i| (i as f64, 2.0 * i as f64 + 1.0)).collect();
        let down: Vec<_> = (0..10).map(|i| (i as f64, -(i as f64))).collect();
        assert!((pearson(&up).unwrap() - 1.0).abs() < 1e-12);
        assert!((pearson(&down).unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(pearson(&[(1.0, 2.0), (1.0, 3.0)]), None);
        assert_eq!(pearson(&[(1.0, 2.0)]), None);
    }

    #[test]
    fn lookup_ceiling_counts_the_majority_target_per_source_value() {
        // Source 1 maps to 5 twice and 6 once; source 2 always to 7.
        let pairs = [(1.0, 5.0), (1.0, 5.0), (1.0, 6.0), (2.0, 7.0)];
        assert_eq!(lookup_ceiling(&pairs), Some(0.75));
        // A function of the source is reached exactly.
        let f: Vec<_> = (0..20)
            .map(|i| ((i % 4) as f64, (i % 4) as f64 * 2.0))
            .collect();
        assert_eq!(lookup_ceiling(&f), Some(1.0));
        assert_eq!(lookup_ceiling(&[]), None);
    }

    #[test]
    fn discrete_scalars_only_for_lossless_views() {
        let cnt = OutputSpec::vector(1, TaskKind::Count);
        assert_eq!(
            discrete_scalar(&cnt, &OutputValue::Vector(vec![4.0])),
            Some(4.0)
        );
        assert_eq!(discrete_scalar(&cnt, &OutputValue::Vector(vec![4.5])), None);
        let two = OutputSpec::vector(2, TaskKind::Count);
        assert_eq!(
            discrete_scalar(&two, &OutputValue::Vector(vec![1.0, 2.0])),
            None
        );
        let cls = OutputSpec::vector(3, TaskKind::SingleLabel);
        let one_hot = OutputValue::Vector(vec![0.0, 0.0, 1.0]);
        assert_eq!(discrete_scalar(&cls, &one_hot), Some(2.0));
        let probs = OutputValue::Vector(vec![0.2, 0.3, 0.5]);
        assert_eq!(discrete_scalar(&cls, &probs), None);
    }

    #[test]
    fn scalars_follow_the_task() {
        let cls = OutputSpec::vector(3, TaskKind::SingleLabel);
        let v = OutputValue::Vector(vec![0.1, 0.7, 0.2]);
        assert_eq!(scalar_of(&cls, &v), Some(1.0));
        let bx = OutputSpec::vector(4, TaskKind::Localization);
        assert_eq!(
            scalar_of(&bx, &OutputValue::Vector(vec![0.0; 4])),
            Some(0.0)
        );
        let cnt = OutputSpec::vector(2, TaskKind::Count);
        assert_eq!(
            scalar_of(&cnt, &OutputValue::Vector(vec![3.0, 1.0])),
            Some(3.0)
        );
        let seq = OutputSpec::sequence(5, 4, 0);
        assert_eq!(scalar_of(&seq, &OutputValue::Tokens(vec![1])), None);
    }
}
