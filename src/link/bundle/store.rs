//! Saving and loading a bundle.
//!
//! # File format (version 3)
//! One safetensors file. Each link's flat parameters are the 1-D f32 tensor `link.I.J`, each
//! ensemble's weights `ensemble.J` (sources x dims), each vec2vec link's loss-prediction head
//! `losshead.I.J` (flat, optional). The safetensors metadata holds
//! `mlink.manifest` (the JSON [`Manifest`]: format version, models, links with their
//! architecture, standardisation and scores, ensembles' subset scores, training metadata) and
//! `mlink.sha256`: SHA-256 over the manifest's bytes and then all tensor data in name order,
//! so damage or an edit anywhere (weights, norms, scores, dims) is caught. Version 3 adds the
//! manifest's optional `view_links`: the few-sample links over the link views in their stored
//! form ([`ViewLinksState`], inside the manifest and so under its checksum). Version 2 files
//! (no view links) and version 1 files (checksum over the tensors only) are still read.
//! Written atomically (temporary file, then rename).
//!
//! Loading checks everything a prediction later relies on, so a bundle that loads cannot
//! index out of bounds or divide by zero: at most [`MAX_MODELS`](super::MAX_MODELS) models,
//! every link's architecture, standardisations and weight count against its models' specs,
//! finite weights, scores in [0, 1], and every ensemble's sources and dims against its
//! target's spec.

use super::{
    BundleError, BundleModel, Link, LinkBundle, MAX_MODELS, TargetEnsemble, TrainingMeta, mask_of,
};
use crate::link::ensemble::Ensemble;
use crate::link::loss_head::LossHead;
use crate::link::mlp::Mlp;
use crate::link::net::{Arch, LinkNet};
use crate::link::norm::Norm;
use crate::link::view_links::{ViewLinks, ViewLinksState};
use crate::output::{Activation, OutputForm, OutputSpec};
use crate::versioned::{self, Format, VersionedError};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

/// The bundle format this build writes and the newest it reads.
pub const BUNDLE_VERSION: u32 = 3;
const FORMAT: Format = Format {
    name: "mlink-link-bundle",
    what: "link bundle",
    version: BUNDLE_VERSION,
};

#[derive(Serialize, Deserialize)]
struct LinkEntry {
    source: usize,
    target: usize,
    arch: Arch,
    in_norm: Option<Norm>,
    out_norm: Option<Norm>,
    param_count: usize,
    score: Option<f64>,
    train_pairs: usize,
    validation_pairs: usize,
    /// Standardisation of the loss head's input; the head's flat parameters are the tensor
    /// `losshead.I.J`. Absent for links without a head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loss_head: Option<LossHeadEntry>,
}

#[derive(Serialize, Deserialize)]
struct LossHeadEntry {
    norm: Norm,
    hidden: usize,
    param_count: usize,
}

#[derive(Serialize, Deserialize)]
struct EnsembleEntry {
    target: usize,
    sources: Vec<usize>,
    dims: usize,
    /// (bit mask over model indices, validation score)
    subset_scores: Vec<(u64, f64)>,
}

/// The JSON manifest stored in the safetensors metadata.
#[derive(Serialize, Deserialize)]
struct Manifest {
    format_version: u32,
    models: Vec<BundleModel>,
    links: Vec<LinkEntry>,
    ensembles: Vec<EnsembleEntry>,
    meta: TrainingMeta,
    /// The few-sample links over the link views (version 3; absent when the bundle was
    /// trained without views).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    view_links: Option<ViewLinksState>,
}

const MANIFEST_KEY: &str = "mlink.manifest";
const HASH_KEY: &str = "mlink.sha256";

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl From<VersionedError> for BundleError {
    fn from(e: VersionedError) -> Self {
        let path = e.path().display().to_string();
        match e {
            VersionedError::Io { source, .. } => BundleError::Io { path, source },
            VersionedError::Corrupt { reason, .. } => BundleError::Corrupt { path, reason },
            VersionedError::NewerVersion {
                found, supported, ..
            } => BundleError::NewerVersion {
                path,
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported,
            },
        }
    }
}

impl LinkBundle {
    /// Writes the bundle atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<(), BundleError> {
        let corrupt = |reason: String| BundleError::Corrupt {
            path: path.display().to_string(),
            reason,
        };
        let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
        let mut links = Vec::new();
        for l in self.links.iter().flatten() {
            let p = l.net.params();
            links.push(LinkEntry {
                source: l.source,
                target: l.target,
                arch: l.arch,
                in_norm: l.net.in_norm().cloned(),
                out_norm: l.net.out_norm().cloned(),
                param_count: p.len(),
                score: l.score,
                train_pairs: l.train_pairs,
                validation_pairs: l.validation_pairs,
                loss_head: l.loss_head.as_ref().map(|h| LossHeadEntry {
                    norm: h.norm.clone(),
                    hidden: h.mlp.hidden,
                    param_count: h.mlp.params.len(),
                }),
            });
            tensors.insert(
                format!("link.{}.{}", l.source, l.target),
                (vec![p.len()], to_bytes(&p)),
            );
            if let Some(h) = &l.loss_head {
                tensors.insert(
                    format!("losshead.{}.{}", l.source, l.target),
                    (vec![h.mlp.params.len()], to_bytes(&h.mlp.params)),
                );
            }
        }
        let mut ensembles = Vec::new();
        for te in &self.ensembles {
            let e = &te.ensemble;
            let dims = e.logit_weights.first().map_or(0, Vec::len);
            ensembles.push(EnsembleEntry {
                target: e.target,
                sources: e.sources.clone(),
                dims,
                subset_scores: te.subset_scores.iter().map(|(k, v)| (*k, *v)).collect(),
            });
            if dims > 0 {
                tensors.insert(
                    format!("ensemble.{}", e.target),
                    (
                        vec![e.sources.len(), dims],
                        to_bytes(&e.logit_weights.concat()),
                    ),
                );
            }
        }
        let manifest = Manifest {
            format_version: BUNDLE_VERSION,
            models: self.models.clone(),
            links,
            ensembles,
            meta: self.meta.clone(),
            view_links: self.view_links.as_ref().map(ViewLinks::state),
        };
        let json = serde_json::to_string(&manifest).map_err(|e| corrupt(e.to_string()))?;
        let hash = versioned::sha256_hex(
            std::iter::once(json.as_bytes()).chain(tensors.values().map(|(_, d)| d.as_slice())),
        );
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(name, (shape, data))| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .map(|v| (name.clone(), v))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| corrupt(e.to_string()))?;
        let meta = HashMap::from([
            (MANIFEST_KEY.to_string(), json),
            (HASH_KEY.to_string(), hash),
        ]);
        let bytes =
            safetensors::serialize(views, Some(meta)).map_err(|e| corrupt(e.to_string()))?;
        Ok(versioned::write_atomic(path, &bytes)?)
    }

    /// Reads a bundle written by [`save`](Self::save), checking it fully (see the module
    /// documentation): a damaged, edited or inconsistent file is a clear error.
    pub fn load(path: &Path) -> Result<Self, BundleError> {
        let p = path.display().to_string();
        let bytes = versioned::read(path)?;
        let corrupt = |reason: String| BundleError::Corrupt {
            path: p.clone(),
            reason,
        };
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| corrupt(format!("safetensors: {e}")))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| corrupt(format!("safetensors: {e}")))?;
        let meta = header
            .metadata()
            .as_ref()
            .ok_or_else(|| corrupt("no manifest (not an mlink bundle)".into()))?;
        let json = meta
            .get(MANIFEST_KEY)
            .ok_or_else(|| corrupt("no manifest (not an mlink bundle)".into()))?;
        let peek: serde_json::Value =
            serde_json::from_str(json).map_err(|e| corrupt(format!("manifest: {e}")))?;
        let found = peek
            .get("format_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| corrupt("manifest has no format_version".into()))?;
        let version = FORMAT.check_version(path, found)?;
        let mut names: Vec<&str> = st.names();
        names.sort_unstable();
        let mut data: Vec<&[u8]> = Vec::with_capacity(names.len() + 1);
        // Version 1 checksummed the tensors only.
        if version >= 2 {
            data.push(json.as_bytes());
        }
        for n in &names {
            data.push(st.tensor(n).map_err(|e| corrupt(e.to_string()))?.data());
        }
        FORMAT.check_sha256(path, meta.get(HASH_KEY).map(String::as_str), data)?;
        let m: Manifest =
            serde_json::from_value(peek).map_err(|e| corrupt(format!("manifest: {e}")))?;
        let floats = |name: &str, want: usize| -> Result<Vec<f32>, String> {
            let t = st
                .tensor(name)
                .map_err(|_| format!("tensor {name} is missing"))?;
            if t.dtype() != safetensors::Dtype::F32 || t.data().len() != want.saturating_mul(4) {
                return Err(format!("tensor {name} has the wrong type or size"));
            }
            let v: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(format!("tensor {name} has non-finite values"));
            }
            Ok(v)
        };
        let k = m.models.len();
        if k > MAX_MODELS {
            return Err(corrupt(format!(
                "{k} models: at most {MAX_MODELS} are supported"
            )));
        }
        let mut links: Vec<Option<Link>> = (0..k * k).map(|_| None).collect();
        let mut rng = StdRng::seed_from_u64(0);
        for e in m.links {
            let (i, j) = (e.source, e.target);
            if i >= k || j >= k || i == j {
                return Err(corrupt(format!("link {i} -> {j} is out of range")));
            }
            if links[i * k + j].is_some() {
                return Err(corrupt(format!("link {i} -> {j} is stored twice")));
            }
            let link = load_link(&m.models, &m.meta, e, &floats, &mut rng)
                .map_err(|reason| corrupt(format!("link {i} -> {j}: {reason}")))?;
            links[i * k + j] = Some(link);
        }
        if m.ensembles.len() != k {
            return Err(corrupt(format!(
                "{} ensembles for {k} models",
                m.ensembles.len()
            )));
        }
        let mut ensembles = Vec::with_capacity(k);
        for (j, e) in m.ensembles.into_iter().enumerate() {
            let te = load_ensemble(&m.models, j, e, &floats)
                .map_err(|reason| corrupt(format!("ensemble of model {j}: {reason}")))?;
            ensembles.push(te);
        }
        let view_links = match m.view_links {
            Some(_) if version < 3 => {
                return Err(corrupt(format!(
                    "view links in a version {version} bundle (they came with version 3)"
                )));
            }
            Some(state) => {
                let specs: Vec<OutputSpec> = m.models.iter().map(|b| b.spec.clone()).collect();
                Some(
                    ViewLinks::restore(&specs, state)
                        .map_err(|reason| corrupt(format!("view links: {reason}")))?,
                )
            }
            None => None,
        };
        Ok(LinkBundle {
            models: m.models,
            links,
            ensembles,
            meta: m.meta,
            view_links,
            cache: Mutex::new(HashMap::new()),
        })
    }
}

/// Reads the f32 tensor of a name, of an expected length, finite (the error says why not).
type TensorReader<'a> = dyn Fn(&str, usize) -> Result<Vec<f32>, String> + 'a;

/// A score read from a file: finite and in [0, 1].
fn check_score(what: &str, s: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&s) {
        Ok(())
    } else {
        Err(format!("{what} {s} is not a score in [0, 1]"))
    }
}

/// The length of a vector form, None for a sequence.
fn vector_len(spec: &OutputSpec) -> Option<usize> {
    match spec.form {
        OutputForm::Vector { len } => Some(len),
        OutputForm::Sequence { .. } => None,
    }
}

/// Checks a stored standardisation against the side of the link it applies to: only vector
/// sides have one, of their length.
fn check_norm(what: &str, norm: &Option<Norm>, spec: &OutputSpec) -> Result<(), String> {
    match (norm, vector_len(spec)) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(format!("{what} given for a sequence")),
        (Some(n), Some(len)) => n.check(len).map_err(|e| format!("{what}: {e}")),
    }
}

/// Rebuilds one link from its manifest entry and tensors, checking it against its models.
fn load_link(
    models: &[BundleModel],
    meta: &TrainingMeta,
    e: LinkEntry,
    floats: &TensorReader<'_>,
    rng: &mut StdRng,
) -> Result<Link, String> {
    let (i, j) = (e.source, e.target);
    let (src, dst) = (&models[i].spec, &models[j].spec);
    if e.arch != Arch::of(src, dst) {
        return Err(format!(
            "architecture {:?} does not fit {:?} -> {:?}",
            e.arch, src.form, dst.form
        ));
    }
    check_norm("in_norm", &e.in_norm, src)?;
    check_norm("out_norm", &e.out_norm, dst)?;
    // Only linear outputs are standardised: a class output's logits must stay logits.
    if e.out_norm.is_some() && Activation::for_task(dst.task) != Activation::Linear {
        return Err(format!("out_norm given for a {:?} output", dst.task));
    }
    if let Some(s) = e.score {
        check_score("score", s)?;
    }
    // The weights are read (their size is bounded by the file) before the network is built,
    // and every dimension of the specs must be paid for by at least one weight, so a forged
    // spec cannot make the network allocate without bound.
    let params = floats(&format!("link.{i}.{j}"), e.param_count)?;
    if let (Some(a), Some(b)) = (vector_len(src), vector_len(dst)) {
        // vec2vec_hidden, without overflow: (hidden_factor * b).max(16).
        let want = meta
            .params
            .hidden_factor
            .checked_mul(b)
            .map(|h| h.max(16))
            .and_then(|h| h.checked_mul(a.checked_add(b)?.checked_add(1)?))
            .and_then(|n| n.checked_add(b));
        if want != Some(params.len()) {
            return Err(format!(
                "{} weights for a {a} -> {b} vec2vec link",
                params.len()
            ));
        }
    } else {
        let size = |s: &OutputSpec| match s.form {
            OutputForm::Vector { len } => len,
            OutputForm::Sequence { vocab, max_len, .. } => vocab.max(max_len),
        };
        if size(src).max(size(dst)) > params.len() || meta.params.hidden_factor > params.len() {
            return Err(format!(
                "{} weights cannot hold a link between these specs",
                params.len()
            ));
        }
    }
    let mut net = LinkNet::with_norms(
        src,
        dst,
        meta.params.hidden_factor,
        e.in_norm,
        e.out_norm,
        rng,
    )
    .map_err(|err| err.to_string())?;
    net.set_params(&params).map_err(|err| err.to_string())?;
    let loss_head = match &e.loss_head {
        None => None,
        Some(h) => {
            let dim = h.norm.mean.len();
            h.norm
                .check(dim)
                .map_err(|err| format!("loss head: {err}"))?;
            // Mlp::param_count(dim, hidden, 1), without overflow.
            let want = dim
                .checked_add(2)
                .and_then(|d| d.checked_mul(h.hidden))
                .and_then(|n| n.checked_add(1));
            if want != Some(h.param_count) {
                return Err(format!(
                    "loss head of {} weights for {dim} inputs and {} hidden units",
                    h.param_count, h.hidden
                ));
            }
            if net.hidden_len() != Some(dim) {
                return Err(format!(
                    "loss head reads {dim} hidden values, the link has {:?}",
                    net.hidden_len()
                ));
            }
            let params = floats(&format!("losshead.{i}.{j}"), h.param_count)
                .map_err(|err| format!("loss head: {err}"))?;
            Some(LossHead {
                norm: h.norm.clone(),
                mlp: Mlp {
                    in_dim: dim,
                    hidden: h.hidden,
                    out_dim: 1,
                    params,
                },
            })
        }
    };
    Ok(Link {
        source: i,
        target: j,
        arch: e.arch,
        net,
        score: e.score,
        train_pairs: e.train_pairs,
        validation_pairs: e.validation_pairs,
        loss_head,
    })
}

/// Rebuilds the ensemble of target j, checking its sources and dims against the models (the
/// ensemble indexes its weights by source and by the target's output dimension).
fn load_ensemble(
    models: &[BundleModel],
    j: usize,
    e: EnsembleEntry,
    floats: &TensorReader<'_>,
) -> Result<TargetEnsemble, String> {
    let k = models.len();
    if e.target != j {
        return Err(format!("stored for target {}", e.target));
    }
    let mut seen = vec![false; k];
    for &s in &e.sources {
        if s >= k || s == j || std::mem::replace(&mut seen[s], true) {
            return Err(format!(
                "source {s} is out of range, the target itself or repeated"
            ));
        }
    }
    let want_dims = match vector_len(&models[j].spec) {
        Some(len) if !e.sources.is_empty() => len,
        _ => 0,
    };
    if e.dims != want_dims {
        return Err(format!(
            "{} dims where the target's output and {} sources need {want_dims}",
            e.dims,
            e.sources.len()
        ));
    }
    let mut ens = Ensemble::new(e.target, e.sources.clone(), e.dims);
    if e.dims > 0 {
        let w = floats(&format!("ensemble.{j}"), e.sources.len() * e.dims)?;
        for (s, row) in ens.logit_weights.iter_mut().enumerate() {
            row.copy_from_slice(&w[s * e.dims..(s + 1) * e.dims]);
        }
    }
    let allowed = mask_of(e.sources.iter().copied());
    for &(mask, score) in &e.subset_scores {
        if mask == 0 || mask & !allowed != 0 {
            return Err(format!(
                "subset score for set {mask:#x} outside its sources"
            ));
        }
        check_score("subset score", score)?;
    }
    Ok(TargetEnsemble {
        ensemble: ens,
        subset_scores: e.subset_scores.into_iter().collect(),
    })
}
