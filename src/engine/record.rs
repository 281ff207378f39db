//! The output record: one model's output on one frame, and how it was obtained.

use crate::output::OutputValue;
use serde::{Deserialize, Serialize};

/// Format version of the JSON records the sinks write.
/// Version 2 added `reused`.
pub const RECORD_VERSION: u32 = 2;

/// How a record's value was obtained. Nothing is silently skipped: a model that neither ran
/// nor could be predicted still gets a record saying why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Provenance {
    /// The model ran on this frame.
    Exact {
        /// True when the frame was a profiling frame (every model ran to score the links).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        profiling: bool,
    },
    /// The value was predicted by the link ensemble from the listed executed models.
    Predicted {
        sources: Vec<String>,
        /// Validation score of the ensemble for this source set, in [0, 1].
        score: f64,
        /// The prediction's own uncertainty: entropy for class outputs; for counts,
        /// regressions and boxes the spread across the source links, or with one source the
        /// squared error its loss head predicts.
        uncertainty: f64,
    },
    /// Policy hybrid: the model's trigger did not select this frame, and its last exact
    /// output on the camera is served.
    Reused {
        /// Sequence number of the frame the output was computed on.
        from_seq: u64,
        /// Video seconds since that frame, when both presentation times are known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        age_s: Option<f64>,
    },
    /// No value: the model is not active and no link can predict it (yet).
    Unavailable { reason: String },
}

/// One output record, as written by every sink (one JSON object per line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    pub v: u32,
    pub camera: String,
    /// Frame sequence number within the camera (after sampling).
    pub seq: u64,
    /// Presentation time of the frame in seconds from the stream start, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pts_s: Option<f64>,
    /// Wall-clock time of the frame, seconds since the Unix epoch.
    pub time: f64,
    pub model: String,
    #[serde(flatten)]
    pub provenance: Provenance,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<OutputValue>,
}

impl OutputRecord {
    pub fn is_exact(&self) -> bool {
        matches!(self.provenance, Provenance::Exact { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json() {
        let r = OutputRecord {
            v: RECORD_VERSION,
            camera: "lobby".into(),
            seq: 7,
            pts_s: Some(0.7),
            time: 1.0e9,
            model: "nanodet".into(),
            provenance: Provenance::Predicted {
                sources: vec!["centernet".into()],
                score: 0.8,
                uncertainty: 0.1,
            },
            value: Some(OutputValue::Vector(vec![3.0])),
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains("\"how\":\"predicted\""), "{line}");
        let back: OutputRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
    }
}
