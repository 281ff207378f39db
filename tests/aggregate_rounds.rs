//! Federated averaging over real HTTP: three edges with known updates, rounds advancing, and
//! the bytes a realistic link costs on the wire.

mod aggregate_support;

use aggregate_support::*;
use mlink::adapt::aggregate::{ClosedBy, LocalUpdate, run_round};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fedavg_of_three_edges_is_their_mean_and_rounds_advance() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup::new(dir.path(), 3, linear_spec(4), vec![1.0, -1.0, 0.5, 0.0]);
        let server = setup.start().await;
        let link = "synthetic->target";

        let deltas = [
            vec![0.3, 0.0, -1.0, 2.0],
            vec![0.6, 1.5, 1.0, 2.0],
            vec![-0.3, 3.0, 3.0, 5.0],
        ];
        // Round 0: unweighted (no sample counts), one update per edge.
        for (i, d) in deltas.iter().enumerate() {
            let c = client(&server, i);
            let (g, acc) = run_round(&c, link, |_| {
                Ok::<_, std::io::Error>(LocalUpdate {
                    delta: d.clone(),
                    n_samples: None,
                })
            })
            .await
            .unwrap();
            assert_eq!(g.round, 0);
            assert_eq!(acc.round, 0);
            assert_eq!(acc.accepted_in_round, i + 1);
            assert_eq!(
                acc.round_closed,
                i == 2,
                "the third edge completes the round"
            );
        }
        let g1 = client(&server, 0).pull(link).await.unwrap();
        assert_eq!(g1.round, 1);
        let expected = [1.0 + 0.2, -1.0 + 1.5, 0.5 + 1.0, 0.0 + 3.0];
        for (got, want) in g1.params.0.iter().zip(expected) {
            assert!(
                (got - want).abs() < 1e-6,
                "{:?} vs {expected:?}",
                g1.params.0
            );
        }

        // Round 1: sample-weighted mean (1, 1, 2 samples).
        for (i, n) in [1u64, 1, 2].into_iter().enumerate() {
            let c = client(&server, i);
            let g = c.pull(link).await.unwrap();
            assert_eq!(g.round, 1);
            c.push_for(
                &g,
                &LocalUpdate {
                    delta: deltas[i].clone(),
                    n_samples: Some(n),
                },
            )
            .await
            .unwrap();
        }
        let g2 = client(&server, 1).pull(link).await.unwrap();
        assert_eq!(g2.round, 2);
        for (k, (after, before)) in g2.params.0.iter().zip(&g1.params.0).enumerate() {
            let weighted = (deltas[0][k] + deltas[1][k] + 2.0 * deltas[2][k]) / 4.0;
            assert!((after - (before + weighted)).abs() < 1e-6);
        }

        let view = state(&server).await;
        let l = &view.links[0];
        assert_eq!(l.round, 2);
        assert!(l.pending_edges.is_empty());
        let last = l.last_round.as_ref().unwrap();
        assert_eq!((last.round, last.closed_by), (1, ClosedBy::AllEdges));
        assert_eq!(last.edges, vec![edge_id(0), edge_id(1), edge_id(2)]);
        assert!(last.received_bytes > 0);
        let completed = metric(
            &server,
            "mlink_aggregator_rounds_completed_total{link=\"synthetic->target\"}",
        )
        .await;
        assert_eq!(completed, 2.0);
        let accepted = metric(
            &server,
            "mlink_aggregator_updates_accepted_total{link=\"synthetic->target\"}",
        )
        .await;
        assert_eq!(accepted, 6.0);
        let round_bytes = metric(
            &server,
            "mlink_aggregator_round_received_bytes{link=\"synthetic->target\"}",
        )
        .await;
        assert_eq!(round_bytes as u64, last.received_bytes);

        // The persisted file holds the same round and weights.
        server.stop().await.unwrap();
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&setup.state_path).unwrap()).unwrap();
        assert_eq!(file["format"], "mlink-aggregator-state");
        assert_eq!(file["format_version"], 2);
        assert_eq!(file["content"]["links"][0]["round"], 2);
    })
    .await
    .unwrap();
}

/// Bytes on the wire for one round of a vec2vec 80-160-80 link (25,840 parameters): measured
/// at the client's socket, HTTP headers included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_bytes_of_a_vec2vec_round() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let spec = vec2vec_spec();
        let n = spec.num_params();
        assert_eq!(n, 80 * 160 + 160 + 160 * 80 + 80);
        let init: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin() * 0.1).collect();
        let setup = Setup::new(dir.path(), 1, spec, init);
        let server = setup.start().await;
        let c = client(&server, 0);

        let before = c.wire_bytes();
        let g = c.pull("centernet->movenet").await.unwrap();
        let after_pull = c.wire_bytes();
        let delta: Vec<f32> = g.params.0.iter().map(|v| -0.01 * v).collect();
        let acc = c.push_for(&g, &LocalUpdate { delta, n_samples: Some(32) }).await.unwrap();
        assert!(acc.round_closed, "a single edge completes its round");
        let after_push = c.wire_bytes();

        let raw = (n * 4) as u64;
        let pull_down = after_pull.received - before.received;
        let push_up = after_push.sent - after_pull.sent;
        let per_edge = (after_push.sent - before.sent) + (after_push.received - before.received);
        eprintln!(
            "vec2vec 80-160-80: {n} params, {raw} raw bytes; pull {pull_down} B down ({} B up), push {push_up} B up ({} B down); {per_edge} B per edge per round",
            after_pull.sent - before.sent,
            after_push.received - after_pull.received
        );
        // base64 of f32le is 4/3 of the raw size; headers and JSON framing add well under 1 KB.
        let encoded = raw.div_ceil(3) * 4;
        assert!(pull_down >= encoded && pull_down < encoded + 2048, "pull {pull_down} vs encoded {encoded}");
        assert!(push_up >= encoded && push_up < encoded + 2048, "push {push_up} vs encoded {encoded}");
        server.stop().await.unwrap();
    })
    .await
    .unwrap();
}
