//! Real links of a bundle federated through a real aggregator: export/import through the
//! aggregator's link file, and rounds of two edges over HTTP on 127.0.0.1.

mod adapt_support;

use adapt_support::*;
use mlink::adapt::aggregate::{
    AggregatorClient, AggregatorConfig, AggregatorServer, EdgeTokens, LinkInit, RoundPolicy, Token,
};
use mlink::adapt::edge::{federated_round, pull_global};
use mlink::adapt::export::{ExportError, export_link, import_link, link_id};
use mlink::link::{LinkBundle, Sample, TrainParams};
use mlink::output::{OutputSpec, OutputValue, TaskKind};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use std::path::Path;
use std::time::Duration;

fn models() -> Vec<(String, OutputSpec)> {
    vec![
        ("detector".into(), OutputSpec::vector(3, TaskKind::Count)),
        ("people".into(), OutputSpec::vector(1, TaskKind::Regression)),
    ]
}

/// Aligned samples of the two models on one site (`bias` shifts the site's target).
fn samples(seed: u64, n: usize, bias: f32) -> Vec<Sample> {
    let mut rng = StdRng::seed_from_u64(seed);
    let g = Normal::new(2.0f32, 1.0).unwrap();
    (0..n)
        .map(|_| {
            let x: Vec<f32> = (0..3)
                .map(|_| g.sample(&mut rng).max(0.0).round())
                .collect();
            let y = x[0] + 0.5 * x[1] + bias;
            Sample::complete([OutputValue::Vector(x), OutputValue::Vector(vec![y])])
        })
        .collect()
}

fn bundle(data: &[Sample], epochs: usize) -> LinkBundle {
    let p = TrainParams {
        epochs,
        seed: 4,
        ..TrainParams::default()
    };
    LinkBundle::train(&models(), data, &p, 0.0, 1, &|_| {}).unwrap()
}

fn copy(b: &LinkBundle, dir: &Path, name: &str) -> LinkBundle {
    let path = dir.join(name);
    b.save(&path).unwrap();
    LinkBundle::load(&path).unwrap()
}

#[test]
fn a_link_round_trips_through_the_aggregator_link_file() {
    let dir = tempfile::tempdir().unwrap();
    let trained = bundle(&samples(1, 100, 0.0), 30);
    let init = export_link(&trained, "detector", "people").unwrap();
    assert_eq!(init.spec.link_id, "detector->people");
    assert_eq!(
        init.spec.num_params(),
        trained.link_params(0, 1).unwrap().len()
    );
    let file = dir.path().join("link.json");
    init.save(&file).unwrap();
    let loaded = LinkInit::load(&file).unwrap();
    assert_eq!(loaded, init);

    // Into a copy of the bundle whose link was changed meanwhile: the weights come back.
    let mut other = copy(&trained, dir.path(), "copy.mlinks");
    other.train_round(0, 1, &samples(2, 50, 1.0), 3).unwrap();
    assert_ne!(other.link_params(0, 1).unwrap(), loaded.params.0);
    import_link(&mut other, "detector", "people", &loaded).unwrap();
    assert_eq!(other.link_params(0, 1).unwrap(), loaded.params.0);
    assert_eq!(
        other.link_params(1, 0).unwrap(),
        trained.link_params(1, 0).unwrap(),
        "other links untouched"
    );

    // The wrong link, and a link with other standardisations, are refused.
    let e = import_link(&mut other, "people", "detector", &loaded).unwrap_err();
    assert!(matches!(e, ExportError::WrongLink { .. }), "{e}");
    let mut foreign = bundle(&samples(9, 100, 5.0), 1);
    let e = import_link(&mut foreign, "detector", "people", &loaded).unwrap_err();
    assert!(e.to_string().contains("architecture differs"), "{e}");
    assert!(matches!(
        export_link(&trained, "detector", "nobody"),
        Err(ExportError::UnknownModel { .. })
    ));

    // The command line does the same.
    let bundle_path = dir.path().join("trained.mlinks");
    trained.save(&bundle_path).unwrap();
    let out = dir.path().join("cli-link.json");
    let o = mlink(&[
        "link-export",
        bundle_path.to_str().unwrap(),
        "--source",
        "detector",
        "--target",
        "people",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(LinkInit::load(&out).unwrap(), init);
    let changed = dir.path().join("changed.mlinks");
    other.train_round(0, 1, &samples(3, 50, 1.0), 3).unwrap();
    other.save(&changed).unwrap();
    let o = mlink(&[
        "link-import",
        changed.to_str().unwrap(),
        "--link",
        out.to_str().unwrap(),
        "--source",
        "detector",
        "--target",
        "people",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        LinkBundle::load(&changed)
            .unwrap()
            .link_params(0, 1)
            .unwrap(),
        init.params.0
    );
    let o = mlink(&[
        "link-import",
        changed.to_str().unwrap(),
        "--link",
        out.to_str().unwrap(),
        "--source",
        "people",
        "--target",
        "detector",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("link file is for \"detector->people\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_federated_round_of_two_edges_moves_the_global_link_by_the_mean_of_their_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let initial = bundle(&samples(1, 100, 0.0), 5);
    let init = export_link(&initial, "detector", "people").unwrap();
    let site = [samples(10, 40, 0.0), samples(11, 60, 1.5)];
    let epochs = 3;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let creds: Vec<(String, Token)> = (0..2)
        .map(|k| {
            (
                format!("edge-{k}"),
                Token::new(format!("secret-token-of-edge-{k}")),
            )
        })
        .collect();
    let server = AggregatorServer::open(AggregatorConfig {
        state_path: dir.path().join("state.json"),
        tokens: EdgeTokens::from_pairs(creds.clone()).unwrap(),
        links: vec![init.clone()],
        policy: RoundPolicy {
            deadline: Duration::from_secs(120),
            quorum: 2,
            server_lr: 1.0,
        },
        max_body_bytes: None,
    })
    .unwrap();
    let running = rt
        .block_on(server.spawn("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let clients: Vec<AggregatorClient> = creds
        .iter()
        .map(|(id, t)| AggregatorClient::new(&running.url(), id.clone(), t.clone()).unwrap())
        .collect();

    let theta0 = init.params.0.clone();
    for round in 0..2u64 {
        let start = rt
            .block_on(clients[0].pull(&link_id("detector", "people")))
            .unwrap();
        assert_eq!(start.round, round);
        // Each edge, in its own thread, on a copy of the distributed bundle.
        let mut expected_deltas = Vec::new();
        let mut reports = Vec::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|k| {
                    let mut b = copy(&initial, dir.path(), &format!("edge{k}-{round}.mlinks"));
                    let (c, data) = (&clients[k], &site[k]);
                    s.spawn(move || {
                        federated_round(&mut b, "detector", "people", data, c, epochs).unwrap()
                    })
                })
                .collect();
            for h in handles {
                reports.push(h.join().unwrap());
            }
        });
        for (k, data) in site.iter().enumerate() {
            // The same local training from the pulled weights, done here independently.
            let mut b = copy(&initial, dir.path(), &format!("check{k}-{round}.mlinks"));
            b.set_link_params(0, 1, &start.params.0).unwrap();
            expected_deltas.push(b.train_round(0, 1, data, epochs).unwrap());
        }
        assert!(reports.iter().all(|r| r.round == round));
        assert_eq!(
            reports.iter().filter(|r| r.accepted.round_closed).count(),
            1,
            "the second upload closes the round"
        );
        assert!(
            reports
                .iter()
                .all(|r| r.sent_bytes > 4 * theta0.len() as u64),
            "the update travelled: {reports:?}"
        );

        let after = rt
            .block_on(clients[1].pull(&link_id("detector", "people")))
            .unwrap();
        assert_eq!(after.round, round + 1);
        // Algorithm 1 with the server's sample weighting: theta + sum_k n_k delta_k / sum_k n_k.
        let (n0, n1) = (site[0].len() as f32, site[1].len() as f32);
        for (i, got) in after.params.0.iter().enumerate() {
            let want = start.params.0[i]
                + (n0 * expected_deltas[0][i] + n1 * expected_deltas[1][i]) / (n0 + n1);
            assert!(
                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "param {i}: {got} vs {want}"
            );
        }
        assert_ne!(after.params.0, start.params.0);
    }

    // An edge serves the global link after pulling it.
    let mut serving = copy(&initial, dir.path(), "serving.mlinks");
    let g = pull_global(&mut serving, "detector", "people", &clients[0]).unwrap();
    assert_eq!(serving.link_params(0, 1).unwrap(), g.params.0);
    // A bundle with another standardisation is told why it cannot take part.
    let mut foreign = bundle(&samples(9, 100, 5.0), 1);
    let e =
        federated_round(&mut foreign, "detector", "people", &site[0], &clients[0], 1).unwrap_err();
    assert!(
        e.to_string().contains("does not fit this edge's bundle"),
        "{e}"
    );
    rt.block_on(running.stop()).unwrap();
}
