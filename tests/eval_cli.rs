//! `mlink eval` as a user runs it: the binary on a small synthetic trace written here, its
//! report files, and its determinism.

use mlink::link::trace::{TraceHeader, TraceModel, TraceRecord, TraceWriter};
use mlink::output::{OutputSpec, OutputValue, TaskKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::Command;

/// A trace of `n` frames at 1 fps with three count models: `a` sees the scene, `b` sees it
/// plus one, `c` sees it within one person most of the time. Frame features move when the scene
/// changes.
fn write_trace(path: &Path, n: usize) {
    let ids = ["a", "b", "c"];
    let header = TraceHeader {
        models: ids
            .iter()
            .enumerate()
            .map(|(i, id)| TraceModel {
                id: id.to_string(),
                spec: OutputSpec::vector(1, TaskKind::Count),
                memory_mb: Some(10.0 * (i + 1) as f64),
                latency_ms: Some(5.0 * (i + 1) as f64),
                crops_from: None,
                view: vec![],
            })
            .collect(),
        frame_feature_names: ["pixel", "area", "edge", "corner"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        source: "synthetic".into(),
        thumbnail: None,
    };
    let mut w = TraceWriter::create(path, &header).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let mut scene = 3u32;
    for t in 0..n {
        let changed = t > 0 && rng.random_bool(0.3);
        if changed {
            scene = rng.random_range(0..7);
        }
        let moved = if changed { 0.1 } else { 0.0 } + rng.random_range(0.0..0.01f32);
        let c = scene as f32 + if rng.random_bool(0.2) { 1.0 } else { 0.0 };
        let outputs = [scene as f32, scene as f32 + 1.0, c]
            .into_iter()
            .map(|v| Some(OutputValue::Vector(vec![v])))
            .collect();
        w.append(&TraceRecord {
            camera: "cam".into(),
            seq: t as u64,
            time_s: t as f64,
            outputs,
            views: vec![],
            frame_features: vec![moved; 4],
            thumbnail: None,
        })
        .unwrap();
    }
    w.finish().unwrap();
}

fn eval(trace: &Path, report: &Path, seed: u64, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mlink"))
        .arg("eval")
        .arg(trace)
        .args(["--period-frames", "100", "--profile-fraction", "0.05"])
        .args(["--budget-mb", "15", "--budget-mb", "35"])
        .args(["--seed", &seed.to_string()])
        .arg("--report")
        .arg(report)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mlink eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const METHODS: [&str; 6] = ["Standalone", "DRLS", "Reducto", "MLink", "Gain", "Optimal"];

#[test]
fn eval_writes_the_report_files_and_the_same_seed_gives_the_same_json() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    write_trace(&trace, 500);
    let r1 = dir.path().join("r1");
    let r2 = dir.path().join("r2");
    let table = eval(&trace, &r1, 3, &[]);
    eval(&trace, &r2, 3, &[]);

    for m in METHODS {
        assert!(table.contains(m), "{m} missing from the table:\n{table}");
    }
    assert!(table.contains("budget 15 MB") && table.contains("budget 35 MB"));

    let md = std::fs::read_to_string(r1.join("report.md")).unwrap();
    for m in METHODS {
        assert!(
            md.contains(&format!("| {m} |")),
            "{m} missing from report.md"
        );
    }
    for section in ["Table V analog", "Table III analog", "Table II analog"] {
        assert!(md.contains(section), "{section} missing from report.md");
    }
    for svg in ["accuracy_vs_budget.svg", "accuracy_vs_time.svg"] {
        let s = std::fs::read_to_string(r1.join(svg)).unwrap();
        assert!(s.starts_with("<svg"), "{svg} is not an SVG document");
        assert!(
            s.contains("MLink") && s.contains("Reducto"),
            "{svg} lacks a legend"
        );
        assert!(md.contains(svg), "report.md does not embed {svg}");
    }

    let j1 = std::fs::read(r1.join("report.json")).unwrap();
    let j2 = std::fs::read(r2.join("report.json")).unwrap();
    assert_eq!(j1, j2, "the same trace and seed gave different reports");
    let v: serde_json::Value = serde_json::from_slice(&j1).unwrap();
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["budgets"].as_array().unwrap().len(), 2);
    let names: Vec<&str> = v["budgets"][0]["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "standalone",
            "drls",
            "reducto",
            "reducto_fair",
            "mlink",
            "gain",
            "hybrid",
            "optimal"
        ],
        "methods in report.json (no MTL: the trace holds no thumbnails)"
    );
    // 15 MB holds `a` alone: Standalone scores one model of three.
    let standalone = &v["budgets"][0]["methods"][0];
    assert!((standalone["accuracy"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
}

#[test]
fn eval_keeps_only_the_models_asked_for_and_rejects_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    write_trace(&trace, 300);
    let r = dir.path().join("r");
    eval(&trace, &r, 0, &["--models", "a,c"]);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.join("report.json")).unwrap()).unwrap();
    let ids: Vec<&str> = v["trace"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "c"]);
    assert_eq!(v["links"]["models"].as_array().unwrap().len(), 2);

    let out = Command::new(env!("CARGO_BIN_EXE_mlink"))
        .arg("eval")
        .arg(&trace)
        .args(["--models", "a,zzz"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`zzz`") && err.contains("a, b, c"),
        "unclear error: {err}"
    );
}

#[test]
fn eval_writes_the_chosen_policys_decisions_and_refuses_other_policies() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    write_trace(&trace, 300);
    let read = |p: &Path| -> Vec<mlink::control::Decision> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let of = |policy: &str| {
        let file = dir.path().join(format!("{policy}.jsonl"));
        let f = file.to_str().unwrap().to_string();
        let report = dir.path().join(format!("r-{policy}"));
        eval(
            &trace,
            &report,
            0,
            &["--decisions", &f, "--decisions-policy", policy],
        );
        read(&file)
    };
    let mlink = of("mlink");
    let hybrid = of("hybrid");
    assert!(!mlink.is_empty() && !hybrid.is_empty());
    // Only the hybrid's selections carry a plan, one mode per model.
    assert!(mlink.iter().all(|d| d.plan.is_none()), "{mlink:?}");
    for d in &hybrid {
        let plan = d
            .plan
            .as_deref()
            .unwrap_or_else(|| panic!("no plan: {d:?}"));
        for id in ["a ", "b ", "c "] {
            assert!(plan.contains(id), "{plan}");
        }
    }
    // A policy that makes no selections of its own is refused with the choices.
    let out = Command::new(env!("CARGO_BIN_EXE_mlink"))
        .arg("eval")
        .arg(&trace)
        .args(["--decisions", "x.jsonl", "--decisions-policy", "optimal"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not mlink, gain or hybrid"), "{err}");
}

/// `--adapt` on the committed building trace: the policies that run through the controller
/// train the chosen view links again every period (5 periods, 5 runs each), the links they
/// serve then are the retrained ones (MLink's accuracy moves), the rows that keep the links
/// as trained do not move, and the paper's links are refused.
#[test]
fn eval_adapt_trains_the_view_links_again_every_period_for_the_controller_policies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let trace = root.join("traces/building.trace");
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mlink"))
            .arg("eval")
            .arg(&trace)
            .args(["--budget-mb", "25.3", "--seeds", "1"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let row = |text: &str, method: &str| -> String {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{method} ")))
            .unwrap_or_else(|| panic!("no {method} row in {text}"))
            .to_string()
    };
    let accuracy = |line: &str| -> f64 { line.split_whitespace().nth(1).unwrap().parse().unwrap() };
    let (ok, fixed, err) = run(&[]);
    assert!(ok, "{err}");
    let (ok, adapted, err) = run(&["--adapt"]);
    assert!(ok, "{err}");
    for method in ["MLink", "Gain", "Hybrid"] {
        assert!(
            row(&adapted, method).contains("(links trained again 5x)"),
            "{}",
            row(&adapted, method)
        );
        assert!(!row(&fixed, method).contains("trained again"));
    }
    assert_ne!(
        accuracy(&row(&adapted, "MLink")),
        accuracy(&row(&fixed, "MLink")),
        "the retrained links did not serve"
    );
    for method in ["Standalone", "Optimal"] {
        assert_eq!(row(&adapted, method), row(&fixed, method));
    }
    let (ok, _, err) = run(&["--adapt", "--links", "paper"]);
    assert!(!ok);
    assert!(err.contains("--links paper"), "{err}");
}
