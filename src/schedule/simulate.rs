//! The scalability simulation of Fig. 10: random link scores and model costs, budgets swept
//! from the cheapest model to all models, and each policy's average accuracy against the
//! optimum.

use super::{
    Budget, Cost, Costs, MatrixScores, OnMisfit, ScheduleError, gain, mlink, optimal, standalone,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Beta, Distribution, Normal};
use serde::{Deserialize, Serialize};

/// The ensemble gain of the paper's simulation.
pub const PAPER_ENSEMBLE_GAIN: f64 = 0.02;
/// Costs are drawn like scores, then raised to at least this, so no model is free.
pub const MIN_COST: f64 = 0.01;

/// How link scores and costs are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ScoreDist {
    /// Normal(0.5, 0.2) clipped to [0, 1].
    Normal,
    /// Beta(0.5, 0.5): mass near 0 and 1, the "relatively extreme" case.
    Beta,
}

impl ScoreDist {
    /// One draw in `[0, 1]`.
    pub fn sample(self, rng: &mut impl Rng) -> f64 {
        match self {
            ScoreDist::Normal => {
                // Constant, valid parameters.
                let d: Normal<f64> = Normal::new(0.5, 0.2).unwrap_or_else(|_| unreachable!());
                d.sample(rng).clamp(0.0, 1.0)
            }
            ScoreDist::Beta => {
                let d: Beta<f64> = Beta::new(0.5, 0.5).unwrap_or_else(|_| unreachable!());
                d.sample(rng).clamp(0.0, 1.0)
            }
        }
    }
}

/// One random problem: `k` models with costs (in abstract memory units) and link scores.
#[derive(Clone, Debug)]
pub struct Instance {
    pub costs: Costs,
    pub scores: MatrixScores,
}

impl Instance {
    /// Draws every link score `p(g_ij)` (`i != j`) and every model's memory cost from `dist`,
    /// costs raised to at least [`MIN_COST`]; links are free; ensembles follow
    /// [`MatrixScores`] with `gain`.
    pub fn random(k: usize, dist: ScoreDist, gain: f64, rng: &mut impl Rng) -> Self {
        let rows: Vec<Vec<f64>> = (0..k)
            .map(|i| {
                (0..k)
                    .map(|j| if i == j { 0.0 } else { dist.sample(rng) })
                    .collect()
            })
            .collect();
        let models = (0..k)
            .map(|_| Cost::new(dist.sample(rng).max(MIN_COST), 0.0))
            .collect();
        // Scores are clamped to [0, 1] and the gain is the caller's constant.
        let scores =
            MatrixScores::new(rows, gain.clamp(0.0, 1.0)).unwrap_or_else(|e| unreachable!("{e}"));
        Instance {
            costs: Costs::models_only(models),
            scores,
        }
    }

    /// The memory budget at `t` in `[0, 1]` of the way from the cheapest model to all models.
    pub fn budget_at(&self, t: f64) -> Budget {
        let mems = self.costs.models.iter().map(|c| c.memory_mb);
        let min = mems.clone().fold(f64::INFINITY, f64::min);
        let all: f64 = mems.sum();
        Budget::memory(min + t * (all - min))
    }
}

/// Simulation settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SimConfig {
    pub models: usize,
    pub dist: ScoreDist,
    pub instances: usize,
    pub seed: u64,
    pub gain: f64,
    /// Budget points from the cheapest model (0) to all models (1), evenly spaced.
    pub budget_points: usize,
}

/// Averages at one budget point.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SimPoint {
    /// Position of the budget between the cheapest model (0) and all models (1).
    pub budget_fraction: f64,
    /// Average accuracy `F(A)` per policy (standalone: `|A| / k`).
    pub standalone: f64,
    pub mlink: f64,
    pub mlink_skip: f64,
    pub gain: f64,
    pub optimal: f64,
    /// Average over instances of each policy's accuracy divided by the optimum's.
    pub standalone_ratio: f64,
    pub mlink_ratio: f64,
    pub mlink_skip_ratio: f64,
    pub gain_ratio: f64,
    /// Instances where a heuristic beat the optimum (must be 0).
    pub optimum_beaten: usize,
}

/// The whole sweep.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SimReport {
    pub config: SimConfig,
    pub points: Vec<SimPoint>,
    /// Ratios to the optimum averaged over every budget point and instance.
    pub mean_mlink_ratio: f64,
    pub mean_mlink_skip_ratio: f64,
    pub mean_gain_ratio: f64,
    pub mean_standalone_ratio: f64,
    /// Worst single-instance ratio of the gain selection.
    pub min_gain_ratio: f64,
    pub min_mlink_ratio: f64,
}

/// Runs the sweep: for each instance (drawn from `seed`), each budget point, every policy.
/// `progress` is called once per finished instance.
pub fn run(cfg: &SimConfig, mut progress: impl FnMut()) -> Result<SimReport, ScheduleError> {
    if cfg.models > super::MAX_OPTIMAL_MODELS {
        return Err(ScheduleError::TooManyForOptimal {
            models: cfg.models,
            max: super::MAX_OPTIMAL_MODELS,
        });
    }
    if cfg.models == 0 || cfg.instances == 0 || cfg.budget_points < 2 {
        return Err(ScheduleError::Shape(
            "a simulation needs at least one model, one instance and two budget points".into(),
        ));
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let np = cfg.budget_points;
    let mut points: Vec<SimPoint> = (0..np)
        .map(|p| SimPoint {
            budget_fraction: p as f64 / (np - 1) as f64,
            ..Default::default()
        })
        .collect();
    let (mut min_gain, mut min_mlink) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..cfg.instances {
        let inst = Instance::random(cfg.models, cfg.dist, cfg.gain, &mut rng);
        for pt in points.iter_mut() {
            let b = inst.budget_at(pt.budget_fraction);
            let opt = optimal(&inst.costs, &b, &inst.scores).objective;
            let sa = standalone(&inst.costs, &b).objective;
            let ml = mlink(&inst.costs, &b, &inst.scores, OnMisfit::Stop).objective;
            let mls = mlink(&inst.costs, &b, &inst.scores, OnMisfit::Skip).objective;
            let ga = gain(&inst.costs, &b, &inst.scores).objective;
            pt.optimal += opt;
            pt.standalone += sa;
            pt.mlink += ml;
            pt.mlink_skip += mls;
            pt.gain += ga;
            pt.standalone_ratio += sa / opt;
            pt.mlink_ratio += ml / opt;
            pt.mlink_skip_ratio += mls / opt;
            pt.gain_ratio += ga / opt;
            min_gain = min_gain.min(ga / opt);
            min_mlink = min_mlink.min(ml / opt);
            if [sa, ml, mls, ga].iter().any(|&v| v > opt + 1e-9) {
                pt.optimum_beaten += 1;
            }
        }
        progress();
    }
    let n = cfg.instances as f64;
    for pt in points.iter_mut() {
        for v in [
            &mut pt.standalone,
            &mut pt.mlink,
            &mut pt.mlink_skip,
            &mut pt.gain,
            &mut pt.optimal,
            &mut pt.standalone_ratio,
            &mut pt.mlink_ratio,
            &mut pt.mlink_skip_ratio,
            &mut pt.gain_ratio,
        ] {
            *v /= n;
        }
    }
    let mean = |f: fn(&SimPoint) -> f64| points.iter().map(f).sum::<f64>() / np as f64;
    Ok(SimReport {
        mean_mlink_ratio: mean(|p| p.mlink_ratio),
        mean_mlink_skip_ratio: mean(|p| p.mlink_skip_ratio),
        mean_gain_ratio: mean(|p| p.gain_ratio),
        mean_standalone_ratio: mean(|p| p.standalone_ratio),
        min_gain_ratio: min_gain,
        min_mlink_ratio: min_mlink,
        config: cfg.clone(),
        points,
    })
}
