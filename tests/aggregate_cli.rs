//! `mlink aggregate` as a process: serves a link from an initialization file, aggregates a
//! round from a real client, and refuses bad arguments with a clear error.

mod aggregate_support;

use aggregate_support::*;
use mlink::adapt::aggregate::{AggregatorClient, LinkInit, Token};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregate_command_serves_rounds_and_persists_them() {
    let dir = tempfile::tempdir().unwrap();
    let link_file = dir.path().join("link.json");
    LinkInit::new(linear_spec(2), vec![1.0, 1.0])
        .unwrap()
        .save(&link_file)
        .unwrap();
    let tokens_file = dir.path().join("tokens");
    std::fs::write(
        &tokens_file,
        format!(
            "{} {}\n{} {}\n",
            edge_id(0),
            edge_token(0),
            edge_id(1),
            edge_token(1)
        ),
    )
    .unwrap();
    let state_file = dir.path().join("state.json");

    let mut child = Command::new(env!("CARGO_BIN_EXE_mlink"))
        .args(["aggregate", "--listen", "127.0.0.1:0", "--quorum", "2"])
        .arg("--state")
        .arg(&state_file)
        .arg("--tokens")
        .arg(&tokens_file)
        .arg("--link")
        .arg(&link_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();

    let result = tokio::time::timeout(TEST_LIMIT, async {
        for (i, d) in [[1.0f32, 0.0], [3.0, 2.0]].iter().enumerate() {
            let c = AggregatorClient::new(&url, edge_id(i), Token::new(edge_token(i))).unwrap();
            c.push("synthetic->target", 0, d, None).await.unwrap();
        }
        let c = AggregatorClient::new(&url, edge_id(0), Token::new(edge_token(0))).unwrap();
        c.pull("synthetic->target").await.unwrap()
    })
    .await;
    child.kill().unwrap();
    let stderr = {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut s).unwrap();
        s
    };
    child.wait().unwrap();
    let g = result.unwrap();
    assert_eq!((g.round, g.params.0.clone()), (1, vec![3.0, 2.0]));
    assert!(
        !stderr.contains(&edge_token(0)) && !stderr.contains(&edge_token(1)),
        "tokens in the log: {stderr}"
    );
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(file["content"]["links"][0]["round"], 1);
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let tokens_file = dir.path().join("tokens");
    std::fs::write(&tokens_file, format!("{} {}\n", edge_id(0), edge_token(0))).unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mlink"))
            .args(["aggregate", "--listen", "127.0.0.1:0"])
            .arg("--state")
            .arg(dir.path().join("state.json"))
            .arg("--tokens")
            .arg(&tokens_file)
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&[]).contains("no link initialization file"));
    assert!(run(&["--quorum", "2"]).contains("--quorum 2"));
    assert!(run(&["--link", "/nonexistent/link.json"]).contains("/nonexistent/link.json"));
}
