//! Edge credentials: one bearer token per edge, read from a tokens file.
//!
//! The file has one `EDGE_ID TOKEN` pair per line; blank lines and lines starting with `#`
//! are ignored. Tokens are never printed: [`Token`]'s `Debug` hides it, and errors name the
//! line, not the token.

use std::path::{Path, PathBuf};

/// Tokens shorter than this are refused: a bearer token is the edge's only credential.
pub const MIN_TOKEN_LEN: usize = 16;

/// A secret that does not print itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: no edges (expected lines of `EDGE_ID TOKEN`)")]
    Empty { path: PathBuf },
}

/// The edges allowed to talk to the aggregator.
#[derive(Clone, Debug, Default)]
pub struct EdgeTokens {
    entries: Vec<(String, Token)>,
}

impl EdgeTokens {
    /// Builds the table from pairs; ids and tokens must be unique and tokens long enough.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, Token)>) -> Result<Self, String> {
        let mut t = EdgeTokens::default();
        for (id, token) in pairs {
            t.add(id, token)?;
        }
        Ok(t)
    }

    fn add(&mut self, id: String, token: Token) -> Result<(), String> {
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return Err(format!(
                "edge id {id:?} must be non-empty ASCII letters, digits, '-', '_', '.' or ':'"
            ));
        }
        if token.0.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the token of edge {id:?} is shorter than {MIN_TOKEN_LEN} characters"
            ));
        }
        if self.entries.iter().any(|(e, _)| *e == id) {
            return Err(format!("edge {id:?} listed twice"));
        }
        if self.entries.iter().any(|(_, t)| *t == token) {
            return Err(format!("edge {id:?} reuses the token of another edge"));
        }
        self.entries.push((id, token));
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        warn_if_readable_by_others(path);
        let mut t = EdgeTokens::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| TokensError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            let mut parts = line.split_whitespace();
            let (Some(id), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(err(
                    "expected `EDGE_ID TOKEN` (two fields separated by spaces)".into(),
                ));
            };
            t.add(id.to_string(), Token::new(token)).map_err(err)?;
        }
        if t.entries.is_empty() {
            return Err(TokensError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(t)
    }

    /// The edge owning `presented`, comparing every token in constant time so the answer's
    /// timing does not reveal how much of a guess was right.
    pub fn authenticate(&self, presented: &str) -> Option<&str> {
        let mut found = None;
        for (id, token) in &self.entries {
            if constant_time_eq(token.0.as_bytes(), presented.as_bytes()) {
                found = Some(id.as_str());
            }
        }
        found
    }

    pub fn edge_ids(&self) -> Vec<String> {
        self.entries.iter().map(|(id, _)| id.clone()).collect()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the tokens file is readable by other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_authenticates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(
            &p,
            "# edges\nedge-a 0123456789abcdef\n\nedge-b fedcba9876543210\n",
        )
        .unwrap();
        let t = EdgeTokens::load(&p).unwrap();
        assert_eq!(t.authenticate("fedcba9876543210"), Some("edge-b"));
        assert_eq!(t.authenticate("fedcba987654321"), None);
        assert!(
            !format!("{t:?}").contains("0123456789abcdef"),
            "tokens must not print"
        );
    }

    #[test]
    fn bad_lines_name_the_line_and_not_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(&p, "edge-a 0123456789abcdef\nedge-b short\n").unwrap();
        let e = EdgeTokens::load(&p).unwrap_err().to_string();
        assert!(
            e.contains(":2:") && e.contains("shorter") && !e.contains("short\n"),
            "{e}"
        );
        std::fs::write(&p, "edge-a 0123456789abcdef\nedge-b 0123456789abcdef\n").unwrap();
        assert!(
            EdgeTokens::load(&p)
                .unwrap_err()
                .to_string()
                .contains("reuses")
        );
        std::fs::write(&p, "edge-a 0123456789abcdef extra\n").unwrap();
        assert!(
            EdgeTokens::load(&p)
                .unwrap_err()
                .to_string()
                .contains("two fields")
        );
    }
}
