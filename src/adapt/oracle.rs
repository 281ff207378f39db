//! Oracle links (paper section 4.2): a link from a deployed black-box model to an abstract
//! *oracle node* that stands for the ground truth (human labels) of the site the model runs
//! on. Serving `link(model(x))` instead of `model(x)` adapts the model to its domain without
//! touching it.
//!
//! The oracle node's output spec follows the labels (see [`resolve_spec`]); the link is an
//! ordinary [`LinkNet`] for `model spec -> oracle spec`, trained on the labelled frames of a
//! trace and scored on a held-out share of them.
//!
//! An oracle link is saved as one JSON file (format [`ORACLE_FORMAT`], version
//! [`ORACLE_FORMAT_VERSION`]) written atomically, its weights base64-encoded and checked by
//! a SHA-256 on load.

use super::aggregate::ParamVec;
use super::labels::{Labels, LabelsError};
use crate::link::net::{LinkNet, TrainParams};
use crate::link::norm::Norm;
use crate::link::trace::{TraceHeader, TraceRecord};
use crate::output::{
    OutputForm, OutputSpec, OutputValue, Predicted, TaskKind, metric_name, try_mean_score,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const ORACLE_FORMAT: &str = "mlink-oracle-link";
pub const ORACLE_FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    #[error(transparent)]
    Labels(#[from] LabelsError),
    #[error("{0}")]
    Spec(String),
    #[error("{0}")]
    Data(String),
    #[error("link network: {0}")]
    Link(#[from] crate::link::LinkError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid oracle link file: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{path}: oracle link format version {found} is newer than the supported version {supported}; upgrade mlink"
    )]
    NewerVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("input of the oracle link for {model:?}: {message}")]
    Input { model: String, message: String },
}

/// How label values become oracle outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelEncoding {
    /// The label values are the output vector.
    Direct,
    /// A scalar class index, one-hot encoded over `classes` classes.
    ClassIndex { classes: usize },
}

/// The oracle node's output spec for labels of `label_len` values, given the deployed model's
/// spec and an optional task the user declares (`--task`):
///
/// - single-label task with scalar labels: class indices, one-hot over the model's length
///   (or `classes` when given);
/// - a label as long as the model's vector output, no task declared: the model's own spec (the
///   oracle is "the model, corrected");
/// - otherwise a vector of the label's length with the declared task, or, without one, the
///   model's task (count stays count, single-label needs class indices or one-hot labels);
///   a scalar label of a model whose task cannot describe it defaults to regression.
pub fn resolve_spec(
    model: &OutputSpec,
    label_len: usize,
    task: Option<TaskKind>,
    classes: Option<usize>,
) -> Result<(OutputSpec, LabelEncoding), OracleError> {
    let model_len = match model.form {
        OutputForm::Vector { len } => Some(len),
        OutputForm::Sequence { .. } => None,
    };
    if task == Some(TaskKind::Sequence) {
        return Err(OracleError::Spec(
            "the oracle node must output a vector; sequence labels are not supported".into(),
        ));
    }
    let task = task.unwrap_or(match model.task {
        TaskKind::Sequence => TaskKind::Regression,
        t => t,
    });
    if task == TaskKind::SingleLabel && label_len == 1 {
        let classes = classes
            .or(model_len.filter(|_| model.task == TaskKind::SingleLabel))
            .ok_or_else(|| {
                OracleError::Spec(
                    "scalar single-label labels are class indices: give the number of classes (--classes)".into(),
                )
            })?;
        if classes < 2 {
            return Err(OracleError::Spec(format!(
                "a single-label oracle needs at least 2 classes, not {classes}"
            )));
        }
        return Ok((
            OutputSpec::vector(classes, TaskKind::SingleLabel),
            LabelEncoding::ClassIndex { classes },
        ));
    }
    if task == TaskKind::Localization && !label_len.is_multiple_of(4) {
        return Err(OracleError::Spec(format!(
            "localization labels are boxes of 4 values; these have {label_len}"
        )));
    }
    let task = if label_len == 1 && matches!(task, TaskKind::SingleLabel | TaskKind::MultiLabel) {
        TaskKind::Regression
    } else {
        task
    };
    Ok((OutputSpec::vector(label_len, task), LabelEncoding::Direct))
}

/// Encodes one label row's values as an oracle output.
fn encode(
    labels: &Labels,
    row: &super::labels::LabelRow,
    enc: LabelEncoding,
    spec: &OutputSpec,
) -> Result<OutputValue, OracleError> {
    let v = match enc {
        LabelEncoding::Direct => row.label.clone(),
        LabelEncoding::ClassIndex { classes } => {
            let c = row.label[0];
            if c.fract() != 0.0 || c < 0.0 || c as usize >= classes {
                return Err(labels
                    .row_error(
                        row,
                        format!(
                            "class index {c} is not an integer from 0 to {}",
                            classes - 1
                        ),
                    )
                    .into());
            }
            let mut one_hot = vec![0.0; classes];
            one_hot[c as usize] = 1.0;
            one_hot
        }
    };
    let v = OutputValue::Vector(v);
    spec.check(&v)
        .map_err(|m| labels.row_error(row, format!("wrong label for the oracle output: {m}")))?;
    Ok(v)
}

/// Labelled frames: the deployed model's output and the oracle output, in label-file order.
pub struct LabelledFrames {
    pub model: String,
    pub model_spec: OutputSpec,
    pub spec: OutputSpec,
    pub encoding: LabelEncoding,
    pub pairs: Vec<(OutputValue, OutputValue)>,
}

/// Matches every label to the trace record of its `(camera, seq)` and takes `model`'s output
/// there. A label for a frame the trace lacks, or where the model did not run, is an error
/// naming the labels file's line.
pub fn match_labels(
    header: &TraceHeader,
    records: &[TraceRecord],
    model: &str,
    labels: &Labels,
    task: Option<TaskKind>,
    classes: Option<usize>,
) -> Result<LabelledFrames, OracleError> {
    let m = header
        .models
        .iter()
        .position(|t| t.id == model)
        .ok_or_else(|| {
            OracleError::Data(format!(
                "the trace has no model {model:?} (it records {})",
                header
                    .models
                    .iter()
                    .map(|t| t.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let model_spec = header.models[m].spec.clone();
    let (spec, encoding) = resolve_spec(&model_spec, labels.label_len(), task, classes)?;
    let index: HashMap<(&str, u64), usize> = records
        .iter()
        .enumerate()
        .map(|(n, r)| ((r.camera.as_str(), r.seq), n))
        .collect();
    let mut pairs = Vec::with_capacity(labels.rows.len());
    for row in &labels.rows {
        let Some(&n) = index.get(&(row.camera.as_str(), row.seq)) else {
            return Err(labels
                .row_error(
                    row,
                    format!(
                        "unknown frame: the trace has no record for camera {:?}, seq {}",
                        row.camera, row.seq
                    ),
                )
                .into());
        };
        let Some(out) = &records[n].outputs[m] else {
            return Err(labels
                .row_error(
                    row,
                    format!(
                        "model {model:?} did not run on camera {:?}, seq {} in the trace",
                        row.camera, row.seq
                    ),
                )
                .into());
        };
        pairs.push((out.clone(), encode(labels, row, encoding, &spec)?));
    }
    Ok(LabelledFrames {
        model: model.to_string(),
        model_spec,
        spec,
        encoding,
        pairs,
    })
}

/// Accuracy of the raw model and of the oracle link on the held-out labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OracleReport {
    /// The oracle task's metric, as [`score`] computes it.
    pub metric: String,
    pub train_samples: usize,
    pub holdout_samples: usize,
    /// Mean score of the model's own output against the labels ("before"), with the oracle's
    /// metric; `None` when the model's output has another form than the labels.
    pub raw_holdout_score: Option<f64>,
    /// Mean score of `link(model(x))` against the labels ("after").
    pub link_holdout_score: f64,
    pub link_train_score: f64,
}

/// A trained oracle link: `model output -> oracle (ground-truth) output`.
pub struct OracleLink {
    pub source_model: String,
    pub source_spec: OutputSpec,
    /// The oracle node's output spec.
    pub spec: OutputSpec,
    pub hidden_factor: usize,
    pub net: LinkNet,
    pub report: Option<OracleReport>,
}

impl std::fmt::Debug for OracleLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OracleLink")
            .field("source_model", &self.source_model)
            .field("source_spec", &self.source_spec)
            .field("spec", &self.spec)
            .field("params", &self.net.params().len())
            .field("report", &self.report)
            .finish()
    }
}

/// Splits `n` indices into training and held-out ones, deterministically from the seed.
fn holdout_split(n: usize, holdout: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x0_7ac1e));
    let n_hold = ((n as f64) * holdout).round() as usize;
    let hold = idx.split_off(n - n_hold.min(n));
    (idx, hold)
}

/// The mean score of the pairs, 0 without any.
fn mean_score<'a, P: Predicted>(
    spec: &OutputSpec,
    pairs: impl Iterator<Item = Result<(P, &'a OutputValue), OracleError>>,
) -> Result<f64, OracleError> {
    Ok(try_mean_score(spec, pairs)?.map_or(0.0, |m| m.score))
}

impl OracleLink {
    /// Trains the link on `1 - holdout` of the labelled frames and scores the raw model and
    /// the link on the rest.
    pub fn train(
        frames: &LabelledFrames,
        params: &TrainParams,
        holdout: f64,
    ) -> Result<Self, OracleError> {
        if !(0.0..1.0).contains(&holdout) {
            return Err(OracleError::Data(format!(
                "the held-out share must be in [0, 1), not {holdout}"
            )));
        }
        let (train_idx, hold_idx) = holdout_split(frames.pairs.len(), holdout, params.seed);
        if train_idx.is_empty() {
            return Err(OracleError::Data(format!(
                "{} labelled frames leave none to train on with a held-out share of {holdout}",
                frames.pairs.len()
            )));
        }
        if holdout > 0.0 && hold_idx.is_empty() {
            return Err(OracleError::Data(format!(
                "{} labelled frames leave none held out with a share of {holdout}; label more frames",
                frames.pairs.len()
            )));
        }
        let x: Vec<&OutputValue> = train_idx.iter().map(|&n| &frames.pairs[n].0).collect();
        let t: Vec<&OutputValue> = train_idx.iter().map(|&n| &frames.pairs[n].1).collect();
        let mut rng = StdRng::seed_from_u64(params.seed ^ 0x04ac_1e00);
        let mut net = LinkNet::new(&frames.model_spec, &frames.spec, params, &x, &t, &mut rng)?;
        net.fit(&x, &t, params, &mut rng)?;
        let spec = &frames.spec;
        let link_on = |idx: &[usize]| {
            mean_score(
                spec,
                idx.iter().map(|&n| {
                    let (input, exact) = &frames.pairs[n];
                    Ok((net.predict(input)?, exact))
                }),
            )
        };
        // The model's own output is comparable with the labels when it has the same form (a
        // counter read as a regression is still a number per frame).
        let comparable = frames.model_spec.form == spec.form;
        let raw_holdout_score = if comparable {
            Some(mean_score(
                spec,
                hold_idx.iter().map(|&n| {
                    let (raw, exact) = &frames.pairs[n];
                    Ok((raw, exact))
                }),
            )?)
        } else {
            None
        };
        let report = OracleReport {
            metric: metric_name(spec.task).to_string(),
            train_samples: train_idx.len(),
            holdout_samples: hold_idx.len(),
            raw_holdout_score: raw_holdout_score.filter(|_| !hold_idx.is_empty()),
            link_holdout_score: link_on(&hold_idx)?,
            link_train_score: link_on(&train_idx)?,
        };
        Ok(Self {
            source_model: frames.model.clone(),
            source_spec: frames.model_spec.clone(),
            spec: frames.spec.clone(),
            hidden_factor: params.hidden_factor,
            net,
            report: Some(report),
        })
    }

    /// `link(model(x))`: the oracle output predicted from the deployed model's output.
    pub fn apply(&self, model_output: &OutputValue) -> Result<OutputValue, OracleError> {
        self.source_spec
            .check(model_output)
            .map_err(|message| OracleError::Input {
                model: self.source_model.clone(),
                message,
            })?;
        Ok(self.net.predict(model_output)?)
    }

    /// Writes the link atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<(), OracleError> {
        let params = ParamVec(self.net.params());
        let file = OracleFile {
            format: ORACLE_FORMAT.into(),
            format_version: ORACLE_FORMAT_VERSION,
            source_model: self.source_model.clone(),
            source_spec: self.source_spec.clone(),
            spec: self.spec.clone(),
            hidden_factor: self.hidden_factor,
            in_norm: self.net.in_norm().cloned(),
            out_norm: self.net.out_norm().cloned(),
            params_sha256: params.sha256(),
            params,
            report: self.report.clone(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| OracleError::Corrupt {
            path: path.to_owned(),
            message: format!("encoding: {e}"),
        })?;
        bytes.push(b'\n');
        crate::fsutil::write_atomic(path, &bytes).map_err(|source| OracleError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads a link written by [`save`](Self::save); a truncated, damaged or foreign file is
    /// a clear error.
    pub fn load(path: &Path) -> Result<Self, OracleError> {
        let bytes = std::fs::read(path).map_err(|source| OracleError::Io {
            path: path.to_owned(),
            source,
        })?;
        let corrupt = |message: String| OracleError::Corrupt {
            path: path.to_owned(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("{e} (truncated?)")))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(ORACLE_FORMAT) => {}
            other => {
                return Err(corrupt(format!(
                    "format is {other:?}, expected {ORACLE_FORMAT:?}"
                )));
            }
        }
        let found = value
            .get("format_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| corrupt("no format_version".into()))?;
        if found > u64::from(ORACLE_FORMAT_VERSION) {
            return Err(OracleError::NewerVersion {
                path: path.to_owned(),
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: ORACLE_FORMAT_VERSION,
            });
        }
        let f: OracleFile =
            serde_path_to_error::deserialize(value).map_err(|e| corrupt(e.to_string()))?;
        if f.params.sha256() != f.params_sha256 {
            return Err(corrupt(
                "weight checksum mismatch (the file is damaged)".into(),
            ));
        }
        if !matches!(f.spec.form, OutputForm::Vector { .. }) {
            return Err(corrupt("the oracle output must be a vector".into()));
        }
        for (norm, what, spec) in [
            (&f.in_norm, "in_norm", &f.source_spec),
            (&f.out_norm, "out_norm", &f.spec),
        ] {
            if let (Some(n), OutputForm::Vector { len }) = (norm, &spec.form)
                && (n.mean.len() != *len
                    || n.std.len() != *len
                    || n.mean.iter().chain(&n.std).any(|v| !v.is_finite()))
            {
                return Err(corrupt(format!(
                    "{what} does not fit a vector of {len} finite values"
                )));
            }
        }
        let mut net = LinkNet::with_norms(
            &f.source_spec,
            &f.spec,
            f.hidden_factor.max(1),
            f.in_norm,
            f.out_norm,
            &mut StdRng::seed_from_u64(0),
        )?;
        net.set_params(&f.params.0)
            .map_err(|e| corrupt(format!("weights: {e}")))?;
        Ok(Self {
            source_model: f.source_model,
            source_spec: f.source_spec,
            spec: f.spec,
            hidden_factor: f.hidden_factor.max(1),
            net,
            report: f.report,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OracleFile {
    format: String,
    format_version: u32,
    source_model: String,
    source_spec: OutputSpec,
    spec: OutputSpec,
    hidden_factor: usize,
    in_norm: Option<Norm>,
    out_norm: Option<Norm>,
    params: ParamVec,
    params_sha256: String,
    #[serde(default)]
    report: Option<OracleReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oracle_spec_follows_the_labels() {
        let count = OutputSpec::vector(1, TaskKind::Count);
        assert_eq!(
            resolve_spec(&count, 1, None, None).unwrap(),
            (count.clone(), LabelEncoding::Direct)
        );
        assert_eq!(
            resolve_spec(&count, 1, Some(TaskKind::Regression), None)
                .unwrap()
                .0,
            OutputSpec::vector(1, TaskKind::Regression)
        );
        let cls = OutputSpec::vector(5, TaskKind::SingleLabel);
        assert_eq!(
            resolve_spec(&cls, 1, None, None).unwrap(),
            (cls.clone(), LabelEncoding::ClassIndex { classes: 5 })
        );
        assert_eq!(
            resolve_spec(&cls, 5, None, None).unwrap(),
            (cls.clone(), LabelEncoding::Direct)
        );
        // A detector's per-class counts linked to a single person count.
        assert_eq!(
            resolve_spec(&OutputSpec::vector(80, TaskKind::Count), 1, None, None)
                .unwrap()
                .0,
            OutputSpec::vector(1, TaskKind::Count)
        );
        assert!(
            resolve_spec(&count, 1, Some(TaskKind::SingleLabel), None)
                .unwrap_err()
                .to_string()
                .contains("--classes")
        );
        assert!(resolve_spec(&count, 3, Some(TaskKind::Localization), None).is_err());
    }
}
