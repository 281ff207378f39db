//! Every malformed or unauthenticated request is refused with a status and a JSON error body,
//! and leaves the server's state (weights, round, accepted updates, persisted file) untouched.

mod aggregate_support;

use aggregate_support::*;
use mlink::adapt::aggregate::{
    ClientError, ErrorBody, ErrorCode, LocalUpdate, PROTOCOL_VERSION, ParamVec, UpdateRequest,
};

const LINK: &str = "synthetic->target";
const UPDATES: &str = "/v1/links/synthetic-%3Etarget/updates";

/// What is sent, where, with which token, and the expected status and error code.
type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16, ErrorCode);

fn body(edge: usize, round: u64, delta: Vec<f32>, n: Option<u64>) -> Vec<u8> {
    serde_json::to_vec(&UpdateRequest {
        version: PROTOCOL_VERSION,
        edge_id: edge_id(edge),
        fingerprint: None,
        round,
        n_samples: n,
        delta: ParamVec(delta),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut setup = Setup::new(dir.path(), 3, linear_spec(3), vec![0.5, 0.25, -1.0]);
        setup.max_body_bytes = Some(64 * 1024);
        let server = setup.start().await;

        // Advance to round 1 so that stale (0) and future (2) rounds both exist, then let edge 0
        // upload in round 1 so a duplicate and the pending set can be checked.
        for i in 0..3 {
            client(&server, i)
                .push(LINK, 0, &[0.1, 0.1, 0.1], None)
                .await
                .unwrap();
        }
        client(&server, 0)
            .push(LINK, 1, &[1.0, 2.0, 3.0], Some(5))
            .await
            .unwrap();

        let view_before = state(&server).await;
        assert_eq!(view_before.links[0].round, 1);
        assert_eq!(view_before.links[0].pending_edges, vec![edge_id(0)]);
        let file_before = std::fs::read(&setup.state_path).unwrap();
        let weights_before = client(&server, 1).pull(LINK).await.unwrap().params;

        let good = body(1, 1, vec![1.0, 1.0, 1.0], None);
        let tok1 = edge_token(1);
        let tok0 = edge_token(0);
        let mut nan = body(1, 1, vec![0.0; 3], None);
        let nan_b64 = ParamVec(vec![0.0, f32::NAN, 0.0]).encode();
        let zeros_b64 = ParamVec(vec![0.0; 3]).encode();
        nan = String::from_utf8(nan)
            .unwrap()
            .replace(&zeros_b64, &nan_b64)
            .into_bytes();
        let inf = String::from_utf8(body(1, 1, vec![0.0; 3], None))
            .unwrap()
            .replace(
                &zeros_b64,
                &ParamVec(vec![f32::NEG_INFINITY, 0.0, 0.0]).encode(),
            )
            .into_bytes();
        let wrong_fp = String::from_utf8(good.clone())
            .unwrap()
            .replacen('{', "{\"fingerprint\":\"0000\",", 1)
            .into_bytes();
        let future_version = String::from_utf8(good.clone())
            .unwrap()
            .replace(&format!("\"version\":{PROTOCOL_VERSION}"), "\"version\":99")
            .into_bytes();
        let oversized = vec![b' '; 200 * 1024];

        let cases: Vec<Case> = vec![
            (
                "no token",
                UPDATES,
                None,
                good.clone(),
                401,
                ErrorCode::Unauthenticated,
            ),
            (
                "unknown token",
                UPDATES,
                Some("not-a-known-token-at-all"),
                good.clone(),
                401,
                ErrorCode::Unauthenticated,
            ),
            (
                "another edge's id",
                UPDATES,
                Some(&tok1),
                body(2, 1, vec![1.0; 3], None),
                403,
                ErrorCode::EdgeMismatch,
            ),
            (
                "unknown link",
                "/v1/links/nope/updates",
                Some(&tok1),
                good.clone(),
                404,
                ErrorCode::UnknownLink,
            ),
            (
                "short update",
                UPDATES,
                Some(&tok1),
                body(1, 1, vec![1.0; 2], None),
                422,
                ErrorCode::ShapeMismatch,
            ),
            (
                "long update",
                UPDATES,
                Some(&tok1),
                body(1, 1, vec![1.0; 4], None),
                422,
                ErrorCode::ShapeMismatch,
            ),
            ("NaN", UPDATES, Some(&tok1), nan, 422, ErrorCode::NonFinite),
            (
                "infinity",
                UPDATES,
                Some(&tok1),
                inf,
                422,
                ErrorCode::NonFinite,
            ),
            (
                "zero samples",
                UPDATES,
                Some(&tok1),
                body(1, 1, vec![1.0; 3], Some(0)),
                422,
                ErrorCode::InvalidSampleCount,
            ),
            (
                "wrong fingerprint",
                UPDATES,
                Some(&tok1),
                wrong_fp,
                422,
                ErrorCode::FingerprintMismatch,
            ),
            (
                "stale round",
                UPDATES,
                Some(&tok1),
                body(1, 0, vec![1.0; 3], None),
                409,
                ErrorCode::StaleRound,
            ),
            (
                "future round",
                UPDATES,
                Some(&tok1),
                body(1, 2, vec![1.0; 3], None),
                409,
                ErrorCode::FutureRound,
            ),
            (
                "duplicate",
                UPDATES,
                Some(&tok0),
                body(0, 1, vec![1.0; 3], None),
                409,
                ErrorCode::DuplicateUpdate,
            ),
            (
                "not JSON",
                UPDATES,
                Some(&tok1),
                b"{\"version\":1,".to_vec(),
                400,
                ErrorCode::Malformed,
            ),
            (
                "bad base64",
                UPDATES,
                Some(&tok1),
                good_with_delta(&good, "@@@@"),
                400,
                ErrorCode::Malformed,
            ),
            (
                "unknown field",
                UPDATES,
                Some(&tok1),
                String::from_utf8(good.clone())
                    .unwrap()
                    .replacen('{', "{\"extra\":1,", 1)
                    .into_bytes(),
                400,
                ErrorCode::Malformed,
            ),
            (
                "other version",
                UPDATES,
                Some(&tok1),
                future_version,
                400,
                ErrorCode::UnsupportedVersion,
            ),
            (
                "oversized",
                UPDATES,
                Some(&tok1),
                oversized,
                413,
                ErrorCode::BodyTooLarge,
            ),
            (
                "state without token",
                "/v1/state",
                None,
                Vec::new(),
                401,
                ErrorCode::Unauthenticated,
            ),
        ];
        let n_cases = cases.len();
        for (what, path, token, payload, status, code) in cases {
            let method = if path == "/v1/state" { "GET" } else { "POST" };
            let (got, resp) = raw_request(&server, method, path, token, &payload).await;
            assert_eq!(got, status, "{what}: {}", String::from_utf8_lossy(&resp));
            let err: ErrorBody =
                serde_json::from_slice(&resp).unwrap_or_else(|e| panic!("{what}: error body {e}"));
            assert_eq!(err.error, code, "{what}: {}", err.message);
            assert_eq!(err.version, PROTOCOL_VERSION);
            assert!(!err.message.is_empty());
            if let Some(t) = token {
                assert!(
                    !err.message.contains(t),
                    "{what}: the error echoes the token"
                );
            }
        }

        // The client refuses to send non-finite values at all.
        let g = client(&server, 1).pull(LINK).await.unwrap();
        let e = client(&server, 1)
            .push_for(
                &g,
                &LocalUpdate {
                    delta: vec![0.0, f32::NAN, 0.0],
                    n_samples: None,
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::NonFinite { index: 1 }), "{e}");
        // And a refused push surfaces the server's code.
        let e = client(&server, 1)
            .push(LINK, 0, &[0.0; 3], None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::StaleRound), "{e}");

        assert_eq!(
            state(&server).await,
            view_before,
            "a refused request changed the state"
        );
        assert_eq!(
            client(&server, 2).pull(LINK).await.unwrap().params,
            weights_before
        );
        assert_eq!(
            std::fs::read(&setup.state_path).unwrap(),
            file_before,
            "the persisted state changed"
        );
        let mut rejected = 0.0;
        for code in ErrorCode::ALL {
            rejected += metric(
                &server,
                &format!(
                    "mlink_aggregator_updates_rejected_total{{reason=\"{}\"}}",
                    code.as_str()
                ),
            )
            .await;
        }
        assert_eq!(
            rejected as usize,
            n_cases + 1,
            "every refusal is counted by reason"
        );
        assert_eq!(
            metric(
                &server,
                "mlink_aggregator_updates_rejected_total{reason=\"non_finite\"}"
            )
            .await,
            2.0
        );

        // The round still works afterwards: the edges that were refused can upload once.
        client(&server, 1)
            .push(LINK, 1, &[1.0, 1.0, 1.0], None)
            .await
            .unwrap();
        let acc = client(&server, 2)
            .push(LINK, 1, &[1.0, 1.0, 1.0], None)
            .await
            .unwrap();
        assert!(acc.round_closed);
        server.stop().await.unwrap();
    })
    .await
    .unwrap();
}

fn good_with_delta(good: &[u8], delta: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(good).unwrap();
    v["delta"] = serde_json::Value::String(delta.into());
    serde_json::to_vec(&v).unwrap()
}
