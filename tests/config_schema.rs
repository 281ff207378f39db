//! The JSON schema printed by `mlink validate --schema` describes exactly the fields the
//! pipeline types accept: a pipeline that sets every field, read by the real loader and
//! written back as JSON, has at every mapping the same keys as the schema allows there.

use mlink::config;
use serde_json::{Map, Value};

const EVERY_FIELD: &str = "\
version: 1
cameras:
  - id: a
    uri: rtsp://h/x
    sampling: {fps: 1}
    width: 640
    height: 360
    rtsp: {transport: udp, latency_ms: 100}
    on_end: loop
    queue: 2
  - id: b
    uri: test:ball
    sampling: {every_seconds: 60}
models:
  - {id: m1, path: a.onnx, adapter: centernet, head: {kind: count, classes: [person]},
     crops_from: m2, cost: {memory_mb: 1, latency_ms: 1}, min_score: 0.5, threads: 2}
  - {id: m2, path: a.onnx, adapter: nanodet, head: {kind: class_counts, classes: [car]}, cost: auto}
  - {id: m3, path: a.onnx, adapter: nanodet, head: {kind: occupancy, classes: [car], rows: 2, cols: 2}}
  - {id: m4, path: a.onnx, adapter: nanodet, head: {kind: boxes, classes: [car], grid: 8, max_boxes: 4}}
  - {id: m5, path: a.onnx, adapter: efficientnet_lite, head: {kind: probs}}
  - {id: m6, path: a.onnx, adapter: efficientnet_lite, head: {kind: features}}
  - {id: m7, path: a.onnx, adapter: face_attribute, head: {kind: label}}
links: {bundle: x.bundle, hidden_factor: 2, epochs: 3, batch_size: 4, learning_rate: 0.1,
        validation_split: 0.2, warmup_samples: 5, seed: 1}
scheduler:
  budget: {memory_mb: 10, ms_per_frame: 10}
  period_s: 5
  profiling_ratio: 0.5
  policy: optimal
  drift_margin: 0.1
adaptation:
  policy: uncertainty
  uncertainty_threshold: 0.3
  aggregator: {url: 'http://x', token_env: T, edge_id: e}
sinks:
  - {kind: jsonl, path: o.jsonl, rotate_mb: 1}
  - {kind: stdout}
  - {kind: mqtt, host: h, port: 1, topic_prefix: p, buffer: 3}
metrics: {listen: '127.0.0.1:1'}
";

fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/$defs/");
            &root["$defs"][name]
        }
        None => schema,
    }
}

/// The object schema that applies to `value`: the node itself, or the `oneOf` variant whose
/// `kind` constant matches, or the only object variant.
fn object_schema(schema: &Value, value: &Map<String, Value>) -> Map<String, Value> {
    let mut props = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(variants) = schema.get("oneOf").and_then(Value::as_array) {
        let objects: Vec<&Value> = variants
            .iter()
            .filter(|v| v.get("properties").is_some())
            .collect();
        let chosen = objects
            .iter()
            .find(|v| v["properties"]["kind"]["const"] == value["kind"])
            .or(objects.first().filter(|_| objects.len() == 1));
        if let Some(v) = chosen {
            props.extend(v["properties"].as_object().unwrap().clone());
        }
    }
    props
}

fn walk(value: &Value, schema: &Value, root: &Value, path: &str, checked: &mut usize) {
    let schema = resolve(schema, root);
    match value {
        Value::Object(map) => {
            let props = object_schema(schema, map);
            let mut ours: Vec<&String> = map.keys().collect();
            let mut theirs: Vec<&String> = props.keys().collect();
            ours.sort();
            theirs.sort();
            assert_eq!(ours, theirs, "keys at {path}");
            *checked += 1;
            for (k, v) in map {
                let sub = props.get(k).unwrap();
                let sub = match sub.get("oneOf") {
                    // cost: `auto` or an object
                    Some(Value::Array(vs)) if v.is_object() => vs
                        .iter()
                        .find(|s| s.get("properties").is_some())
                        .unwrap_or(sub),
                    _ => sub,
                };
                walk(v, sub, root, &format!("{path}.{k}"), checked);
            }
        }
        Value::Array(items) => {
            let item_schema = &schema["items"];
            for (i, v) in items.iter().enumerate() {
                walk(v, item_schema, root, &format!("{path}[{i}]"), checked);
            }
        }
        _ => {}
    }
}

#[test]
fn schema_has_exactly_the_fields_the_types_accept() {
    let p = config::parse_str(EVERY_FIELD, "every-field.yaml").unwrap();
    let value = serde_json::to_value(&p).unwrap();
    let schema = config::json_schema();
    let mut checked = 0;
    walk(&value, &schema, &schema, "", &mut checked);
    // top level, 2 cameras with sampling and rtsp, 7 models with heads and 1 declared cost,
    // links, scheduler, budget, adaptation, aggregator, 3 sinks, metrics
    assert_eq!(checked, 1 + 2 * 3 + 7 * 2 + 1 + 1 + 2 + 2 + 3 + 1);
}

#[test]
fn schema_lists_every_adapter_and_head_kind() {
    let schema = config::json_schema();
    let adapters = &schema["$defs"]["model"]["properties"]["adapter"]["enum"];
    for a in config::AdapterKind::ALL {
        assert!(
            adapters
                .as_array()
                .unwrap()
                .contains(&Value::from(a.name()))
        );
    }
    let kinds = &schema["$defs"]["head"]["properties"]["kind"]["enum"];
    for k in config::HeadKind::ALL {
        assert!(kinds.as_array().unwrap().contains(&Value::from(k.name())));
    }
}

#[test]
fn a_written_pipeline_reads_back_identically() {
    let p = config::parse_str(EVERY_FIELD, "every-field.yaml").unwrap();
    let text = serde_yaml_ng::to_string(&p).unwrap();
    let again = config::parse_str(&text, "again.yaml").unwrap();
    assert_eq!(p, again);
}
