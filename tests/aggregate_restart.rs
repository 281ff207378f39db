//! The server persists its state after every round and resumes from it after a restart.

mod aggregate_support;

use aggregate_support::*;
use mlink::adapt::aggregate::{
    AggregatorConfig, AggregatorServer, ErrorCode, LinkInit, RoundPolicy,
};
use std::time::Duration;

const LINK: &str = "synthetic->target";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_resumes_from_its_persisted_round() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup::new(dir.path(), 2, linear_spec(3), vec![1.0, 2.0, 3.0]);
        let server = setup.start().await;
        for round in 0..3u64 {
            for i in 0..2 {
                let d = [0.5 * (i as f32 + 1.0), -(round as f32), 0.25];
                client(&server, i)
                    .push(LINK, round, &d, None)
                    .await
                    .unwrap();
            }
        }
        // A pending update of the open round (3) is not persisted.
        client(&server, 0)
            .push(LINK, 3, &[9.0, 9.0, 9.0], None)
            .await
            .unwrap();
        let before = client(&server, 0).pull(LINK).await.unwrap();
        assert_eq!(before.round, 3);
        let view_before = state(&server).await;
        server.stop().await.unwrap();

        // A new server on the same state file, with the same link initialization (ignored
        // because the file already holds the link).
        let server = setup.start().await;
        let after = client(&server, 1).pull(LINK).await.unwrap();
        assert_eq!(after.round, 3);
        assert_eq!(
            after.params, before.params,
            "weights survive the restart bit for bit"
        );
        let view = state(&server).await;
        assert_eq!(
            view.links[0].params_sha256,
            view_before.links[0].params_sha256
        );
        assert_eq!(view.links[0].last_round, view_before.links[0].last_round);
        assert!(
            view.links[0].pending_edges.is_empty(),
            "the unfinished round restarts empty"
        );

        // Stale rounds are still refused, and the resumed round completes normally.
        let e = client(&server, 0)
            .push(LINK, 2, &[0.0; 3], None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::StaleRound));
        client(&server, 0)
            .push(LINK, 3, &[1.0, 1.0, 1.0], None)
            .await
            .unwrap();
        let acc = client(&server, 1)
            .push(LINK, 3, &[3.0, 1.0, -1.0], None)
            .await
            .unwrap();
        assert!(acc.round_closed);
        let g = client(&server, 0).pull(LINK).await.unwrap();
        assert_eq!(g.round, 4);
        let want: Vec<f32> = before
            .params
            .0
            .iter()
            .zip([2.0, 1.0, 0.0])
            .map(|(p, d)| p + d)
            .collect();
        assert_eq!(g.params.0, want);
        server.stop().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_mismatched_state_files_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path(), 2, linear_spec(3), vec![1.0, 2.0, 3.0]);
    let config = |links: Vec<LinkInit>| AggregatorConfig {
        state_path: setup.state_path.clone(),
        tokens: tokens(2),
        links,
        policy: RoundPolicy {
            deadline: Duration::from_secs(5),
            quorum: 1,
            server_lr: 1.0,
        },
        max_body_bytes: None,
    };
    drop(AggregatorServer::open(config(vec![setup.init.clone()])).unwrap());

    let other = LinkInit::new(linear_spec(4), vec![0.0; 4]).unwrap();
    let err = AggregatorServer::open(config(vec![other]))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("another spec"), "{err}");

    let text = std::fs::read_to_string(&setup.state_path).unwrap();
    std::fs::write(
        &setup.state_path,
        text.replace("\"round\": 0", "\"round\": \"zero\""),
    )
    .unwrap();
    let err = AggregatorServer::open(config(vec![]))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("aggregator state file") && err.contains("checksum mismatch"),
        "{err}"
    );

    std::fs::write(
        &setup.state_path,
        text.replace("\"format_version\": 2", "\"format_version\": 7"),
    )
    .unwrap();
    let err = AggregatorServer::open(config(vec![]))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("version 7"), "{err}");
}
