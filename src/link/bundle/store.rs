//! Saving and loading a bundle.
//!
//! # File format (version 1)
//! One safetensors file. Each link's flat parameters are the 1-D f32 tensor `link.I.J`, each
//! ensemble's weights `ensemble.J` (sources x dims), each vec2vec link's loss-prediction head
//! `losshead.I.J` (flat, optional). The safetensors metadata holds
//! `mlink.manifest` (the JSON [`Manifest`]: format version, models, links with their
//! architecture, standardisation and scores, ensembles' subset scores, training metadata) and
//! `mlink.sha256` (SHA-256 over all tensor data in name order, which catches corruption the
//! safetensors header cannot). Written atomically (temporary file, then rename).

use super::{BundleError, BundleModel, Link, LinkBundle, TargetEnsemble, TrainingMeta};
use crate::link::ensemble::Ensemble;
use crate::link::loss_head::LossHead;
use crate::link::mlp::Mlp;
use crate::link::net::{Arch, LinkNet};
use crate::link::norm::Norm;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

pub const BUNDLE_VERSION: u32 = 1;

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
}

const MANIFEST_KEY: &str = "mlink.manifest";
const HASH_KEY: &str = "mlink.sha256";

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl LinkBundle {
    /// Writes the bundle atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<(), BundleError> {
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
        };
        let json = serde_json::to_string(&manifest).map_err(|e| BundleError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut hasher = sha2::Sha256::default();
        for (_, data) in tensors.values() {
            sha2::Digest::update(&mut hasher, data);
        }
        let hash = hex(&sha2::Digest::finalize(hasher));
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(name, (shape, data))| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .map(|v| (name.clone(), v))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| BundleError::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let meta = HashMap::from([
            (MANIFEST_KEY.to_string(), json),
            (HASH_KEY.to_string(), hash),
        ]);
        let bytes =
            safetensors::serialize(views, Some(meta)).map_err(|e| BundleError::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        crate::fsutil::write_atomic(path, &bytes).map_err(|source| BundleError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads a bundle written by [`save`](Self::save).
    pub fn load(path: &Path) -> Result<Self, BundleError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| BundleError::Io {
            path: p.clone(),
            source,
        })?;
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
        let version: serde_json::Value =
            serde_json::from_str(json).map_err(|e| corrupt(format!("manifest: {e}")))?;
        let found = version
            .get("format_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| corrupt("manifest has no format_version".into()))?;
        if found > BUNDLE_VERSION as u64 {
            return Err(BundleError::NewerVersion {
                path: p.clone(),
                found: found as u32,
                supported: BUNDLE_VERSION,
            });
        }
        let m: Manifest =
            serde_json::from_value(version).map_err(|e| corrupt(format!("manifest: {e}")))?;
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort();
        let mut hasher = sha2::Sha256::default();
        for n in &names {
            let t = st.tensor(n).map_err(|e| corrupt(e.to_string()))?;
            sha2::Digest::update(&mut hasher, t.data());
        }
        if meta.get(HASH_KEY).map(String::as_str)
            != Some(hex(&sha2::Digest::finalize(hasher)).as_str())
        {
            return Err(corrupt(
                "weight checksum mismatch (the file is damaged)".into(),
            ));
        }
        let floats = |name: &str, want: usize| -> Result<Vec<f32>, BundleError> {
            let t = st
                .tensor(name)
                .map_err(|_| corrupt(format!("tensor {name} is missing")))?;
            if t.dtype() != safetensors::Dtype::F32 || t.data().len() != want * 4 {
                return Err(corrupt(format!("tensor {name} has the wrong type or size")));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let k = m.models.len();
        let mut links: Vec<Option<Link>> = (0..k * k).map(|_| None).collect();
        let mut rng = StdRng::seed_from_u64(0);
        for e in m.links {
            if e.source >= k || e.target >= k || e.source == e.target {
                return Err(corrupt(format!(
                    "link {} -> {} is out of range",
                    e.source, e.target
                )));
            }
            let (src, dst) = (&m.models[e.source].spec, &m.models[e.target].spec);
            let mut net = LinkNet::with_norms(
                src,
                dst,
                m.meta.params.hidden_factor,
                e.in_norm,
                e.out_norm,
                &mut rng,
            )?;
            net.set_params(&floats(
                &format!("link.{}.{}", e.source, e.target),
                e.param_count,
            )?)
            .map_err(|err| corrupt(format!("link {} -> {}: {err}", e.source, e.target)))?;
            let loss_head = match &e.loss_head {
                None => None,
                Some(h) => {
                    let dim = h.norm.mean.len();
                    if h.norm.std.len() != dim
                        || h.param_count != Mlp::param_count(dim, h.hidden, 1)
                    {
                        return Err(corrupt(format!(
                            "loss head of link {} -> {} is inconsistent",
                            e.source, e.target
                        )));
                    }
                    let params = floats(
                        &format!("losshead.{}.{}", e.source, e.target),
                        h.param_count,
                    )?;
                    if params.iter().any(|v| !v.is_finite()) {
                        return Err(corrupt(format!(
                            "loss head of link {} -> {} has non-finite weights",
                            e.source, e.target
                        )));
                    }
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
            links[e.source * k + e.target] = Some(Link {
                source: e.source,
                target: e.target,
                arch: e.arch,
                net,
                score: e.score,
                train_pairs: e.train_pairs,
                validation_pairs: e.validation_pairs,
                loss_head,
            });
        }
        let mut ensembles = Vec::new();
        for (j, e) in m.ensembles.into_iter().enumerate() {
            if e.target != j || e.sources.iter().any(|&s| s >= k) {
                return Err(corrupt(format!("ensemble {j} is inconsistent")));
            }
            let mut ens = Ensemble::new(e.target, e.sources.clone(), e.dims);
            if e.dims > 0 {
                let w = floats(&format!("ensemble.{j}"), e.sources.len() * e.dims)?;
                for (s, row) in ens.logit_weights.iter_mut().enumerate() {
                    row.copy_from_slice(&w[s * e.dims..(s + 1) * e.dims]);
                }
            }
            ensembles.push(TargetEnsemble {
                ensemble: ens,
                subset_scores: e.subset_scores.into_iter().collect(),
            });
        }
        if ensembles.len() != k {
            return Err(corrupt(format!(
                "{} ensembles for {k} models",
                ensembles.len()
            )));
        }
        Ok(LinkBundle {
            models: m.models,
            links,
            ensembles,
            meta: m.meta,
            cache: Mutex::new(HashMap::new()),
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
