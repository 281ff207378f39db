//! Pipeline files: types, loading and validation.

mod types;
pub use types::*;

use std::path::Path;

/// A validation or parse error with its location in the pipeline file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {path}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Field path, e.g. `models[2].cost.memory_mb`.
    pub path: String,
    pub message: String,
}

/// Reads and parses a pipeline file.
pub fn load(file: &Path) -> Result<Pipeline, Vec<ConfigError>> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        vec![ConfigError {
            file: file.display().to_string(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }]
    })?;
    let de = serde_yaml_ng::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let loc = e.inner().location();
        vec![ConfigError {
            file: file.display().to_string(),
            line: loc.as_ref().map(|l| l.line()).unwrap_or(0),
            column: loc.as_ref().map(|l| l.column()).unwrap_or(0),
            path: e.path().to_string(),
            message: e.inner().to_string(),
        }]
    })
}
