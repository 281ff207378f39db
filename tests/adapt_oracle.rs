//! Oracle links (paper section 4.2): a model whose counts are systematically one too high is
//! corrected by a link to the ground truth; label files and oracle link files are checked.

mod adapt_support;

use adapt_support::*;
use mlink::adapt::labels::Labels;
use mlink::adapt::oracle::{OracleError, OracleLink, match_labels};
use mlink::link::TrainParams;
use mlink::link::trace::read_all;
use mlink::output::{OutputSpec, OutputValue, TaskKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// A trace of 200 frames on two cameras where the counter reports `truth + 1`, and the true
/// counts as a CSV labels file. The classifier runs on every other frame only.
fn biased_counter(dir: &Path) -> (PathBuf, PathBuf, Vec<f32>) {
    let mut rng = StdRng::seed_from_u64(7);
    let mut records = Vec::new();
    let mut csv = String::from("camera,seq,label\n");
    let mut truths = Vec::new();
    for n in 0..200u64 {
        let cam = if n % 2 == 0 { "lobby" } else { "gate" };
        let truth = rng.random_range(0..8) as f32;
        let cls = (n % 2 == 0).then(|| vec![0.7, 0.3]);
        records.push(record(cam, n, vec![Some(vec![truth + 1.0]), cls]));
        csv += &format!("{cam},{n},{truth}\n");
        truths.push(truth);
    }
    let trace = dir.join("site.mltrace");
    write_trace(
        &trace,
        vec![
            model("people", OutputSpec::vector(1, TaskKind::Count)),
            model("crowded", OutputSpec::vector(2, TaskKind::SingleLabel)),
        ],
        &records,
    );
    let labels = dir.join("truth.csv");
    std::fs::write(&labels, csv).unwrap();
    (trace, labels, truths)
}

fn params() -> TrainParams {
    TrainParams {
        epochs: 200,
        batch_size: 32,
        learning_rate: 0.01,
        hidden_factor: 2,
        dropout: 0.0,
        seed: 3,
    }
}

#[test]
fn an_oracle_link_fixes_counts_that_are_always_one_too_high() {
    let dir = tempfile::tempdir().unwrap();
    let (trace, labels, _) = biased_counter(dir.path());
    let (header, records) = read_all(&trace).unwrap();
    let labels = Labels::load(&labels).unwrap();
    let frames = match_labels(&header, &records, "people", &labels, None, None).unwrap();
    assert_eq!(frames.spec, OutputSpec::vector(1, TaskKind::Count));
    let link = OracleLink::train(&frames, &params(), 0.3).unwrap();
    let r = link.report.clone().unwrap();
    eprintln!("{r:?}");
    assert_eq!((r.train_samples, r.holdout_samples), (140, 60));
    assert_eq!(
        r.raw_holdout_score,
        Some(0.0),
        "every raw count is off by one"
    );
    assert!(
        r.link_holdout_score >= 0.95,
        "held-out count accuracy {}",
        r.link_holdout_score
    );
    // Serving: link(model(x)).
    let fixed = link.apply(&OutputValue::Vector(vec![5.0])).unwrap();
    let OutputValue::Vector(v) = fixed else {
        panic!()
    };
    assert!((v[0] - 4.0).abs() < 0.5, "5 reported -> {v:?}");
    assert!(matches!(
        link.apply(&OutputValue::Vector(vec![1.0, 2.0])),
        Err(OracleError::Input { .. })
    ));
}

#[test]
fn the_adapt_command_reports_before_and_after_and_writes_a_loadable_link() {
    let dir = tempfile::tempdir().unwrap();
    let (trace, labels, _) = biased_counter(dir.path());
    let out = dir.path().join("people.oracle.json");
    let o = mlink(&[
        "adapt",
        "--model",
        "people",
        "--labels",
        labels.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--seed",
        "3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let before = v["report"]["raw_holdout_score"].as_f64().unwrap();
    let after = v["report"]["link_holdout_score"].as_f64().unwrap();
    eprintln!("before {before}, after {after}");
    assert!(
        before < 0.05 && after > 0.9,
        "before {before}, after {after}"
    );
    let link = OracleLink::load(&out).unwrap();
    assert_eq!(link.source_model, "people");
    let OutputValue::Vector(v) = link.apply(&OutputValue::Vector(vec![3.0])).unwrap() else {
        panic!()
    };
    assert!((v[0] - 2.0).abs() < 0.5, "{v:?}");
}

#[test]
fn bad_labels_are_refused_with_the_line_that_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (trace, _, _) = biased_counter(dir.path());
    let (header, records) = read_all(&trace).unwrap();
    let check = |name: &str, text: &str, model: &str, task: Option<TaskKind>, want: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let err = Labels::load(&path)
            .map_err(OracleError::from)
            .and_then(|l| match_labels(&header, &records, model, &l, task, None))
            .err()
            .unwrap_or_else(|| panic!("{text:?} was accepted"))
            .to_string();
        assert!(err.contains(want), "{text:?}: {err}");
    };
    check(
        "a.csv",
        "camera,seq,label\nlobby,0,1\nnowhere,4,2\n",
        "people",
        None,
        "a.csv:3: unknown frame: the trace has no record for camera \"nowhere\", seq 4",
    );
    check(
        "b.csv",
        "camera,seq,label\nlobby,0,1\ngate,1,1\n",
        "crowded",
        None,
        "b.csv:3: model \"crowded\" did not run on camera \"gate\", seq 1",
    );
    check(
        "c.csv",
        "camera,seq,label\nlobby,0,1\nlobby,2,1\nlobby,4,7\n",
        "crowded",
        None,
        "c.csv:4: class index 7 is not an integer from 0 to 1",
    );
    check(
        "d.jsonl",
        "{\"camera\":\"lobby\",\"seq\":0,\"label\":[1,0,0]}\n",
        "people",
        Some(TaskKind::Localization),
        "localization labels are boxes of 4 values; these have 3",
    );
    check(
        "e.jsonl",
        "{\"camera\":\"lobby\",\"seq\":0,\"label\":1}\n{\"camera\":\"lobby\",\"seq\":2,\"label\":[1,2]}\n",
        "people",
        None,
        "e.jsonl:2: label has 2 values",
    );
    check(
        "f.csv",
        "camera,seq,label\nlobby,0,1\nlobby,0,2\n",
        "people",
        None,
        "f.csv:3: frame (camera \"lobby\", seq 0) is labelled twice (first on line 2)",
    );
    check(
        "g.csv",
        "camera,seq,label\nlobby,0,nan\n",
        "people",
        None,
        "g.csv:2: label value NaN is not finite",
    );
    check(
        "h.csv",
        "camera,seq,label\nlobby,0,1\n",
        "nobody",
        None,
        "the trace has no model \"nobody\"",
    );

    // The command line says the same and fails.
    let o = mlink(&[
        "adapt",
        "--model",
        "people",
        "--labels",
        dir.path().join("a.csv").to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--out",
        dir.path().join("x.json").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("a.csv:3: unknown frame"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("x.json").exists());
}

#[test]
fn oracle_link_files_round_trip_and_damage_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (trace, labels, _) = biased_counter(dir.path());
    let (header, records) = read_all(&trace).unwrap();
    let labels = Labels::load(&labels).unwrap();
    let frames = match_labels(
        &header,
        &records,
        "people",
        &labels,
        Some(TaskKind::Regression),
        None,
    )
    .unwrap();
    let mut p = params();
    p.epochs = 20;
    let link = OracleLink::train(&frames, &p, 0.3).unwrap();
    let path = dir.path().join("o.json");
    link.save(&path).unwrap();
    let back = OracleLink::load(&path).unwrap();
    assert_eq!(back.net.params(), link.net.params());
    assert_eq!(
        (back.spec.clone(), back.report.clone()),
        (link.spec.clone(), link.report.clone())
    );
    for x in [0.0, 2.5, 9.0] {
        let v = OutputValue::Vector(vec![x]);
        assert_eq!(back.apply(&v).unwrap(), link.apply(&v).unwrap());
    }

    let bytes = std::fs::read(&path).unwrap();
    let damaged = |name: &str, data: &[u8], want: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        let e = OracleLink::load(&p)
            .err()
            .unwrap_or_else(|| panic!("{name} loaded"))
            .to_string();
        assert!(e.contains(name) && e.contains(want), "{name}: {e}");
    };
    damaged(
        "truncated.json",
        &bytes[..bytes.len() / 2],
        "not a valid oracle link file",
    );
    damaged("empty.json", b"", "not a valid oracle link file");
    let text = String::from_utf8(bytes.clone()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format_version"], 2);
    // A content edited and its checksum updated, so that the content's own checks are reached.
    let sealed = |content: &serde_json::Value| {
        let c = content.to_string();
        serde_json::json!({
            "format": "mlink-oracle-link",
            "format_version": 2,
            "sha256": mlink::versioned::sha256_hex([c.as_bytes()]),
            "content": content,
        })
        .to_string()
    };
    let resealed = dir.path().join("resealed.json");
    std::fs::write(&resealed, sealed(&v["content"])).unwrap();
    assert_eq!(
        OracleLink::load(&resealed).unwrap().net.params(),
        link.net.params()
    );
    // A version 1 file (no envelope, a checksum of the weights only) is still read.
    let mut v1 = v["content"].clone();
    v1["format"] = "mlink-oracle-link".into();
    v1["format_version"] = 1.into();
    let weights = mlink::adapt::aggregate::ParamVec(link.net.params());
    v1["params_sha256"] = weights.sha256().into();
    let old = dir.path().join("v1.json");
    std::fs::write(&old, v1.to_string()).unwrap();
    assert_eq!(
        OracleLink::load(&old).unwrap().net.params(),
        link.net.params()
    );
    v1["params_sha256"] = "0".repeat(64).into();
    damaged(
        "v1-damaged.json",
        v1.to_string().as_bytes(),
        "checksum mismatch",
    );
    // A weight changed without updating the checksum.
    let mut w = v.clone();
    let params = w["content"]["params"].as_str().unwrap().to_string();
    let flipped = if params.starts_with('A') {
        params.replacen('A', "B", 1)
    } else {
        format!("A{}", &params[1..])
    };
    w["content"]["params"] = flipped.into();
    damaged(
        "flipped.json",
        w.to_string().as_bytes(),
        "checksum mismatch",
    );
    let mut w = v.clone();
    w["format_version"] = 99.into();
    damaged(
        "newer.json",
        w.to_string().as_bytes(),
        "version 99 is newer",
    );
    let mut w = v.clone();
    w["format"] = "mlink-aggregator-link".into();
    damaged(
        "foreign.json",
        w.to_string().as_bytes(),
        "expected \"mlink-oracle-link\"",
    );
    let mut w = v["content"].clone();
    w["hidden_factor"] = 20.into();
    damaged("shape.json", sealed(&w).as_bytes(), "weights");
    let mut w = v["content"].clone();
    w["in_norm"]["std"][0] = 0.0.into();
    damaged("norm.json", sealed(&w).as_bytes(), "std 0");
    let mut w = v["content"].clone();
    w.as_object_mut().unwrap().remove("spec");
    damaged("missing.json", sealed(&w).as_bytes(), "spec");
}
