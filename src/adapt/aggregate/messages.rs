//! Wire messages of the aggregation protocol (version [`PROTOCOL_VERSION`]), shared by the
//! server and the edge client.
//!
//! Every message is a JSON object with a `version` field. Parameter vectors travel as the
//! base64 encoding of their little-endian `f32` bytes ([`ParamVec`]): exact (no decimal
//! round trip), a third larger than raw bytes instead of the two to three times of decimal
//! numbers, and able to carry NaN and infinities so that the server, not the encoding, is
//! the place where non-finite values are rejected.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of every request and response body. A peer speaking another version is refused
/// with [`ErrorCode::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Most parameters a shared link may have (a quarter of a GiB of `f32`s): far above any link
/// the engine trains, and small enough that a spec's size never overflows or exhausts memory.
pub const MAX_PARAMS: usize = 1 << 26;

/// One tensor of a link: its name and dimensions, in the order the flat vector stores them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorShape {
    pub name: String,
    pub dims: Vec<usize>,
}

impl TensorShape {
    pub fn new(name: impl Into<String>, dims: &[usize]) -> Self {
        Self {
            name: name.into(),
            dims: dims.to_vec(),
        }
    }

    /// Number of scalars in the tensor (1 for a scalar with no dims); `usize::MAX` when the
    /// product overflows, which [`LinkSpec::validate`] refuses.
    pub fn numel(&self) -> usize {
        self.dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .unwrap_or(usize::MAX)
    }
}

/// The identity of a shared link: every edge and the server must agree on it exactly.
///
/// `link_id` names the link (e.g. `centernet->movenet`), `arch` describes the network that
/// reads the flat vector (e.g. `vec2vec hidden=160 act=relu`), and `shapes` list its tensors.
/// The fingerprint hashes all three, so two links with the same id but another architecture
/// or layout can never be averaged together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub link_id: String,
    pub arch: String,
    pub shapes: Vec<TensorShape>,
}

impl LinkSpec {
    pub fn new(
        link_id: impl Into<String>,
        arch: impl Into<String>,
        shapes: Vec<TensorShape>,
    ) -> Self {
        Self {
            link_id: link_id.into(),
            arch: arch.into(),
            shapes,
        }
    }

    /// Length of the flat parameter vector (`usize::MAX` when it overflows).
    pub fn num_params(&self) -> usize {
        self.shapes
            .iter()
            .try_fold(0usize, |n, s| n.checked_add(s.numel()))
            .unwrap_or(usize::MAX)
    }

    /// Hex SHA-256 of a canonical encoding of id, architecture and shapes.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(self.link_id.as_bytes());
        field(self.arch.as_bytes());
        for s in &self.shapes {
            field(s.name.as_bytes());
            let dims: Vec<u8> = s
                .dims
                .iter()
                .flat_map(|d| (*d as u64).to_le_bytes())
                .collect();
            field(&dims);
        }
        hex(&h.finalize())
    }

    /// Checks that the spec can describe a parameter vector: a non-empty id, at least one
    /// tensor, unique tensor names, no zero-sized tensor.
    pub fn validate(&self) -> Result<(), String> {
        if self.link_id.trim().is_empty() {
            return Err("link_id is empty".into());
        }
        if self.shapes.is_empty() {
            return Err(format!("link {:?} declares no tensors", self.link_id));
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.shapes {
            if !names.insert(s.name.as_str()) {
                return Err(format!(
                    "link {:?}: tensor {:?} declared twice",
                    self.link_id, s.name
                ));
            }
            if s.numel() == 0 {
                return Err(format!(
                    "link {:?}: tensor {:?} has no elements (dims {:?})",
                    self.link_id, s.name, s.dims
                ));
            }
        }
        if self.num_params() > MAX_PARAMS {
            return Err(format!(
                "link {:?}: {} parameters is more than the {MAX_PARAMS} a link may have",
                self.link_id,
                self.num_params()
            ));
        }
        Ok(())
    }
}

/// A flat `f32` parameter vector, serialized as base64 of its little-endian bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamVec(pub Vec<f32>);

impl ParamVec {
    pub fn encode(&self) -> String {
        let bytes: Vec<u8> = self.0.iter().flat_map(|v| v.to_le_bytes()).collect();
        base64_encode(&bytes)
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        let bytes = base64_decode(text)?;
        if !bytes.len().is_multiple_of(4) {
            return Err(format!(
                "{} bytes is not a whole number of f32 values",
                bytes.len()
            ));
        }
        Ok(ParamVec(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }

    /// Index of the first NaN or infinite value, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        self.0.iter().position(|v| !v.is_finite())
    }

    /// Hex SHA-256 of the little-endian bytes: a compact identity of the weights.
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        for v in &self.0 {
            h.update(v.to_le_bytes());
        }
        hex(&h.finalize())
    }
}

impl Serialize for ParamVec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for ParamVec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ParamVec::decode(&text).map_err(serde::de::Error::custom)
    }
}

/// `GET /v1/links/{link_id}`: the global link an edge starts its local update from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalLink {
    pub version: u32,
    pub spec: LinkSpec,
    pub fingerprint: String,
    /// The open round: updates computed from these weights must carry this number.
    pub round: u64,
    pub params: ParamVec,
}

/// `POST /v1/links/{link_id}/updates`: one edge's update for one round.
///
/// `delta` is the change the edge proposes to the global weights it pulled for `round`:
/// `delta = theta_local - theta_global`, e.g. `-lr * gradient` after one local step, or the
/// difference after several local epochs. The server averages the deltas of a round and adds
/// the mean (times its own rate, 1 by default) to the global weights, as Algorithm 1 writes
/// it: `theta_G <- theta_G + server_lr * mean_k(delta_k)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    pub version: u32,
    pub edge_id: String,
    /// The spec fingerprint the update was computed for; when given it must match the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    pub round: u64,
    /// Local samples behind the update; when every update of a round carries one, the mean is
    /// weighted by them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_samples: Option<u64>,
    pub delta: ParamVec,
}

/// Response to an accepted update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccepted {
    pub version: u32,
    pub link_id: String,
    /// The round the update was counted in.
    pub round: u64,
    /// Updates accepted so far in that round (this one included).
    pub accepted_in_round: usize,
    /// True when this update completed the round (every known edge uploaded).
    pub round_closed: bool,
    /// The round now open.
    pub open_round: u64,
}

/// Why a request was refused. The JSON error body names it in snake case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthenticated,
    EdgeMismatch,
    UnknownLink,
    Malformed,
    UnsupportedVersion,
    BodyTooLarge,
    FingerprintMismatch,
    ShapeMismatch,
    NonFinite,
    InvalidSampleCount,
    StaleRound,
    FutureRound,
    DuplicateUpdate,
    Internal,
}

impl ErrorCode {
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::Unauthenticated,
        ErrorCode::EdgeMismatch,
        ErrorCode::UnknownLink,
        ErrorCode::Malformed,
        ErrorCode::UnsupportedVersion,
        ErrorCode::BodyTooLarge,
        ErrorCode::FingerprintMismatch,
        ErrorCode::ShapeMismatch,
        ErrorCode::NonFinite,
        ErrorCode::InvalidSampleCount,
        ErrorCode::StaleRound,
        ErrorCode::FutureRound,
        ErrorCode::DuplicateUpdate,
        ErrorCode::Internal,
    ];

    /// The snake-case name used in error bodies and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::EdgeMismatch => "edge_mismatch",
            ErrorCode::UnknownLink => "unknown_link",
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::FingerprintMismatch => "fingerprint_mismatch",
            ErrorCode::ShapeMismatch => "shape_mismatch",
            ErrorCode::NonFinite => "non_finite",
            ErrorCode::InvalidSampleCount => "invalid_sample_count",
            ErrorCode::StaleRound => "stale_round",
            ErrorCode::FutureRound => "future_round",
            ErrorCode::DuplicateUpdate => "duplicate_update",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status that carries this error.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthenticated => 401,
            ErrorCode::EdgeMismatch => 403,
            ErrorCode::UnknownLink => 404,
            ErrorCode::Malformed | ErrorCode::UnsupportedVersion => 400,
            ErrorCode::BodyTooLarge => 413,
            ErrorCode::FingerprintMismatch
            | ErrorCode::ShapeMismatch
            | ErrorCode::NonFinite
            | ErrorCode::InvalidSampleCount => 422,
            ErrorCode::StaleRound | ErrorCode::FutureRound | ErrorCode::DuplicateUpdate => 409,
            ErrorCode::Internal => 500,
        }
    }
}

/// Body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub version: u32,
    pub error: ErrorCode,
    pub message: String,
}

/// `GET /v1/state`: what the server holds, without the weights themselves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateView {
    pub version: u32,
    pub links: Vec<LinkStateView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkStateView {
    pub link_id: String,
    pub fingerprint: String,
    pub round: u64,
    pub num_params: usize,
    /// SHA-256 of the global weights.
    pub params_sha256: String,
    /// Edges whose update the open round has accepted, sorted.
    pub pending_edges: Vec<String>,
    pub last_round: Option<RoundSummary>,
}

/// What closed a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedBy {
    /// Every known edge uploaded before the deadline.
    AllEdges,
    /// The deadline passed with at least the quorum of updates.
    Deadline,
}

/// The record of the last completed round of a link (persisted with the state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundSummary {
    pub round: u64,
    pub edges: Vec<String>,
    pub closed_by: ClosedBy,
    /// Body bytes of the accepted update requests of the round.
    pub received_bytes: u64,
    /// Times the deadline passed without a quorum before the round closed.
    pub extensions: u32,
    pub closed_unix_ms: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 section 4).
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(format!(
            "base64 length {} is not a multiple of 4",
            bytes.len()
        ));
    }
    let value = |c: u8, at: usize| -> Result<u32, String> {
        match c {
            b'A'..=b'Z' => Ok(u32::from(c - b'A')),
            b'a'..=b'z' => Ok(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Ok(u32::from(c - b'0') + 52),
            b'+' => Ok(62),
            b'/' => Ok(63),
            _ => Err(format!(
                "invalid base64 character {:?} at offset {at}",
                c as char
            )),
        }
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let groups = bytes.len() / 4;
    for (g, quad) in bytes.chunks_exact(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && g + 1 != groups) {
            return Err(format!("misplaced base64 padding in group {g}"));
        }
        let mut n = 0u32;
        for (i, &c) in quad.iter().enumerate() {
            let v = if i >= 4 - pad {
                0
            } else {
                value(c, g * 4 + i)?
            };
            n = (n << 6) | v;
        }
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_length_and_matches_known_vectors() {
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
        assert!(base64_decode("Zm9v!mFy").is_err());
        assert!(base64_decode("Zm=vYmFy").is_err());
        assert!(base64_decode("Zm9").is_err());
    }

    #[test]
    fn param_vec_is_exact_and_keeps_non_finite_values_for_the_server_to_judge() {
        let v = ParamVec(vec![0.1, -3.5e-20, f32::MAX, f32::NAN, f32::INFINITY]);
        let json = serde_json::to_string(&v).unwrap();
        let back: ParamVec = serde_json::from_str(&json).unwrap();
        assert_eq!(back.0[..3], v.0[..3]);
        assert!(back.0[3].is_nan());
        assert_eq!(back.first_non_finite(), Some(3));
        assert!(
            serde_json::from_str::<ParamVec>("\"AAAA\"").is_err(),
            "3 bytes is not an f32"
        );
    }

    #[test]
    fn fingerprint_depends_on_id_arch_and_layout() {
        let spec = LinkSpec::new("a->b", "vec2vec", vec![TensorShape::new("w", &[2, 3])]);
        let other_dims = LinkSpec::new("a->b", "vec2vec", vec![TensorShape::new("w", &[3, 2])]);
        let other_arch = LinkSpec::new("a->b", "vec2vec relu", spec.shapes.clone());
        assert_eq!(spec.fingerprint(), spec.clone().fingerprint());
        assert_ne!(spec.fingerprint(), other_dims.fingerprint());
        assert_ne!(spec.fingerprint(), other_arch.fingerprint());
        assert_eq!(spec.num_params(), 6);
        assert!(
            LinkSpec::new("a", "x", vec![TensorShape::new("w", &[0])])
                .validate()
                .is_err()
        );
    }
}
