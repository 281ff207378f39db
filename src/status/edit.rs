//! Camera edits of a pipeline file's text, for the camera API: add a camera, remove one. Each
//! edit yields the complete new text, validated exactly as `mlink run` would validate the
//! file, or says why not; nothing is written here.
//!
//! The file is rewritten from its parsed form: its fields keep their order, the leading
//! comment block is kept, and comments inside the YAML are not (YAML has no stable home for
//! them once the document is edited as data).

use crate::config::{self, CameraConfig};
use serde_yaml_ng::Value;
use std::path::Path;

/// Why an edit was refused; the API maps each kind to its HTTP status.
#[derive(Debug, PartialEq)]
pub enum EditError {
    /// The request itself is malformed (not a camera object, unknown field, wrong type).
    BadRequest(String),
    /// No camera of that id.
    NotFound(String),
    /// A camera of that id exists already.
    Conflict(String),
    /// The edited pipeline would not validate (each error located in the new text).
    Invalid(Vec<String>),
    /// The pipeline file itself cannot be read as YAML.
    File(String),
}

impl std::fmt::Display for EditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EditError::BadRequest(m)
            | EditError::NotFound(m)
            | EditError::Conflict(m)
            | EditError::File(m) => f.write_str(m),
            EditError::Invalid(errors) => {
                write!(f, "the edited pipeline is invalid: {}", errors.join("; "))
            }
        }
    }
}

/// The camera a request body describes, checked against the pipeline file's camera schema.
pub fn parse_camera(body: &serde_json::Value) -> Result<CameraConfig, EditError> {
    if !body.is_object() {
        return Err(EditError::BadRequest(
            "the body must be a JSON object describing one camera, e.g. \
             {\"id\": \"lobby\", \"uri\": \"rtsp://10.0.0.5/stream\"}"
                .into(),
        ));
    }
    serde_path_to_error::deserialize::<_, CameraConfig>(body).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(" at `{path}`")
        };
        EditError::BadRequest(format!("invalid camera{at}: {}", e.inner()))
    })
}

/// The pipeline text with `camera` (the request's JSON object, as given) appended to
/// `cameras`, validated for `file`.
pub fn add_camera(
    text: &str,
    file: &Path,
    camera: &serde_json::Value,
) -> Result<String, EditError> {
    let parsed = parse_camera(camera)?;
    let mut doc = parse(text)?;
    let cams = cameras(&mut doc)?;
    if cams
        .iter()
        .any(|c| camera_id(c) == Some(parsed.id.as_str()))
    {
        return Err(EditError::Conflict(format!(
            "a camera `{}` exists already: remove it first to change it",
            parsed.id
        )));
    }
    // `id` and `uri` first, as a person writes them; the other fields after, as given.
    let mut entry = serde_yaml_ng::Mapping::new();
    let fields = camera.as_object().into_iter().flatten();
    let (first, rest): (Vec<_>, Vec<_>) = fields.partition(|(k, _)| *k == "id" || *k == "uri");
    for (k, v) in first.into_iter().chain(rest) {
        let v = serde_yaml_ng::to_value(v)
            .map_err(|e| EditError::BadRequest(format!("cannot convert `{k}`: {e}")))?;
        entry.insert(Value::String(k.clone()), v);
    }
    cams.push(Value::Mapping(entry));
    finish(text, &doc, file)
}

/// The pipeline text without camera `id`, validated for `file`.
pub fn remove_camera(text: &str, file: &Path, id: &str) -> Result<String, EditError> {
    let mut doc = parse(text)?;
    let cams = cameras(&mut doc)?;
    let before = cams.len();
    cams.retain(|c| camera_id(c) != Some(id));
    if cams.len() == before {
        return Err(EditError::NotFound(format!("no camera `{id}`")));
    }
    finish(text, &doc, file)
}

fn parse(text: &str) -> Result<Value, EditError> {
    serde_yaml_ng::from_str(text)
        .map_err(|e| EditError::File(format!("the pipeline file is not valid YAML: {e}")))
}

fn cameras(doc: &mut Value) -> Result<&mut Vec<Value>, EditError> {
    doc.get_mut("cameras")
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| EditError::File("the pipeline file has no `cameras` list".into()))
}

fn camera_id(c: &Value) -> Option<&str> {
    c.get("id").and_then(Value::as_str)
}

/// The leading comment block of `text`, then `doc`; validated as the file `mlink run` reads.
fn finish(text: &str, doc: &Value, file: &Path) -> Result<String, EditError> {
    let body = serde_yaml_ng::to_string(doc)
        .map_err(|e| EditError::File(format!("cannot write the pipeline: {e}")))?;
    let mut out: String = text
        .lines()
        .take_while(|l| l.trim_start().starts_with('#') || l.trim().is_empty())
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&body);
    config::validate_str(&out, file)
        .map_err(|errors| EditError::Invalid(errors.iter().map(|e| e.to_string()).collect()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pipeline(dir: &Path) -> (String, std::path::PathBuf) {
        std::fs::write(dir.join("a.onnx"), b"x").unwrap();
        let text = "# The header.\n# Second line.\nversion: 1\ncameras:\n  - id: one\n    uri: test:ball\n# inner comment\nmodels:\n  - id: m\n    path: a.onnx\n    adapter: centernet\n    head: { kind: count, classes: [person] }\n    cost: { memory_mb: 1, latency_ms: 1 }\nscheduler:\n  budget: { memory_mb: 10 }\n";
        (text.to_string(), dir.join("p.yaml"))
    }

    #[test]
    fn a_camera_is_added_and_removed_and_the_header_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (text, file) = pipeline(dir.path());
        config::validate_str(&text, &file).expect("the fixture is valid");
        let added = add_camera(&text, &file, &json!({"id": "two", "uri": "test:smpte"})).unwrap();
        assert!(
            added.starts_with("# The header.\n# Second line.\n"),
            "{added}"
        );
        assert!(added.contains("- id: two\n  uri: test:smpte\n"), "{added}");
        let p = config::validate_str(&added, &file).unwrap();
        let ids: Vec<&str> = p.cameras.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["one", "two"]);
        let removed = remove_camera(&added, &file, "one").unwrap();
        let p = config::validate_str(&removed, &file).unwrap();
        assert_eq!(p.cameras.len(), 1);
        assert_eq!(p.cameras[0].id, "two");
        assert_eq!(p.cameras[0].uri, "test:smpte");
    }

    #[test]
    fn bad_edits_are_refused_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let (text, file) = pipeline(dir.path());
        let e = add_camera(&text, &file, &json!({"id": "one", "uri": "test:ball"}));
        assert!(matches!(e, Err(EditError::Conflict(_))), "{e:?}");
        let e = add_camera(
            &text,
            &file,
            &json!({"id": "x", "uri": "test:ball", "fps": 3}),
        );
        assert!(
            matches!(&e, Err(EditError::BadRequest(m)) if m.contains("fps")),
            "{e:?}"
        );
        let e = add_camera(&text, &file, &json!(["not", "an", "object"]));
        assert!(matches!(e, Err(EditError::BadRequest(_))), "{e:?}");
        let e = add_camera(&text, &file, &json!({"id": "x", "uri": "missing.avi"}));
        assert!(
            matches!(&e, Err(EditError::Invalid(m)) if m.join(" ").contains("uri")),
            "{e:?}"
        );
        let e = add_camera(&text, &file, &json!({"id": "bad id", "uri": "test:ball"}));
        assert!(matches!(e, Err(EditError::Invalid(_))), "{e:?}");
        let e = remove_camera(&text, &file, "nope");
        assert!(matches!(e, Err(EditError::NotFound(_))), "{e:?}");
        // The last camera cannot go: a pipeline needs one.
        let e = remove_camera(&text, &file, "one");
        assert!(matches!(e, Err(EditError::Invalid(_))), "{e:?}");
    }
}
