//! Pipeline files: the shipped ones validate, and malformed ones are rejected with the exact
//! file, line, column, field path and an explanation.

use mlink::config::{self, ConfigError, Pipeline};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A valid pipeline that every malformed case below changes in one place. Line numbers are
/// given in the comments of the cases; keep this text's lines stable.
const BASE: &str = "\
version: 1
cameras:
  - id: cam
    uri: clip.avi
    sampling:
      fps: 2
models:
  - id: det
    path: m.onnx
    adapter: centernet
    head:
      kind: count
      classes: [person]
    cost:
      memory_mb: 50
      latency_ms: 20
  - id: cls
    path: m.onnx
    adapter: efficientnet_lite
    head:
      kind: features
    cost:
      memory_mb: 30
      latency_ms: 10
scheduler:
  budget:
    memory_mb: 100
  period_s: 60
sinks:
  - kind: jsonl
    path: out.jsonl
metrics:
  listen: 127.0.0.1:9464
";

/// A folder holding the files BASE refers to (empty placeholders: validation checks only
/// that they exist) and the pipeline text as `p.yaml`.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.onnx"), b"").unwrap();
        std::fs::write(dir.path().join("clip.avi"), b"").unwrap();
        std::fs::write(dir.path().join("p.yaml"), text).unwrap();
        Case { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("p.yaml")
    }

    fn errors(&self) -> Vec<ConfigError> {
        match config::load_and_validate(&self.file()) {
            Ok(_) => Vec::new(),
            Err(e) => e,
        }
    }
}

/// BASE with `from` replaced by `to` (which must occur exactly once).
fn edit(from: &str, to: &str) -> String {
    assert_eq!(
        BASE.matches(from).count(),
        1,
        "`{from}` must occur once in BASE"
    );
    BASE.replacen(from, to, 1)
}

/// Asserts that `text` gives exactly one error, at `line:column`, on `path`, whose message
/// contains every phrase; returns the rendered error.
#[track_caller]
fn expect_one(text: &str, line: usize, column: usize, path: &str, phrases: &[&str]) -> String {
    let case = Case::new(text);
    let errors = case.errors();
    let rendered: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "expected one error, got {rendered:#?}");
    let e = &errors[0];
    let prefix = format!("{}:{line}:{column}: {path}: ", case.file().display());
    assert!(
        rendered[0].starts_with(&prefix),
        "expected `{prefix}...`, got `{}`",
        rendered[0]
    );
    for p in phrases {
        assert!(e.message.contains(p), "`{}` lacks `{p}`", e.message);
    }
    rendered[0].clone()
}

#[test]
fn base_case_is_valid() {
    let case = Case::new(BASE);
    let p = config::load_and_validate(&case.file()).unwrap();
    assert_eq!(p.models.len(), 2);
    assert_eq!(p.scheduler.budget.memory_mb, Some(100.0));
}

#[test]
fn type_error_names_line_column_path_and_found_value() {
    let msg = expect_one(
        &edit("      memory_mb: 50\n", "      memory_mb: lots\n"),
        15,
        18,
        "models[0].cost.memory_mb",
        &[],
    );
    assert!(
        msg.ends_with(": expected a number, found \"lots\""),
        "{msg}"
    );
}

#[test]
fn unknown_top_level_field_suggests_the_closest() {
    expect_one(
        &edit("sinks:\n", "sink:\n"),
        29,
        1,
        "sink",
        &["unknown field `sink`", "did you mean `sinks`?"],
    );
}

#[test]
fn unknown_field_in_a_declared_cost_suggests_the_closest() {
    expect_one(
        &edit("      memory_mb: 30\n", "      memory_mbb: 30\n"),
        23,
        7,
        "models[1].cost.memory_mbb",
        &["unknown field `memory_mbb`", "did you mean `memory_mb`?"],
    );
}

#[test]
fn unknown_field_in_a_sink_suggests_the_closest() {
    expect_one(
        &edit("    path: out.jsonl\n", "    paht: out.jsonl\n"),
        31,
        5,
        "sinks[0].paht",
        &["unknown field `paht`", "did you mean `path`?"],
    );
}

#[test]
fn missing_required_field_points_at_its_mapping() {
    expect_one(
        &edit("    adapter: efficientnet_lite\n", ""),
        17,
        5,
        "models[1].adapter",
        &["missing required field `adapter`"],
    );
}

#[test]
fn wrong_version_is_rejected() {
    expect_one(
        &edit("version: 1\n", "version: 2\n"),
        1,
        10,
        "version",
        &["unsupported version 2", "version 1"],
    );
}

#[test]
fn duplicate_model_ids_are_rejected() {
    expect_one(
        &edit("  - id: cls\n", "  - id: det\n"),
        17,
        9,
        "models[1].id",
        &["duplicate model id `det`", "models[0]"],
    );
}

#[test]
fn duplicate_camera_ids_are_rejected() {
    let text = edit(
        "      fps: 2\n",
        "      fps: 2\n  - id: cam\n    uri: test:ball\n",
    );
    expect_one(&text, 7, 9, "cameras[1].id", &["duplicate camera id `cam`"]);
}

#[test]
fn missing_model_file_is_reported() {
    let text = edit(
        "    path: m.onnx\n    adapter: efficientnet_lite\n",
        "    path: missing.onnx\n    adapter: efficientnet_lite\n",
    );
    expect_one(
        &text,
        18,
        11,
        "models[1].path",
        &["model file not found", "missing.onnx"],
    );
}

#[test]
fn unsupported_uri_scheme_is_rejected() {
    expect_one(
        &edit("    uri: clip.avi\n", "    uri: http://cam.local/live\n"),
        4,
        10,
        "cameras[0].uri",
        &["unsupported URI scheme `http://`", "rtsp://"],
    );
}

#[test]
fn missing_video_file_and_unknown_test_pattern_are_rejected() {
    expect_one(
        &edit("    uri: clip.avi\n", "    uri: nowhere.avi\n"),
        4,
        10,
        "cameras[0].uri",
        &["nowhere.avi", "existing file"],
    );
    expect_one(
        &edit("    uri: clip.avi\n", "    uri: test:bal\n"),
        4,
        10,
        "cameras[0].uri",
        &["unknown test pattern `bal`", "did you mean `test:ball`?"],
    );
}

#[test]
fn sampling_with_both_fields_is_rejected() {
    expect_one(
        &edit("      fps: 2\n", "      fps: 2\n      every_seconds: 60\n"),
        6,
        7,
        "cameras[0].sampling",
        &["exactly one of `fps` and `every_seconds`"],
    );
}

#[test]
fn budget_below_the_cheapest_model_names_it() {
    expect_one(
        &edit("    memory_mb: 100\n", "    memory_mb: 20\n"),
        27,
        16,
        "scheduler.budget.memory_mb",
        &["smaller than the cheapest model", "`cls`", "30"],
    );
}

#[test]
fn budget_without_any_resource_is_rejected() {
    expect_one(
        &edit("    memory_mb: 100\n", "    {}\n"),
        27,
        5,
        "scheduler.budget",
        &["at least one resource"],
    );
}

#[test]
fn unknown_adapter_suggests_the_closest() {
    expect_one(
        &edit("    adapter: centernet\n", "    adapter: centrenet\n"),
        10,
        14,
        "models[0].adapter",
        &[
            "unknown value `centrenet`",
            "did you mean `centernet`?",
            "`nanodet`",
        ],
    );
}

#[test]
fn unknown_head_kind_suggests_the_closest() {
    expect_one(
        &edit("      kind: count\n", "      kind: cuont\n"),
        12,
        13,
        "models[0].head.kind",
        &["unknown value `cuont`", "did you mean `count`?"],
    );
}

#[test]
fn head_not_allowed_for_the_adapter_is_rejected() {
    expect_one(
        &edit("      kind: features\n", "      kind: count\n"),
        21,
        13,
        "models[1].head.kind",
        &[
            "adapter `efficientnet_lite` cannot produce a `count` head",
            "probs, features, label",
        ],
    );
}

#[test]
fn field_of_another_head_kind_is_rejected_at_its_key() {
    expect_one(
        &edit(
            "      classes: [person]\n",
            "      classes: [person]\n      rows: 2\n",
        ),
        14,
        7,
        "models[0].head.rows",
        &["`rows` is not allowed for head kind `count`"],
    );
}

#[test]
fn unknown_class_suggests_the_closest() {
    expect_one(
        &edit("      classes: [person]\n", "      classes: [persn]\n"),
        13,
        17,
        "models[0].head.classes[0]",
        &["`persn` is not a COCO-80 class", "did you mean `person`?"],
    );
}

#[test]
fn vehicle_group_and_multi_word_classes_are_accepted() {
    let case = Case::new(&edit(
        "      classes: [person]\n",
        "      classes: [vehicle, traffic light]\n",
    ));
    assert!(case.errors().is_empty(), "{:?}", case.errors());
}

#[test]
fn crops_from_an_unknown_model_is_rejected() {
    expect_one(
        &edit(
            "      kind: features\n",
            "      kind: features\n    crops_from: dett\n",
        ),
        22,
        17,
        "models[1].crops_from",
        &["no model has id `dett`", "did you mean `det`?"],
    );
}

#[test]
fn crops_from_a_non_detector_is_rejected() {
    expect_one(
        &edit(
            "      classes: [person]\n",
            "      classes: [person]\n    crops_from: cls\n",
        ),
        14,
        17,
        "models[0].crops_from",
        &["`cls` (efficientnet_lite) is not a detector"],
    );
}

#[test]
fn crops_from_itself_is_rejected() {
    expect_one(
        &edit(
            "      classes: [person]\n",
            "      classes: [person]\n    crops_from: det\n",
        ),
        14,
        17,
        "models[0].crops_from",
        &["its own boxes"],
    );
}

#[test]
fn profiling_ratio_out_of_range_is_rejected() {
    expect_one(
        &edit(
            "  period_s: 60\n",
            "  period_s: 60\n  profiling_ratio: 1.5\n",
        ),
        29,
        20,
        "scheduler.profiling_ratio",
        &["(0, 1]", "1.5"],
    );
}

#[test]
fn max_output_age_must_be_positive_and_may_be_infinite() {
    expect_one(
        &edit(
            "  period_s: 60\n",
            "  period_s: 60\n  max_output_age_s: 0\n",
        ),
        29,
        21,
        "scheduler.max_output_age_s",
        &["more than 0", "found 0"],
    );
    let case = Case::new(&edit(
        "  period_s: 60\n",
        "  period_s: 60\n  max_output_age_s: .inf\n",
    ));
    let p = mlink::config::load_and_validate(&case.file()).expect("`.inf` turns the refresh off");
    assert_eq!(p.scheduler.max_output_age_s, f64::INFINITY);
    let p = mlink::config::load_and_validate(&Case::new(BASE).file()).unwrap();
    assert_eq!(p.scheduler.max_output_age_s, 10.0);
}

#[test]
fn bad_listen_address_is_rejected() {
    expect_one(
        &edit("  listen: 127.0.0.1:9464\n", "  listen: localhost\n"),
        33,
        11,
        "metrics.listen",
        &["`localhost` is not a socket address"],
    );
}

#[test]
fn empty_cameras_are_rejected() {
    let text = edit(
        "cameras:\n  - id: cam\n    uri: clip.avi\n    sampling:\n      fps: 2\n",
        "cameras: []\n",
    );
    expect_one(&text, 2, 10, "cameras", &["at least one camera"]);
}

#[test]
fn uncertainty_policy_needs_its_threshold() {
    let text = edit("sinks:\n", "adaptation:\n  policy: uncertainty\nsinks:\n");
    expect_one(
        &text,
        30,
        3,
        "adaptation.uncertainty_threshold",
        &["policy `uncertainty` needs `uncertainty_threshold`"],
    );
}

#[test]
fn sink_field_of_another_kind_is_rejected() {
    expect_one(
        &edit(
            "    path: out.jsonl\n",
            "    path: out.jsonl\n    host: broker\n",
        ),
        32,
        5,
        "sinks[0].host",
        &[
            "`host` is not allowed for sink kind `jsonl`",
            "`path`, `rotate_mb`",
        ],
    );
}

#[test]
fn yaml_syntax_error_is_located() {
    let case = Case::new(&edit("    uri: clip.avi\n", "    uri: [clip.avi\n"));
    let errors = case.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert!(e.message.starts_with("YAML syntax error"), "{e}");
    assert!(e.line >= 4, "{e}");
    assert!(e.path.is_empty(), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("{}:{}:", case.file().display(), e.line))
    );
}

#[test]
fn a_file_that_is_not_a_mapping_is_rejected() {
    let case = Case::new("- version: 1\n- cameras: []\n");
    let errors = case.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        format!(
            "{}:1:1: expected a mapping, found a list",
            case.file().display()
        )
    );
}

#[test]
fn an_empty_file_is_rejected() {
    let case = Case::new("# nothing yet\n");
    let errors = case.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].message.contains("the file is empty"),
        "{:?}",
        errors[0]
    );
}

#[test]
fn a_missing_file_is_reported_without_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("absent.yaml");
    let errors = config::load_and_validate(&file).unwrap_err();
    assert_eq!(errors.len(), 1);
    let text = errors[0].to_string();
    assert!(
        text.starts_with(&format!(
            "{}: cannot read the pipeline file",
            file.display()
        )),
        "{text}"
    );
}

#[test]
fn every_semantic_error_is_reported_in_file_order() {
    let text = edit("version: 1\n", "version: 3\n")
        .replacen("  listen: 127.0.0.1:9464\n", "  listen: nowhere\n", 1)
        .replacen("      fps: 2\n", "      fps: -1\n", 1);
    let case = Case::new(&text);
    let errors = case.errors();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["version", "cameras[0].sampling.fps", "metrics.listen"],
        "{errors:#?}"
    );
}

#[test]
fn link_bundle_must_exist_and_match_the_models() {
    expect_one(
        &edit("sinks:\n", "links:\n  bundle: links.bundle\nsinks:\n"),
        30,
        11,
        "links.bundle",
        &["link bundle not found", "links.bundle"],
    );

    let case = Case::new(BASE);
    let p: Pipeline = config::load_and_validate(&case.file()).unwrap();
    use mlink::output::{OutputSpec, TaskKind};
    let matching = vec![
        ("det".to_string(), OutputSpec::vector(1, TaskKind::Count)),
        (
            "cls".to_string(),
            OutputSpec::vector(1280, TaskKind::Regression),
        ),
    ];
    assert!(config::validate_with_bundle(&p, &matching).is_empty());
    let wrong = vec![
        ("det".to_string(), OutputSpec::vector(3, TaskKind::Count)),
        ("other".to_string(), OutputSpec::vector(1, TaskKind::Count)),
    ];
    let issues: Vec<String> = config::validate_with_bundle(&p, &wrong)
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(issues.len(), 3, "{issues:#?}");
    assert!(issues[0].starts_with("models[0].head: ") && issues[0].contains("length 1"));
    assert!(issues[1].starts_with("links.bundle: ") && issues[1].contains("`cls`"));
    assert!(issues[2].contains("this pipeline lacks: other"));
}

#[test]
fn relative_paths_resolve_against_the_pipeline_folder() {
    let base = Path::new("/srv/pipelines");
    assert_eq!(
        config::resolve_path(base, "../models/a.onnx"),
        PathBuf::from("/srv/pipelines/../models/a.onnx")
    );
    assert_eq!(
        config::resolve_path(base, "/abs/a.onnx"),
        PathBuf::from("/abs/a.onnx")
    );
}

// --- the shipped pipelines -------------------------------------------------------------

const SHIPPED: [&str; 3] = [
    "pipelines/demo.yaml",
    "pipelines/smart-building.yaml",
    "pipelines/traffic.yaml",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped pipelines name the models and footage that set-up produces: say so plainly
/// when they are absent instead of failing on a validation message.
fn require_setup(file: &Path) {
    let p = config::load(file).unwrap_or_else(|e| panic!("{file:?} does not parse: {e:#?}"));
    let base = config::base_dir(file);
    let mut missing: Vec<PathBuf> = p
        .models
        .iter()
        .map(|m| config::resolve_path(&base, &m.path))
        .filter(|path| !path.is_file())
        .collect();
    missing.extend(
        p.cameras
            .iter()
            .filter(|c| !c.uri.contains(':'))
            .map(|c| config::resolve_path(&base, &c.uri))
            .filter(|path| !path.is_file()),
    );
    assert!(
        missing.is_empty(),
        "run scripts/setup.sh first: it produces the models and footage the shipped pipelines use; missing: {missing:?}"
    );
}

#[test]
fn shipped_pipelines_validate() {
    for f in SHIPPED {
        let file = repo().join(f);
        require_setup(&file);
        if let Err(errors) = config::load_and_validate(&file) {
            let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            panic!("{f} is invalid:\n{}", text.join("\n"));
        }
    }
}

#[test]
fn shipped_pipelines_use_every_adapter() {
    let mut seen = std::collections::HashSet::new();
    for f in SHIPPED {
        let p = config::load(&repo().join(f)).unwrap();
        seen.extend(p.models.iter().map(|m| m.adapter));
    }
    for a in config::AdapterKind::ALL {
        assert!(
            seen.contains(&a),
            "no shipped pipeline uses adapter {}",
            a.name()
        );
    }
}

// --- the command -------------------------------------------------------------------------

#[test]
fn validate_command_exits_0_on_a_shipped_file() {
    let file = repo().join("pipelines/demo.yaml");
    require_setup(&file);
    let out = Command::new(env!("CARGO_BIN_EXE_mlink"))
        .current_dir(repo())
        .args(["validate", "pipelines/demo.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pipelines/demo.yaml: ok\n"
    );
}

#[test]
fn validate_command_exits_1_with_every_message() {
    let case = Case::new(&edit("      memory_mb: 50\n", "      memory_mb: lots\n"));
    let bad2 = case.dir.path().join("q.yaml");
    std::fs::write(&bad2, edit("version: 1\n", "version: 2\n")).unwrap();
    let good = case.dir.path().join("ok.yaml");
    std::fs::write(&good, BASE).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mlink"))
        .arg("validate")
        .arg(case.file())
        .arg(&bad2)
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:15:18: models[0].cost.memory_mb: expected a number, found \"lots\"",
            case.file().display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}:1:10: version: unsupported version 2",
            bad2.display()
        )),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, format!("{}: ok\n", good.display()));
}

#[test]
fn validate_command_prints_the_schema() {
    let out = Command::new(env!("CARGO_BIN_EXE_mlink"))
        .args(["validate", "--schema"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        schema["required"],
        serde_json::json!(["version", "cameras", "models", "scheduler"])
    );
    assert_eq!(schema, config::json_schema());
}

#[test]
fn validate_on_a_parsed_pipeline_matches_load_and_validate() {
    let case = Case::new(&edit("    memory_mb: 100\n", "    memory_mb: 20\n"));
    let p = config::load(&case.file()).unwrap();
    let errors = config::validate(&p, &case.file(), case.dir.path());
    assert_eq!(errors, case.errors());
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].line, errors[0].column), (27, 16));
}

#[test]
fn an_https_aggregator_url_is_rejected_with_the_reason() {
    let text = format!(
        "{BASE}adaptation:\n  aggregator:\n    url: https://agg.example:7070\n    token_env: T\n    edge_id: e\n"
    );
    expect_one(
        &text,
        36,
        10,
        "adaptation.aggregator.url",
        &["no TLS", "http://"],
    );
    let plain = text.replace("https://", "http://");
    assert!(Case::new(&plain).errors().is_empty());
}

/// `mlink validate` on `text` (written as `p.yaml` beside the placeholders): exit code, stderr.
fn validate_cli(case: &Case) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mlink"))
        .arg("validate")
        .arg(case.file())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_checks_a_named_bundle_against_the_models_as_run_does() {
    use mlink::link::{LinkBundle, Sample, TrainParams};
    use mlink::output::{OutputSpec, OutputValue, TaskKind};
    let case = Case::new(&edit(
        "scheduler:\n",
        "links:\n  bundle: old.links\nscheduler:\n",
    ));
    // Links trained for `det` and a model this pipeline does not have (`cls` is missing).
    let count = OutputSpec::vector(1, TaskKind::Count);
    let models = vec![
        ("det".to_string(), count.clone()),
        ("gone".to_string(), count),
    ];
    let samples: Vec<Sample> = (0..20)
        .map(|i| {
            let v = OutputValue::Vector(vec![(i % 3) as f32]);
            Sample::complete([v.clone(), v])
        })
        .collect();
    let params = TrainParams {
        epochs: 2,
        ..TrainParams::default()
    };
    let bundle = LinkBundle::train(&models, &samples, &params, 0.2, 1, &|_| {}).unwrap();
    bundle.save(&case.dir.path().join("old.links")).unwrap();
    let (code, stderr) = validate_cli(&case);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("links.bundle") && stderr.contains("\"cls\""),
        "{stderr}"
    );
    // Without the bundle the same pipeline is valid.
    let ok = Case::new(BASE);
    assert_eq!(validate_cli(&ok).0, Some(0));
}

#[test]
fn a_movenet_count_head_without_classes_passes_validate_and_has_a_spec_for_run() {
    let text = edit(
        "    adapter: centernet\n    head:\n      kind: count\n      classes: [person]\n",
        "    adapter: movenet_multipose\n    head:\n      kind: count\n",
    );
    let case = Case::new(&text);
    let (code, stderr) = validate_cli(&case);
    assert_eq!(code, Some(0), "{stderr}");
    // `run` builds the same head at start-up.
    let p = config::load_and_validate(&case.file()).unwrap();
    let spec = mlink::models::head_spec(&p.models[0], case.dir.path()).unwrap();
    assert_eq!(spec.form, mlink::output::OutputForm::Vector { len: 1 });
}
