//! Pipeline files: types, loading and validation.
//!
//! Loading reports parse and type errors with the file, line, column and field path of the
//! offending value; [`validate`] then checks what types cannot express (unique ids, files that
//! exist, heads a model family can produce, a budget that fits a model, ...) and reports every
//! problem at once, located the same way. [`load_and_validate`] does both.

mod load;
mod locate;
mod schema;
mod types;
mod validate;

pub use load::{load, parse_str};
pub use locate::{locate_key, locate_value};
pub use schema::json_schema;
pub use types::*;
pub use validate::{check, resolve_path, validate, validate_with_bundle};

use std::fmt;
use std::path::{Path, PathBuf};

/// A validation or parse error with its location in the pipeline file.
///
/// Displayed as `file:line:column: field.path: message`; the line and column are 1-based and
/// left out (0) when the file could not be read at all, the path is left out (empty) when the
/// error concerns the whole file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Field path, e.g. `models[2].cost.memory_mb`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A semantic problem found in a parsed pipeline: the field path and what is wrong. It gets
/// its line and column from the source with [`Issue::locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Field path, e.g. `scheduler.budget.memory_mb`.
    pub path: String,
    pub message: String,
}

impl Issue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Attaches the position of the issue's field in `text`, the source of `file`. A field
    /// absent from the source (a default that is wrong) is placed at its closest ancestor.
    pub fn locate(self, file: &str, text: &str) -> ConfigError {
        let (line, column) = locate_value(text, &self.path).unwrap_or((1, 1));
        ConfigError {
            file: file.to_string(),
            line,
            column,
            path: self.path,
            message: self.message,
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The folder relative paths in a pipeline file are resolved against: the file's own.
pub fn base_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Reads, parses and validates a pipeline file, returning every error found.
pub fn load_and_validate(file: &Path) -> Result<Pipeline, Vec<ConfigError>> {
    let text = load::read(file)?;
    validate_str(&text, file)
}

/// Parses and validates pipeline text meant for `file` (relative paths resolve against its
/// folder): what [`load_and_validate`] would say once the text is written there.
pub fn validate_str(text: &str, file: &Path) -> Result<Pipeline, Vec<ConfigError>> {
    let label = file.display().to_string();
    let pipeline = parse_str(text, &label)?;
    let mut errors: Vec<ConfigError> = check(&pipeline, &base_dir(file))
        .into_iter()
        .map(|i| i.locate(&label, text))
        .collect();
    if errors.is_empty() {
        return Ok(pipeline);
    }
    errors.sort_by_key(|e| (e.line, e.column));
    Err(errors)
}
