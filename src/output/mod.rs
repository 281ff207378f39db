//! Black-box model outputs as the links see them (paper section 3.4): a fixed-length vector or
//! a variable-length token sequence, each tagged with the task it serves.
//!
//! Pure Rust: no GStreamer, no ONNX Runtime.

use serde::{Deserialize, Serialize};

mod loss;
mod metric;

pub use loss::{Activation, activate, loss_and_grad, token_loss_and_grad};
pub use metric::{
    MeanScore, Predicted, argmax as metric_argmax, average_precision, box_iou, entropy, evaluate,
    mean_average_precision, mean_score, metric_name, score, strip_end, try_mean_score, wer,
};

/// What a model's output means, which decides the link's output activation, its training loss
/// and its evaluation metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// A probability vector over exclusive classes (softmax; soft-label cross-entropy; top-1).
    SingleLabel,
    /// Independent per-class probabilities (sigmoid; binary cross-entropy; mAP).
    MultiLabel,
    /// Real values (linear; MSE; MAE).
    Regression,
    /// Boxes as (x1, y1, x2, y2) in [0, 1], all zeros for "no box" (box loss; IoU).
    Localization,
    /// Object counts (linear; MSE; count accuracy |predicted - exact| < 0.5).
    Count,
    /// A token sequence (token cross-entropy; WER).
    Sequence,
}

/// The shape of an output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "form")]
pub enum OutputForm {
    /// A fixed-length f32 vector.
    Vector { len: usize },
    /// A token sequence of at most `max_len` tokens from `0..vocab`, terminated by `end_token`.
    Sequence {
        vocab: usize,
        max_len: usize,
        end_token: u32,
    },
}

/// Everything a link needs to know about one side of a mapping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpec {
    pub form: OutputForm,
    pub task: TaskKind,
}

/// One model's output on one frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputValue {
    Vector(Vec<f32>),
    Tokens(Vec<u32>),
}

impl OutputSpec {
    pub fn vector(len: usize, task: TaskKind) -> Self {
        Self {
            form: OutputForm::Vector { len },
            task,
        }
    }

    pub fn sequence(vocab: usize, max_len: usize, end_token: u32) -> Self {
        Self {
            form: OutputForm::Sequence {
                vocab,
                max_len,
                end_token,
            },
            task: TaskKind::Sequence,
        }
    }

    /// Checks that `value` has this spec's form (length, vocabulary), so that a trace or a
    /// network message cannot feed a link a value of the wrong shape.
    pub fn check(&self, value: &OutputValue) -> Result<(), String> {
        match (&self.form, value) {
            (OutputForm::Vector { len }, OutputValue::Vector(v)) => {
                if v.len() != *len {
                    return Err(format!(
                        "expected a vector of length {len}, found length {}",
                        v.len()
                    ));
                }
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(format!("element {i} is not finite ({})", v[i]));
                }
                Ok(())
            }
            (OutputForm::Sequence { vocab, max_len, .. }, OutputValue::Tokens(t)) => {
                if t.len() > *max_len {
                    return Err(format!(
                        "sequence of {} tokens exceeds the maximum {max_len}",
                        t.len()
                    ));
                }
                if let Some(bad) = t.iter().find(|&&x| x as usize >= *vocab) {
                    return Err(format!("token {bad} is outside the vocabulary of {vocab}"));
                }
                Ok(())
            }
            (OutputForm::Vector { .. }, OutputValue::Tokens(_)) => {
                Err("expected a vector, found a token sequence".into())
            }
            (OutputForm::Sequence { .. }, OutputValue::Vector(_)) => {
                Err("expected a token sequence, found a vector".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_rejects_wrong_length_nan_and_out_of_vocab() {
        let v = OutputSpec::vector(3, TaskKind::Count);
        assert!(v.check(&OutputValue::Vector(vec![1.0, 2.0, 3.0])).is_ok());
        assert!(v.check(&OutputValue::Vector(vec![1.0, 2.0])).is_err());
        assert!(
            v.check(&OutputValue::Vector(vec![1.0, f32::NAN, 3.0]))
                .is_err()
        );
        assert!(v.check(&OutputValue::Tokens(vec![1])).is_err());
        let s = OutputSpec::sequence(5, 4, 0);
        assert!(s.check(&OutputValue::Tokens(vec![1, 4, 0])).is_ok());
        assert!(s.check(&OutputValue::Tokens(vec![5])).is_err());
        assert!(s.check(&OutputValue::Tokens(vec![1, 1, 1, 1, 1])).is_err());
    }
}
