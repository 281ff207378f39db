//! Model selection under a budget (paper section 5): which models run, which are predicted.
//!
//! # The problem (eq. 1)
//! `k` models `0..k`; a set `A` of them runs. Each running model scores 1, each other model
//! `j` is predicted by the ensemble `h_{A,j}` and scores `p(h_{A,j})` in `[0, 1]`;
//! [`objective`] is the average over all `k` (eq. 4; 0 for the empty set's predictions). The
//! cost of `A` is its models' costs plus the links predicting the rest ([`Costs::set_cost`]:
//! `|A|` links per predicted model, each costing [`Costs::link`], which may be zero). A
//! [`Budget`] limits memory (MB), time per frame (ms), or both; [`Budget::fits`] checks them.
//!
//! # Scores
//! The link side implements [`LinkScores`]: `p(g_ij)` per link and `p(h_{A,j})` per ensemble.
//! [`MatrixScores`] is a matrix of link scores with a documented ensemble rule (best source
//! plus a fixed gain per further source, capped at 1); selection runs incrementally on it
//! (`O(k)` per candidate), and on any other implementation through
//! [`LinkScores::ensemble`].
//!
//! # Policies ([`select`], mapped from `config::SelectionPolicy`)
//! - `mlink`: the paper's heuristic. [`activation_probability`] (eqs. 5-7) orders the models;
//!   Algorithm 2 adds them in that order "until reach the cost budget": the first model that
//!   does not fit stops the selection ([`OnMisfit::Stop`]; [`OnMisfit::Skip`] is the variant
//!   that tries the rest, for comparison).
//! - `gain`: greedy on objective gain per unit of budget share, seeded with the empty set,
//!   every single model and every pair (partial enumeration), best result kept ([`gain`]).
//! - `optimal`: exact, enumerating sets pruned by cost, up to [`MAX_OPTIMAL_MODELS`].
//! - `standalone`: no links; the most models that fit ([`standalone`]).
//!
//! Every policy returns a [`Selection`] that fits the budget; a budget below the cheapest
//! model gives the empty set with a `reason` saying so.
//!
//! # Periods ([`ProfilingPlan`])
//! Each period (1 h by default) starts by profiling a share (1% by default) of its frames with
//! every model, then re-selects. The plan is a list of [`Step`]s (load, run, unload) that
//! never holds more memory than the budget: models that do not fit together run in turns over
//! the buffered frames. [`transition`] moves from one active set to the next.
//!
//! # Simulation ([`simulate`])
//! Fig. 10: random scores and costs, budgets swept, every policy against the optimum.

mod cost;
mod plan;
mod scores;
mod select;
mod set;
pub mod simulate;

pub use cost::{Budget, Cost, Costs};
pub use plan::{ProfilingPlan, Step, period_frames, transition};
pub use scores::{LinkScores, MatrixScores};
pub use select::{
    Activation, GAIN_PAIR_SEEDS_MAX, GAIN_SINGLE_SEEDS_MAX, MAX_OPTIMAL_MODELS, OnMisfit,
    Selection, StandaloneRule, activation_probability, gain, mlink, objective, optimal, select,
    standalone, standalone_with,
};
pub use set::ModelSet;

/// Why a selection or a plan cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("link score {score} from model {from} to model {to} is outside [0, 1]")]
    Score { from: usize, to: usize, score: f64 },
    #[error("model {model} has an invalid cost {cost:?}: costs must be finite and not negative")]
    InvalidCost { model: usize, cost: Cost },
    #[error("invalid link cost {0:?}: costs must be finite and not negative")]
    InvalidLinkCost(Cost),
    #[error("invalid budget {0:?}: limits must be finite and not negative")]
    InvalidBudget(Budget),
    #[error(
        "the exact optimum enumerates subsets and handles at most {max} models, got {models}; \
         use the `gain` policy"
    )]
    TooManyForOptimal { models: usize, max: usize },
    #[error("profiling plan: {0}")]
    Plan(String),
}
