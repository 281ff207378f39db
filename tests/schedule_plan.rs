//! Profiling plans: the memory budget holds at every step, every model is profiled once.

use mlink::schedule::simulate::{PAPER_ENSEMBLE_GAIN, ScoreDist, SimConfig, run};
use mlink::schedule::{Budget, Cost, ModelSet, ProfilingPlan, Step, period_frames, transition};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Executes the steps, checking that memory stays within `budget_mb` after every step, that
/// runs only touch loaded models, and returns how many times each model ran and the most
/// models loaded at once.
fn execute(
    plan: &ProfilingPlan,
    costs: &[Cost],
    loaded: &ModelSet,
    budget_mb: f64,
) -> (Vec<usize>, usize) {
    let mut now = loaded.clone();
    let mut runs = vec![0; costs.len()];
    let mut most = now.len();
    for (n, step) in plan.steps.iter().enumerate() {
        match step {
            Step::Load { model } => {
                assert!(!now.contains(*model), "step {n}: {model} loaded twice");
                now.insert(*model);
            }
            Step::Unload { model } => {
                assert!(
                    now.contains(*model),
                    "step {n}: {model} unloaded but not loaded"
                );
                now.remove(*model);
            }
            Step::Run { model, frames } => {
                assert!(
                    now.contains(*model),
                    "step {n}: {model} runs without being loaded"
                );
                assert_eq!(frames, &plan.frames);
                runs[*model] += 1;
            }
        }
        let used: f64 = now.iter().map(|m| costs[m].memory_mb).sum();
        assert!(
            used <= budget_mb + 1e-9,
            "step {n}: {used} MB loaded, budget {budget_mb}"
        );
        most = most.max(now.len());
    }
    assert_eq!(now, plan.loaded_after);
    (runs, most)
}

#[test]
fn one_model_at_a_time_never_loads_two() {
    // Any two of these exceed 500 MB; each fits alone.
    let costs = [
        Cost::new(400.0, 40.0),
        Cost::new(300.0, 30.0),
        Cost::new(450.0, 60.0),
        Cost::new(260.0, 10.0),
    ];
    let budget = Budget::memory(500.0);
    for loaded in [ModelSet::empty(4), ModelSet::from_indices(4, [2])] {
        // One hour at 25 fps: 90 000 frames, 1% profiled = 900.
        let frames = period_frames(3600.0, 25.0);
        let plan = ProfilingPlan::new(frames, 0.01, &costs, &budget, &loaded).unwrap();
        assert_eq!(plan.frames, 0..900);
        assert!(plan.in_turns && plan.groups.len() == 4, "{plan:?}");
        assert!(plan.summary.contains("turns"));
        let (runs, most) = execute(&plan, &costs, &loaded, 500.0);
        assert_eq!(runs, vec![1; 4], "every model profiled exactly once");
        assert_eq!(most, 1, "two models were loaded at once");
        // The already loaded model runs first, without a reload.
        if loaded.contains(2) {
            assert_eq!(
                plan.steps[0],
                Step::Run {
                    model: 2,
                    frames: 0..900
                }
            );
            assert_eq!(plan.loads, 3);
        } else {
            assert_eq!(plan.loads, 4);
        }
        assert_eq!(
            plan.unloads,
            plan.loads + loaded.len() - plan.loaded_after.len()
        );
        // 900 frames times 140 ms of models.
        assert!((plan.model_ms - 900.0 * 140.0).abs() < 1e-6);
    }
}

#[test]
fn all_models_fit_in_one_group() {
    let costs = [Cost::new(400.0, 40.0), Cost::new(300.0, 30.0)];
    let loaded = ModelSet::from_indices(2, [1]);
    let plan = ProfilingPlan::new(1000, 0.01, &costs, &Budget::memory(700.0), &loaded).unwrap();
    assert!(!plan.in_turns && plan.groups.len() == 1);
    assert_eq!(plan.frames, 0..10);
    assert_eq!((plan.loads, plan.unloads), (1, 0));
    assert_eq!(plan.loaded_after, ModelSet::full(2));
    execute(&plan, &costs, &loaded, 700.0);
}

#[test]
fn random_plans_respect_the_memory_budget() {
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..300 {
        let k = rng.random_range(1..12);
        let costs: Vec<Cost> = (0..k)
            .map(|_| Cost::new(rng.random_range(10.0..1000.0), rng.random_range(1.0..50.0)))
            .collect();
        let biggest = costs.iter().map(|c| c.memory_mb).fold(0.0, f64::max);
        let budget_mb = biggest * rng.random_range(1.0..4.0);
        // Resident models: a random selection that fits.
        let mut loaded = ModelSet::empty(k);
        let mut used = 0.0;
        for (m, c) in costs.iter().enumerate() {
            if rng.random_bool(0.3) && used + c.memory_mb <= budget_mb {
                used += c.memory_mb;
                loaded.insert(m);
            }
        }
        let plan =
            ProfilingPlan::new(36_000, 0.01, &costs, &Budget::memory(budget_mb), &loaded).unwrap();
        let (runs, _) = execute(&plan, &costs, &loaded, budget_mb);
        assert_eq!(runs, vec![1; k]);
        assert!(plan.peak_memory_mb <= budget_mb + 1e-9);
        // The move to any new active set that fits keeps within the budget too.
        let target = ModelSet::from_indices(k, [0]);
        let mut now = plan.loaded_after.clone();
        for step in transition(&plan.loaded_after, &target) {
            match step {
                Step::Load { model } => now.insert(model),
                Step::Unload { model } => now.remove(model),
                Step::Run { .. } => panic!("a transition runs nothing"),
            }
            let used: f64 = now.iter().map(|m| costs[m].memory_mb).sum();
            assert!(used <= budget_mb + 1e-9);
        }
        assert_eq!(now, target);
    }
}

#[test]
fn plans_refuse_what_cannot_be_profiled() {
    let costs = [Cost::new(400.0, 40.0), Cost::new(900.0, 30.0)];
    let none = ModelSet::empty(2);
    let err = ProfilingPlan::new(1000, 0.01, &costs, &Budget::memory(500.0), &none).unwrap_err();
    assert!(err.to_string().contains("model 1"), "{err}");
    assert!(ProfilingPlan::new(1000, 0.0, &costs, &Budget::memory(5000.0), &none).is_err());
    assert!(ProfilingPlan::new(1000, 1.5, &costs, &Budget::memory(5000.0), &none).is_err());
}

#[test]
fn simulation_is_deterministic_for_a_seed() {
    let cfg = |seed| SimConfig {
        models: 6,
        dist: ScoreDist::Beta,
        instances: 5,
        seed,
        gain: PAPER_ENSEMBLE_GAIN,
        budget_points: 4,
    };
    let a = serde_json::to_value(run(&cfg(9), || {}).unwrap()).unwrap();
    let b = serde_json::to_value(run(&cfg(9), || {}).unwrap()).unwrap();
    let c = serde_json::to_value(run(&cfg(10), || {}).unwrap()).unwrap();
    assert_eq!(a, b);
    assert_ne!(a["points"], c["points"]);
    let report = run(&cfg(9), || {}).unwrap();
    // At the full budget everything runs; at the cheapest-model budget standalone runs one.
    let last = report.points.last().unwrap();
    assert!((last.optimal - 1.0).abs() < 1e-12 && (last.mlink - 1.0).abs() < 1e-12);
    assert!(report.points.iter().all(|p| p.optimum_beaten == 0));
}
