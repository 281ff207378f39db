//! An edge that disappears mid-round cannot block aggregation: the round closes at its
//! deadline with the updates it has, when they reach the quorum.

mod aggregate_support;

use aggregate_support::*;
use mlink::adapt::aggregate::ClosedBy;
use std::time::Duration;

const LINK: &str = "synthetic->target";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_edge_does_not_block_the_round() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut setup = Setup::new(dir.path(), 3, linear_spec(2), vec![0.0, 0.0]);
        setup.deadline = Duration::from_millis(300);
        setup.quorum = 2;
        let server = setup.start().await;

        // Edge 2 pulls the link, then is killed before it uploads.
        let silent = client(&server, 2);
        let g = silent.pull(LINK).await.unwrap();
        assert_eq!(g.round, 0);
        drop(silent);

        client(&server, 0)
            .push(LINK, 0, &[1.0, 2.0], None)
            .await
            .unwrap();
        let acc = client(&server, 1)
            .push(LINK, 0, &[3.0, 4.0], None)
            .await
            .unwrap();
        assert!(
            !acc.round_closed,
            "two of three edges do not complete a round early"
        );

        let g = client(&server, 0)
            .wait_for_round(LINK, 1, Duration::from_millis(20), Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(
            g.params.0,
            vec![2.0, 3.0],
            "mean of the two updates that arrived"
        );
        let last = state(&server).await.links[0].last_round.clone().unwrap();
        assert_eq!(last.closed_by, ClosedBy::Deadline);
        assert_eq!(last.edges, vec![edge_id(0), edge_id(1)]);

        // The next round goes on without the silent edge as well.
        client(&server, 0)
            .push(LINK, 1, &[1.0, 1.0], None)
            .await
            .unwrap();
        client(&server, 1)
            .push(LINK, 1, &[-1.0, 1.0], None)
            .await
            .unwrap();
        let g = client(&server, 1)
            .wait_for_round(LINK, 2, Duration::from_millis(20), Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(g.params.0, vec![2.0, 4.0]);
        server.stop().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_the_round_is_extended_and_keeps_its_updates() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut setup = Setup::new(dir.path(), 3, linear_spec(2), vec![0.0, 0.0]);
        setup.deadline = Duration::from_millis(100);
        setup.quorum = 2;
        let server = setup.start().await;
        client(&server, 0)
            .push(LINK, 0, &[4.0, 4.0], None)
            .await
            .unwrap();

        // Wait until at least two deadlines have passed (observed, not timed).
        let series = "mlink_aggregator_round_extensions_total{link=\"synthetic->target\"}";
        while metric(&server, series).await < 2.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let view = state(&server).await;
        assert_eq!(
            view.links[0].round, 0,
            "a round without quorum must not close"
        );
        assert_eq!(view.links[0].pending_edges, vec![edge_id(0)]);

        client(&server, 1)
            .push(LINK, 0, &[2.0, 0.0], None)
            .await
            .unwrap();
        let g = client(&server, 0)
            .wait_for_round(LINK, 1, Duration::from_millis(20), Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(g.params.0, vec![3.0, 2.0]);
        let last = state(&server).await.links[0].last_round.clone().unwrap();
        assert!(last.extensions >= 2);
        server.stop().await.unwrap();
    })
    .await
    .unwrap();
}
