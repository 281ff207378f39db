//! Versioned files, written once for every format that stores state: the format name and
//! version peek, the "newer than this build" error, the SHA-256 checksum and the atomic write.
//!
//! JSON formats (oracle links, the aggregator's state and link files) share one envelope:
//!
//! ```json
//! {"format": "mlink-oracle-link", "format_version": 2, "sha256": "<hex>", "content": {...}}
//! ```
//!
//! `sha256` covers the exact bytes of `content` as stored, so any edit or damage to the content
//! is caught; the envelope is read before the content, so a file from a newer build is
//! reported as such rather than as a parse error of a content it cannot know. Version 1 files
//! of these formats (no envelope: the content's fields beside `format` and `format_version`,
//! no checksum) are still read.
//!
//! Binary formats (link bundles) keep their own layout and use [`Format::check_version`],
//! [`sha256_hex`] and [`write_atomic`].
//!
//! Pure Rust: no GStreamer, no ONNX Runtime.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// One file format: its name (the `format` field of JSON files), what it is called in
/// messages, and the version this build writes (the newest it reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    pub name: &'static str,
    pub what: &'static str,
    pub version: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum VersionedError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid {what}: {reason}")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error(
        "{path}: {what} format version {found} is newer than the supported version {supported}; upgrade mlink"
    )]
    NewerVersion {
        path: PathBuf,
        what: &'static str,
        found: u64,
        supported: u32,
    },
}

impl VersionedError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::Corrupt { path, .. }
            | Self::NewerVersion { path, .. } => path,
        }
    }
}

/// The JSON envelope as read: the content stays unparsed until the version is known.
#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    format: Option<String>,
    format_version: Option<u64>,
    sha256: Option<String>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    format: &'a str,
    format_version: u32,
    sha256: String,
    content: &'a RawValue,
}

/// Keys of a version 1 file that belong to the envelope, not to the content.
const V1_ENVELOPE_KEYS: [&str; 2] = ["format", "format_version"];

impl Format {
    fn corrupt(&self, path: &Path, reason: impl Into<String>) -> VersionedError {
        VersionedError::Corrupt {
            path: path.to_path_buf(),
            what: self.what,
            reason: reason.into(),
        }
    }

    /// Checks a stored version: 0 is invalid, a version above this build's is
    /// [`VersionedError::NewerVersion`]. Returns the version.
    pub fn check_version(&self, path: &Path, found: u64) -> Result<u32, VersionedError> {
        if found > u64::from(self.version) {
            return Err(VersionedError::NewerVersion {
                path: path.to_path_buf(),
                what: self.what,
                found,
                supported: self.version,
            });
        }
        match u32::try_from(found) {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(self.corrupt(path, format!("format version {found} is not valid"))),
        }
    }

    /// Checks the checksum of `parts` (hashed in order) against the stored hex digest.
    pub fn check_sha256<'a>(
        &self,
        path: &Path,
        stored: Option<&str>,
        parts: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), VersionedError> {
        if stored != Some(sha256_hex(parts).as_str()) {
            return Err(self.corrupt(
                path,
                "checksum mismatch (the file is damaged or was edited)",
            ));
        }
        Ok(())
    }

    /// Writes `content` atomically in the JSON envelope of this format's current version.
    pub fn write_json<T: Serialize>(&self, path: &Path, content: &T) -> Result<(), VersionedError> {
        let encode = |e: serde_json::Error| self.corrupt(path, format!("encoding: {e}"));
        let text = serde_json::to_string_pretty(content).map_err(encode)?;
        let raw = RawValue::from_string(text).map_err(encode)?;
        let envelope = EnvelopeOut {
            format: self.name,
            format_version: self.version,
            sha256: sha256_hex([raw.get().as_bytes()]),
            content: &raw,
        };
        let mut bytes = serde_json::to_vec_pretty(&envelope).map_err(encode)?;
        bytes.push(b'\n');
        write_atomic(path, &bytes)
    }

    /// Reads a file written by [`write_json`](Self::write_json) (or a version 1 file of this
    /// format) and returns its version and content. The format name, version and checksum
    /// are checked before the content is parsed; content errors name the field.
    pub fn read_json<T: DeserializeOwned>(&self, path: &Path) -> Result<(u32, T), VersionedError> {
        let bytes = read(path)?;
        self.parse_json(path, &bytes)
    }

    /// [`read_json`](Self::read_json) of bytes already read from `path`.
    pub fn parse_json<T: DeserializeOwned>(
        &self,
        path: &Path,
        bytes: &[u8],
    ) -> Result<(u32, T), VersionedError> {
        let env: EnvelopeIn<'_> = serde_json::from_slice(bytes)
            .map_err(|e| self.corrupt(path, format!("{e} (truncated or not JSON?)")))?;
        match env.format.as_deref() {
            Some(name) if name == self.name => {}
            other => {
                return Err(self.corrupt(
                    path,
                    format!("format is {other:?}, expected {:?}", self.name),
                ));
            }
        }
        let version = self.check_version(
            path,
            env.format_version
                .ok_or_else(|| self.corrupt(path, "no format_version"))?,
        )?;
        let content = if version == 1 {
            // Version 1: no envelope; the content is the document without the envelope keys.
            let mut doc: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(bytes).map_err(|e| self.corrupt(path, e.to_string()))?;
            for k in V1_ENVELOPE_KEYS {
                doc.remove(k);
            }
            serde_json::to_string(&doc).map_err(|e| self.corrupt(path, e.to_string()))?
        } else {
            let raw = env
                .content
                .ok_or_else(|| self.corrupt(path, "no content"))?;
            self.check_sha256(path, env.sha256.as_deref(), [raw.get().as_bytes()])?;
            raw.get().to_string()
        };
        let de = &mut serde_json::Deserializer::from_str(&content);
        let value = serde_path_to_error::deserialize(de)
            .map_err(|e| self.corrupt(path, format!("at {}: {}", e.path(), e.inner())))?;
        Ok((version, value))
    }
}

/// Lowercase hex SHA-256 over `parts`, hashed in order.
pub fn sha256_hex<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a whole file, the error naming it.
pub fn read(path: &Path) -> Result<Vec<u8>, VersionedError> {
    std::fs::read(path).map_err(|source| VersionedError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// [`crate::fsutil::write_atomic`], the error naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), VersionedError> {
    crate::fsutil::write_atomic(path, bytes).map_err(|source| VersionedError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Format = Format {
        name: "mlink-test",
        what: "test file",
        version: 2,
    };

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Content {
        name: String,
        values: Vec<f32>,
        score: f64,
    }

    fn content() -> Content {
        Content {
            name: "a".into(),
            values: vec![0.1, -3.5e-7, 1e30],
            score: 0.1 + 0.2,
        }
    }

    #[test]
    fn round_trips_and_detects_edits_damage_and_newer_versions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        TEST.write_json(&p, &content()).unwrap();
        assert_eq!(TEST.read_json::<Content>(&p).unwrap(), (2, content()));

        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("\"a\"", "\"b\"")).unwrap();
        let e = TEST.read_json::<Content>(&p).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch"), "{e}");

        std::fs::write(
            &p,
            text.replace("\"format_version\": 2", "\"format_version\": 3"),
        )
        .unwrap();
        let e = TEST.read_json::<Content>(&p).unwrap_err();
        assert!(
            matches!(e, VersionedError::NewerVersion { found: 3, .. }),
            "{e}"
        );

        std::fs::write(&p, text.replace("mlink-test", "mlink-other")).unwrap();
        let e = TEST.read_json::<Content>(&p).unwrap_err().to_string();
        assert!(e.contains("expected \"mlink-test\""), "{e}");

        std::fs::write(&p, &text[..text.len() / 2]).unwrap();
        assert!(matches!(
            TEST.read_json::<Content>(&p),
            Err(VersionedError::Corrupt { .. })
        ));
        std::fs::write(
            &p,
            text.replace("\"format_version\": 2", "\"format_version\": 0"),
        )
        .unwrap();
        assert!(TEST.read_json::<Content>(&p).is_err());
    }

    #[test]
    fn reads_version_1_files_without_an_envelope() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v1.json");
        std::fs::write(
            &p,
            r#"{"format": "mlink-test", "format_version": 1, "name": "a", "values": [0.1], "score": 1.0}"#,
        )
        .unwrap();
        let (v, c): (u32, Content) = TEST.read_json(&p).unwrap();
        assert_eq!((v, c.values), (1, vec![0.1]));
        let e = TEST
            .read_json::<Content>(&dir.path().join("missing"))
            .unwrap_err();
        assert!(matches!(e, VersionedError::Io { .. }));
    }
}
