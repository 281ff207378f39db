//! The DRLS and MTL baselines on small synthetic traces whose best answer is known, including
//! traces on which each must lose or learn a specific behaviour.

use mlink::eval::pixelnet::NetConfig;
use mlink::eval::{Period, Problem, Replay, ReplayConfig, drls, mtl};
use mlink::link::trace::{ThumbnailSize, TraceHeader, TraceModel, TraceRecord};
use mlink::output::{OutputSpec, OutputValue, TaskKind};
use mlink::schedule::Budget;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

fn count_model(id: &str, ms: f64) -> TraceModel {
    TraceModel {
        id: id.into(),
        spec: OutputSpec::vector(1, TaskKind::Count),
        memory_mb: Some(10.0),
        latency_ms: Some(ms),
        crops_from: None,
        view: vec![],
    }
}

/// A problem of `n` frames at 1 fps from per-frame outputs and optional thumbnails.
fn problem(
    models: Vec<TraceModel>,
    thumbnail: Option<ThumbnailSize>,
    n: usize,
    mut frame: impl FnMut(usize) -> (Vec<OutputValue>, Option<Vec<u8>>),
) -> Problem {
    let header = TraceHeader {
        models,
        frame_feature_names: vec![],
        source: "synthetic".into(),
        thumbnail,
    };
    let records = (0..n)
        .map(|t| {
            let (outputs, thumb) = frame(t);
            TraceRecord {
                camera: "cam".into(),
                seq: t as u64,
                time_s: t as f64,
                outputs: outputs.into_iter().map(Some).collect(),
                views: vec![],
                frame_features: vec![],
                thumbnail: thumb,
            }
        })
        .collect();
    Problem::from_trace(&header, records, &BTreeMap::new()).unwrap()
}

fn cfg() -> ReplayConfig {
    ReplayConfig {
        train_fraction: 0.25,
        period: Period::Frames(100),
        profile_fraction: 0.05,
        ..ReplayConfig::default()
    }
}

/// `a` (a count of 0 to 5, slow) predicts `b` (half of it, rounded down) and `c` (whether it
/// is above 0) perfectly; `b` and `c` together leave `a` ambiguous on two frames in three.
fn one_model_predicts_the_others() -> Problem {
    let mut rng = StdRng::seed_from_u64(3);
    problem(
        vec![
            count_model("a", 50.0),
            count_model("b", 10.0),
            count_model("c", 10.0),
        ],
        None,
        400,
        |_| {
            let a: u32 = rng.random_range(0..6);
            let v = |x: u32| OutputValue::Vector(vec![x as f32]);
            (vec![v(a), v(a / 2), v(u32::from(a > 0))], None)
        },
    )
}

#[test]
fn drls_learns_to_run_only_the_model_that_predicts_the_others() {
    let p = one_model_predicts_the_others();
    let replay = Replay::new(&p, cfg()).unwrap();
    // 60 ms a frame allows `a` alone, `a` with one other, or `b` and `c`.
    let budget = Budget::time(60.0);
    let policy = drls::train(&replay, &budget, &drls::DrlsConfig::default()).unwrap();
    let o = drls::run(&replay, &policy);
    let test: Vec<usize> = replay.test_range().collect();
    let links = replay.link_matrix(&test);
    assert!(links[0][1] > 0.99 && links[0][2] > 0.99, "{links:?}");
    assert_eq!(o.active, vec![vec!["a".to_string()]], "{}", o.detail);
    assert!((o.executions_saved - 2.0 / 3.0).abs() < 1e-9, "{o:?}");
    assert!(o.accuracy > 0.95, "{o:?}");
    // Every test frame spends `a`'s 50 ms plus two links, never more.
    assert!(o.ms_per_frame > 50.0 && o.ms_per_frame < 51.0, "{o:?}");
}

#[test]
fn drls_keeps_to_the_budget_and_runs_nothing_when_nothing_fits() {
    let p = one_model_predicts_the_others();
    let replay = Replay::new(&p, cfg()).unwrap();
    // `a` does not fit: the cheap models are what DRLS can run.
    let policy = drls::train(&replay, &Budget::time(25.0), &drls::DrlsConfig::default()).unwrap();
    let o = drls::run(&replay, &policy);
    assert!(
        o.active.iter().all(|s| !s.contains(&"a".to_string())),
        "{}",
        o.detail
    );
    assert!(o.ms_per_frame <= 25.0, "{o:?}");
    assert!(
        o.accuracy < 0.95,
        "without `a` its count is a guess on half the frames: {o:?}"
    );
    let none = drls::train(&replay, &Budget::time(5.0), &drls::DrlsConfig::default()).unwrap();
    let o = drls::run(&replay, &none);
    assert_eq!(o.executions_saved, 1.0);
    assert_eq!(o.accuracy, 0.0);
}

#[test]
fn drls_runs_together_only_models_that_fit_the_memory_together() {
    // Three independent counts (no link helps), 10 MB each; `c` is slow, so the time a
    // frame may spend (the slowest set that fits) would allow `a` and `b` on one frame.
    let mut rng = StdRng::seed_from_u64(5);
    let p = problem(
        vec![
            count_model("a", 10.0),
            count_model("b", 10.0),
            count_model("c", 40.0),
        ],
        None,
        400,
        |_| {
            let v = |x: u32| OutputValue::Vector(vec![x as f32]);
            let mut draw = || v(rng.random_range(0..6));
            (vec![draw(), draw(), draw()], None)
        },
    );
    let replay = Replay::new(&p, cfg()).unwrap();
    // 15 MB holds one model at a time, 25 MB two.
    for (mb, most) in [(15.0, 1), (25.0, 2)] {
        let policy =
            drls::train(&replay, &Budget::memory(mb), &drls::DrlsConfig::default()).unwrap();
        let o = drls::run(&replay, &policy);
        let largest = o.active.iter().map(|s| s.len()).max().unwrap_or(0);
        assert!(
            (1..=most).contains(&largest),
            "{mb} MB: {:?}\n{}",
            o.active,
            o.detail
        );
    }
}

/// Counts of 0 to 3 and a three-class label (the count capped at 2), with 8x8 thumbnails whose
/// brightness shows the count (`informative`) or pure noise.
fn pixels(informative: bool) -> Problem {
    let mut rng = StdRng::seed_from_u64(11);
    let size = ThumbnailSize {
        width: 8,
        height: 8,
    };
    problem(
        vec![
            count_model("count", 30.0),
            TraceModel {
                spec: OutputSpec::vector(3, TaskKind::SingleLabel),
                ..count_model("label", 20.0)
            },
        ],
        Some(size),
        400,
        |_| {
            let n: u32 = rng.random_range(0..4);
            let mut label = vec![0.0; 3];
            label[n.min(2) as usize] = 1.0;
            let thumb: Vec<u8> = (0..size.bytes())
                .map(|_| {
                    if informative {
                        (30 + 60 * n + rng.random_range(0..10)) as u8
                    } else {
                        rng.random_range(0..=255)
                    }
                })
                .collect();
            (
                vec![
                    OutputValue::Vector(vec![n as f32]),
                    OutputValue::Vector(label),
                ],
                Some(thumb),
            )
        },
    )
}

#[test]
fn mtl_reproduces_outputs_its_pixels_show_and_loses_on_pixels_that_show_nothing() {
    let p = pixels(true);
    let replay = Replay::new(&p, cfg()).unwrap();
    let net = mtl::train(&replay, &NetConfig::multi_task(0)).unwrap();
    let good = mtl::run(&replay, &net).unwrap();
    assert!(good.accuracy > 0.9, "{good:?}");
    assert_eq!(good.executions_saved, 1.0);
    assert!(net.net.memory_mb() > 0.0 && net.net.memory_mb() < 1.0);

    let p = pixels(false);
    let replay = Replay::new(&p, cfg()).unwrap();
    let net = mtl::train(&replay, &NetConfig::multi_task(0)).unwrap();
    let blind = mtl::run(&replay, &net).unwrap();
    // Four equally likely counts and three labels (one twice as likely): about 25% and 50%
    // by chance.
    assert!(blind.accuracy < 0.6, "{blind:?}");
}

#[test]
fn mtl_needs_thumbnails() {
    let p = one_model_predicts_the_others();
    let replay = Replay::new(&p, cfg()).unwrap();
    let e = mtl::train(&replay, &NetConfig::multi_task(0))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--thumbnails"), "{e}");
}

#[test]
fn distilled_students_learn_from_pixels_and_lose_to_a_perfect_link_on_pixels_that_show_nothing() {
    let base = ReplayConfig {
        period: Period::Frames(100),
        profile_fraction: 0.05,
        ..ReplayConfig::default()
    };
    let sizes = [0.1, 0.2];
    let r = mlink::eval::kd::compare(&pixels(true), &base, &sizes, 1).unwrap();
    // Target `label` (index 1): its student sees the count in the brightness.
    let label = &r.targets[1];
    assert_eq!(label.len(), 2);
    assert!(label[1].student.0 > 0.9, "{label:?}");
    assert!(label[0].train_frames < label[1].train_frames);

    let r = mlink::eval::kd::compare(&pixels(false), &base, &sizes, 1).unwrap();
    for row in &r.targets[1] {
        let link = row.links[0].unwrap().0;
        // The label is the count capped at 2: the link from the count is exact; the student
        // on noise guesses.
        assert!(link > 0.95, "{row:?}");
        assert!(row.student.0 < link - 0.2, "{row:?}");
    }
}

/// A class source and a class target that copies it for the first 20 frames and then shifts it
/// by one class: links trained on the first frames are wrong on everything after.
fn shifted_mapping() -> Problem {
    let mut rng = StdRng::seed_from_u64(5);
    let spec = OutputSpec::vector(3, TaskKind::SingleLabel);
    let model = |id: &str| TraceModel {
        spec: spec.clone(),
        ..count_model(id, 10.0)
    };
    problem(vec![model("src"), model("dst")], None, 400, |t| {
        let c: usize = rng.random_range(0..3);
        let shifted = if t < 20 { c } else { (c + 1) % 3 };
        let onehot = |k: usize| {
            let mut v = vec![0.0; 3];
            v[k] = 1.0;
            OutputValue::Vector(v)
        };
        (vec![onehot(c), onehot(shifted)], None)
    })
}

#[test]
fn offline_init_loses_to_periodic_online_training_after_a_shift() {
    use mlink::eval::online::{OnlineConfig, OnlinePolicy, compare};
    let cfg = OnlineConfig {
        source: 0,
        target: 1,
        segments: 5,
        init_fraction: 0.01,
        min_init_frames: 20,
        label_fraction: 0.1,
        uncertainty_threshold: None,
        seed: 0,
    };
    let r = compare(&shifted_mapping(), &cfg).unwrap();
    let of = |p: OnlinePolicy| r.policies.iter().find(|x| x.policy == p).unwrap();
    let offline = of(OnlinePolicy::OfflineInit);
    let periodic = of(OnlinePolicy::Periodic);
    assert_eq!(offline.trainings, 0);
    assert!(periodic.trainings >= 4, "{periodic:?}");
    // After the shift the initial links are wrong on every frame; fine-tuning follows it.
    assert!(offline.segments[4] < 0.1, "{offline:?}");
    assert!(periodic.segments[4] > 0.9, "{periodic:?}");
    // No policy labels more than the budget: twice the profiling share of every segment.
    for p in &r.policies {
        assert!(
            p.labelled <= periodic.labelled,
            "{p:?} against {periodic:?}"
        );
    }
}
