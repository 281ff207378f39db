//! Shared set-up of the aggregation tests: real servers on 127.0.0.1 ephemeral ports, real
//! clients, and a raw HTTP helper for requests the client refuses to build.
#![allow(dead_code)]

use mlink::adapt::aggregate::{
    AggregatorClient, AggregatorConfig, AggregatorServer, EdgeTokens, LinkInit, LinkSpec,
    RoundPolicy, RunningAggregator, StateView, TensorShape, Token,
};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every test is bounded: a hung server or client fails the test instead of blocking it.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);

pub fn edge_token(i: usize) -> String {
    format!("token-of-edge-{i}-0123456789abcdef")
}

pub fn edge_id(i: usize) -> String {
    format!("edge-{i}")
}

pub fn tokens(n: usize) -> EdgeTokens {
    EdgeTokens::from_pairs((0..n).map(|i| (edge_id(i), Token::new(edge_token(i))))).unwrap()
}

pub fn linear_spec(d: usize) -> LinkSpec {
    LinkSpec::new(
        "synthetic->target",
        format!("linear d={d}"),
        vec![TensorShape::new("w", &[d])],
    )
}

/// The vec2vec link 80-160-80 of the paper's action classification setting.
pub fn vec2vec_spec() -> LinkSpec {
    LinkSpec::new(
        "centernet->movenet",
        "vec2vec 80-160-80 relu",
        vec![
            TensorShape::new("fc1.weight", &[160, 80]),
            TensorShape::new("fc1.bias", &[160]),
            TensorShape::new("fc2.weight", &[80, 160]),
            TensorShape::new("fc2.bias", &[80]),
        ],
    )
}

pub struct Setup {
    pub state_path: PathBuf,
    pub edges: usize,
    pub deadline: Duration,
    pub quorum: usize,
    pub init: LinkInit,
    pub max_body_bytes: Option<usize>,
}

impl Setup {
    pub fn new(dir: &Path, edges: usize, spec: LinkSpec, params: Vec<f32>) -> Self {
        Self {
            state_path: dir.join("aggregator-state.json"),
            edges,
            deadline: Duration::from_secs(60),
            quorum: 1,
            init: LinkInit::new(spec, params).unwrap(),
            max_body_bytes: None,
        }
    }

    pub async fn start(&self) -> RunningAggregator {
        let config = AggregatorConfig {
            state_path: self.state_path.clone(),
            tokens: tokens(self.edges),
            links: vec![self.init.clone()],
            policy: RoundPolicy {
                deadline: self.deadline,
                quorum: self.quorum,
                server_lr: 1.0,
            },
            max_body_bytes: self.max_body_bytes,
        };
        AggregatorServer::open(config)
            .unwrap()
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
    }
}

pub fn client(server: &RunningAggregator, i: usize) -> AggregatorClient {
    AggregatorClient::new(&server.url(), edge_id(i), Token::new(edge_token(i)))
        .unwrap()
        .with_timeout(Duration::from_secs(20))
}

pub async fn state(server: &RunningAggregator) -> StateView {
    client(server, 0).state().await.unwrap()
}

/// Sends one HTTP/1.1 request by hand (blocking socket on a blocking thread) and returns the
/// status and body.
pub async fn raw_request(
    server: &RunningAggregator,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let addr = server.addr;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    let body = body.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        // The server may answer (413) and close before reading a large body: ignore write errors.
        let _ = s.write_all(&body);
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let end = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("HTTP response head");
        let head = String::from_utf8_lossy(&resp[..end]).to_string();
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, resp[end + 4..].to_vec())
    })
    .await
    .unwrap()
}

/// Reads a metric sample (`name{labels} value`) from the server's `/metrics`.
pub async fn metric(server: &RunningAggregator, series: &str) -> f64 {
    let (status, body) = raw_request(server, "GET", "/metrics", None, b"").await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}
