//! `mlink adapt-eval` on a synthetic trace with a domain shift: four time segments of one
//! camera; each of the first three sees mostly one direction of the source model's output
//! space, the last (the target) all of them. The relation between the two models is the same
//! everywhere, as for black-box models on one site over a day.

mod adapt_support;

use adapt_support::*;
use mlink::adapt::crossdomain::{CrossDomainConfig, DomainSplit, evaluate};
use mlink::link::TrainParams;
use mlink::link::trace::read_all;
use mlink::output::{OutputSpec, TaskKind};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use std::path::Path;

const PER_DOMAIN: usize = 150;

fn shifted_trace(path: &Path) {
    let mut rng = StdRng::seed_from_u64(21);
    let g = Normal::new(0.0f32, 1.0).unwrap();
    let noise = Normal::new(0.0f32, 0.05).unwrap();
    let mut records = Vec::new();
    for d in 0..4 {
        for _ in 0..PER_DOMAIN {
            let scale: [f32; 3] = std::array::from_fn(|k| if d == 3 || k == d { 1.0 } else { 0.2 });
            let x: Vec<f32> = (0..3).map(|k| g.sample(&mut rng) * scale[k]).collect();
            let y = 1.5 * x[0] - 2.0 * x[1] + 0.75 * x[2] + noise.sample(&mut rng);
            records.push(record(
                "cam0",
                records.len() as u64,
                vec![Some(x), Some(vec![y])],
            ));
        }
    }
    write_trace(
        path,
        vec![
            model("features", OutputSpec::vector(3, TaskKind::Regression)),
            model("speed", OutputSpec::vector(1, TaskKind::Regression)),
        ],
        &records,
    );
}

#[test]
fn global_or_fused_links_beat_local_only_on_a_shifted_target_domain() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("shift.mltrace");
    shifted_trace(&trace);
    let (header, records) = read_all(&trace).unwrap();
    let cfg = CrossDomainConfig {
        split: DomainSplit::Auto,
        domains: 4,
        local_samples: 8,
        rounds: 12,
        local_epochs: 2,
        params: TrainParams {
            epochs: 100,
            seed: 2,
            ..TrainParams::default()
        },
        ..CrossDomainConfig::default()
    };
    let r = evaluate("shift", &header, &records, &cfg, &|l| eprintln!("{l}")).unwrap();
    eprintln!("{}", r.to_markdown());
    assert_eq!(r.split, DomainSplit::Time, "one camera: time segments");
    assert_eq!(r.domains.len(), 4);
    assert_eq!(r.domains.iter().filter(|d| d.role == "edge").count(), 3);
    assert_eq!((r.local_samples, r.test_samples), (8, PER_DOMAIN - 8));
    assert_eq!(r.global_by_round.len(), 12);
    assert!(
        r.global.max(r.fused) >= r.local_only,
        "local {} global {} fused {}",
        r.local_only,
        r.global,
        r.fused
    );
    assert!(
        r.fused >= r.local_only.min(r.global),
        "fused {} local {} global {}",
        r.fused,
        r.local_only,
        r.global
    );
    // The update and the global link crossed the wire each round.
    assert!(
        r.wire.sent_per_edge_round > r.wire.raw_weight_bytes as f64,
        "{:?}",
        r.wire
    );
    assert!(
        r.wire.received_per_edge_round > r.wire.raw_weight_bytes as f64,
        "{:?}",
        r.wire
    );
}

#[test]
fn the_adapt_eval_command_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("shift.mltrace");
    shifted_trace(&trace);
    let report = dir.path().join("report");
    let o = mlink(&[
        "adapt-eval",
        trace.to_str().unwrap(),
        "--domains",
        "4",
        "--local-samples",
        "8",
        "--rounds",
        "3",
        "--epochs",
        "30",
        "--json",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["source_model"], "features");
    assert_eq!(v["target_model"], "speed");
    assert_eq!(v["global_by_round"].as_array().unwrap().len(), 3);
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(on_disk, v);
    assert!(
        std::fs::read_to_string(report.join("report.md"))
            .unwrap()
            .contains("| global (federated) |")
    );
    let o = mlink(&["adapt-eval", trace.to_str().unwrap(), "--target", "7"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("target domain 7 does not exist"),
        "{}",
        stderr(&o)
    );
}
