//! Replay of scheduling methods over a recorded trace, with the paper's protocol (section 6.6):
//! the first share of the trace in time trains the links and ensembles; the rest is cut into
//! periods; the first frames of each period are profiling frames on which every model runs
//! (their cost is charged; they are exact when every model fits the memory budget at once,
//! otherwise they are served with the active set and labelled in turns, as in the engine);
//! the profiled link and ensemble scores drive one selection per period.
//!
//! The selection methods (MLink, Gain) and the hybrid policy drive the engine's own controller
//! ([`crate::control::Controller`]) over the test frames with the trace's clock, so the
//! replay measures the decisions `mlink run` makes; periods and profiling frames of every
//! method come from the same period clock.
//!
//! Every model is scored on every test frame against its exact output with its task's metric,
//! and the scores are averaged over models and frames: the paper's average output accuracy.

use super::EvalError;
use super::linker::{LinkLearners, Linker};
use super::problem::Problem;
use super::reducto::{self, DiffStep, Operating};
use super::stats::mean;
use crate::config::SelectionPolicy;
use crate::control::hybrid::{Between, HybridSettings, Mode, Plan, TriggerSample};
use crate::control::{
    self, BundleLinks, Command, Controller, Decision, Event, FrameId, Labelling, PeriodClock,
    PeriodLength, Predictor, Purpose, Settings,
};
use crate::link::reservoir::{self as reservoir, Reservoir};
use crate::link::view_links::ViewLinks;
use crate::link::{LinkBundle, TrainParams};
use crate::output::OutputValue;
use crate::schedule::{self, Budget, Cost, Costs, LinkScores, ModelSet};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

/// How the test part is cut into periods.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Periods of this many frames.
    Frames(usize),
    /// Periods of this many seconds of trace time.
    Seconds(f64),
    /// This many periods of (nearly) equal frame counts.
    Count(usize),
}

/// The protocol's knobs; [`ReplayConfig::default`] is the paper's where the paper gives one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayConfig {
    /// Share of the trace, in time, that trains the links (paper: 0.1).
    pub train_fraction: f64,
    pub period: Period,
    /// Share of each period's frames used for profiling (paper: 0.01).
    pub profile_fraction: f64,
    /// Profiling frames per period at least (a period needs one to score its links).
    pub min_profile_frames: usize,
    /// How many periods of profiling frames (the current one and the ones before) the scores
    /// of a selection are measured on, so that short periods still give usable estimates.
    pub profile_window: usize,
    /// Accuracy Reducto's thresholds are tuned for on the training part (paper: 0.9).
    pub reducto_target: f64,
    /// Cost of one link network (an ensemble over `n` sources costs `n` links).
    pub link_cost: Cost,
    /// Replace `link_cost`'s memory by the trained links' mean parameter memory (the
    /// engine's rule); false keeps `link_cost` as given.
    pub link_memory_from_links: bool,
    /// Seed of link training.
    pub seed: u64,
    /// Which links serve the predictions; the controller scores candidate sets with the same
    /// links (`mlink run` serves the paper's bundle, so `paper` is its replay).
    pub links: LinkLearners,
    /// Hybrid and memory-bound Reducto: video seconds a triggered frame may wait for a model
    /// run in turns.
    pub latency_s: f64,
    /// Hybrid and memory-bound Reducto: load and unload time charged per MB of a model run
    /// in turns (plus a fixed `control::hybrid::LOAD_MS_FIXED`).
    pub load_ms_per_mb: f64,
    /// Hybrid and memory-bound Reducto: video seconds a triggered model's last exact output
    /// is served at most (infinite: never refreshed).
    pub max_age_s: f64,
    /// Hybrid on given links ([`Replay::with_links`]): frames profiled one after another for
    /// the trigger's curves before the first plan from them, as an engine started from links
    /// profiles its pipeline's `links.warmup_samples` (at least 8).
    pub curve_frames: usize,
    /// Periodic adaptation (`adaptation.policy: periodic`): the policies run through the
    /// controller train the chosen view links again on the training frames and every
    /// period's profiling samples so far, as the engine's online trainer does. Standalone,
    /// Optimal and Reducto keep the links as trained.
    pub adapt: bool,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            train_fraction: 0.1,
            period: Period::Count(5),
            profile_fraction: 0.01,
            min_profile_frames: 1,
            profile_window: 4,
            reducto_target: 0.9,
            link_cost: Cost::new(0.1, 0.05),
            link_memory_from_links: true,
            seed: 0,
            links: LinkLearners::default(),
            latency_s: control::hybrid::DEFAULT_LATENCY_S,
            load_ms_per_mb: control::hybrid::DEFAULT_LOAD_MS_PER_MB,
            max_age_s: control::hybrid::DEFAULT_MAX_AGE_S,
            curve_frames: crate::config::DEFAULT_WARMUP_SAMPLES,
            adapt: false,
        }
    }
}

/// A compared method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The cheapest models that fit run; the others produce nothing.
    Standalone,
    /// One multi-task network on the frame thumbnails in place of every model
    /// ([`super::mtl`]); only for traces with thumbnails.
    Mtl,
    /// The reinforcement-learning scheduler, model by model on every frame ([`super::drls`]).
    Drls,
    /// Reducto's frame filtering at the compute MLink spends under the same budget, every
    /// model loaded (memory budgets do not bind it).
    Reducto,
    /// Reducto at the same compute and bound by the same memory budget: the models the
    /// budget cannot hold run in turns on their selected frames, loads charged.
    ReductoFair,
    /// The paper's activation-probability greedy.
    Mlink,
    /// The marginal-gain selection.
    Gain,
    /// Beyond the paper: per model exact, triggered by frame differences, or predicted.
    Hybrid,
    /// The best fixed set in hindsight, by enumeration, scored on the test part.
    Optimal,
}

impl Method {
    pub const ALL: [Method; 9] = [
        Method::Standalone,
        Method::Mtl,
        Method::Drls,
        Method::Reducto,
        Method::ReductoFair,
        Method::Mlink,
        Method::Gain,
        Method::Hybrid,
        Method::Optimal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Standalone => "Standalone",
            Method::Mtl => "MTL",
            Method::Drls => "DRLS",
            Method::Reducto => "Reducto",
            Method::ReductoFair => "Reducto (bound)",
            Method::Mlink => "MLink",
            Method::Gain => "Gain",
            Method::Hybrid => "Hybrid",
            Method::Optimal => "Optimal",
        }
    }
}

/// What one method achieved on the test part.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// Average output accuracy over models and test frames.
    pub accuracy: f64,
    /// Per model, in trace order.
    pub model_accuracy: Vec<f64>,
    /// Mean inference time per test frame: executed models plus links.
    pub ms_per_frame: f64,
    /// `1 - executions / (frames x models)`.
    pub executions_saved: f64,
    /// Active model ids per period (selection methods) or the models that ran (Standalone).
    pub active: Vec<Vec<String>>,
    /// How the method was configured (Reducto's features and thresholds), for the report.
    pub detail: String,
    /// The selections in order (selection methods only), as `--decisions` writes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<Decision>,
    /// Times the serving view links were trained again online (`--adapt`).
    #[serde(skip_serializing_if = "is_zero")]
    pub link_retrainings: usize,
    /// Under `--adapt`, the single links' scores on the test frames (rows: sources, columns:
    /// targets) once trained again for the last time; empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adapted_links: Vec<Vec<f64>>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn mask_of(set: &ModelSet) -> u64 {
    set.iter().fold(0u64, |m, i| m | (1 << i))
}

fn set_of(k: usize, mask: u64) -> ModelSet {
    ModelSet::from_indices(k, (0..k).filter(|i| mask >> i & 1 == 1))
}

/// One period of the test part: its frames, the first of which are profiling frames.
#[derive(Clone, Debug, PartialEq)]
struct PeriodPlan {
    frames: Range<usize>,
    profile: Range<usize>,
}

/// A trace prepared for replay: the split, the periods, the trained links, and a cache of the
/// per-frame scores of every active set tried.
pub struct Replay<'p> {
    problem: &'p Problem,
    cfg: ReplayConfig,
    k: usize,
    train: Range<usize>,
    test: Range<usize>,
    periods: Vec<PeriodPlan>,
    links: LinkBundle,
    /// Trace model order is the bundle's.
    identity: Vec<usize>,
    /// The few-sample links over the views (`--links chosen`), which serve the predictions.
    chosen: Option<ViewLinks>,
    /// Per source row and target column, each link's parameter memory and measured time
    /// (empty when `link_cost` was given: every link costs it).
    link_costs: Vec<Vec<Cost>>,
    cache: RefCell<BTreeMap<(u64, usize), Vec<f64>>>,
}

/// The links that serve, in the controller's terms: the chosen links over the views when
/// trained, else the paper's bundle.
pub struct ServingLinks<'a> {
    chosen: Option<&'a dyn Linker>,
    bundle: BundleLinks<'a>,
}

impl Predictor for ServingLinks<'_> {
    fn predict(&self, target: usize, sources: &[(usize, &OutputValue)]) -> Option<OutputValue> {
        match self.chosen {
            Some(c) => c.predict(target, sources),
            None => self.bundle.predict(target, sources),
        }
    }

    fn predict_viewed(
        &self,
        target: usize,
        sources: &[(usize, &OutputValue)],
        views: &[Vec<f32>],
    ) -> Option<OutputValue> {
        match self.chosen {
            Some(c) => c.predict_viewed(target, sources, views),
            None => self.bundle.predict_viewed(target, sources, views),
        }
    }

    fn prior(&self, sources: &[usize], target: usize) -> Option<f64> {
        match self.chosen {
            Some(c) => c.held_out(sources, target),
            None => self.bundle.prior(sources, target),
        }
    }
}

/// Under `--adapt`: one run's view links trained again on the profiling samples, as the
/// engine's online trainer does (the same reservoir and the same retraining).
struct Adaptation {
    reservoir: Reservoir,
    params: TrainParams,
    /// The links trained online, oldest first; version `v` > 0 is `versions[v - 1]`, version
    /// 0 the links trained on the training part.
    versions: Vec<ViewLinks>,
}

impl Adaptation {
    /// The version serving now.
    fn version(&self) -> usize {
        self.versions.len()
    }
}

/// Times the hybrid's allowance is lowered to meet a compute target.
const HYBRID_MATCH_TRIES: usize = 6;

/// Prediction time charged per number a link holds (ms): one multiply-add or compare per
/// weight or stored value, about a nanosecond on the CPUs the project runs on.
pub const LINK_MS_PER_PARAMETER: f64 = 1e-6;

impl<'p> Replay<'p> {
    /// The controller's `Measured` event for trace frames whose every model ran: their exact
    /// outputs and link views are the samples.
    fn measured(&self, purpose: Purpose, frames: &[FrameId]) -> Event {
        let frame = |t: &FrameId| &self.problem.frames[*t as usize];
        Event::Measured {
            purpose,
            frames: frames.len(),
            samples: frames.iter().map(|t| frame(t).outputs.clone()).collect(),
            views: frames.iter().map(|t| frame(t).views.clone()).collect(),
        }
    }

    /// Splits the trace, plans the periods and trains the links on the training part.
    pub fn new(problem: &'p Problem, cfg: ReplayConfig) -> Result<Self, EvalError> {
        check_config(&cfg)?;
        let n = problem.frames.len();
        if n < 3 {
            return Err(EvalError::Invalid(format!(
                "the trace holds {n} complete frames; the replay needs at least 3"
            )));
        }
        let t0 = problem.frames[0].time_s;
        let t1 = problem.frames[n - 1].time_s;
        let cut = t0 + cfg.train_fraction * (t1 - t0);
        let mut split = problem.frames.partition_point(|f| f.time_s < cut);
        // At least two training frames and one test frame, whatever the time stamps say.
        split = split.clamp(2, n - 1);
        let train = 0..split;
        let test = split..n;
        let samples: Vec<&[OutputValue]> = problem.frames[train.clone()]
            .iter()
            .map(|f| f.outputs.as_slice())
            .collect();
        let links = super::linker::train(problem, &samples, cfg.seed)?;
        let chosen = super::linker::train_chosen(
            problem,
            &problem.frames[train.clone()],
            cfg.seed,
            cfg.links,
        );
        let mut replay = Self::build(problem, cfg, train, test, links)?;
        replay.chosen = chosen;
        replay.measure_link_costs();
        Ok(replay)
    }

    /// A replay with given links (a bundle trained elsewhere, over the trace's models in its
    /// order) and no training part: every frame of the trace is a test frame. Reducto, which
    /// tunes on a training part, cannot run on it.
    pub fn with_links(
        problem: &'p Problem,
        cfg: ReplayConfig,
        links: LinkBundle,
    ) -> Result<Self, EvalError> {
        check_config(&cfg)?;
        let n = problem.frames.len();
        if n == 0 {
            return Err(EvalError::Invalid(
                "the trace holds no complete frame".into(),
            ));
        }
        for (m, info) in problem.models.iter().enumerate() {
            if links.model_index(&info.id) != Some(m) {
                return Err(EvalError::Invalid(format!(
                    "the links do not hold model `{}` at position {m}, as the trace does; \
                     train them from this trace's models",
                    info.id
                )));
            }
        }
        let mut replay = Self::build(problem, cfg, 0..0, 0..n, links)?;
        replay.measure_link_costs();
        Ok(replay)
    }

    fn build(
        problem: &'p Problem,
        mut cfg: ReplayConfig,
        train: Range<usize>,
        test: Range<usize>,
        links: LinkBundle,
    ) -> Result<Self, EvalError> {
        let periods = plan_periods(problem, test.clone(), &cfg)?;
        let k = problem.n_models();
        let identity: Vec<usize> = (0..k).collect();
        if cfg.link_memory_from_links
            && let Some(mb) = (BundleLinks {
                bundle: &links,
                to_bundle: &identity,
            })
            .mean_link_memory_mb()
        {
            cfg.link_cost.memory_mb = mb;
        }
        Ok(Replay {
            problem,
            k,
            cfg,
            train,
            test,
            periods,
            links,
            identity,
            chosen: None,
            link_costs: Vec::new(),
            cache: RefCell::new(BTreeMap::new()),
        })
    }

    /// The paper's bundle in the controller's terms.
    fn predictor(&self) -> BundleLinks<'_> {
        BundleLinks {
            bundle: &self.links,
            to_bundle: &self.identity,
        }
    }

    /// The links that serve, in the controller's terms (what it scores sets with).
    pub fn serving_links(&self) -> ServingLinks<'_> {
        self.serving_links_with(self.chosen.as_ref())
    }

    /// [`Replay::serving_links`] with the given view links in place of the trained ones.
    fn serving_links_with<'a>(&'a self, chosen: Option<&'a ViewLinks>) -> ServingLinks<'a> {
        ServingLinks {
            chosen: chosen.map(|c| c as &dyn Linker),
            bundle: self.predictor(),
        }
    }

    /// A run's adaptation state under `--adapt` with chosen links: the reservoir starts with
    /// the training frames the links learned from, as the engine's trainer starts with the
    /// warm-up samples.
    fn adaptation(&self) -> Option<Adaptation> {
        if !self.cfg.adapt {
            return None;
        }
        self.chosen.as_ref()?;
        let mut reservoir = Reservoir::online(self.cfg.seed);
        for t in self.train.clone() {
            let f = &self.problem.frames[t];
            reservoir.push(f.outputs.clone(), f.views.clone());
        }
        Some(Adaptation {
            reservoir,
            params: TrainParams {
                seed: self.cfg.seed,
                ..TrainParams::default()
            },
            versions: Vec::new(),
        })
    }

    /// The view links of `version` (0: as trained on the training part).
    fn chosen_at<'a>(
        &'a self,
        adaptation: Option<&'a Adaptation>,
        version: usize,
    ) -> Option<&'a ViewLinks> {
        match adaptation {
            Some(a) if version > 0 => a.versions.get(version - 1).or(self.chosen.as_ref()),
            _ => self.chosen.as_ref(),
        }
    }

    /// Carries out a `Train` command under `--adapt`: the serving view links learn again from
    /// the samples held and the new ones; returns the new links' costs when they changed.
    fn adapt(
        &self,
        a: &mut Adaptation,
        rows: Vec<Vec<OutputValue>>,
        views: Vec<Vec<Vec<f32>>>,
    ) -> Option<(Vec<Vec<Cost>>, Cost)> {
        let labelled = a.reservoir.with_batch(&rows, &views);
        let retrained = self.chosen_at(Some(a), a.version()).and_then(|c| {
            c.retrained(
                reservoir::view_inputs(&labelled),
                &a.params,
                c.trained_frames().unwrap_or(0),
            )
        });
        a.reservoir.keep_batch(rows, views);
        let links = retrained?;
        let costs = self.link_costs_of(Some(&links));
        a.versions.push(links);
        costs
    }

    /// Per model, the score on frame `t` with the view links of `version` (see
    /// [`Replay::frame_scores`]; version 0 is cached).
    fn frame_scores_at(
        &self,
        adaptation: Option<&Adaptation>,
        version: usize,
        mask: u64,
        t: usize,
    ) -> Vec<f64> {
        if version == 0 {
            self.frame_scores(mask, t)
        } else {
            self.frame_scores_with(self.chosen_at(adaptation, version), mask, t)
        }
    }

    /// Charges each serving link its own parameter memory (4 bytes a number) and its own
    /// prediction time, estimated from the numbers it reads per prediction
    /// ([`LINK_MS_PER_PARAMETER`]) rather than timed, so that the same trace and seed give the
    /// same report; unless a link cost was given.
    fn measure_link_costs(&mut self) {
        if let Some((per_link, mean)) = self.link_costs_of(self.chosen.as_ref()) {
            self.cfg.link_cost = mean;
            self.link_costs = per_link;
        }
    }

    /// Per link its cost with the given view links serving (the paper's bundle where None),
    /// and the mean over the links (the report's single link cost); None when a link cost
    /// was given.
    fn link_costs_of(&self, chosen: Option<&ViewLinks>) -> Option<(Vec<Vec<Cost>>, Cost)> {
        if !self.cfg.link_memory_from_links {
            return None;
        }
        let k = self.k;
        let mut costs = vec![vec![Cost::ZERO; k]; k];
        for (i, row) in costs.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                if i == j {
                    continue;
                }
                let params = match chosen {
                    Some(c) => Linker::link_parameters(c, i, j),
                    None => self.links.serving_link_parameters(i, j),
                };
                *cell = match params {
                    Some(n) => Cost::new(n as f64 * 4.0 / 1e6, n as f64 * LINK_MS_PER_PARAMETER),
                    None => self.cfg.link_cost,
                };
            }
        }
        let n = (k * k.saturating_sub(1)).max(1) as f64;
        let (mb, ms) = costs.iter().flatten().fold((0.0, 0.0), |(a, b), c| {
            (a + c.memory_mb, b + c.ms_per_frame)
        });
        let mean = if k > 1 {
            Cost::new(mb / n, ms / n)
        } else {
            self.cfg.link_cost
        };
        Some((costs, mean))
    }

    /// What each chosen link learned with (see [`Linker::describe`]); empty with the paper's.
    pub fn link_learners(&self) -> Vec<String> {
        let ids: Vec<String> = self.problem.models.iter().map(|m| m.id.clone()).collect();
        self.chosen
            .as_ref()
            .map_or_else(Vec::new, |c| c.describe(&ids))
    }

    pub fn problem(&self) -> &Problem {
        self.problem
    }

    /// The configuration, with the link cost the replay charges.
    pub fn config(&self) -> &ReplayConfig {
        &self.cfg
    }

    /// Frames of the training part.
    pub fn train_range(&self) -> Range<usize> {
        self.train.clone()
    }

    /// Frames of the test part.
    pub fn test_range(&self) -> Range<usize> {
        self.test.clone()
    }

    pub fn n_periods(&self) -> usize {
        self.periods.len()
    }

    /// The profiling frames of the test part.
    pub fn profiling_frames(&self) -> usize {
        self.periods.iter().map(|p| p.profile.len()).sum()
    }

    /// The scheduler's view of the costs.
    pub fn costs(&self) -> Costs {
        Costs {
            models: self.problem.costs(),
            link: self.cfg.link_cost,
            per_link: self.link_costs.clone(),
        }
    }

    /// Per model, the score on frame `t` when the models of `mask` run and the others are
    /// predicted from them (0 for a model predicted from nothing).
    pub(crate) fn frame_scores(&self, mask: u64, t: usize) -> Vec<f64> {
        if let Some(s) = self.cache.borrow().get(&(mask, t)) {
            return s.clone();
        }
        let scores = self.frame_scores_with(self.chosen.as_ref(), mask, t);
        self.cache.borrow_mut().insert((mask, t), scores.clone());
        scores
    }

    /// [`Replay::frame_scores`] with the given view links (the paper's bundle where None),
    /// not cached.
    fn frame_scores_with(&self, chosen: Option<&ViewLinks>, mask: u64, t: usize) -> Vec<f64> {
        let frame = &self.problem.frames[t];
        let sources: Vec<(usize, &OutputValue)> = (0..self.k)
            .filter(|i| mask >> i & 1 == 1)
            .map(|i| (i, &frame.outputs[i]))
            .collect();
        let source_ids: Vec<usize> = sources.iter().map(|(i, _)| *i).collect();
        (0..self.k)
            .map(|j| {
                if mask >> j & 1 == 1 {
                    1.0
                } else if sources.is_empty() {
                    0.0
                } else {
                    let p = match chosen {
                        Some(c) => c.predict_frame(j, &source_ids, frame),
                        None => self.predictor().predict_viewed(j, &sources, &frame.views),
                    };
                    match p {
                        Some(p) => {
                            super::score(&self.problem.models[j].spec, &p, &frame.outputs[j])
                        }
                        None => 0.0,
                    }
                }
            })
            .collect()
    }

    /// The score of the single link `source -> target` on frame `t`, with the given view links
    /// (the paper's bundle where None).
    fn link_score_with(
        &self,
        chosen: Option<&ViewLinks>,
        source: usize,
        target: usize,
        t: usize,
    ) -> f64 {
        let frame = &self.problem.frames[t];
        let p = match chosen {
            Some(c) => c.predict_frame(target, &[source], frame),
            None => self.predictor().predict_viewed(
                target,
                &[(source, &frame.outputs[source])],
                &frame.views,
            ),
        };
        match p {
            Some(p) => super::score(
                &self.problem.models[target].spec,
                &p,
                &frame.outputs[target],
            ),
            None => 0.0,
        }
    }

    /// Link scores `p(g_ij)` measured on `frames`.
    pub fn link_matrix(&self, frames: &[usize]) -> Vec<Vec<f64>> {
        self.link_matrix_with(self.chosen.as_ref(), frames)
    }

    /// [`Replay::link_matrix`] with the given view links (the paper's bundle where None).
    fn link_matrix_with(&self, chosen: Option<&ViewLinks>, frames: &[usize]) -> Vec<Vec<f64>> {
        (0..self.k)
            .map(|i| {
                (0..self.k)
                    .map(|j| {
                        if i == j {
                            1.0
                        } else {
                            mean(
                                frames
                                    .iter()
                                    .map(|&t| self.link_score_with(chosen, i, j, t)),
                            )
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Score of the ensemble of every other model for each target, on `frames`.
    pub fn full_ensembles(&self, frames: &[usize]) -> Vec<f64> {
        let all = (1u64 << self.k) - 1;
        (0..self.k)
            .map(|j| {
                mean(
                    frames
                        .iter()
                        .map(|&t| self.frame_scores(all & !(1 << j), t)[j]),
                )
            })
            .collect()
    }

    /// The controller's settings for this replay: the engine's defaults where the replay has
    /// no knob of its own (no drift margin; fine-tuning every period only with `adapt`).
    pub fn settings(&self, policy: SelectionPolicy) -> Settings {
        Settings {
            policy,
            period: period_length(self.problem, self.test.clone(), &self.cfg),
            profiling_ratio: self.cfg.profile_fraction,
            min_profile_frames: self.cfg.min_profile_frames as u64,
            max_kept_frames: control::controller::DEFAULT_MAX_KEPT_FRAMES,
            profile_window: self.cfg.profile_window,
            fps_hint: fps_of(self.problem, self.test.clone()),
            drift_margin: None,
            // No warm-up: the links are given. Under the hybrid, the curves' frames when no
            // training part seeds them.
            warmup_samples: self.cfg.curve_frames,
            labelling: if self.cfg.adapt && self.chosen.is_some() {
                Labelling::Periodic
            } else {
                Labelling::None
            },
            federated: false,
            hybrid: HybridSettings {
                latency_s: self.cfg.latency_s,
                max_age_s: self.cfg.max_age_s,
                load_ms: Vec::new(),
                load_ms_per_mb: self.cfg.load_ms_per_mb,
                ms_per_frame: None,
                links: true,
                trigger_target: self.cfg.reducto_target,
            },
        }
    }

    /// [`Replay::run_hybrid`] spending at most `target_ms` per frame, profiling included:
    /// the plan's allowance starts at `target_ms` and is lowered by what the replay spent
    /// above it, a few times.
    pub fn run_hybrid_at(
        &self,
        budget: &Budget,
        mut hybrid: HybridSettings,
        profile: bool,
        target_ms: f64,
    ) -> Result<Outcome, EvalError> {
        let mut cap = target_ms;
        hybrid.ms_per_frame = Some(cap);
        let mut out = self.run_hybrid(budget, hybrid.clone(), profile)?;
        for _ in 0..HYBRID_MATCH_TRIES {
            let excess = out.ms_per_frame - target_ms;
            if excess <= 1e-6 || cap <= 0.0 {
                break;
            }
            cap = (cap - excess).max(0.0);
            hybrid.ms_per_frame = Some(cap);
            out = self.run_hybrid(budget, hybrid.clone(), profile)?;
        }
        Ok(out)
    }

    /// Indices of Reducto's features in the trace's feature list, in [`reducto::FEATURE_NAMES`]
    /// order (the trigger's features).
    fn trigger_features(&self) -> Vec<usize> {
        reducto::FEATURE_NAMES
            .iter()
            .filter_map(|n| self.problem.feature_names.iter().position(|f| f == n))
            .collect()
    }

    fn trigger_diffs(&self, t: usize, features: &[usize]) -> Vec<f32> {
        let f = &self.problem.frames[t].features;
        features.iter().map(|&i| f[i]).collect()
    }

    /// The hybrid policy through the controller over the test frames: its operating curves
    /// come from the training part, every frame is handed over with its camera's
    /// frame-difference features, and each command is carried out on the recorded outputs.
    /// With `hybrid.links` false and no profiling it is Reducto bound by the memory budget
    /// (every model triggered, its last output reused in between, loads charged).
    ///
    /// A model run in turns on a selected frame gives that frame its exact output (late,
    /// within the latency allowance); frames served before the turn ran reuse the output of
    /// an earlier turn.
    pub fn run_hybrid(
        &self,
        budget: &Budget,
        hybrid: HybridSettings,
        profile: bool,
    ) -> Result<Outcome, EvalError> {
        let mut costs = self.costs();
        let k = self.k;
        let specs: Vec<_> = self.problem.models.iter().map(|m| m.spec.clone()).collect();
        let parents: Vec<Option<usize>> = self.problem.models.iter().map(|m| m.parent).collect();
        let err = |e: control::ControlError| EvalError::Schedule(e.to_string());
        let mut settings = self.settings(SelectionPolicy::Hybrid);
        if !profile {
            settings.profiling_ratio = 0.0;
            settings.min_profile_frames = 0;
        }
        let load_ms = hybrid.load_ms_for(&costs);
        settings.hybrid = hybrid;
        let links_on = settings.hybrid.links;
        let mut ctl = Controller::new(settings, specs, costs.clone(), *budget, parents, false)
            .map_err(err)?;
        let features = self.trigger_features();
        ctl.seed_trigger_samples(
            self.train
                .clone()
                .map(|t| TriggerSample {
                    camera: self.problem.frames[t].camera,
                    time_s: self.problem.frames[t].time_s,
                    diffs: self.trigger_diffs(t, &features),
                    row: self.problem.frames[t].outputs.clone(),
                })
                .collect(),
        );
        let mut adaptation = if links_on { self.adaptation() } else { None };
        let mut tally = Tally::new(k);
        let mut decisions = Vec::new();
        let mut active_sets: Vec<Vec<String>> = Vec::new();
        // Per test frame: what ran on it when served, the plan then and the links' version.
        let mut served: BTreeMap<usize, (ModelSet, bool, Option<Plan>, usize)> = BTreeMap::new();
        let mut exact_frames: Vec<bool> = vec![false; self.problem.frames.len()];
        // Per model: (frame, index of the frame after which its output is known).
        let mut late: Vec<Vec<(usize, usize)>> = vec![Vec::new(); k];
        let mut pending: VecDeque<Event> = VecDeque::from([Event::LinksReady {
            cause: control::Cause::Startup,
        }]);
        let mut frames = self.test.clone();
        let mut current = self.test.start;
        let mut finished = false;
        loop {
            let mut commands = Vec::new();
            let version = adaptation.as_ref().map_or(0, Adaptation::version);
            let links = self.serving_links_with(self.chosen_at(adaptation.as_ref(), version));
            match pending.pop_front() {
                Some(e) => commands.extend(ctl.handle(e, Some(&links)).map_err(err)?),
                None => match frames.next() {
                    Some(t) => {
                        current = t;
                        let f = &self.problem.frames[t];
                        let features = Event::Features {
                            id: t as u64,
                            camera: f.camera,
                            diffs: self.trigger_diffs(t, &features),
                        };
                        commands.extend(ctl.handle(features, Some(&links)).map_err(err)?);
                        let frame = Event::Frame {
                            id: t as u64,
                            time_s: f.time_s,
                        };
                        commands.extend(ctl.handle(frame, Some(&links)).map_err(err)?);
                    }
                    None if !finished => {
                        finished = true;
                        current = self.test.end;
                        commands.extend(ctl.finish());
                    }
                    None => break,
                },
            }
            for cmd in commands {
                match cmd {
                    Command::Serve {
                        frame,
                        active,
                        predict,
                    } => {
                        let charged = if predict {
                            costs.clone()
                        } else {
                            Costs::models_only(costs.models.clone())
                        };
                        tally.charge(&charged, &active);
                        served.insert(
                            frame as usize,
                            (active, predict, ctl.plan().cloned(), version),
                        );
                    }
                    Command::Profile { frame, purpose } => {
                        let t = frame as usize;
                        tally.charge(&costs, &ModelSet::full(k));
                        exact_frames[t] = true;
                        pending.push_back(self.measured(purpose, &[frame]));
                    }
                    Command::RunInTurns {
                        frames: kept,
                        groups,
                        purpose: Purpose::Trigger,
                    } => {
                        let loaded = ctl.plan().map_or_else(
                            || ModelSet::empty(k),
                            |p| ModelSet::from_indices(k, p.exact.iter().chain(p.resident.iter())),
                        );
                        for m in groups.into_iter().flatten() {
                            tally.ms += kept.len() as f64 * costs.models[m].ms_per_frame
                                + control::hybrid::turn_load_ms(
                                    m, &loaded, &costs, budget, &load_ms,
                                );
                            tally.executions += kept.len();
                            late[m].extend(kept.iter().map(|&t| (t as usize, current)));
                        }
                    }
                    Command::RunInTurns {
                        frames: kept,
                        purpose,
                        ..
                    } => {
                        let ran = ctl.active().clone();
                        for _ in &kept {
                            tally.charge_rest(&costs, &ran);
                        }
                        pending.push_back(self.measured(purpose, &kept));
                    }
                    Command::Select(sel) => {
                        let ids = self.ids(mask_of(&sel.to));
                        decisions.push(sel.decision(&self.model_ids()));
                        if active_sets.last() != Some(&ids) {
                            active_sets.push(ids);
                        }
                    }
                    Command::Train { samples, views, .. } => {
                        if let Some(a) = adaptation.as_mut()
                            && let Some(changed) = self.adapt(a, samples, views)
                        {
                            adopt_link_costs(&mut ctl, &mut costs, changed);
                            pending.push_back(Event::LinksUpdated);
                        }
                    }
                    Command::Keep { .. }
                    | Command::Release { .. }
                    | Command::StartTraining { .. } => {}
                }
            }
        }
        // Scores, now that every turn is known.
        let mut known: Vec<Vec<(usize, usize)>> = late.clone();
        for (&t, (active, ..)) in &served {
            for m in active.iter() {
                known[m].push((t, t));
            }
        }
        for (t, exact) in exact_frames.iter().enumerate() {
            if *exact {
                for row in known.iter_mut() {
                    row.push((t, t));
                }
            }
        }
        for t in self.test.clone() {
            if exact_frames[t] {
                tally.add_scores(&vec![1.0; k]);
                continue;
            }
            let Some((active, predict, plan, version)) = served.get(&t) else {
                tally.add_scores(&vec![0.0; k]);
                continue;
            };
            let camera = self.problem.frames[t].camera;
            let linked = if *predict && links_on {
                self.frame_scores_at(adaptation.as_ref(), *version, mask_of(active), t)
            } else {
                vec![0.0; k]
            };
            let scores: Vec<f64> = (0..k)
                .map(|j| {
                    if active.contains(j) || late[j].iter().any(|&(f, _)| f == t) {
                        return 1.0;
                    }
                    let mode = plan.as_ref().map(|p| p.modes[j]);
                    match mode {
                        Some(Mode::Triggered {
                            between: Between::Reuse,
                            ..
                        }) => {
                            let last = known[j]
                                .iter()
                                .filter(|&&(f, at)| {
                                    f < t && at < t && self.problem.frames[f].camera == camera
                                })
                                .map(|&(f, _)| f)
                                .max();
                            match last {
                                Some(f) => super::score(
                                    &self.problem.models[j].spec,
                                    &self.problem.frames[f].outputs[j],
                                    &self.problem.frames[t].outputs[j],
                                ),
                                None => linked[j],
                            }
                        }
                        _ => linked[j],
                    }
                })
                .collect();
            tally.add_scores(&scores);
        }
        let mut out = tally.outcome(self.test.len(), active_sets);
        let ids = self.model_ids();
        let names: Vec<String> = features
            .iter()
            .map(|&i| self.problem.feature_names[i].clone())
            .collect();
        out.detail = ctl
            .plan()
            .map(|p| p.summary(&ids, &names))
            .unwrap_or_default();
        out.decisions = decisions;
        out.link_retrainings = adaptation.as_ref().map_or(0, Adaptation::version);
        if let Some(last) = adaptation.as_ref().and_then(|a| a.versions.last()) {
            let test: Vec<usize> = self.test.clone().collect();
            out.adapted_links = self.link_matrix_with(Some(last), &test);
        }
        Ok(out)
    }

    /// Runs a selection policy through the controller over the test frames, as the engine
    /// would with these links loaded at start-up: every frame is handed over with its trace
    /// time, and each command is carried out on the recorded outputs.
    pub fn run_policy(
        &self,
        policy: SelectionPolicy,
        budget: &Budget,
    ) -> Result<Outcome, EvalError> {
        let mut costs = self.costs();
        let k = self.k;
        let specs: Vec<_> = self.problem.models.iter().map(|m| m.spec.clone()).collect();
        let parents: Vec<Option<usize>> = self.problem.models.iter().map(|m| m.parent).collect();
        let err = |e: control::ControlError| EvalError::Schedule(e.to_string());
        let mut ctl = Controller::new(
            self.settings(policy),
            specs,
            costs.clone(),
            *budget,
            parents,
            false,
        )
        .map_err(err)?;
        let mut adaptation = self.adaptation();
        let mut tally = Tally::new(k);
        let mut decisions = Vec::new();
        let mut active_sets: Vec<Vec<String>> = Vec::new();
        let mut pending: VecDeque<Event> = VecDeque::from([Event::LinksReady {
            cause: control::Cause::Startup,
        }]);
        let mut frames = self.test.clone();
        loop {
            let event = match pending.pop_front() {
                Some(e) => e,
                None => match frames.next() {
                    Some(t) => Event::Frame {
                        id: t as u64,
                        time_s: self.problem.frames[t].time_s,
                    },
                    None => break,
                },
            };
            let commands = {
                let version = adaptation.as_ref().map_or(0, Adaptation::version);
                let links = self.serving_links_with(self.chosen_at(adaptation.as_ref(), version));
                ctl.handle(event, Some(&links)).map_err(err)?
            };
            for cmd in commands {
                match cmd {
                    Command::Serve {
                        frame,
                        active,
                        predict,
                    } => {
                        let t = frame as usize;
                        let mask = mask_of(&active);
                        if predict {
                            let version = adaptation.as_ref().map_or(0, Adaptation::version);
                            let scores =
                                self.frame_scores_at(adaptation.as_ref(), version, mask, t);
                            tally.add(&scores, &costs, &active);
                        } else {
                            let alone: Vec<f64> = (0..k)
                                .map(|j| f64::from(u8::from(active.contains(j))))
                                .collect();
                            tally.add(&alone, &Costs::models_only(costs.models.clone()), &active);
                        }
                    }
                    Command::Profile { frame, purpose } => {
                        tally.add(&vec![1.0; k], &costs, &ModelSet::full(k));
                        pending.push_back(self.measured(purpose, &[frame]));
                    }
                    Command::RunInTurns {
                        frames, purpose, ..
                    } => {
                        // The frames were served already: charge the models that did not
                        // run then.
                        let served = ctl.active().clone();
                        for _ in &frames {
                            tally.charge_rest(&costs, &served);
                        }
                        pending.push_back(self.measured(purpose, &frames));
                    }
                    Command::Select(sel) => {
                        let ids = self.ids(mask_of(&sel.to));
                        decisions.push(sel.decision(&self.model_ids()));
                        if active_sets.last() != Some(&ids) {
                            active_sets.push(ids);
                        }
                    }
                    Command::Train { samples, views, .. } => {
                        if let Some(a) = adaptation.as_mut()
                            && let Some(changed) = self.adapt(a, samples, views)
                        {
                            adopt_link_costs(&mut ctl, &mut costs, changed);
                            pending.push_back(Event::LinksUpdated);
                        }
                    }
                    Command::Keep { .. }
                    | Command::Release { .. }
                    | Command::StartTraining { .. } => {}
                }
            }
        }
        let mut out = tally.outcome(self.test.len(), active_sets);
        out.decisions = decisions;
        out.link_retrainings = adaptation.as_ref().map_or(0, Adaptation::version);
        if let Some(last) = adaptation.as_ref().and_then(|a| a.versions.last()) {
            let test: Vec<usize> = self.test.clone().collect();
            out.adapted_links = self.link_matrix_with(Some(last), &test);
        }
        Ok(out)
    }

    /// Standalone: the cheapest models that fit, nothing predicted, no profiling.
    pub fn run_standalone(&self, budget: &Budget) -> Result<Outcome, EvalError> {
        let costs = Costs::models_only(self.problem.costs());
        let scores = NoLinks(self.k);
        let sel = schedule::select(SelectionPolicy::Standalone, &costs, budget, &scores)
            .map_err(|e| EvalError::Schedule(e.to_string()))?;
        let mask = self.close_over_parents(mask_of(&sel.active), &costs, budget);
        let masks = vec![mask; self.periods.len()];
        let mut out = self.serve_with(&masks, None, &costs, String::new(), true);
        out.active.dedup();
        Ok(out)
    }

    /// Optimal: every set that fits the budget, served over the whole test part with the same
    /// profiling frames as the selection methods; the best accuracy wins (then the lower time,
    /// then the smaller mask, so the choice is deterministic).
    pub fn run_optimal(&self, budget: &Budget) -> Result<Outcome, EvalError> {
        let costs = self.costs();
        let mut best: Option<Outcome> = None;
        for mask in 0..(1u64 << self.k) {
            if !budget.fits(costs.set_cost(&set_of(self.k, mask)))
                || self.close_over_parents(mask, &costs, budget) != mask
            {
                continue;
            }
            let masks = vec![mask; self.periods.len()];
            let o = self.serve(&masks, budget, String::new());
            let better = match &best {
                None => true,
                Some(b) => {
                    o.accuracy > b.accuracy + 1e-12
                        || ((o.accuracy - b.accuracy).abs() <= 1e-12
                            && o.ms_per_frame < b.ms_per_frame - 1e-12)
                }
            };
            if better {
                best = Some(o);
            }
        }
        let mut best = best.ok_or_else(|| {
            EvalError::Invalid("no model set fits the budget, not even the empty one".into())
        })?;
        best.active.dedup();
        Ok(best)
    }

    /// The controller's rule ([`control::close_over_parents`]) on masks.
    fn close_over_parents(&self, mask: u64, costs: &Costs, budget: &Budget) -> u64 {
        let parents: Vec<Option<usize>> = self.problem.models.iter().map(|m| m.parent).collect();
        mask_of(&control::close_over_parents(
            set_of(self.k, mask),
            &parents,
            costs,
            budget,
        ))
    }

    fn serve(&self, masks: &[u64], budget: &Budget, detail: String) -> Outcome {
        self.serve_with(masks, Some(budget), &self.costs(), detail, false)
    }

    /// Serves the test part with one active set per period. With `profiled_under` (the
    /// budget) every model runs on the profiling frames, as in the controller: they are
    /// exact when every model fits the memory budget at once, else served with the set.
    fn serve_with(
        &self,
        masks: &[u64],
        profiled_under: Option<&Budget>,
        costs: &Costs,
        detail: String,
        standalone: bool,
    ) -> Outcome {
        let profiled = profiled_under.is_some();
        let exact_profiling = profiled_under.is_some_and(|b| {
            Budget {
                memory_mb: b.memory_mb,
                ms_per_frame: None,
            }
            .fits(costs.models_cost(&ModelSet::full(self.k)))
        });
        let k = self.k;
        let mut per_model = vec![0.0; k];
        let mut ms = 0.0;
        let mut executions = 0usize;
        let all_ms: f64 = costs.models.iter().map(|c| c.ms_per_frame).sum();
        for (p, plan) in self.periods.iter().enumerate() {
            let mask = masks[p];
            let set = set_of(k, mask);
            let set_ms = costs.set_cost(&set).ms_per_frame;
            for t in plan.frames.clone() {
                if profiled && plan.profile.contains(&t) {
                    if exact_profiling {
                        per_model.iter_mut().for_each(|s| *s += 1.0);
                    } else {
                        let scores = self.frame_scores(mask, t);
                        per_model.iter_mut().zip(&scores).for_each(|(a, s)| *a += s);
                    }
                    ms += all_ms;
                    executions += k;
                    continue;
                }
                let scores = if standalone {
                    (0..k)
                        .map(|j| f64::from(u8::from(mask >> j & 1 == 1)))
                        .collect()
                } else {
                    self.frame_scores(mask, t)
                };
                per_model.iter_mut().zip(&scores).for_each(|(a, s)| *a += s);
                ms += set_ms;
                executions += set.len();
            }
        }
        let n = self.test.len() as f64;
        let model_accuracy: Vec<f64> = per_model.iter().map(|s| s / n).collect();
        Outcome {
            accuracy: mean(model_accuracy.iter().copied()),
            model_accuracy,
            ms_per_frame: ms / n,
            executions_saved: 1.0 - executions as f64 / (n * k as f64),
            active: masks.iter().map(|&m| self.ids(m)).collect(),
            detail,
            decisions: Vec::new(),
            link_retrainings: 0,
            adapted_links: Vec::new(),
        }
    }

    fn model_ids(&self) -> Vec<String> {
        self.problem.models.iter().map(|m| m.id.clone()).collect()
    }

    fn ids(&self, mask: u64) -> Vec<String> {
        (0..self.k)
            .filter(|i| mask >> i & 1 == 1)
            .map(|i| self.problem.models[i].id.clone())
            .collect()
    }

    /// Per camera stream, the feature difference of each frame in `range`.
    fn diff_steps(&self, range: Range<usize>, feature: usize) -> Vec<DiffStep> {
        self.problem.frames[range]
            .iter()
            .map(|f| DiffStep {
                stream: f.camera,
                time_s: f.time_s,
                diff: f.features[feature],
            })
            .collect()
    }

    /// Reducto's tuning on the training part: per model, the operating curve of every feature
    /// and the feature that sends the fewest frames at the target accuracy.
    pub fn reducto_tuning(&self) -> Result<ReductoTuning, EvalError> {
        let features: Vec<usize> = reducto::FEATURE_NAMES
            .iter()
            .filter_map(|n| self.problem.feature_names.iter().position(|f| f == n))
            .collect();
        if features.is_empty() {
            return Err(EvalError::Invalid(format!(
                "the trace has none of Reducto's frame features ({}); record it with frame features",
                reducto::FEATURE_NAMES.join(", ")
            )));
        }
        let mut models = Vec::with_capacity(self.k);
        for m in 0..self.k {
            let spec = &self.problem.models[m].spec;
            let mut best: Option<ModelTuning> = None;
            for &f in &features {
                let steps = self.diff_steps(self.train.clone(), f);
                let diffs: Vec<f32> = steps.iter().map(|s| s.diff).collect();
                let cands = reducto::candidate_thresholds(&diffs);
                let base = self.train.start;
                let frames = &self.problem.frames;
                let mut reuse = |a: usize, b: usize| {
                    super::score(
                        spec,
                        &frames[base + a].outputs[m],
                        &frames[base + b].outputs[m],
                    )
                };
                let curve = reducto::curve(&steps, &cands, f64::INFINITY, &mut reuse);
                let at_target = reducto::pick_for_target(&curve, self.cfg.reducto_target);
                let better = best
                    .as_ref()
                    .is_none_or(|b| at_target.sent < b.at_target.sent - 1e-12);
                if better {
                    best = Some(ModelTuning {
                        feature: f,
                        curve,
                        at_target,
                    });
                }
            }
            // `features` is not empty, so every model has a tuning.
            if let Some(b) = best {
                models.push(b);
            }
        }
        Ok(ReductoTuning { models })
    }

    /// Serves the test part with Reducto at the given per-model thresholds.
    pub fn run_reducto(
        &self,
        tuning: &ReductoTuning,
        points: &[Operating],
        detail: String,
    ) -> Outcome {
        let k = self.k;
        let frames = &self.problem.frames;
        let base = self.test.start;
        let n = self.test.len() as f64;
        let mut model_accuracy = Vec::with_capacity(k);
        let mut ms = 0.0;
        let mut executions = 0.0;
        for (m, point) in points.iter().enumerate().take(k) {
            let steps = self.diff_steps(self.test.clone(), tuning.models[m].feature);
            let spec = &self.problem.models[m].spec;
            let mut reuse = |a: usize, b: usize| {
                super::score(
                    spec,
                    &frames[base + a].outputs[m],
                    &frames[base + b].outputs[m],
                )
            };
            let o = reducto::evaluate(&steps, point.threshold, f64::INFINITY, &mut reuse);
            model_accuracy.push(o.accuracy);
            ms += o.sent * self.problem.models[m].cost.ms_per_frame;
            executions += o.sent * n;
        }
        Outcome {
            accuracy: mean(model_accuracy.iter().copied()),
            model_accuracy,
            ms_per_frame: ms,
            executions_saved: 1.0 - executions / (n * k as f64),
            active: vec![self.ids((1u64 << k) - 1)],
            detail,
            decisions: Vec::new(),
            link_retrainings: 0,
            adapted_links: Vec::new(),
        }
    }

    /// Reducto at its own operating point: every model at the target accuracy on training.
    pub fn run_reducto_at_target(&self, tuning: &ReductoTuning) -> Outcome {
        let points: Vec<Operating> = tuning.models.iter().map(|m| m.at_target).collect();
        let detail = self.reducto_detail(tuning, &points);
        self.run_reducto(tuning, &points, detail)
    }

    /// Reducto at the compute of another method: the exchange rate between accuracy and
    /// model-milliseconds is swept over a fixed grid, each rate allocates thresholds on the
    /// training curves, and the allocation spending the most test-part time not above
    /// `target_ms` is kept. Only compute is matched on the test part; accuracy never chooses.
    pub fn run_reducto_matched(&self, tuning: &ReductoTuning, target_ms: f64) -> Outcome {
        let curves: Vec<Vec<Operating>> = tuning.models.iter().map(|m| m.curve.clone()).collect();
        let lat: Vec<f64> = self
            .problem
            .models
            .iter()
            .map(|m| m.cost.ms_per_frame)
            .collect();
        let mut best: Option<(f64, Vec<Operating>)> = None;
        let mut cheapest: Option<(f64, Vec<Operating>)> = None;
        for step in 0..=240 {
            let lambda = if step == 0 {
                0.0
            } else {
                1e-7 * 10f64.powf(f64::from(step - 1) / 24.0)
            };
            let points = reducto::allocate(&curves, &lat, lambda);
            let ms = self.reducto_ms(tuning, &points);
            if ms <= target_ms + 1e-9 && best.as_ref().is_none_or(|b| ms > b.0 + 1e-12) {
                best = Some((ms, points.clone()));
            }
            if cheapest.as_ref().is_none_or(|c| ms < c.0 - 1e-12) {
                cheapest = Some((ms, points));
            }
        }
        let (points, note) = match (best, cheapest) {
            (Some((_, p)), _) => (p, ""),
            (None, Some((_, p))) => (p, "; cannot spend as little as the matched time"),
            (None, None) => (tuning.models.iter().map(|m| m.at_target).collect(), ""),
        };
        let detail = format!("{}{note}", self.reducto_detail(tuning, &points));
        self.run_reducto(tuning, &points, detail)
    }

    fn reducto_ms(&self, tuning: &ReductoTuning, points: &[Operating]) -> f64 {
        (0..self.k)
            .map(|m| {
                let steps = self.diff_steps(self.test.clone(), tuning.models[m].feature);
                let sent = reducto::filter(&steps, points[m].threshold, f64::INFINITY);
                let share = sent.iter().filter(|&&s| s).count() as f64 / sent.len().max(1) as f64;
                share * self.problem.models[m].cost.ms_per_frame
            })
            .sum()
    }

    fn reducto_detail(&self, tuning: &ReductoTuning, points: &[Operating]) -> String {
        tuning
            .models
            .iter()
            .zip(points)
            .zip(&self.problem.models)
            .map(|((t, p), m)| {
                format!(
                    "{}: {} >= {:.4}",
                    m.id, self.problem.feature_names[t.feature], p.threshold
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Reducto's per-model tuning on the training part.
#[derive(Clone, Debug, PartialEq)]
pub struct ReductoTuning {
    pub models: Vec<ModelTuning>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelTuning {
    /// Index into the trace's feature names.
    pub feature: usize,
    pub curve: Vec<Operating>,
    pub at_target: Operating,
}

/// Scores for the standalone policy, which does not use links.
struct NoLinks(usize);

impl LinkScores for NoLinks {
    fn n_models(&self) -> usize {
        self.0
    }
    fn link(&self, _: usize, _: usize) -> f64 {
        0.0
    }
    fn ensemble(&self, _: &ModelSet, _: usize) -> f64 {
        0.0
    }
}

fn check_config(cfg: &ReplayConfig) -> Result<(), EvalError> {
    let bad = |what: &str| Err(EvalError::Invalid(what.to_string()));
    if !(cfg.train_fraction > 0.0 && cfg.train_fraction < 1.0) {
        return bad("the training share must be between 0 and 1 (exclusive)");
    }
    if !(cfg.profile_fraction >= 0.0 && cfg.profile_fraction < 1.0) {
        return bad("the profiling share must be at least 0 and below 1");
    }
    if cfg.profile_window == 0 {
        return bad("the profiling window must hold at least one period");
    }
    if !(cfg.reducto_target >= 0.0 && cfg.reducto_target <= 1.0) {
        return bad("Reducto's target accuracy must be between 0 and 1");
    }
    if !cfg.link_cost.is_valid() {
        return bad("the link cost must be finite and not negative");
    }
    if cfg.adapt && cfg.links == LinkLearners::Paper {
        return bad(
            "adaptation trains the chosen view links again; the paper's links (--links paper) \
             are fine-tuned online only by the engine",
        );
    }
    match cfg.period {
        Period::Frames(0) | Period::Count(0) => bad("a period must hold at least one frame"),
        Period::Seconds(s) if !(s > 0.0 && s.is_finite()) => {
            bad("a period must last a positive number of seconds")
        }
        _ => Ok(()),
    }
}

/// The controller's period length for a replay: `Count(c)` becomes periods of
/// `ceil(test frames / c)` frames.
fn period_length(problem: &Problem, test: Range<usize>, cfg: &ReplayConfig) -> PeriodLength {
    let _ = problem;
    match cfg.period {
        Period::Frames(n) => PeriodLength::Frames(n as u64),
        Period::Seconds(s) => PeriodLength::Seconds(s),
        Period::Count(c) => PeriodLength::Frames(test.len().div_ceil(c.max(1)).max(1) as u64),
    }
}

/// Frames per second of the test part (median spacing of its times, to a thousandth), the
/// controller's hint before a period has been counted; 1 when the times do not say.
fn fps_of(problem: &Problem, test: Range<usize>) -> f64 {
    let frames = &problem.frames[test];
    let mut gaps: Vec<f64> = frames
        .windows(2)
        .map(|w| w[1].time_s - w[0].time_s)
        .filter(|g| *g > 0.0)
        .collect();
    if gaps.is_empty() {
        return 1.0;
    }
    gaps.sort_by(f64::total_cmp);
    let fps = 1.0 / gaps[gaps.len() / 2];
    (fps * 1000.0).round() / 1000.0
}

/// Periods and their profiling frames, from the controller's period clock over the test
/// frames' times (the profiling frames are capped as the controller caps them).
fn plan_periods(
    problem: &Problem,
    test: Range<usize>,
    cfg: &ReplayConfig,
) -> Result<Vec<PeriodPlan>, EvalError> {
    let mut clock = PeriodClock::new(
        period_length(problem, test.clone(), cfg),
        cfg.profile_fraction,
        cfg.min_profile_frames as u64,
        fps_of(problem, test.clone()),
    );
    let cap = control::controller::DEFAULT_MAX_KEPT_FRAMES.max(1) as usize;
    let mut plans: Vec<(usize, usize, usize)> = Vec::new();
    for t in test.clone() {
        let tick = clock.on_frame(problem.frames[t].time_s);
        if tick.new_period || plans.is_empty() {
            plans.push((t, t, (tick.profile_frames as usize).min(cap)));
        }
        if let Some(last) = plans.last_mut() {
            last.1 = t + 1;
        }
    }
    Ok(plans
        .into_iter()
        .map(|(start, end, np)| PeriodPlan {
            frames: start..end,
            profile: start..start + np.min(end - start),
        })
        .collect())
}

/// The link costs of view links trained again online, charged from now on by the
/// controller and the run's tally alike (the engine re-charges them the same way).
fn adopt_link_costs(
    ctl: &mut Controller,
    costs: &mut Costs,
    (per_link, mean): (Vec<Vec<Cost>>, Cost),
) {
    ctl.set_link_cost(mean);
    ctl.set_link_costs(per_link.clone());
    costs.link = mean;
    costs.per_link = per_link;
}

/// What a replayed method spent and scored, frame by frame.
struct Tally {
    per_model: Vec<f64>,
    ms: f64,
    executions: usize,
}

impl Tally {
    fn new(k: usize) -> Self {
        Tally {
            per_model: vec![0.0; k],
            ms: 0.0,
            executions: 0,
        }
    }

    /// A frame scored `scores` with the models of `ran` executed (and links for the rest).
    fn add(&mut self, scores: &[f64], costs: &Costs, ran: &ModelSet) {
        self.add_scores(scores);
        self.charge(costs, ran);
    }

    fn add_scores(&mut self, scores: &[f64]) {
        self.per_model
            .iter_mut()
            .zip(scores)
            .for_each(|(a, s)| *a += s);
    }

    /// The models of `ran` executed on a frame (and links for the rest).
    fn charge(&mut self, costs: &Costs, ran: &ModelSet) {
        self.ms += costs.set_cost(ran).ms_per_frame;
        self.executions += ran.len();
    }

    /// The models outside `served` ran on a frame afterwards (labelling in turns).
    fn charge_rest(&mut self, costs: &Costs, served: &ModelSet) {
        for m in served.complement_iter() {
            self.ms += costs.models[m].ms_per_frame;
            self.executions += 1;
        }
    }

    fn outcome(self, frames: usize, active: Vec<Vec<String>>) -> Outcome {
        let n = frames.max(1) as f64;
        let k = self.per_model.len();
        let model_accuracy: Vec<f64> = self.per_model.iter().map(|s| s / n).collect();
        Outcome {
            accuracy: mean(model_accuracy.iter().copied()),
            model_accuracy,
            ms_per_frame: self.ms / n,
            executions_saved: 1.0 - self.executions as f64 / (n * k as f64),
            active,
            detail: String::new(),
            decisions: Vec::new(),
            link_retrainings: 0,
            adapted_links: Vec::new(),
        }
    }
}
