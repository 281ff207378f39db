//! Ground-truth label files for oracle links (paper section 4.2): the answers of the abstract
//! oracle node, for frames referenced by `(camera, seq)` as a trace records them.
//!
//! Two formats, chosen by extension (`.csv`; `.jsonl`, `.ndjson`, `.json`) or, for any other
//! name, by the first non-blank character (`{` means JSON lines):
//!
//! - CSV with the header `camera,seq,label`; a vector label is written as numbers separated by
//!   `;` (e.g. `cam0,17,0.1;0.9`). Blank lines and lines starting with `#` are skipped.
//! - JSON lines: `{"camera": "cam0", "seq": 17, "label": 3}` or `"label": [0.1, 0.9]`.
//!
//! Every error names the file and the line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One labelled frame.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelRow {
    /// 1-based line in the labels file, for error messages.
    pub line: usize,
    pub camera: String,
    pub seq: u64,
    /// The label values (one value for a scalar label).
    pub label: Vec<f32>,
}

/// The rows of a labels file, all with labels of the same length.
#[derive(Clone, Debug, PartialEq)]
pub struct Labels {
    pub path: PathBuf,
    pub rows: Vec<LabelRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

impl Labels {
    /// Reads and checks a labels file: well-formed rows, finite values, one length for every
    /// label, no frame labelled twice.
    pub fn load(path: &Path) -> Result<Self, LabelsError> {
        let text = std::fs::read_to_string(path).map_err(|source| LabelsError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of a labels file (`path` names it in errors and picks the format).
    pub fn parse(path: &Path, text: &str) -> Result<Self, LabelsError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let json = match ext.as_deref() {
            Some("csv") => false,
            Some("jsonl" | "ndjson" | "json") => true,
            _ => text.trim_start().starts_with('{'),
        };
        let rows = if json {
            parse_json_lines(path, text)?
        } else {
            parse_csv(path, text)?
        };
        if rows.is_empty() {
            return Err(LabelsError::File {
                path: path.to_owned(),
                message: "no labels in the file".into(),
            });
        }
        let mut seen: HashMap<(&str, u64), usize> = HashMap::new();
        let len = rows[0].label.len();
        for r in &rows {
            let err = |message: String| LabelsError::Line {
                path: path.to_owned(),
                line: r.line,
                message,
            };
            if r.label.len() != len {
                return Err(err(format!(
                    "label has {} values, but the first label (line {}) has {len}; every label must have the same length",
                    r.label.len(),
                    rows[0].line
                )));
            }
            if let Some(first) = seen.insert((r.camera.as_str(), r.seq), r.line) {
                return Err(err(format!(
                    "frame (camera {:?}, seq {}) is labelled twice (first on line {first})",
                    r.camera, r.seq
                )));
            }
        }
        Ok(Self {
            path: path.to_owned(),
            rows,
        })
    }

    /// Length of every label.
    pub fn label_len(&self) -> usize {
        self.rows.first().map_or(0, |r| r.label.len())
    }

    /// An error about one row, naming the file and line.
    pub fn row_error(&self, row: &LabelRow, message: impl Into<String>) -> LabelsError {
        LabelsError::Line {
            path: self.path.clone(),
            line: row.line,
            message: message.into(),
        }
    }
}

fn parse_number(text: &str) -> Result<f32, String> {
    let v: f32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{:?} is not a number", text.trim()))?;
    if !v.is_finite() {
        return Err(format!("label value {v} is not finite"));
    }
    Ok(v)
}

fn parse_csv(path: &Path, text: &str) -> Result<Vec<LabelRow>, LabelsError> {
    let mut rows = Vec::new();
    let mut header_seen = false;
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let err = |message: String| LabelsError::Line {
            path: path.to_owned(),
            line,
            message,
        };
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = l.split(',').map(str::trim).collect();
        if !header_seen {
            if fields != ["camera", "seq", "label"] {
                return Err(err(format!(
                    "expected the header `camera,seq,label`, found {l:?}"
                )));
            }
            header_seen = true;
            continue;
        }
        if fields.len() != 3 {
            return Err(err(format!(
                "expected 3 fields (camera,seq,label), found {}; write a vector label as numbers separated by ';'",
                fields.len()
            )));
        }
        if fields[0].is_empty() {
            return Err(err("the camera is empty".into()));
        }
        let seq = fields[1]
            .parse::<u64>()
            .map_err(|_| err(format!("seq {:?} is not a non-negative integer", fields[1])))?;
        let label = fields[2]
            .split(';')
            .map(parse_number)
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        rows.push(LabelRow {
            line,
            camera: fields[0].to_string(),
            seq,
            label,
        });
    }
    if !header_seen {
        return Err(LabelsError::File {
            path: path.to_owned(),
            message: "empty CSV: expected the header `camera,seq,label`".into(),
        });
    }
    Ok(rows)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    camera: String,
    seq: u64,
    label: JsonLabel,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JsonLabel {
    Scalar(f64),
    Vector(Vec<f64>),
}

fn parse_json_lines(path: &Path, text: &str) -> Result<Vec<LabelRow>, LabelsError> {
    let mut rows = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let err = |message: String| LabelsError::Line {
            path: path.to_owned(),
            line,
            message,
        };
        let l = raw.trim();
        if l.is_empty() {
            continue;
        }
        let r: JsonRow = serde_json::from_str(l).map_err(|e| {
            err(format!(
                "not a label object {{\"camera\": ..., \"seq\": ..., \"label\": number or [numbers]}}: {e}"
            ))
        })?;
        if r.camera.is_empty() {
            return Err(err("the camera is empty".into()));
        }
        let values = match r.label {
            JsonLabel::Scalar(v) => vec![v],
            JsonLabel::Vector(v) => v,
        };
        if values.is_empty() {
            return Err(err("the label is an empty list".into()));
        }
        let mut label = Vec::with_capacity(values.len());
        for v in values {
            let f = v as f32;
            if !f.is_finite() {
                return Err(err(format!(
                    "label value {v:e} is not finite as a 32-bit float"
                )));
            }
            label.push(f);
        }
        rows.push(LabelRow {
            line,
            camera: r.camera,
            seq: r.seq,
            label,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &str) -> Result<Labels, String> {
        Labels::parse(Path::new(name), text).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_csv_and_json_lines() {
        let l = parse("l.csv", "camera,seq,label\n# c\ncam,1,2\n\ncam,2,0.5;1.5\n");
        assert!(l.unwrap_err().contains("l.csv:5: label has 2 values"));
        let l = parse("l.csv", "camera,seq,label\ncam,1,2\ncam,2,3\n").unwrap();
        assert_eq!(l.rows[1].label, vec![3.0]);
        assert_eq!(l.rows[1].line, 3);
        let l = parse(
            "l.txt",
            "{\"camera\":\"a\",\"seq\":3,\"label\":[1,2]}\n{\"camera\":\"b\",\"seq\":3,\"label\":[0,1]}",
        )
        .unwrap();
        assert_eq!(l.label_len(), 2);
        assert_eq!(l.rows[1].camera, "b");
    }

    #[test]
    fn names_the_line_of_each_fault() {
        let cases = [
            ("l.csv", "cam,seq,lbl\n", "l.csv:1: expected the header"),
            ("l.csv", "camera,seq,label\ncam,x,1\n", "l.csv:2: seq \"x\""),
            (
                "l.csv",
                "camera,seq,label\ncam,1,NaN\n",
                "l.csv:2: label value NaN is not finite",
            ),
            (
                "l.csv",
                "camera,seq,label\ncam,1,inf\n",
                "l.csv:2: label value inf",
            ),
            (
                "l.csv",
                "camera,seq,label\ncam,1\n",
                "l.csv:2: expected 3 fields",
            ),
            (
                "l.csv",
                "camera,seq,label\ncam,1,1\ncam,1,2\n",
                "l.csv:3: frame (camera \"cam\", seq 1) is labelled twice (first on line 2)",
            ),
            ("l.csv", "", "empty CSV"),
            (
                "l.jsonl",
                "{\"camera\":\"a\",\"seq\":1,\"label\":1}\n{\"camera\":\"a\",\"seq\":2}\n",
                "l.jsonl:2: not a label object",
            ),
            (
                "l.jsonl",
                "{\"camera\":\"a\",\"seq\":1,\"label\":1e40}\n",
                "l.jsonl:1: label value 1e40 is not finite",
            ),
            (
                "l.jsonl",
                "{\"camera\":\"a\",\"seq\":1,\"label\":[]}\n",
                "l.jsonl:1: the label is an empty list",
            ),
            ("l.jsonl", "\n\n", "no labels"),
        ];
        for (name, text, want) in cases {
            let e = parse(name, text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
