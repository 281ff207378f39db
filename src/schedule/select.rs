//! The objective (eqs. 1 and 4), the activation probability (eqs. 5 to 7) and the selection
//! policies: the paper's greedy (Algorithm 2), marginal gain per cost with partial
//! enumeration, the exact optimum, and the standalone baseline.

use super::{Budget, Cost, Costs, LinkScores, MatrixScores, ModelSet, ScheduleError};
use crate::config::SelectionPolicy;
use serde::{Deserialize, Serialize};

/// Largest model count [`optimal`] enumerates (2^24 subsets at most).
pub const MAX_OPTIMAL_MODELS: usize = 24;
/// Up to this many models, [`gain`] seeds its greedy with every pair of models.
pub const GAIN_PAIR_SEEDS_MAX: usize = 8;
/// Up to this many models, [`gain`] seeds its greedy with every single model.
pub const GAIN_SINGLE_SEEDS_MAX: usize = 48;

/// Objects within this distance are equal when comparing objectives.
const TIE: f64 = 1e-12;

/// `F(A)` of eq. 4: the average output accuracy over all `k` models when the models of
/// `active` run (score 1 each) and every other model `j` is predicted by `h_{A,j}` (score
/// `p(h_{A,j})`, 0 when `active` is empty). 0 when there are no models.
pub fn objective<S: LinkScores + ?Sized>(scores: &S, active: &ModelSet) -> f64 {
    let k = scores.n_models();
    if k == 0 {
        return 0.0;
    }
    let n = active.len();
    let predicted: f64 = if n == 0 {
        0.0
    } else {
        active
            .complement_iter()
            .map(|j| scores.ensemble(active, j))
            .sum()
    };
    (n as f64 + predicted) / k as f64
}

/// The terms of a model's activation probability.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Activation {
    /// Eq. 5: mean score of the links out of the model.
    pub p_out: f64,
    /// Eq. 6: mean score of the links into the model.
    pub p_in: f64,
    /// The scalar cost `c(f_i)`: the model's share of the budget ([`Budget::share`]).
    pub cost: f64,
    /// Eq. 7: `(1 + p_out - p_in) / (w c(f_i))` with `w = 2 / min_i c(f_i)`.
    pub p: f64,
}

/// Eqs. 5 to 7 for every model.
///
/// `c(f_i)` is the model's cost as a share of the budget summed over the constrained
/// resources; with one resource it is proportional to the paper's `c(f_i)` and `P` is
/// unchanged, since `w` normalises the scale away. With one model there are no links and
/// `p_out = p_in = 0`. Models that cost nothing get `P = +inf` (always picked first); `w`
/// then uses the cheapest model that costs something. With no constrained resource every
/// cost is 0 and `P` is `+inf` for all: every model fits anyway.
pub fn activation_probability<S: LinkScores + ?Sized>(
    scores: &S,
    costs: &Costs,
    budget: &Budget,
) -> Vec<Activation> {
    let k = scores.n_models();
    let shares: Vec<f64> = costs.models.iter().map(|&c| budget.share(c)).collect();
    let min_positive = shares
        .iter()
        .copied()
        .filter(|&c| c > 0.0)
        .fold(f64::INFINITY, f64::min);
    let w = 2.0 / min_positive;
    (0..k)
        .map(|i| {
            let (p_out, p_in) = if k > 1 {
                let others = (0..k).filter(|&j| j != i);
                let out: f64 = others.clone().map(|j| scores.link(i, j)).sum();
                let inn: f64 = others.map(|j| scores.link(j, i)).sum();
                (out / (k - 1) as f64, inn / (k - 1) as f64)
            } else {
                (0.0, 0.0)
            };
            let cost = shares[i];
            let p = if cost > 0.0 {
                (1.0 + p_out - p_in) / (w * cost)
            } else {
                f64::INFINITY
            };
            Activation {
                p_out,
                p_in,
                cost,
                p,
            }
        })
        .collect()
}

/// What the paper's greedy does when the next model by activation probability does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMisfit {
    /// Stop (Algorithm 2, line 5: add the argmax "until reach the cost budget"). The default.
    Stop,
    /// Skip it and try the next one: a variant reported alongside for comparison.
    Skip,
}

/// A chosen active set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub policy: SelectionPolicy,
    /// The models that run.
    pub active: ModelSet,
    /// Its objective `F(A)` (for `standalone`: `|A| / k`, since nothing is predicted).
    pub objective: f64,
    /// What it uses: its models plus its links (for `standalone`: its models only).
    pub cost: Cost,
    /// Objective evaluations spent (each a full or an incremental `F`), for comparisons.
    pub evaluations: u64,
    /// One line saying how the set was reached or why it is empty.
    pub reason: String,
}

/// Selects the active set under `budget` with `policy`.
///
/// Every policy returns a set whose cost fits. When even the cheapest model (with its links)
/// does not fit, the set is empty and `reason` says so; when every model fits, every model
/// runs.
pub fn select<S: LinkScores + ?Sized>(
    policy: SelectionPolicy,
    costs: &Costs,
    budget: &Budget,
    scores: &S,
) -> Result<Selection, ScheduleError> {
    check(costs, budget, scores)?;
    let k = costs.n_models();
    if let Some(sel) = trivial(policy, costs, budget, scores) {
        return Ok(sel);
    }
    match policy {
        // The hybrid plans around the paper's set (see `control::hybrid`).
        SelectionPolicy::Mlink | SelectionPolicy::Hybrid => {
            Ok(mlink(costs, budget, scores, OnMisfit::Stop))
        }
        SelectionPolicy::Gain => Ok(gain(costs, budget, scores)),
        SelectionPolicy::Optimal => {
            if k > MAX_OPTIMAL_MODELS {
                return Err(ScheduleError::TooManyForOptimal {
                    models: k,
                    max: MAX_OPTIMAL_MODELS,
                });
            }
            Ok(optimal(costs, budget, scores))
        }
        SelectionPolicy::Standalone => Ok(standalone(costs, budget)),
    }
}

/// Validates shapes, costs, scores and the budget.
pub(crate) fn check<S: LinkScores + ?Sized>(
    costs: &Costs,
    budget: &Budget,
    scores: &S,
) -> Result<(), ScheduleError> {
    if costs.n_models() != scores.n_models() {
        return Err(ScheduleError::Shape(format!(
            "{} model costs for {} models with link scores",
            costs.n_models(),
            scores.n_models()
        )));
    }
    if let Some((m, c)) = costs.models.iter().enumerate().find(|(_, c)| !c.is_valid()) {
        return Err(ScheduleError::InvalidCost { model: m, cost: *c });
    }
    if !costs.links_valid() {
        return Err(ScheduleError::InvalidLinkCost(costs.link));
    }
    if !budget.is_valid() {
        return Err(ScheduleError::InvalidBudget(*budget));
    }
    Ok(())
}

/// The empty set when nothing fits, the full set when everything does.
fn trivial<S: LinkScores + ?Sized>(
    policy: SelectionPolicy,
    costs: &Costs,
    budget: &Budget,
    scores: &S,
) -> Option<Selection> {
    let k = costs.n_models();
    let links = policy != SelectionPolicy::Standalone;
    let cost_of = |set: &ModelSet| {
        if links {
            costs.set_cost(set)
        } else {
            costs.models_cost(set)
        }
    };
    let single_fits = (0..k).any(|m| budget.fits(cost_of(&ModelSet::from_indices(k, [m]))));
    if !single_fits {
        let cheapest = costs
            .models
            .iter()
            .map(|&c| budget.share(c))
            .fold(f64::INFINITY, f64::min);
        let reason = if k == 0 {
            "no models to select".to_string()
        } else {
            format!(
                "empty: the budget {} is below the cheapest model{} ({:.3} of the budget)",
                fmt_budget(budget),
                if links { " with its links" } else { "" },
                cheapest
            )
        };
        return Some(Selection {
            policy,
            active: ModelSet::empty(k),
            objective: 0.0,
            cost: Cost::ZERO,
            evaluations: 0,
            reason,
        });
    }
    let full = ModelSet::full(k);
    let full_cost = cost_of(&full);
    if budget.fits(full_cost) {
        return Some(Selection {
            policy,
            active: full,
            objective: 1.0,
            cost: full_cost,
            evaluations: 0,
            reason: "every model fits the budget: all run".into(),
        });
    }
    let _ = scores;
    None
}

fn fmt_budget(b: &Budget) -> String {
    match (b.memory_mb, b.ms_per_frame) {
        (Some(m), Some(t)) => format!("({m} MB, {t} ms/frame)"),
        (Some(m), None) => format!("{m} MB"),
        (None, Some(t)) => format!("{t} ms/frame"),
        (None, None) => "(unbounded)".into(),
    }
}

/// A set grown one model at a time, evaluating `F(A ∪ {c})` for candidates cheaply: with
/// matrix scores it keeps each target's best source score, so a candidate costs `O(k)`.
struct Grower<'a, S: LinkScores + ?Sized> {
    scores: &'a S,
    matrix: Option<&'a MatrixScores>,
    costs: &'a Costs,
    active: ModelSet,
    in_set: Vec<bool>,
    best: Vec<f64>,
    model_cost: Cost,
    objective: f64,
    evaluations: u64,
}

impl<'a, S: LinkScores + ?Sized> Grower<'a, S> {
    fn new(scores: &'a S, costs: &'a Costs) -> Self {
        let k = costs.n_models();
        Grower {
            scores,
            matrix: scores.as_matrix(),
            costs,
            active: ModelSet::empty(k),
            in_set: vec![false; k],
            best: vec![0.0; k],
            model_cost: Cost::ZERO,
            objective: 0.0,
            evaluations: 0,
        }
    }

    fn len(&self) -> usize {
        self.active.len()
    }

    fn cost(&self) -> Cost {
        self.model_cost + self.costs.links_for(&self.active)
    }

    fn cost_with(&self, c: usize) -> Cost {
        self.model_cost + self.costs.models[c] + self.costs.links_for(&self.active.with(c))
    }

    fn objective_with(&mut self, c: usize) -> f64 {
        self.evaluations += 1;
        let k = self.in_set.len();
        match self.matrix {
            Some(m) => {
                let n = self.len() + 1;
                let row = m.row(c);
                let mut sum = n as f64;
                for (j, (&b, &s)) in self.best.iter().zip(row).enumerate() {
                    if j != c && !self.in_set[j] {
                        sum += m.combine(b.max(s), n);
                    }
                }
                sum / k as f64
            }
            None => objective(self.scores, &self.active.with(c)),
        }
    }

    fn add(&mut self, c: usize) {
        if let Some(m) = self.matrix {
            for (b, &s) in self.best.iter_mut().zip(m.row(c)) {
                *b = b.max(s);
            }
        }
        self.active.insert(c);
        self.in_set[c] = true;
        self.model_cost += self.costs.models[c];
        self.objective = match self.matrix {
            Some(m) => {
                let n = self.len();
                let predicted: f64 = (0..self.in_set.len())
                    .filter(|&j| !self.in_set[j])
                    .map(|j| m.combine(self.best[j], n))
                    .sum();
                (n as f64 + predicted) / self.in_set.len() as f64
            }
            None => objective(self.scores, &self.active),
        };
    }

    fn into_selection(self, policy: SelectionPolicy, reason: String) -> Selection {
        Selection {
            policy,
            cost: self.cost(),
            objective: self.objective,
            active: self.active,
            evaluations: self.evaluations,
            reason,
        }
    }
}

/// The paper's selection (Algorithm 2, line 5): models in decreasing activation probability
/// (ties: lower index first), each added while the set with its links fits. With
/// [`OnMisfit::Stop`], the first model that does not fit ends the selection, as the
/// algorithm's "until reach the cost budget" reads; [`OnMisfit::Skip`] tries the rest.
pub fn mlink<S: LinkScores + ?Sized>(
    costs: &Costs,
    budget: &Budget,
    scores: &S,
    on_misfit: OnMisfit,
) -> Selection {
    let ap = activation_probability(scores, costs, budget);
    let mut order: Vec<usize> = (0..costs.n_models()).collect();
    order.sort_by(|&a, &b| ap[b].p.total_cmp(&ap[a].p).then(a.cmp(&b)));
    let mut g = Grower::new(scores, costs);
    let mut stopped_at = None;
    let mut skipped = 0;
    for &m in &order {
        if budget.fits(g.cost_with(m)) {
            g.add(m);
        } else if on_misfit == OnMisfit::Stop {
            stopped_at = Some(m);
            break;
        } else {
            skipped += 1;
        }
    }
    g.evaluations = 1;
    let reason = match (on_misfit, stopped_at) {
        (OnMisfit::Stop, Some(m)) => format!(
            "greedy by activation probability: {} models, stopped at model {m} (next by \
             probability, does not fit)",
            g.len()
        ),
        _ => format!(
            "greedy by activation probability: {} models, {skipped} that did not fit skipped",
            g.len()
        ),
    };
    g.into_selection(SelectionPolicy::Mlink, reason)
}

/// Completes `g` greedily: among the models that fit, the one with the largest objective
/// gain per unit of cost (cost = share of the budget, [`Budget::share`]), until none fits.
/// With `per_cost = false` the gain alone decides.
fn complete<S: LinkScores + ?Sized>(g: &mut Grower<'_, S>, budget: &Budget, per_cost: bool) {
    let k = g.in_set.len();
    loop {
        let base_share = budget.share(g.cost());
        let mut pick: Option<(usize, f64)> = None;
        for c in 0..k {
            if g.in_set[c] {
                continue;
            }
            let cw = g.cost_with(c);
            if !budget.fits(cw) {
                continue;
            }
            let gain = g.objective_with(c) - g.objective;
            let key = if per_cost {
                gain / (budget.share(cw) - base_share).max(1e-9)
            } else {
                gain
            };
            if pick.is_none_or(|(_, best)| key > best + TIE) {
                pick = Some((c, key));
            }
        }
        match pick {
            Some((c, _)) => g.add(c),
            None => break,
        }
    }
}

/// Marginal gain per unit cost with partial enumeration: greedy completions of the empty
/// set (per cost, and by gain alone), of every single model (up to
/// [`GAIN_SINGLE_SEEDS_MAX`] models) and of every pair (up to [`GAIN_PAIR_SEEDS_MAX`]),
/// keeping the best (ties: the cheaper, then the first found).
pub fn gain<S: LinkScores + ?Sized>(costs: &Costs, budget: &Budget, scores: &S) -> Selection {
    let k = costs.n_models();
    let mut seeds: Vec<(Vec<usize>, bool)> = vec![(vec![], true), (vec![], false)];
    if k <= GAIN_SINGLE_SEEDS_MAX {
        seeds.extend((0..k).map(|a| (vec![a], true)));
    }
    if k <= GAIN_PAIR_SEEDS_MAX {
        for a in 0..k {
            seeds.extend((a + 1..k).map(|b| (vec![a, b], true)));
        }
    }
    let mut best: Option<Selection> = None;
    let mut evaluations = 0;
    let mut tried = 0;
    for (seed, per_cost) in &seeds {
        let mut g = Grower::new(scores, costs);
        let mut fits = true;
        for &m in seed {
            fits &= budget.fits(g.cost_with(m));
            g.add(m);
        }
        if !fits {
            continue;
        }
        tried += 1;
        complete(&mut g, budget, *per_cost);
        evaluations += g.evaluations;
        let sel = g.into_selection(SelectionPolicy::Gain, String::new());
        if best.as_ref().is_none_or(|b| improves(&sel, b, budget)) {
            best = Some(sel);
        }
    }
    // The empty seed always fits, so `best` is set.
    let mut sel = best.unwrap_or_else(|| {
        Grower::new(scores, costs).into_selection(SelectionPolicy::Gain, String::new())
    });
    sel.evaluations = evaluations;
    sel.reason = format!(
        "greedy on objective gain per unit cost from {tried} seeds: {} models",
        sel.active.len()
    );
    sel
}

fn improves(a: &Selection, b: &Selection, budget: &Budget) -> bool {
    a.objective > b.objective + TIE
        || (a.objective >= b.objective - TIE && budget.share(a.cost) < budget.share(b.cost) - TIE)
}

/// The exact optimum of eq. 1 by enumerating every set whose models fit (depth-first over
/// bitmasks, pruning a branch as soon as its models alone exceed the budget: links only add
/// cost). Ties go to the cheaper set, then the first found. For up to
/// [`MAX_OPTIMAL_MODELS`] models; [`select`] refuses more.
pub fn optimal<S: LinkScores + ?Sized>(costs: &Costs, budget: &Budget, scores: &S) -> Selection {
    let k = costs.n_models();
    let mut e = Enumerator {
        scores,
        matrix: scores.as_matrix(),
        costs,
        budget,
        best_stack: vec![vec![0.0; k]; k + 1],
        in_set: vec![false; k],
        set: ModelSet::empty(k),
        best: (ModelSet::empty(k), 0.0, Cost::ZERO),
        evaluations: 1,
    };
    e.walk(0, 0, Cost::ZERO);
    let (active, objective, cost) = e.best;
    Selection {
        policy: SelectionPolicy::Optimal,
        reason: format!(
            "optimum over {} evaluated sets: {} models",
            e.evaluations,
            active.len()
        ),
        active,
        objective,
        cost,
        evaluations: e.evaluations,
    }
}

struct Enumerator<'a, S: LinkScores + ?Sized> {
    scores: &'a S,
    matrix: Option<&'a MatrixScores>,
    costs: &'a Costs,
    budget: &'a Budget,
    /// `best_stack[d][j]`: the best source score into `j` for the current set of size `d`.
    best_stack: Vec<Vec<f64>>,
    in_set: Vec<bool>,
    set: ModelSet,
    best: (ModelSet, f64, Cost),
    evaluations: u64,
}

impl<S: LinkScores + ?Sized> Enumerator<'_, S> {
    fn walk(&mut self, next: usize, depth: usize, model_cost: Cost) {
        let k = self.in_set.len();
        for c in next..k {
            let mc = model_cost + self.costs.models[c];
            if !self.budget.fits(mc) {
                continue;
            }
            self.in_set[c] = true;
            self.set.insert(c);
            if let Some(m) = self.matrix {
                let (lo, hi) = self.best_stack.split_at_mut(depth + 1);
                for ((n, &o), &s) in hi[0].iter_mut().zip(&lo[depth]).zip(m.row(c)) {
                    *n = o.max(s);
                }
            }
            let total = mc + self.costs.links_for(&self.set);
            if self.budget.fits(total) {
                let f = self.evaluate(depth + 1);
                self.evaluations += 1;
                let (_, bf, bc) = &self.best;
                if f > bf + TIE
                    || (f >= bf - TIE && self.budget.share(total) < self.budget.share(*bc) - TIE)
                {
                    self.best = (self.set.clone(), f, total);
                }
            }
            self.walk(c + 1, depth + 1, mc);
            self.set.remove(c);
            self.in_set[c] = false;
        }
    }

    fn evaluate(&self, n: usize) -> f64 {
        let k = self.in_set.len();
        match self.matrix {
            Some(m) => {
                let best = &self.best_stack[n];
                let mut sum = n as f64;
                for (&b, &inside) in best.iter().zip(&self.in_set) {
                    if !inside {
                        sum += m.combine(b, n);
                    }
                }
                sum / k as f64
            }
            None => objective(self.scores, &self.set),
        }
    }
}

/// Which models the standalone baseline runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StandaloneRule {
    /// The paper's (section 6.6): the models of least time cost first, while they fit.
    #[default]
    MinTime,
    /// The most models that fit, the cheapest in budget share first ([`standalone`]).
    BudgetShare,
}

impl StandaloneRule {
    pub fn as_label(self) -> &'static str {
        match self {
            StandaloneRule::MinTime => "min_time",
            StandaloneRule::BudgetShare => "budget_share",
        }
    }
}

/// The standalone baseline under `rule`.
pub fn standalone_with(rule: StandaloneRule, costs: &Costs, budget: &Budget) -> Selection {
    match rule {
        StandaloneRule::BudgetShare => standalone(costs, budget),
        StandaloneRule::MinTime => {
            let k = costs.n_models();
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&a, &b| {
                costs.models[a]
                    .ms_per_frame
                    .total_cmp(&costs.models[b].ms_per_frame)
                    .then(a.cmp(&b))
            });
            let mut set = ModelSet::empty(k);
            let mut used = Cost::ZERO;
            for m in order {
                if budget.fits(used + costs.models[m]) {
                    used += costs.models[m];
                    set.insert(m);
                }
            }
            let n = set.len();
            Selection {
                policy: SelectionPolicy::Standalone,
                cost: costs.models_cost(&set),
                objective: if k == 0 { 0.0 } else { n as f64 / k as f64 },
                evaluations: 0,
                reason: format!(
                    "standalone (least time cost first): the {n} models that fit, no links"
                ),
                active: set,
            }
        }
    }
}

/// The standalone baseline: no links, so unexecuted models score 0 and the best set is one
/// with the most models whose own costs fit (ties: the cheaper). With one constrained
/// resource the cheapest models first is exact; with two it enumerates up to
/// [`MAX_OPTIMAL_MODELS`] models and takes the cheapest by budget share beyond.
///
/// With costly links it can fit models that no set of eq. 1 (which pays links for every
/// predicted model) can, so it may score above [`optimal`]; with free links it never does.
pub fn standalone(costs: &Costs, budget: &Budget) -> Selection {
    let k = costs.n_models();
    let both = budget.memory_mb.is_some() && budget.ms_per_frame.is_some();
    let active = if both && k <= MAX_OPTIMAL_MODELS {
        let mut best = (0usize, f64::INFINITY, 0u64);
        for mask in 0u64..(1u64 << k) {
            let set = ModelSet::from_mask(k, mask);
            let c = costs.models_cost(&set);
            let n = set.len();
            if budget.fits(c) {
                let share = budget.share(c);
                if n > best.0 || (n == best.0 && share < best.1 - TIE) {
                    best = (n, share, mask);
                }
            }
        }
        ModelSet::from_mask(k, best.2)
    } else {
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| {
            budget
                .share(costs.models[a])
                .total_cmp(&budget.share(costs.models[b]))
                .then(a.cmp(&b))
        });
        let mut set = ModelSet::empty(k);
        let mut used = Cost::ZERO;
        for m in order {
            if budget.fits(used + costs.models[m]) {
                used += costs.models[m];
                set.insert(m);
            }
        }
        set
    };
    let n = active.len();
    Selection {
        policy: SelectionPolicy::Standalone,
        cost: costs.models_cost(&active),
        objective: if k == 0 { 0.0 } else { n as f64 / k as f64 },
        evaluations: 0,
        reason: format!("standalone: the {n} models that fit, no links"),
        active,
    }
}

#[cfg(test)]
mod standalone_tests {
    use super::*;

    #[test]
    fn standalone_min_time_runs_the_fastest_models_that_fit() {
        // 0 is small and slow, 1 and 2 large and fast: budget share takes 0 and 1 (the most
        // models, cheapest share first), the paper's rule the fastest first: 2, then 0.
        let costs = Costs::models_only(vec![
            Cost::new(10.0, 100.0),
            Cost::new(50.0, 5.0),
            Cost::new(60.0, 1.0),
        ]);
        let budget = Budget::memory(100.0);
        let share = standalone_with(StandaloneRule::BudgetShare, &costs, &budget);
        assert_eq!(share.active.iter().collect::<Vec<_>>(), [0, 1]);
        let time = standalone_with(StandaloneRule::MinTime, &costs, &budget);
        assert_eq!(time.active.iter().collect::<Vec<_>>(), [0, 2]);
        assert_eq!(StandaloneRule::default(), StandaloneRule::MinTime);
    }
}
