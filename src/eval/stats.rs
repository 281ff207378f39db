//! Small statistics shared by the replay and the reports.

use crate::output::{OutputSpec, OutputValue, TaskKind};

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
