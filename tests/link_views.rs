//! Links that read the sources' link views: on a trace whose views carry what the heads do
//! not, the few-sample links (`--links chosen`) learn a link the paper's head-to-head MLP
//! cannot, from a short training part; and a trace without views still replays.

use mlink::eval::{LinkLearners, Period, Problem, Replay, ReplayConfig, evaluate};
use mlink::link::trace::{TraceHeader, TraceModel, TraceRecord, TraceWriter, read_all};
use mlink::output::{OutputSpec, OutputValue, TaskKind};
use mlink::schedule::Budget;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;

/// Two detectors of a scene with 0 to 3 persons. `coarse` reports only whether anyone is there
/// (its head) but its view counts the persons at two thresholds; `fine` counts them (head) and
/// its view is its count. `with_views` false writes the same heads without views.
fn write(path: &Path, n: usize, with_views: bool) {
    let model = |id: &str, view: &[&str]| TraceModel {
        id: id.into(),
        spec: OutputSpec::vector(1, TaskKind::Count),
        memory_mb: Some(100.0),
        latency_ms: Some(10.0),
        crops_from: None,
        view: if with_views {
            view.iter().map(|s| s.to_string()).collect()
        } else {
            vec![]
        },
    };
    let header = TraceHeader {
        models: vec![
            model("coarse", &["count.person@0.2", "count.person@0.5"]),
            model("fine", &["count.person@0.3"]),
        ],
        frame_feature_names: ["pixel", "area", "edge", "corner"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        source: "synthetic".into(),
        thumbnail: None,
    };
    let mut w = TraceWriter::create(path, &header).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let mut persons = 0u32;
    for t in 0..n {
        let changed = rng.random_bool(0.3);
        if changed {
            persons = rng.random_range(0..4);
        }
        let moved = if changed { 0.1 } else { 0.0 };
        let p = persons as f32;
        let present = if persons > 0 { 1.0 } else { 0.0 };
        w.append(&TraceRecord {
            camera: "room".into(),
            seq: t as u64,
            time_s: t as f64,
            outputs: vec![
                Some(OutputValue::Vector(vec![present])),
                Some(OutputValue::Vector(vec![p])),
            ],
            views: if with_views {
                vec![Some(vec![p, (p - 1.0).max(0.0)]), Some(vec![p])]
            } else {
                vec![]
            },
            frame_features: vec![moved; 4],
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

fn cfg(links: LinkLearners) -> ReplayConfig {
    ReplayConfig {
        period: Period::Count(4),
        links,
        ..ReplayConfig::default()
    }
}

#[test]
fn chosen_links_read_the_view_the_paper_links_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.trace");
    // 300 frames: the training part (10%) holds 30, as a short clip's would.
    write(&p, 300, true);
    let problem = load(&p);
    assert!(problem.has_views);
    let test: Vec<usize> = Replay::new(&problem, cfg(LinkLearners::Chosen))
        .unwrap()
        .test_range()
        .collect();
    let chosen = Replay::new(&problem, cfg(LinkLearners::Chosen)).unwrap();
    let paper = Replay::new(&problem, cfg(LinkLearners::Paper)).unwrap();
    let c = chosen.link_matrix(&test)[0][1];
    let q = paper.link_matrix(&test)[0][1];
    // The view holds the count exactly; the head says only "someone is there".
    assert!(c > 0.99, "chosen coarse -> fine: {c}");
    assert!(q < 0.8, "paper coarse -> fine: {q}");
    assert!(
        chosen
            .link_learners()
            .iter()
            .any(|l| l.starts_with("coarse -> fine:") && l.contains(":view")),
        "{:?}",
        chosen.link_learners()
    );
    // The report carries the view ceilings: a linear map of the view reaches the count.
    let r = evaluate(
        &problem,
        cfg(LinkLearners::Chosen),
        &[Budget::memory(150.0)],
    )
    .unwrap();
    assert_eq!(r.links.view_ceilings[0][1], Some(1.0));
}

#[test]
fn a_trace_without_views_replays_with_the_heads_as_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("h.trace");
    write(&p, 300, false);
    let problem = load(&p);
    assert!(!problem.has_views);
    let replay = Replay::new(&problem, cfg(LinkLearners::Chosen)).unwrap();
    let test: Vec<usize> = replay.test_range().collect();
    // fine -> coarse is a function of the head (count > 0): learnt exactly.
    let s = replay.link_matrix(&test)[1][0];
    assert!(s > 0.99, "fine -> coarse from the head: {s}");
    let r = evaluate(
        &problem,
        cfg(LinkLearners::Chosen),
        &[Budget::memory(150.0)],
    )
    .unwrap();
    assert!(r.links.view_ceilings.is_empty());
}
