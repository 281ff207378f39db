//! The replay and its baselines on small synthetic traces with known answers. Traces are
//! written and read back through the trace format, as `mlink eval` reads them.

use mlink::eval::replay::Method;
use mlink::eval::{Period, Problem, Replay, ReplayConfig, evaluate, render_markdown};
use mlink::link::trace::{TraceHeader, TraceModel, TraceRecord, TraceWriter, read_all};
use mlink::output::{OutputSpec, OutputValue, TaskKind};
use mlink::schedule::Budget;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;

const FEATURES: [&str; 4] = ["pixel", "area", "edge", "corner"];

/// A model of a synthetic trace: id, memory MB, ms, and its count as a function of the
/// frame's hidden "scene" count.
struct Synth {
    id: &'static str,
    memory_mb: f64,
    ms: f64,
    count: fn(u32, &mut StdRng) -> f32,
}

/// Writes a trace of `n` frames at 1 fps. The scene count changes on about a third of the
/// frames; the frame features move with it (plus noise), as a real scene would.
fn write_trace(path: &Path, models: &[Synth], n: usize, seed: u64) {
    let header = TraceHeader {
        models: models
            .iter()
            .map(|m| TraceModel {
                id: m.id.into(),
                spec: OutputSpec::vector(1, TaskKind::Count),
                memory_mb: Some(m.memory_mb),
                latency_ms: Some(m.ms),
                crops_from: None,
                view: vec![],
            })
            .collect(),
        frame_feature_names: FEATURES.iter().map(|s| s.to_string()).collect(),
        source: "synthetic".into(),
        thumbnail: None,
    };
    let mut w = TraceWriter::create(path, &header).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut scene: u32 = 2;
    for t in 0..n {
        let changed = t > 0 && rng.random_bool(0.35);
        if changed {
            scene = rng.random_range(0..6);
        }
        let noise = rng.random_range(0.0..0.01f32);
        let moved = if changed {
            rng.random_range(0.05..0.2f32)
        } else {
            0.0
        };
        let outputs = models
            .iter()
            .map(|m| Some(OutputValue::Vector(vec![(m.count)(scene, &mut rng)])))
            .collect();
        w.append(&TraceRecord {
            camera: "cam".into(),
            seq: t as u64,
            time_s: t as f64,
            outputs,
            views: vec![],
            frame_features: vec![moved + noise; 4],
            thumbnail: None,
        })
        .unwrap();
    }
    w.finish().unwrap();
}

fn load(path: &Path) -> Problem {
    let (h, r) = read_all(path).unwrap();
    Problem::from_trace(&h, r, &BTreeMap::new()).unwrap()
}

fn cfg(seed: u64) -> ReplayConfig {
    ReplayConfig {
        period: Period::Frames(100),
        profile_fraction: 0.05,
        seed,
        ..ReplayConfig::default()
    }
}

fn a_plus_one() -> Vec<Synth> {
    vec![
        Synth {
            id: "a",
            memory_mb: 100.0,
            ms: 10.0,
            count: |s, _| s as f32,
        },
        Synth {
            id: "b",
            memory_mb: 200.0,
            ms: 20.0,
            count: |s, _| s as f32 + 1.0,
        },
    ]
}

/// Three models: `b` follows `a`, `c` is noise no link can predict.
fn three() -> Vec<Synth> {
    let mut m = a_plus_one();
    m.push(Synth {
        id: "c",
        memory_mb: 300.0,
        ms: 30.0,
        count: |_, rng| rng.random_range(0..4) as f32,
    });
    m
}

#[test]
fn the_same_trace_and_seed_give_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.trace");
    write_trace(&p, &three(), 600, 1);
    let budgets = [Budget::memory(150.0), Budget::memory(350.0)];
    let r1 = evaluate(&load(&p), cfg(7), &budgets).unwrap();
    let r2 = evaluate(&load(&p), cfg(7), &budgets).unwrap();
    assert_eq!(r1, r2);
    assert_eq!(render_markdown(&r1, &[]), render_markdown(&r2, &[]));
    assert_eq!(
        serde_json::to_string(&r1).unwrap(),
        serde_json::to_string(&r2).unwrap()
    );
}

#[test]
fn standalone_under_a_budget_for_one_model_scores_one_over_k() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.trace");
    write_trace(&p, &three(), 300, 2);
    let problem = load(&p);
    let replay = Replay::new(&problem, cfg(0)).unwrap();
    // 150 MB holds `a` (100 MB) alone.
    let o = replay.run_standalone(&Budget::memory(150.0)).unwrap();
    assert!((o.accuracy - 1.0 / 3.0).abs() < 1e-12, "{o:?}");
    assert_eq!(o.model_accuracy, vec![1.0, 0.0, 0.0]);
    assert!((o.executions_saved - 2.0 / 3.0).abs() < 1e-12);
    assert!((o.ms_per_frame - 10.0).abs() < 1e-9);
    assert_eq!(o.active, vec![vec!["a".to_string()]]);
}

#[test]
fn reducto_with_a_zero_threshold_sends_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.trace");
    write_trace(&p, &three(), 300, 3);
    let problem = load(&p);
    let replay = Replay::new(&problem, cfg(0)).unwrap();
    let tuning = replay.reducto_tuning().unwrap();
    let zero: Vec<_> = tuning
        .models
        .iter()
        .map(|m| mlink::eval::reducto::Operating {
            threshold: 0.0,
            ..m.at_target
        })
        .collect();
    let o = replay.run_reducto(&tuning, &zero, String::new());
    assert_eq!(o.accuracy, 1.0);
    assert_eq!(o.executions_saved, 0.0);
    assert!((o.ms_per_frame - 60.0).abs() < 1e-9, "{}", o.ms_per_frame);
    // Tuned on training, Reducto filters frames whose features barely moved.
    let t = replay.run_reducto_at_target(&tuning);
    assert!(t.executions_saved > 0.0, "{t:?}");
}

/// Reducto is left out: it runs every model now and then, so a memory budget does not bind it
/// and a fixed set under that budget need not beat it.
#[test]
fn optimal_scores_at_least_as_well_as_every_budgeted_method() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.trace");
    write_trace(&p, &three(), 600, 4);
    let budgets = [
        Budget::memory(150.0),
        Budget::memory(350.0),
        Budget::memory(700.0),
    ];
    let r = evaluate(&load(&p), cfg(0), &budgets).unwrap();
    for b in &r.budgets {
        let opt = b
            .methods
            .iter()
            .find(|m| m.method == Method::Optimal)
            .unwrap();
        // Reducto and DRLS are not bound to one set a period (DRLS chooses frame by frame),
        // so the best fixed set does not bound them.
        for m in b
            .methods
            .iter()
            .filter(|m| !matches!(m.method, Method::Reducto | Method::Drls))
        {
            assert!(
                opt.outcome.accuracy + 1e-9 >= m.outcome.accuracy,
                "{}: {} scores {} above Optimal's {}",
                b.label,
                m.method.name(),
                m.outcome.accuracy,
                opt.outcome.accuracy
            );
        }
    }
    // With every model affordable, Optimal runs them all.
    let all = &r.budgets[2]
        .methods
        .iter()
        .find(|m| m.method == Method::Optimal)
        .unwrap()
        .outcome;
    assert_eq!(all.accuracy, 1.0);
}

#[test]
fn mlink_predicts_a_perfectly_linked_model_from_the_one_it_can_afford() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.trace");
    write_trace(&p, &a_plus_one(), 4000, 5);
    let problem = load(&p);
    let replay = Replay::new(&problem, cfg(0)).unwrap();
    let budget = Budget::memory(150.0);
    let mlink = replay
        .run_policy(mlink::config::SelectionPolicy::Mlink, &budget)
        .unwrap();
    assert!(
        mlink.active.iter().all(|a| a == &vec!["a".to_string()]),
        "{:?}",
        mlink.active
    );
    // `b` is predicted, never run, outside profiling frames; the trained link gets most
    // counts right (about 85% on this trace with the default link training).
    assert!(mlink.accuracy > 0.9, "{mlink:?}");
    assert!(mlink.model_accuracy[1] > 0.8, "{mlink:?}");
    let standalone = replay.run_standalone(&budget).unwrap();
    assert!((standalone.accuracy - 0.5).abs() < 1e-12);
    // Most executions of `b` are saved; profiling frames run both models.
    assert!(mlink.executions_saved > 0.4, "{mlink:?}");
}

#[test]
fn a_model_on_another_models_boxes_never_runs_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.trace");
    // `c` is cheap and unpredictable: without the dependency, {a, c} (a predicts b exactly)
    // would be the best set under 150 MB.
    let mut models = three();
    models[2].memory_mb = 30.0;
    write_trace(&p, &models, 600, 3);
    let (mut h, r) = read_all(&p).unwrap();
    // `c` runs on the boxes of `b`, as age runs on BlazeFace's faces.
    h.models[2].crops_from = Some("b".into());
    let problem = Problem::from_trace(&h, r, &BTreeMap::new()).unwrap();
    assert_eq!(problem.models[2].parent, Some(1));
    let replay = Replay::new(&problem, cfg(1)).unwrap();
    for budget in [
        Budget::memory(320.0),
        Budget::memory(350.0),
        Budget::memory(520.0),
    ] {
        let outcomes = [
            replay.run_optimal(&budget).unwrap(),
            replay.run_standalone(&budget).unwrap(),
            replay
                .run_policy(mlink::config::SelectionPolicy::Mlink, &budget)
                .unwrap(),
            replay
                .run_policy(mlink::config::SelectionPolicy::Gain, &budget)
                .unwrap(),
        ];
        for o in &outcomes {
            for set in &o.active {
                assert!(
                    !set.contains(&"c".to_string()) || set.contains(&"b".to_string()),
                    "{budget:?}: {set:?} runs c without b"
                );
            }
        }
    }
    // With room for both, the dependency does not stop them: `c` (noise no link predicts)
    // runs, and with it `b`.
    let o = replay.run_optimal(&Budget::memory(10_000.0)).unwrap();
    let has = |s: &Vec<String>, m: &str| s.iter().any(|x| x == m);
    assert!(
        o.active.iter().all(|s| has(s, "c") && has(s, "b")),
        "{:?}",
        o.active
    );
    // A dependency on a model the trace lacks is a clear error.
    let (mut h, r) = read_all(&p).unwrap();
    h.models[2].crops_from = Some("faces".into());
    let err = Problem::from_trace(&h, r, &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("faces"), "{err}");
}
