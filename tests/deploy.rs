//! The deployment files stay valid and consistent with the engine:
//! - `docker-compose.yml` passes `docker-compose config -q`;
//! - both Prometheus configurations pass `promtool check config`;
//! - every query of the Grafana dashboard names only series the engine exports (taken from the
//!   metrics registry itself);
//! - the Kubernetes manifests parse, name what they must, and agree with the compose file, the
//!   shard pipelines and the Prometheus discovery;
//! - the shard generator splits an inventory into valid pipelines.
//!
//! The external validators are Debian's `docker-compose` and `promtool` (scripts/setup.sh installs
//! both); a test that needs one fails in CI when it is missing, and skips loudly elsewhere.
//! No Kubernetes validator (kubeconform, kubeval) is packaged for Debian 12, so the manifests are
//! checked structurally here.

mod tools_support;

use mlink::config::Pipeline;
use mlink::metrics::Metrics;
use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The path of `name` on PATH; None (after a loud notice) when it is missing outside CI.
fn validator(name: &str) -> Option<PathBuf> {
    tools_support::require_tool(name, &[])
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ----- YAML helpers ---------------------------------------------------------------------------

fn yaml_docs(text: &str) -> Vec<Yaml> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| {
            let mut v = <Yaml as serde::Deserialize>::deserialize(doc).unwrap();
            v.apply_merge().unwrap();
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// `v[a][b]...`, with numbers indexing sequences.
fn at<'a>(v: &'a Yaml, path: &str) -> &'a Yaml {
    let mut cur = v;
    for key in path.split('.') {
        cur = match key.parse::<usize>() {
            Ok(i) => &cur[i],
            Err(_) => &cur[key],
        };
    }
    cur
}

fn s<'a>(v: &'a Yaml, path: &str) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string in {v:?}"))
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a sequence: {v:?}"))
        .iter()
        .map(|x| match x {
            Yaml::String(s) => s.clone(),
            Yaml::Number(n) => n.to_string(),
            other => panic!("not a scalar: {other:?}"),
        })
        .collect()
}

/// `${VAR:-default}` as the compose file would resolve it with VAR unset.
fn compose_default(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${") + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map(|(_, d)| d).unwrap_or(""));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn compose() -> Yaml {
    yaml_docs(&read("docker-compose.yml")).remove(0)
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

// ----- docker-compose -------------------------------------------------------------------------

#[test]
fn compose_file_passes_docker_compose_config() {
    let Some(dc) = validator("docker-compose") else {
        return;
    };
    let (ok, out) = run(Command::new(&dc).current_dir(root()).args([
        "-f",
        "docker-compose.yml",
        "config",
        "-q",
    ]));
    assert!(ok, "docker-compose config -q failed:\n{out}");
    let (ok, out) = run(Command::new(&dc).current_dir(root()).args([
        "-f",
        "docker-compose.yml",
        "--profile",
        "federated",
        "config",
        "-q",
    ]));
    assert!(
        ok,
        "docker-compose --profile federated config -q failed:\n{out}"
    );

    // The validator rejects what is wrong (so the pass above means something).
    let dir = tempfile::tempdir().unwrap();
    let broken = read("docker-compose.yml").replace("    command:", "    comand:");
    std::fs::write(dir.path().join("docker-compose.yml"), broken).unwrap();
    let (ok, out) = run(Command::new(&dc).current_dir(dir.path()).args([
        "-f",
        "docker-compose.yml",
        "config",
        "-q",
    ]));
    assert!(!ok, "a misspelt key passed docker-compose config:\n{out}");
}

#[test]
fn compose_services_are_wired_together() {
    let c = compose();
    let services = at(&c, "services");
    for name in ["camera", "mlink", "prometheus", "grafana", "aggregator"] {
        assert!(!services[name].is_null(), "compose lacks service {name}");
    }
    // The camera serves the footage at the address the compose pipeline reads.
    let camera_cmd = strings(at(services, "camera.command"));
    assert_eq!(camera_cmd[0], "serve-rtsp");
    let flag = |cmd: &[String], f: &str| -> String {
        let i = cmd
            .iter()
            .position(|a| a == f)
            .unwrap_or_else(|| panic!("{f} missing from {cmd:?}"));
        cmd[i + 1].clone()
    };
    assert_eq!(flag(&camera_cmd, "--bind"), "0.0.0.0");
    let rtsp_port = flag(&camera_cmd, "--port");
    let mount = flag(&camera_cmd, "--mount");
    let footage = root().join(&camera_cmd[1]);
    if root().join("data/footage").is_dir() {
        assert!(
            footage.is_file(),
            "camera footage {} is missing",
            footage.display()
        );
    }

    let engine_cmd = strings(at(services, "mlink.command"));
    assert_eq!(engine_cmd[0], "run");
    let pipeline_rel = compose_default(&engine_cmd[1]);
    assert_eq!(pipeline_rel, "deploy/compose/pipeline.yaml");
    let pipeline: Pipeline = serde_yaml_ng::from_str(&read(&pipeline_rel)).unwrap();
    assert_eq!(pipeline.version, mlink::config::PIPELINE_VERSION);
    assert_eq!(
        pipeline.cameras[0].uri,
        format!("rtsp://camera:{rtsp_port}{mount}")
    );
    let listen = pipeline
        .metrics
        .listen
        .clone()
        .expect("compose pipeline serves metrics");
    assert!(
        listen.starts_with("0.0.0.0:"),
        "{listen} is unreachable from Prometheus"
    );
    let metrics_port = port_of(&listen);
    // The engine's volumes put the pipeline where the command names it.
    let volumes = strings(at(services, "mlink.volumes"));
    assert!(volumes.contains(&"./deploy/compose:/opt/mlink/deploy/compose:ro".to_string()));
    assert!(
        volumes
            .iter()
            .any(|v| v.starts_with("./pipelines:/opt/mlink/pipelines"))
    );

    // Model files the pipeline names exist (once set-up has produced models/).
    let pipeline_dir = root().join(&pipeline_rel).parent().unwrap().to_path_buf();
    let have_models = std::fs::read_dir(root().join("models"))
        .map(|d| {
            d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "onnx"))
        })
        .unwrap_or(false);
    if have_models {
        for m in &pipeline.models {
            let p = pipeline_dir.join(&m.path);
            assert!(
                p.is_file(),
                "model {} of the compose pipeline: {} missing",
                m.id,
                p.display()
            );
        }
    } else {
        eprintln!(
            "model files not checked: models/ holds no .onnx file yet (run scripts/setup.sh)"
        );
    }

    // Prometheus scrapes the engine at its metrics port.
    let prom = yaml_docs(&read("deploy/prometheus/prometheus.yml")).remove(0);
    let targets = strings(at(&prom, "scrape_configs.0.static_configs.0.targets"));
    assert_eq!(targets, vec![format!("mlink:{metrics_port}")]);
    assert!(
        strings(at(services, "mlink.ports")).contains(&format!("{metrics_port}:{metrics_port}"))
    );

    // Grafana's provisioned data source and dashboard folder are the ones mounted.
    let ds = yaml_docs(&read(
        "deploy/grafana/provisioning/datasources/prometheus.yml",
    ))
    .remove(0);
    assert_eq!(s(&ds, "datasources.0.url"), "http://prometheus:9090");
    let provider = yaml_docs(&read("deploy/grafana/provisioning/dashboards/mlink.yml")).remove(0);
    let dash_dir = s(&provider, "providers.0.options.path");
    let gvol = strings(at(services, "grafana.volumes"));
    assert!(
        gvol.contains(&format!("./deploy/grafana/dashboards:{dash_dir}:ro")),
        "dashboards folder {dash_dir} is not mounted: {gvol:?}"
    );
    assert!(gvol.contains(&"./deploy/grafana/provisioning:/etc/grafana/provisioning:ro".into()));
}

// ----- Prometheus -----------------------------------------------------------------------------

#[test]
fn prometheus_configs_pass_promtool() {
    let Some(promtool) = validator("promtool") else {
        return;
    };
    for file in [
        "deploy/prometheus/prometheus.yml",
        "deploy/k8s/prometheus.yml",
    ] {
        let (ok, out) = run(Command::new(&promtool)
            .current_dir(root())
            .args(["check", "config", file]));
        assert!(ok, "promtool check config {file} failed:\n{out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("prometheus.yml");
    let broken =
        read("deploy/prometheus/prometheus.yml").replace("scrape_interval", "scrap_interval");
    std::fs::write(&bad, broken).unwrap();
    let (ok, out) = run(Command::new(&promtool).args(["check", "config"]).arg(&bad));
    assert!(!ok, "promtool accepted a misspelt key:\n{out}");
}

// ----- Grafana dashboard ----------------------------------------------------------------------

/// Creates one child of a metric family (every label set to "x") so that it is rendered.
fn touch<T: MetricVecBuilder>(family: &MetricVec<T>) {
    let labels = family.desc()[0].variable_labels.len();
    family.with_label_values(&vec!["x"; labels]);
}

/// Every series name the engine exports (`_bucket`, `_sum` and `_count` for histograms), read
/// from the rendered registry.
fn exported_series() -> BTreeSet<String> {
    let m = Metrics::new();
    touch(&m.frames_ingested);
    touch(&m.frames_dropped);
    touch(&m.source_state);
    touch(&m.source_reconnects);
    touch(&m.model_executions);
    touch(&m.model_predictions);
    touch(&m.model_reused);
    touch(&m.model_loads);
    touch(&m.model_unloads);
    touch(&m.model_active);
    touch(&m.inference_seconds);
    touch(&m.link_seconds);
    touch(&m.frame_seconds);
    touch(&m.budget);
    touch(&m.budget_used);
    touch(&m.reselections);
    touch(&m.link_score);
    touch(&m.expected_accuracy);
    touch(&m.link_training_runs);
    touch(&m.sink_records);
    touch(&m.sink_dropped);
    touch(&m.empty_selections);
    touch(&m.model_failures);
    touch(&m.predicted_accuracy);
    m.render()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "holt_winters",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log2",
    "log10",
    "max_over_time",
    "min_over_time",
    "predict_linear",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "sum_over_time",
    "time",
    "timestamp",
    "vector",
];
/// Keywords that take a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &[
    "bool", "and", "or", "unless", "offset", "atan2", "inf", "nan",
];

/// The metric names a PromQL expression selects. Errors name an unknown function.
fn promql_metrics(expr: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    // Skips from an opening bracket to its closing one, over quoted strings.
    let skip_group = |mut i: usize, open: char, close: char| -> Result<usize, String> {
        let mut depth = 0;
        while i < chars.len() {
            match chars[i] {
                '"' | '\'' | '`' => {
                    let q = chars[i];
                    i += 1;
                    while i < chars.len() && chars[i] != q {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(i + 1);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        Err(format!("unclosed {open} in {expr:?}"))
    };
    let next_non_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        (i, chars.get(i).copied())
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip_group(i, '{', '}')?;
        } else if c == '[' {
            i = skip_group(i, '[', ']')?;
        } else if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            if i >= chars.len() {
                return Err(format!("unclosed quote in {expr:?}"));
            }
            i += 1;
        } else if c == '$' {
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || "_{}".contains(chars[i])) {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let (j, next) = next_non_space(i);
            if LABEL_LIST_KEYWORDS.contains(&word.as_str()) {
                if next == Some('(') {
                    i = skip_group(j, '(', ')')?;
                }
            } else if AGGREGATIONS.contains(&word.as_str()) || KEYWORDS.contains(&word.as_str()) {
            } else if next == Some('(') {
                if !FUNCTIONS.contains(&word.as_str()) {
                    return Err(format!("unknown function {word} in {expr:?}"));
                }
            } else {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    Ok(names)
}

/// Every query of the dashboard: panel targets (rows' nested panels included) and variables.
fn dashboard_queries(dash: &Json) -> Vec<(String, String)> {
    fn panels(list: &Json, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title:?} has a target without expr"));
                out.push((title.clone(), expr.to_string()));
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dash["panels"], &mut out);
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let q = match &v["query"] {
            Json::String(s) => s.clone(),
            Json::Object(o) => o["query"].as_str().unwrap_or_default().to_string(),
            _ => continue,
        };
        // Grafana's label_values(METRIC, LABEL): the metric is the part to check.
        let q = match q.strip_prefix("label_values(") {
            Some(args) => args.split(',').next().unwrap_or_default().to_string(),
            None => q,
        };
        out.push((format!("variable {}", v["name"]), q));
    }
    out
}

/// The unknown names (or unparsable queries) of a dashboard, as messages.
fn unknown_metrics(dash: &Json, exported: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (title, expr) in dashboard_queries(dash) {
        match promql_metrics(&expr) {
            Ok(names) if names.is_empty() => {
                problems.push(format!("{title}: no metric in {expr:?}"))
            }
            Ok(names) => {
                for n in names.into_iter().filter(|n| !exported.contains(n)) {
                    problems.push(format!("{title}: {n} is not exported by the engine"));
                }
            }
            Err(e) => problems.push(format!("{title}: {e}")),
        }
    }
    problems
}

fn dashboard() -> Json {
    serde_json::from_str(&read("deploy/grafana/dashboards/mlink.json")).unwrap()
}

#[test]
fn dashboard_queries_name_only_exported_metrics() {
    let exported = exported_series();
    assert!(exported.contains("mlink_inference_seconds_bucket"));
    assert!(exported.contains("mlink_frames_ingested_total"));
    let dash = dashboard();
    let problems = unknown_metrics(&dash, &exported);
    assert!(
        problems.is_empty(),
        "dashboard queries:\n{}",
        problems.join("\n")
    );

    // The dashboard shows what operators watch: every one of these families is queried.
    let used: BTreeSet<String> = dashboard_queries(&dash)
        .iter()
        .flat_map(|(_, e)| promql_metrics(e).unwrap())
        .collect();
    for family in [
        "mlink_frames_ingested_total",
        "mlink_frames_dropped_total",
        "mlink_source_state",
        "mlink_source_reconnects_total",
        "mlink_model_executions_total",
        "mlink_model_predictions_total",
        "mlink_model_active",
        "mlink_link_score",
        "mlink_budget",
        "mlink_budget_used",
        "mlink_inference_seconds_bucket",
        "mlink_link_seconds_bucket",
        "mlink_frame_seconds_bucket",
        "mlink_reselections_total",
        "mlink_expected_accuracy",
        "mlink_link_training_runs_total",
        "mlink_sink_dropped_total",
    ] {
        assert!(used.contains(family), "no dashboard panel queries {family}");
    }

    // Panels are well formed: unique ids, the provisioned data source.
    let ds = yaml_docs(&read(
        "deploy/grafana/provisioning/datasources/prometheus.yml",
    ))
    .remove(0);
    let uid = s(&ds, "datasources.0.uid");
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_i64().unwrap()),
            "panel id {} repeats",
            p["id"]
        );
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], uid, "panel {}", p["title"]);
            assert!(
                !p["targets"].as_array().unwrap().is_empty(),
                "panel {} has no query",
                p["title"]
            );
        }
    }
}

#[test]
fn a_query_naming_an_unknown_metric_is_reported() {
    let exported = exported_series();
    // A misspelt family, a histogram's base name (no such series), a series of another exporter.
    for (bad, name) in [
        (
            "rate(mlink_frame_ingested_total[5m])",
            "mlink_frame_ingested_total",
        ),
        (
            "histogram_quantile(0.9, sum by (le) (rate(mlink_inference_seconds[5m])))",
            "mlink_inference_seconds",
        ),
        ("sum by (job) (up)", "up"),
        (
            "mlink_budget_used / on (resource) node_memory_MemTotal_bytes",
            "node_memory_MemTotal_bytes",
        ),
    ] {
        let mut dash = dashboard();
        dash["panels"][1]["targets"][0]["expr"] = Json::String(bad.into());
        let problems = unknown_metrics(&dash, &exported);
        assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
        assert!(problems[0].contains(name), "{bad}: {problems:?}");
    }
    // Labels, label values, durations and variables are not metric names.
    assert_eq!(
        promql_metrics(
            r#"sum by (model) (rate(mlink_model_executions_total{instance=~"$instance",model!="x y"}[$__rate_interval] offset 5m)) > bool 0"#
        )
        .unwrap(),
        vec!["mlink_model_executions_total"]
    );
    assert!(promql_metrics("rte(mlink_budget[5m])").is_err());
}

// ----- Kubernetes -----------------------------------------------------------------------------

struct K8s {
    kustomization: Yaml,
    /// (file, document) for every resource the kustomization lists.
    docs: Vec<(String, Yaml)>,
}

impl K8s {
    fn load() -> Self {
        let kustomization = yaml_docs(&read("deploy/k8s/kustomization.yaml")).remove(0);
        let mut docs = Vec::new();
        for file in strings(at(&kustomization, "resources")) {
            for doc in yaml_docs(&read(&format!("deploy/k8s/{file}"))) {
                docs.push((file.clone(), doc));
            }
        }
        K8s {
            kustomization,
            docs,
        }
    }

    fn get(&self, kind: &str, name: &str) -> &Yaml {
        self.docs
            .iter()
            .map(|(_, d)| d)
            .find(|d| {
                d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
            })
            .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s"))
    }

    fn generated_files(&self, configmap: &str) -> Vec<String> {
        let gens = at(&self.kustomization, "configMapGenerator")
            .as_sequence()
            .unwrap();
        let g = gens
            .iter()
            .find(|g| g["name"].as_str() == Some(configmap))
            .unwrap_or_else(|| panic!("no generated ConfigMap {configmap}"));
        strings(&g["files"])
    }
}

fn container<'a>(workload: &'a Yaml, name: &str) -> &'a Yaml {
    at(workload, "spec.template.spec.containers")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn container_port(c: &Yaml, name: &str) -> u16 {
    c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no port {name}")) as u16
}

fn service_port(svc: &Yaml, name: &str) -> (u16, String) {
    let p = svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("service has no port {name}"));
    (
        p["port"].as_u64().unwrap() as u16,
        p["targetPort"].as_str().unwrap_or_default().to_string(),
    )
}

fn shard_pipelines(k: &K8s) -> Vec<(String, Pipeline)> {
    k.generated_files("mlink-shards")
        .into_iter()
        .map(|f| {
            let text = read(&format!("deploy/k8s/{f}"));
            let p: Pipeline = serde_yaml_ng::from_str(&text)
                .unwrap_or_else(|e| panic!("deploy/k8s/{f} is not a valid pipeline: {e}"));
            (f, p)
        })
        .collect()
}

#[test]
fn k8s_manifests_parse_and_name_their_objects() {
    let k = K8s::load();
    let namespace = s(&k.kustomization, "namespace");
    let mut seen = BTreeSet::new();
    for (file, d) in &k.docs {
        let api = s(d, "apiVersion");
        let kind = s(d, "kind");
        let name = s(d, "metadata.name");
        assert!(
            !api.is_empty() && !kind.is_empty() && !name.is_empty(),
            "{file}"
        );
        let known = [
            ("v1", "Namespace"),
            ("v1", "Service"),
            ("v1", "PersistentVolumeClaim"),
            ("apps/v1", "StatefulSet"),
            ("apps/v1", "Deployment"),
        ];
        assert!(
            known.contains(&(api, kind)),
            "{file}: unexpected {api} {kind}"
        );
        assert!(
            seen.insert((kind.to_string(), name.to_string())),
            "{file}: {kind} {name} twice"
        );
        // Every workload's selector matches its pod labels, every service selects a workload.
        if kind == "StatefulSet" || kind == "Deployment" {
            let sel = at(d, "spec.selector.matchLabels").as_mapping().unwrap();
            let labels = at(d, "spec.template.metadata.labels").as_mapping().unwrap();
            for (key, v) in sel {
                assert_eq!(labels.get(key), Some(v), "{file}: {name} selector {key:?}");
            }
            let spec = at(d, "spec.template.spec");
            assert_eq!(
                spec["securityContext"]["runAsNonRoot"],
                Yaml::Bool(true),
                "{name}"
            );
            // Every volume a container mounts is declared (or claimed by the StatefulSet).
            let mut declared: BTreeSet<String> = spec["volumes"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|v| s(v, "name").to_string())
                .collect();
            for t in d["spec"]["volumeClaimTemplates"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                declared.insert(s(t, "metadata.name").to_string());
            }
            for c in spec["containers"].as_sequence().unwrap() {
                for m in c["volumeMounts"].as_sequence().into_iter().flatten() {
                    assert!(
                        declared.contains(s(m, "name")),
                        "{name}: volume {:?}",
                        m["name"]
                    );
                }
            }
        }
    }
    assert_eq!(s(k.get("Namespace", namespace), "metadata.name"), namespace);
    for (_, d) in &k.docs {
        if d["kind"] == "Service" {
            let sel = at(d, "spec.selector").as_mapping().unwrap();
            assert!(
                k.docs.iter().any(|(_, w)| {
                    let labels = &w["spec"]["template"]["metadata"]["labels"];
                    sel.iter()
                        .all(|(key, v)| &labels[key.as_str().unwrap()] == v)
                        && !labels.is_null()
                }),
                "service {:?} selects no workload",
                d["metadata"]["name"]
            );
        }
    }
    // Every manifest in the folder is listed; every generated file exists.
    let listed: BTreeSet<String> = strings(at(&k.kustomization, "resources"))
        .into_iter()
        .collect();
    for e in std::fs::read_dir(root().join("deploy/k8s"))
        .unwrap()
        .flatten()
    {
        let f = e.file_name().to_string_lossy().to_string();
        let is_manifest = f.ends_with(".yaml")
            && !["kustomization.yaml", "shard-template.yaml"].contains(&f.as_str());
        if is_manifest {
            assert!(
                listed.contains(&f),
                "deploy/k8s/{f} is not in kustomization.yaml resources"
            );
        }
    }
    for g in ["mlink-shards", "prometheus-config"] {
        for f in k.generated_files(g) {
            assert!(
                root().join("deploy/k8s").join(&f).is_file(),
                "{g}: {f} missing"
            );
        }
    }
}

#[test]
fn k8s_engines_shards_and_discovery_agree() {
    let k = K8s::load();
    let c = compose();
    let namespace = s(&k.kustomization, "namespace");
    let sts = k.get("StatefulSet", "mlink-engine");
    let engine = container(sts, "mlink");

    // One replica per shard pipeline, named shard-0 .. shard-(N-1).
    let shards = shard_pipelines(&k);
    assert_eq!(at(sts, "spec.replicas").as_u64(), Some(shards.len() as u64));
    let mut cameras = BTreeMap::new();
    for (i, (file, p)) in shards.iter().enumerate() {
        assert_eq!(file, &format!("shards/shard-{i}.yaml"));
        // Each camera is owned by exactly one shard.
        for cam in &p.cameras {
            if let Some(other) = cameras.insert(cam.id.clone(), file.clone()) {
                panic!("camera {} is in {other} and {file}", cam.id);
            }
        }
        let agg = p
            .adaptation
            .aggregator
            .as_ref()
            .expect("shards report to the aggregator");
        assert_eq!(agg.edge_id, format!("shard-{i}"));
        assert_eq!(agg.token_env, "MLINK_EDGE_TOKEN");
        for m in &p.models {
            assert!(
                m.path.is_absolute() && m.path.starts_with("/opt/mlink/models"),
                "{file}: {}",
                m.id
            );
        }
    }

    // The container runs the shard of its ordinal from the mounted ConfigMap.
    let script = strings(&engine["args"]).join(" ");
    let mounts = engine["volumeMounts"].as_sequence().unwrap();
    let mount_of = |volume: &str| -> String {
        s(
            mounts
                .iter()
                .find(|m| m["name"].as_str() == Some(volume))
                .unwrap(),
            "mountPath",
        )
        .to_string()
    };
    let shards_dir = mount_of("shards");
    assert!(script.contains("${HOSTNAME##*-}"), "{script}");
    assert!(
        script.contains(&format!("mlink run \"{shards_dir}/shard-${{shard}}.yaml\"")),
        "{script}"
    );
    assert!(
        script.contains(&format!("{}/shard-${{shard}}", mount_of("tokens"))),
        "{script}"
    );
    let spec = at(sts, "spec.template.spec");
    let vol = |name: &str| {
        spec["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap()
            .clone()
    };
    assert_eq!(s(&vol("shards"), "configMap.name"), "mlink-shards");

    // Same image and metrics port as the compose engine; the pipelines listen on it.
    let compose_image = compose_default(s(&c, "services.mlink.image"));
    let compose_image_repo = compose_image.split(':').next().unwrap();
    for (kind, name, cname) in [
        ("StatefulSet", "mlink-engine", "mlink"),
        ("Deployment", "mlink-aggregator", "aggregator"),
    ] {
        let image = s(container(k.get(kind, name), cname), "image");
        assert_eq!(
            image.split(':').next().unwrap(),
            compose_image_repo,
            "{name} image"
        );
    }
    let metrics_port = container_port(engine, "metrics");
    for (file, p) in &shards {
        let listen = p.metrics.listen.as_deref().unwrap_or_default();
        assert_eq!(listen, format!("0.0.0.0:{metrics_port}"), "{file}");
    }
    let compose_pipeline: Pipeline =
        serde_yaml_ng::from_str(&read("deploy/compose/pipeline.yaml")).unwrap();
    assert_eq!(
        port_of(compose_pipeline.metrics.listen.as_deref().unwrap()),
        metrics_port
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(s(engine, &format!("{probe}.httpGet.path")), "/healthz");
        assert_eq!(s(engine, &format!("{probe}.httpGet.port")), "metrics");
    }
    let annotations = at(sts, "spec.template.metadata.annotations");
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(metrics_port.to_string().as_str())
    );

    // The headless service behind Prometheus's SRV discovery.
    let svc_name = s(sts, "spec.serviceName");
    let svc = k.get("Service", svc_name);
    assert_eq!(s(svc, "spec.clusterIP"), "None");
    let (port, target) = service_port(svc, "metrics");
    assert_eq!((port, target.as_str()), (metrics_port, "metrics"));
    let prom = yaml_docs(&read("deploy/k8s/prometheus.yml")).remove(0);
    let srv = strings(at(&prom, "scrape_configs.0.dns_sd_configs.0.names"));
    assert_eq!(
        srv,
        vec![format!(
            "_metrics._tcp.{svc_name}.{namespace}.svc.cluster.local"
        )]
    );
    assert_eq!(s(&prom, "scrape_configs.0.dns_sd_configs.0.type"), "SRV");
    assert_eq!(
        k.generated_files("prometheus-config"),
        vec!["prometheus.yml".to_string()]
    );
    let prom_deploy = k.get("Deployment", "prometheus");
    let prom_c = container(prom_deploy, "prometheus");
    assert_eq!(s(prom_c, "image"), s(&c, "services.prometheus.image"));
    assert!(
        strings(&prom_c["args"]).contains(&"--config.file=/etc/prometheus/prometheus.yml".into())
    );

    // The aggregator: same command as compose, its service where the shards send updates.
    let agg = k.get("Deployment", "mlink-aggregator");
    let agg_c = container(agg, "aggregator");
    assert_eq!(
        strings(&agg_c["args"]),
        strings(at(&c, "services.aggregator.command"))
    );
    assert_eq!(at(agg, "spec.replicas").as_u64(), Some(1));
    let agg_port = container_port(agg_c, "http");
    let (svc_port, _) = service_port(k.get("Service", "mlink-aggregator"), "http");
    assert_eq!(svc_port, agg_port);
    assert!(
        strings(at(&c, "services.aggregator.ports")).contains(&format!("{agg_port}:{agg_port}"))
    );
    for (file, p) in &shards {
        let url = &p.adaptation.aggregator.as_ref().unwrap().url;
        assert_eq!(
            url,
            &format!("http://mlink-aggregator:{svc_port}"),
            "{file}"
        );
    }
}

// ----- shard generator ------------------------------------------------------------------------

fn make_shards(inventory: &Path, per_shard: &str, out: &Path) -> (bool, String) {
    run(Command::new("bash")
        .arg(root().join("deploy/k8s/make-shards.sh"))
        .arg(inventory)
        .arg(per_shard)
        .arg(out))
}

#[test]
fn make_shards_splits_an_inventory_into_valid_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("cameras.tsv");
    std::fs::write(
        &inv,
        "# site a\na1\trtsp://10.0.0.1/s\na2\trtsp://10.0.0.2/s\t2\n\na3\trtsp://10.0.0.3/s\n\
         b1\trtsp://10.0.1.1/s\tb0.5\n",
    )
    .unwrap();
    let out = dir.path().join("shards");
    // A non-numeric fps is refused with its line.
    let (ok, msg) = make_shards(&inv, "2", &out);
    assert!(
        !ok && msg.contains("cameras.tsv:6") && msg.contains("fps"),
        "{msg}"
    );
    std::fs::write(
        &inv,
        "# site a\na1\trtsp://10.0.0.1/s\na2\trtsp://10.0.0.2/s\t2\n\na3\trtsp://10.0.0.3/s\n\
         b1\trtsp://10.0.1.1/s\t0.5\nb2\trtsp://10.0.1.2/s\n",
    )
    .unwrap();
    let (ok, msg) = make_shards(&inv, "2", &out);
    assert!(ok, "{msg}");
    assert_eq!(msg.trim(), "3");
    let mut ids = Vec::new();
    for k in 0..3 {
        let p: Pipeline = serde_yaml_ng::from_str(
            &std::fs::read_to_string(out.join(format!("shard-{k}.yaml"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            p.adaptation.aggregator.unwrap().edge_id,
            format!("shard-{k}")
        );
        ids.push(p.cameras.iter().map(|c| c.id.clone()).collect::<Vec<_>>());
        if k == 0 {
            assert_eq!(p.cameras[1].sampling.as_ref().unwrap().fps, Some(2.0));
            assert_eq!(p.cameras[0].sampling.as_ref().unwrap().fps, Some(1.0));
        }
    }
    assert_eq!(ids, vec![vec!["a1", "a2"], vec!["a3", "b1"], vec!["b2"]]);
    assert!(!out.join("shard-3.yaml").exists());

    // A repeated id is refused and the previous shard files stay.
    std::fs::write(&inv, "a1\trtsp://x/1\na1\trtsp://x/2\n").unwrap();
    let (ok, msg) = make_shards(&inv, "1", &out);
    assert!(!ok && msg.contains("repeats"), "{msg}");
    assert!(out.join("shard-2.yaml").exists());
    let (ok, msg) = make_shards(&inv, "0", &out);
    assert!(!ok && msg.contains("PER_SHARD"), "{msg}");
}

#[test]
fn shipped_shards_are_the_generator_output_for_the_example_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, msg) = make_shards(
        &root().join("deploy/k8s/cameras.example.tsv"),
        "4",
        dir.path(),
    );
    assert!(ok, "{msg}");
    let count: usize = msg.trim().parse().unwrap();
    let k = K8s::load();
    let files = k.generated_files("mlink-shards");
    assert_eq!(files.len(), count);
    for f in files {
        let name = Path::new(&f).file_name().unwrap();
        assert_eq!(
            read(&format!("deploy/k8s/{f}")),
            std::fs::read_to_string(dir.path().join(name)).unwrap(),
            "deploy/k8s/{f} differs from make-shards.sh output: regenerate it"
        );
    }
}

// ----- Dockerfile -----------------------------------------------------------------------------

#[test]
fn dockerfile_runtime_matches_the_project() {
    let df = read("Dockerfile");
    let setup = read("scripts/setup.sh");
    let ort = setup
        .lines()
        .find_map(|l| l.strip_prefix("ORT_VERSION="))
        .expect("setup.sh pins ORT_VERSION");
    assert!(
        df.contains(&format!("ARG ORT_VERSION={ort}")),
        "Dockerfile and setup.sh disagree on ONNX Runtime"
    );
    assert!(
        df.contains("ENV ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so.${ORT_VERSION}")
    );
    let from: Vec<&str> = df.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from.len(), 2, "multi-stage: a builder and a runtime");
    assert!(from[1].contains("debian:12-slim"));
    let rust = read("Cargo.toml")
        .lines()
        .find_map(|l| {
            l.strip_prefix("rust-version = ")
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap();
    assert!(
        df.contains(&format!("ARG RUST_VERSION={rust}")),
        "builder must use rust {rust}"
    );
    let user = df
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "runs as {user}"
    );
    let health = df
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .nth(1)
        .unwrap();
    assert!(health.contains("/healthz"));
    for pkg in [
        "gstreamer1.0-plugins-base",
        "gstreamer1.0-plugins-good",
        "gstreamer1.0-plugins-bad",
        "gstreamer1.0-plugins-ugly",
        "gstreamer1.0-libav",
        "libopencv-imgproc406",
    ] {
        assert!(df.contains(pkg), "runtime lacks {pkg}");
    }
    // The health check's port is the one the compose pipeline serves.
    let compose_pipeline: Pipeline =
        serde_yaml_ng::from_str(&read("deploy/compose/pipeline.yaml")).unwrap();
    let port = port_of(compose_pipeline.metrics.listen.as_deref().unwrap());
    assert!(health.contains(&format!("127.0.0.1:{port}/healthz")));
    assert!(df.contains(&format!("EXPOSE {port}")));
}
