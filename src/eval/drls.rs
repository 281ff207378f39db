//! The DRLS baseline (the paper's Table V, its reference [18]): a reinforcement-learning
//! scheduler that decides, frame by frame and model by model, which model to execute next
//! given the outputs obtained so far, or to stop.
//!
//! - State: the models executed so far, a coarse reading of each executed model's output (a
//!   count up to 7, a class index, a box present or not; see [`bucket`]) and the share of the
//!   frame's budget left, in quarters.
//! - Action: one of the models not executed yet that fits what is left of the budget (and
//!   whose parent, for a model run on another's boxes, has run), or stop.
//! - Reward of executing a model: the gain in average output accuracy of the frame (the models
//!   not executed are predicted by the same links as every other method's, from the executed
//!   ones) minus `cost_weight` times the model's share of the time all models take.
//!
//! The learner is tabular Q-learning, not a policy network, because the state is small (at
//! most 2^k executed sets times a handful of output readings, k <= 16, 4 in the recorded
//! traces) while the training part holds a few dozen frames: a table visits every reachable
//! state many times over the training epochs, where a network would have to generalise from
//! the same few dozen episodes and adds nothing but variance. States met only on the test part
//! fall back to a second table keyed by the executed set alone.
//!
//! The budget: under a time budget a frame may spend at most its milliseconds; under a memory
//! budget the models a frame runs must fit the memory together (they stay loaded: loading and
//! unloading models frame by frame would cost far more than running them), so a frame may
//! spend as much time as the slowest set of models that fits the memory at once, as a fixed
//! selection could. DRLS profiles nothing: it is trained once on the training part.

use super::EvalError;
use super::replay::{Outcome, Replay};
use super::stats::mean;
use crate::output::{OutputSpec, OutputValue, TaskKind};
use crate::schedule::{Budget, Costs, ModelSet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};

/// DRLS's training knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct DrlsConfig {
    /// Passes over the training frames (one episode per frame and pass).
    pub epochs: usize,
    /// Exploration rate of the first pass (decays linearly to `min_epsilon`).
    pub epsilon: f64,
    pub min_epsilon: f64,
    /// Floor of the step size (which starts as a sample average, 1 / visits).
    pub min_learning_rate: f64,
    /// Weight of a model's time share in the reward.
    pub cost_weight: f64,
    pub seed: u64,
}

impl Default for DrlsConfig {
    fn default() -> Self {
        DrlsConfig {
            epochs: 300,
            epsilon: 0.3,
            min_epsilon: 0.02,
            min_learning_rate: 0.02,
            cost_weight: 0.1,
            seed: 0,
        }
    }
}

/// A state of the scheduler on one frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct State {
    executed: u64,
    /// Per executed model (in model order), its output's bucket.
    seen: Vec<u8>,
    /// Quarters of the frame budget left (0..=4).
    left: u8,
}

/// A coarse, discrete reading of an output, what the scheduler's state holds of it.
pub fn bucket(spec: &OutputSpec, value: &OutputValue) -> u8 {
    match value {
        OutputValue::Tokens(t) => (t.len() / 4).min(3) as u8,
        OutputValue::Vector(v) => match spec.task {
            TaskKind::Count | TaskKind::Regression => v.first().map_or(0, |&x| {
                if x.is_finite() {
                    x.round().clamp(0.0, 7.0) as u8
                } else {
                    0
                }
            }),
            TaskKind::SingleLabel | TaskKind::MultiLabel => v
                .iter()
                .enumerate()
                .filter(|(_, x)| x.is_finite())
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i.min(31) as u8),
            TaskKind::Localization => u8::from(v.iter().any(|&x| x != 0.0)),
            TaskKind::Sequence => 0,
        },
    }
}

/// A trained DRLS scheduler for one budget.
pub struct DrlsPolicy {
    k: usize,
    /// Per model, its time and memory.
    ms: Vec<f64>,
    mb: Vec<f64>,
    /// The memory the models a frame runs may take together; None: unbounded.
    memory_mb: Option<f64>,
    parents: Vec<Option<usize>>,
    specs: Vec<OutputSpec>,
    /// Time a frame may spend.
    frame_ms: f64,
    /// Q-values of executing each model (stopping is worth 0).
    q: HashMap<State, Vec<(f64, u32)>>,
    by_set: HashMap<(u64, u8), Vec<(f64, u32)>>,
}

/// The time a frame may spend under `budget` (see the module notes).
pub fn frame_ms_budget(costs: &Costs, budget: &Budget) -> f64 {
    let k = costs.n_models();
    let by_memory = budget.memory_mb.map(|mb| {
        (0..(1u64 << k))
            .map(|m| ModelSet::from_indices(k, (0..k).filter(|i| m >> i & 1 == 1)))
            .filter(|s| Budget::memory(mb).fits(costs.models_cost(s)))
            .map(|s| costs.models_cost(&s).ms_per_frame)
            .fold(0.0, f64::max)
    });
    match (budget.ms_per_frame, by_memory) {
        (Some(t), Some(m)) => t.min(m),
        (Some(t), None) => t,
        (None, Some(m)) => m,
        (None, None) => costs.models.iter().map(|c| c.ms_per_frame).sum(),
    }
}

impl DrlsPolicy {
    fn state(&self, executed: u64, spent: f64, outputs: &[OutputValue]) -> State {
        let seen = (0..self.k)
            .filter(|i| executed >> i & 1 == 1)
            .map(|i| bucket(&self.specs[i], &outputs[i]))
            .collect();
        State {
            executed,
            seen,
            left: self.left(spent),
        }
    }

    fn left(&self, spent: f64) -> u8 {
        if self.frame_ms <= 0.0 {
            return 0;
        }
        ((1.0 - spent / self.frame_ms).clamp(0.0, 1.0) * 4.0).floor() as u8
    }

    /// The models that may run next.
    fn allowed(&self, executed: u64, spent: f64) -> Vec<usize> {
        (0..self.k)
            .filter(|&m| {
                executed >> m & 1 == 0
                    && self.fits_with(executed, m)
                    && self.parents[m].is_none_or(|p| executed >> p & 1 == 1)
                    && spent + self.ms[m] <= self.frame_ms + 1e-9 * self.frame_ms.max(1.0)
            })
            .collect()
    }

    /// Whether `m` fits the memory budget beside the models already executed on the frame.
    fn fits_with(&self, executed: u64, m: usize) -> bool {
        let Some(budget) = self.memory_mb else {
            return true;
        };
        let used: f64 = (0..self.k)
            .filter(|&i| executed >> i & 1 == 1 || i == m)
            .map(|i| self.mb[i])
            .sum();
        used <= budget + 1e-9 * budget.max(1.0)
    }

    /// The value of running `m` in `s` (0 when never tried).
    fn value(&self, s: &State, m: usize) -> f64 {
        match self.q.get(s) {
            Some(row) if row[m].1 > 0 => row[m].0,
            _ => self
                .by_set
                .get(&(s.executed, s.left))
                .filter(|row| row[m].1 > 0)
                .map_or(0.0, |row| row[m].0),
        }
    }

    /// The greedy choice: the best model to run, or `None` to stop (no model is worth more
    /// than stopping).
    fn greedy(&self, s: &State, allowed: &[usize]) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for &m in allowed {
            let v = self.value(s, m);
            if v > 1e-12 && best.is_none_or(|(_, b)| v > b) {
                best = Some((m, v));
            }
        }
        best.map(|(m, _)| m)
    }

    /// The set of models DRLS executes on a frame with these outputs.
    pub fn executed(&self, outputs: &[OutputValue]) -> u64 {
        let mut executed = 0u64;
        let mut spent = 0.0;
        loop {
            let s = self.state(executed, spent, outputs);
            let allowed = self.allowed(executed, spent);
            match self.greedy(&s, &allowed) {
                Some(m) => {
                    executed |= 1 << m;
                    spent += self.ms[m];
                }
                None => return executed,
            }
        }
    }
}

/// Trains DRLS on the replay's training part for `budget`.
pub fn train(replay: &Replay, budget: &Budget, cfg: &DrlsConfig) -> Result<DrlsPolicy, EvalError> {
    if cfg.epochs == 0 {
        return Err(EvalError::Invalid(
            "DRLS needs at least one training epoch".into(),
        ));
    }
    let problem = replay.problem();
    let k = problem.n_models();
    let costs = replay.costs();
    let total_ms: f64 = costs
        .models
        .iter()
        .map(|c| c.ms_per_frame)
        .sum::<f64>()
        .max(1e-9);
    let mut policy = DrlsPolicy {
        k,
        ms: costs.models.iter().map(|c| c.ms_per_frame).collect(),
        mb: costs.models.iter().map(|c| c.memory_mb).collect(),
        memory_mb: budget.memory_mb,
        parents: problem.models.iter().map(|m| m.parent).collect(),
        specs: problem.models.iter().map(|m| m.spec.clone()).collect(),
        frame_ms: frame_ms_budget(&costs, budget),
        q: HashMap::new(),
        by_set: HashMap::new(),
    };
    let train: Vec<usize> = replay.train_range().collect();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let accuracy = |mask: u64, t: usize| mean(replay.frame_scores(mask, t));
    let mut order = train.clone();
    for epoch in 0..cfg.epochs {
        let progress = epoch as f64 / cfg.epochs.max(2).saturating_sub(1) as f64;
        let epsilon = cfg.epsilon + (cfg.min_epsilon - cfg.epsilon) * progress.min(1.0);
        // A fresh frame order each pass, so that no frame always comes last.
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        for &t in &order {
            let outputs = &problem.frames[t].outputs;
            let mut executed = 0u64;
            let mut spent = 0.0;
            let mut acc = accuracy(0, t);
            loop {
                let allowed = policy.allowed(executed, spent);
                if allowed.is_empty() {
                    break;
                }
                let s = policy.state(executed, spent, outputs);
                let action = if rng.random::<f64>() < epsilon {
                    // Explore: any allowed model, or stop.
                    let i = rng.random_range(0..=allowed.len());
                    allowed.get(i).copied()
                } else {
                    policy.greedy(&s, &allowed)
                };
                let Some(m) = action else { break };
                let next_executed = executed | 1 << m;
                let next_spent = spent + policy.ms[m];
                let next_acc = accuracy(next_executed, t);
                let reward = next_acc - acc - cfg.cost_weight * policy.ms[m] / total_ms;
                let s2 = policy.state(next_executed, next_spent, outputs);
                let future = policy
                    .allowed(next_executed, next_spent)
                    .iter()
                    .map(|&a| policy.value(&s2, a))
                    .fold(0.0, f64::max);
                let target = reward + future;
                let floor = cfg.min_learning_rate;
                let update = |row: &mut Vec<(f64, u32)>| {
                    let (q, n) = &mut row[m];
                    *n += 1;
                    let alpha = (1.0 / f64::from(*n)).max(floor);
                    *q += alpha * (target - *q);
                };
                update(
                    policy
                        .q
                        .entry(s.clone())
                        .or_insert_with(|| vec![(0.0, 0); k]),
                );
                update(
                    policy
                        .by_set
                        .entry((s.executed, s.left))
                        .or_insert_with(|| vec![(0.0, 0); k]),
                );
                executed = next_executed;
                spent = next_spent;
                acc = next_acc;
            }
        }
    }
    Ok(policy)
}

/// Serves the test part with a trained DRLS: on every frame the models it chooses run, the
/// others are predicted by the links from them.
pub fn run(replay: &Replay, policy: &DrlsPolicy) -> Outcome {
    let problem = replay.problem();
    let k = problem.n_models();
    let costs = replay.costs();
    let test: Vec<usize> = replay.test_range().collect();
    let mut per_model = vec![0.0; k];
    let mut ms = 0.0;
    let mut executions = 0usize;
    let mut sets: BTreeMap<u64, usize> = BTreeMap::new();
    for &t in &test {
        let mask = policy.executed(&problem.frames[t].outputs);
        let scores = replay.frame_scores(mask, t);
        per_model.iter_mut().zip(&scores).for_each(|(a, s)| *a += s);
        let set = ModelSet::from_indices(k, (0..k).filter(|i| mask >> i & 1 == 1));
        ms += if mask == 0 {
            0.0
        } else {
            costs.set_cost(&set).ms_per_frame
        };
        executions += set.len();
        *sets.entry(mask).or_default() += 1;
    }
    let n = test.len().max(1) as f64;
    let ids = |mask: u64| -> Vec<String> {
        (0..k)
            .filter(|i| mask >> i & 1 == 1)
            .map(|i| problem.models[i].id.clone())
            .collect()
    };
    let mut by_share: Vec<(u64, usize)> = sets.into_iter().collect();
    by_share.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let detail = format!(
        "tabular Q-learning, {:.1} ms a frame at most; executed sets: {}",
        policy.frame_ms,
        by_share
            .iter()
            .map(|(m, c)| format!("{{{}}} {:.0}%", ids(*m).join(","), 100.0 * *c as f64 / n))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let model_accuracy: Vec<f64> = per_model.iter().map(|s| s / n).collect();
    Outcome {
        accuracy: mean(model_accuracy.iter().copied()),
        model_accuracy,
        ms_per_frame: ms / n,
        executions_saved: 1.0 - executions as f64 / (n * k as f64),
        active: by_share.iter().map(|(m, _)| ids(*m)).collect(),
        detail,
        decisions: Vec::new(),
        link_retrainings: 0,
        adapted_links: Vec::new(),
    }
}
