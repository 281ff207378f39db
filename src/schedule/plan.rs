//! The period plan (section 5): every period, profile a share of the period's frames with
//! every model, then re-select. Profiling never breaks the memory budget: when all models
//! cannot be loaded at once, they run in turns (load, run, unload) over the buffered
//! profiling frames.

use super::{Budget, Cost, ModelSet, ScheduleError};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// One step for the engine to execute, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Load the model's session.
    Load { model: usize },
    /// Run the model on the profiling frames `frames` (indices within the period, buffered).
    Run { model: usize, frames: Range<u64> },
    /// Unload the model's session, freeing its memory.
    Unload { model: usize },
}

/// How to profile one period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfilingPlan {
    /// Frames in the period.
    pub period_frames: u64,
    /// The profiled frames: the first `ceil(ratio * period_frames)` of the period (the
    /// paper profiles the initial 1%), buffered until every model has run on them.
    pub frames: Range<u64>,
    /// The models loaded together, group by group; one group when all fit at once.
    pub groups: Vec<Vec<usize>>,
    /// Whether the models run in turns because they cannot all be loaded at once.
    pub in_turns: bool,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Models still loaded after the last step (the engine then moves to the new active set
    /// with [`transition`]).
    pub loaded_after: ModelSet,
    /// Inference time the profiling takes: each model's ms per frame times the frames.
    pub model_ms: f64,
    pub loads: usize,
    pub unloads: usize,
    /// Most memory loaded at any moment, in MB.
    pub peak_memory_mb: f64,
    /// A one-line account of the plan.
    pub summary: String,
}

impl ProfilingPlan {
    /// Plans the profiling of a period of `period_frames` frames with every model, starting
    /// with the models of `loaded` already loaded. The memory budget bounds the models
    /// loaded at any moment (link networks are charged to the selection, not to profiling);
    /// the time budget does not apply, since profiling frames are buffered.
    ///
    /// One group when every model fits at once. Otherwise groups are packed first-fit by
    /// decreasing memory, the first group starting with the models already loaded; a group
    /// is loaded, run, and unloaded before the next one is loaded. Fails when a model alone
    /// exceeds the memory budget (it could never be profiled) or a ratio is out of `(0, 1]`.
    pub fn new(
        period_frames: u64,
        profiling_ratio: f64,
        costs: &[Cost],
        budget: &Budget,
        loaded: &ModelSet,
    ) -> Result<Self, ScheduleError> {
        if !(profiling_ratio > 0.0 && profiling_ratio <= 1.0) {
            return Err(ScheduleError::Plan(format!(
                "the profiling ratio must be in (0, 1], got {profiling_ratio}"
            )));
        }
        let k = costs.len();
        if loaded.capacity() != k {
            return Err(ScheduleError::Shape(format!(
                "the loaded set names {} models, the costs {k}",
                loaded.capacity()
            )));
        }
        let n_frames = ((profiling_ratio * period_frames as f64).ceil() as u64).min(period_frames);
        let frames = 0..n_frames;
        let mem = |m: usize| costs[m].memory_mb;
        let limit = budget.memory_mb.unwrap_or(f64::INFINITY);
        let fits = |used: f64| Budget::memory(limit).fits(Cost::new(used, 0.0));
        if let Some(m) = (0..k).find(|&m| !fits(mem(m))) {
            return Err(ScheduleError::Plan(format!(
                "model {m} needs {} MB, more than the memory budget of {limit} MB: it cannot be \
                 profiled",
                mem(m)
            )));
        }
        let loaded_mem: f64 = loaded.iter().map(mem).sum();
        if !fits(loaded_mem) {
            return Err(ScheduleError::Plan(format!(
                "the models already loaded take {loaded_mem} MB, over the memory budget of \
                 {limit} MB"
            )));
        }
        let total: f64 = (0..k).map(mem).sum();
        let groups: Vec<Vec<usize>> = if fits(total) {
            vec![(0..k).collect()]
        } else {
            let mut order: Vec<usize> = loaded.complement_iter().collect();
            order.sort_by(|&a, &b| mem(b).total_cmp(&mem(a)).then(a.cmp(&b)));
            let mut groups: Vec<(Vec<usize>, f64)> = vec![(loaded.iter().collect(), loaded_mem)];
            for m in order {
                match groups.iter_mut().find(|(_, used)| fits(used + mem(m))) {
                    Some((g, used)) => {
                        g.push(m);
                        *used += mem(m);
                    }
                    None => groups.push((vec![m], mem(m))),
                }
            }
            groups.retain(|(g, _)| !g.is_empty());
            groups.into_iter().map(|(g, _)| g).collect()
        };
        let in_turns = groups.len() > 1;
        let mut steps = Vec::new();
        let mut now = loaded.clone();
        let mut peak = loaded_mem;
        let last = groups.len().saturating_sub(1);
        for (gi, group) in groups.iter().enumerate() {
            // Free what this group does not use before loading anything.
            if in_turns {
                for m in now.clone().iter().filter(|m| !group.contains(m)) {
                    steps.push(Step::Unload { model: m });
                    now.remove(m);
                }
            }
            for &m in group {
                if !now.contains(m) {
                    steps.push(Step::Load { model: m });
                    now.insert(m);
                }
            }
            peak = peak.max(now.iter().map(mem).sum());
            for &m in group {
                steps.push(Step::Run {
                    model: m,
                    frames: frames.clone(),
                });
            }
            if in_turns && gi < last {
                for &m in group {
                    steps.push(Step::Unload { model: m });
                    now.remove(m);
                }
            }
        }
        let loads = steps
            .iter()
            .filter(|s| matches!(s, Step::Load { .. }))
            .count();
        let unloads = steps
            .iter()
            .filter(|s| matches!(s, Step::Unload { .. }))
            .count();
        let model_ms: f64 = costs.iter().map(|c| c.ms_per_frame).sum::<f64>() * n_frames as f64;
        let summary = if in_turns {
            format!(
                "profile {n_frames} of {period_frames} frames with {k} models in {} turns \
                 (they do not fit {limit} MB together): {model_ms:.0} model-ms, {loads} loads, \
                 {unloads} unloads, peak {peak:.0} MB",
                groups.len()
            )
        } else {
            format!(
                "profile {n_frames} of {period_frames} frames with all {k} models loaded at \
                 once: {model_ms:.0} model-ms, {loads} loads, peak {peak:.0} MB"
            )
        };
        Ok(ProfilingPlan {
            period_frames,
            frames,
            groups,
            in_turns,
            steps,
            loaded_after: now,
            model_ms,
            loads,
            unloads,
            peak_memory_mb: peak,
            summary,
        })
    }
}

/// Steps that move the loaded models from `from` to `to`: every unload first, then every
/// load, so memory never holds more than the larger of the two sets.
pub fn transition(from: &ModelSet, to: &ModelSet) -> Vec<Step> {
    let unloads = from
        .iter()
        .filter(|&m| !to.contains(m))
        .map(|model| Step::Unload { model });
    let loads = to
        .iter()
        .filter(|&m| !from.contains(m))
        .map(|model| Step::Load { model });
    unloads.chain(loads).collect()
}

/// Frames in a period of `period_s` seconds at `fps` frames per second (at least one).
pub fn period_frames(period_s: f64, fps: f64) -> u64 {
    ((period_s * fps).round() as u64).max(1)
}
