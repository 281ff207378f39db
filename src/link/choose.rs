//! Choosing a link's learner on a held-out block in time. A short clip gives a link a few tens
//! of training frames, too few for the paper's MLP alone; every candidate (the paper's MLP on
//! the head and on the link view, a regularised linear map, nearest-neighbour lookups, the
//! majority target) is trained on the training frames but the last block, scored on that
//! block, and the best one is trained again on all the training frames and serves.

use super::knn::Knn;
use super::learner::{Learner, Majority, MlpLearner};
use super::net::TrainParams;
use super::ridge::Ridge;
use crate::output::{OutputSpec, OutputValue, score};

/// Share of a link's training frames, the last ones in time, that the choice is scored on.
pub const HELD_OUT_SHARE: f64 = 0.25;
/// Fewer training pairs than this: no held-out block, the paper's choice (the MLP on the
/// head) serves.
pub const MIN_PAIRS_TO_CHOOSE: usize = 8;
/// Ridge penalties tried (on standardised inputs).
const RIDGE_LAMBDAS: [f64; 3] = [1.0, 10.0, 100.0];
/// Neighbour counts tried.
const KNN_KS: [usize; 3] = [1, 3, 5];

/// Which input a candidate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// The source's link view.
    View,
    /// The source's head output (the paper's link input).
    Head,
}

impl Input {
    pub fn name(self) -> &'static str {
        match self {
            Input::View => "view",
            Input::Head => "head",
        }
    }
}

/// One candidate learner.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Candidate {
    Majority,
    Knn(Input, usize),
    Ridge(Input, f64),
    Mlp(Input),
}

impl Candidate {
    /// Every candidate, simplest first (a tie on the held-out block goes to the simpler).
    pub fn all() -> Vec<Candidate> {
        let mut c = vec![Candidate::Majority];
        for input in [Input::View, Input::Head] {
            c.extend(KNN_KS.iter().map(|&k| Candidate::Knn(input, k)));
        }
        for input in [Input::View, Input::Head] {
            c.extend(RIDGE_LAMBDAS.iter().map(|&l| Candidate::Ridge(input, l)));
        }
        c.push(Candidate::Mlp(Input::View));
        c.push(Candidate::Mlp(Input::Head));
        c
    }

    pub fn input(self) -> Input {
        match self {
            Candidate::Majority => Input::Head,
            Candidate::Knn(i, _) | Candidate::Ridge(i, _) | Candidate::Mlp(i) => i,
        }
    }

    /// Trains the candidate on `x` (inputs of its kind) and `t`; None when it cannot be.
    pub fn fit(
        self,
        x: &[&[f32]],
        t: &[&[f32]],
        spec: &OutputSpec,
        params: &TrainParams,
    ) -> Option<Box<dyn Learner>> {
        let task = spec.task;
        match self {
            Candidate::Majority => Some(Box::new(Majority::fit(t))),
            Candidate::Knn(_, k) => Knn::fit(x, t, k, task).map(|l| Box::new(l) as _),
            Candidate::Ridge(_, l) => Ridge::fit(x, t, l, task).map(|r| Box::new(r) as _),
            Candidate::Mlp(input) => MlpLearner::fit(x, t, spec, params, input.name())
                .ok()
                .map(|m| Box::new(m) as _),
        }
    }
}

/// The training pairs of one link in time order: per frame the source's view and head (both
/// as vectors) and the target's vector.
pub struct LinkData<'a> {
    pub view: Vec<&'a [f32]>,
    pub head: Vec<&'a [f32]>,
    pub target: Vec<&'a [f32]>,
}

impl LinkData<'_> {
    fn inputs(&self, input: Input) -> &[&[f32]] {
        match input {
            Input::View => &self.view,
            Input::Head => &self.head,
        }
    }
}

/// A chosen learner with what the choice saw.
pub struct Chosen {
    pub learner: Box<dyn Learner>,
    pub input: Input,
    /// Held-out score of the chosen candidate (None: no block was held out).
    pub held_out: Option<f64>,
    /// Every candidate's held-out score, in [`Candidate::all`] order.
    pub scores: Vec<(String, f64)>,
    /// The chosen candidate's predictions on the held-out block (trained before the block),
    /// one per held-out pair: what a comparison with other ways to predict the target uses.
    pub held_out_predictions: Vec<Vec<f32>>,
}

/// The first held-out index of `n` pairs in time order (`n`: no block held out).
pub fn held_out_start(n: usize) -> usize {
    if n < MIN_PAIRS_TO_CHOOSE {
        return n;
    }
    n - ((n as f64 * HELD_OUT_SHARE).round() as usize).clamp(1, n - 2)
}

/// Mean score of a learner on pairs.
pub fn mean_score(learner: &dyn Learner, x: &[&[f32]], t: &[&[f32]], spec: &OutputSpec) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let sum: f64 = x
        .iter()
        .zip(t)
        .map(|(a, b)| {
            score(
                spec,
                &OutputValue::Vector(learner.predict(a)),
                &OutputValue::Vector(b.to_vec()),
            )
        })
        .sum();
    sum / x.len() as f64
}

/// Chooses among `candidates` for one link on the last [`HELD_OUT_SHARE`] of `data`, then
/// trains the winner on all of it. The last candidate is the default (the paper's MLP in
/// [`Candidate::all`]): another replaces it only when right on at least one more held-out
/// frame; ties between the others go to the one that does best on the blocks before. With fewer than [`MIN_PAIRS_TO_CHOOSE`] pairs the last
/// candidate (the paper's MLP on the head, in [`Candidate::all`]) is trained without a choice.
pub fn choose(
    data: &LinkData<'_>,
    spec: &OutputSpec,
    params: &TrainParams,
    candidates: &[Candidate],
) -> Option<Chosen> {
    let n = data.target.len();
    if n == 0 || candidates.is_empty() {
        return None;
    }
    let fallback = candidates[candidates.len() - 1];
    if n < MIN_PAIRS_TO_CHOOSE {
        let learner = fallback.fit(data.inputs(fallback.input()), &data.target, spec, params)?;
        return Some(Chosen {
            learner,
            input: fallback.input(),
            held_out: None,
            scores: vec![],
            held_out_predictions: vec![],
        });
    }
    let cut = held_out_start(n);
    let mut scores = Vec::with_capacity(candidates.len());
    // (candidate, held-out score, tie-break score, held-out predictions)
    let mut best: Option<(Candidate, f64, f64, Vec<Vec<f32>>)> = None;
    for &c in candidates {
        let x = data.inputs(c.input());
        let Some(l) = c.fit(&x[..cut], &data.target[..cut], spec, params) else {
            continue;
        };
        let s = mean_score(l.as_ref(), &x[cut..], &data.target[cut..], spec);
        scores.push((format!("{}:{}", l.name(), c.input().name()), s));
        let better = |tie: f64, b: f64, bt: f64| s > b + 1e-9 || (s > b - 1e-9 && tie > bt + 1e-9);
        // A short block often holds one target value only, where every learner that
        // predicts it ties: the blocks before it break the tie.
        let tie = match &best {
            Some((_, b, _, _)) if s < *b - 1e-9 => continue,
            _ => blocked_score(c, x, &data.target[..cut], spec, params),
        };
        if best
            .as_ref()
            .is_none_or(|(_, b, bt, _)| better(tie, *b, *bt))
        {
            let preds = x[cut..].iter().map(|v| l.predict(v)).collect();
            best = Some((c, s, tie, preds));
        }
    }
    let (mut c, mut s, _, mut held_out_predictions) = best?;
    // The paper's MLP (the last candidate) stays unless another is right on at least one
    // more held-out frame: a block of a few frames cannot tell smaller differences from noise.
    let n_val = (n - cut) as f64;
    if c != fallback
        && let Some((fs, fp)) = held_out_of(fallback, data, cut, spec, params)
        && s < fs + 1.0 / n_val - 1e-9
    {
        (c, s, held_out_predictions) = (fallback, fs, fp);
    }
    let learner = c.fit(data.inputs(c.input()), &data.target, spec, params)?;
    Some(Chosen {
        learner,
        input: c.input(),
        held_out: Some(s),
        scores,
        held_out_predictions,
    })
}

/// The held-out score and predictions of `c` trained before the block.
fn held_out_of(
    c: Candidate,
    data: &LinkData<'_>,
    cut: usize,
    spec: &OutputSpec,
    params: &TrainParams,
) -> Option<(f64, Vec<Vec<f32>>)> {
    let x = data.inputs(c.input());
    let l = c.fit(&x[..cut], &data.target[..cut], spec, params)?;
    let s = mean_score(l.as_ref(), &x[cut..], &data.target[cut..], spec);
    Some((s, x[cut..].iter().map(|v| l.predict(v)).collect()))
}

/// Contiguous blocks of the training frames before the held-out block that break ties.
const TIE_BLOCKS: usize = 3;

/// The mean score of `c` over [`TIE_BLOCKS`] contiguous blocks of `target` (the frames before
/// the held-out block), each scored after training on the others.
fn blocked_score(
    c: Candidate,
    x: &[&[f32]],
    target: &[&[f32]],
    spec: &OutputSpec,
    params: &TrainParams,
) -> f64 {
    let n = target.len();
    if n < 2 * TIE_BLOCKS {
        return 0.0;
    }
    let mut total = 0.0;
    for b in 0..TIE_BLOCKS {
        let (lo, hi) = (b * n / TIE_BLOCKS, (b + 1) * n / TIE_BLOCKS);
        let xs: Vec<&[f32]> = x[..lo].iter().chain(&x[hi..n]).copied().collect();
        let ts: Vec<&[f32]> = target[..lo].iter().chain(&target[hi..]).copied().collect();
        if let Some(l) = c.fit(&xs, &ts, spec, params) {
            total += mean_score(l.as_ref(), &x[lo..hi], &target[lo..hi], spec);
        }
    }
    total / TIE_BLOCKS as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::learner::LearnerState;
    use crate::output::TaskKind;

    #[test]
    fn every_candidate_restored_from_its_stored_form_predicts_the_same() {
        let x: Vec<[f32; 3]> = (0..30)
            .map(|i| [(i % 5) as f32, ((i * 7) % 3) as f32, 0.5 * i as f32])
            .collect();
        let xr: Vec<&[f32]> = x.iter().map(|v| &v[..]).collect();
        let count: Vec<[f32; 1]> = x.iter().map(|v| [v[0] + v[1]]).collect();
        let label: Vec<[f32; 3]> = x
            .iter()
            .map(|v| {
                let mut l = [0.0; 3];
                l[v[1] as usize] = 1.0;
                l
            })
            .collect();
        let params = TrainParams {
            epochs: 3,
            ..TrainParams::default()
        };
        let count_spec = OutputSpec::vector(1, TaskKind::Count);
        let label_spec = OutputSpec::vector(3, TaskKind::SingleLabel);
        let targets: [(&OutputSpec, Vec<&[f32]>); 2] = [
            (&count_spec, count.iter().map(|v| &v[..]).collect()),
            (&label_spec, label.iter().map(|v| &v[..]).collect()),
        ];
        for (spec, t) in &targets {
            for c in Candidate::all() {
                let l = c.fit(&xr, t, spec, &params).unwrap();
                let json = serde_json::to_string(&l.state()).unwrap();
                let state: LearnerState = serde_json::from_str(&json).unwrap();
                let back = state.restore(spec).unwrap();
                assert_eq!(back.name(), l.name());
                assert_eq!(back.parameters(), l.parameters());
                for q in [[0.0f32, 1.0, 2.0], [4.0, 2.0, 14.5], [9.0, -1.0, 0.0]] {
                    assert_eq!(back.predict(&q), l.predict(&q), "{c:?}");
                }
                // The same state cannot serve a target of another length.
                let other = OutputSpec::vector(5, spec.task);
                assert!(l.state().restore(&other).is_err(), "{c:?}");
            }
        }
    }

    #[test]
    fn the_held_out_block_picks_a_learner_that_fits_the_link() {
        // The target count is the view's second entry; the head says nothing.
        let views: Vec<[f32; 3]> = (0..40)
            .map(|i| [(i % 5) as f32, ((i * 3) % 4) as f32, 1.0])
            .collect();
        let heads: Vec<[f32; 1]> = (0..40).map(|_| [0.0]).collect();
        let targets: Vec<[f32; 1]> = views.iter().map(|v| [v[1]]).collect();
        let data = LinkData {
            view: views.iter().map(|v| &v[..]).collect(),
            head: heads.iter().map(|v| &v[..]).collect(),
            target: targets.iter().map(|v| &v[..]).collect(),
        };
        let spec = OutputSpec::vector(1, TaskKind::Count);
        let params = TrainParams {
            epochs: 5,
            ..TrainParams::default()
        };
        let chosen = choose(&data, &spec, &params, &Candidate::all()).unwrap();
        assert_eq!(chosen.input, Input::View);
        assert_eq!(chosen.held_out, Some(1.0), "{:?}", chosen.scores);
        assert_eq!(chosen.learner.predict(&[2.0, 3.0, 1.0]), vec![3.0]);
        let majority = chosen
            .scores
            .iter()
            .find(|(n, _)| n.starts_with("majority"))
            .unwrap();
        assert!(majority.1 < 1.0);
    }
}
