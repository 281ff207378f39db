//! One link of a bundle as the aggregator sees it ([`LinkSpec`] and flat weights, the
//! `mlink-aggregator-link` file of `mlink aggregate --link`), and back into a bundle.
//!
//! The spec's `arch` string names the network that reads the flat vector and a hash of the
//! link's input and output standardisations: the same weights mean another function under
//! other standardisations, so only copies of one link (the global link the cloud distributed)
//! share a fingerprint and can be averaged together. The tensors follow the flat layout of
//! the link network: for vec2vec `w1 [in, hidden]`, `b1 [hidden]`, `w2 [hidden, out]`,
//! `b2 [out]` (row-major); the candle sequence links travel as one flat `params` tensor.

use super::aggregate::{LinkInit, LinkSpec, StateError, TensorShape};
use crate::link::{LinkBundle, LinkNet};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the bundle has no model {id:?} (it has {known})")]
    UnknownModel { id: String, known: String },
    #[error("the bundle has no link {source_model:?} -> {target:?}")]
    NoLink {
        source_model: String,
        target: String,
    },
    #[error("link file is for {found:?}, not {expected:?}")]
    WrongLink { expected: String, found: String },
    #[error(
        "link file does not fit the bundle's link {link_id:?}: {what} differs (file: {file}; bundle: {bundle}); links are exchanged only between copies of one distributed link"
    )]
    SpecMismatch {
        link_id: String,
        what: &'static str,
        file: String,
        bundle: String,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Link(#[from] crate::link::LinkError),
}

/// The id the aggregator knows a link by: `SOURCE->TARGET`.
pub fn link_id(source: &str, target: &str) -> String {
    format!("{source}->{target}")
}

/// Model index of `id` in the bundle.
pub fn model_index(bundle: &LinkBundle, id: &str) -> Result<usize, ExportError> {
    bundle
        .model_index(id)
        .ok_or_else(|| ExportError::UnknownModel {
            id: id.to_string(),
            known: bundle
                .models
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn norms_hash(net: &LinkNet) -> String {
    let mut h = Sha256::new();
    for norm in [net.in_norm(), net.out_norm()] {
        match norm {
            None => h.update([0u8]),
            Some(n) => {
                h.update([1u8]);
                for v in n.mean.iter().chain(&n.std) {
                    h.update(v.to_le_bytes());
                }
            }
        }
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The aggregator spec of link `source -> target` (model ids) of the bundle.
pub fn link_spec(bundle: &LinkBundle, source: &str, target: &str) -> Result<LinkSpec, ExportError> {
    let (i, j) = (model_index(bundle, source)?, model_index(bundle, target)?);
    let link = bundle.link(i, j).ok_or_else(|| ExportError::NoLink {
        source_model: source.to_string(),
        target: target.to_string(),
    })?;
    let task = |t| {
        serde_json::to_value(t)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let dst = &bundle.models[j].spec;
    let (arch, shapes) = match &link.net {
        LinkNet::Vec2Vec(v) => {
            let (a, h, b) = (v.mlp.in_dim, v.mlp.hidden, v.mlp.out_dim);
            (
                format!(
                    "vec2vec {a}-{h}-{b} relu task={} norms={}",
                    task(dst.task),
                    norms_hash(&link.net)
                ),
                vec![
                    TensorShape::new("w1", &[a, h]),
                    TensorShape::new("b1", &[h]),
                    TensorShape::new("w2", &[h, b]),
                    TensorShape::new("b2", &[b]),
                ],
            )
        }
        LinkNet::Seq(_) => {
            let src = &bundle.models[i].spec;
            let form =
                |s: &crate::output::OutputSpec| serde_json::to_string(&s.form).unwrap_or_default();
            (
                format!(
                    "{:?} src={} dst={} task={} hidden_factor={} norms={}",
                    link.arch,
                    form(src),
                    form(dst),
                    task(dst.task),
                    bundle.meta.params.hidden_factor,
                    norms_hash(&link.net)
                )
                .to_lowercase(),
                vec![TensorShape::new("params", &[link.net.params().len()])],
            )
        }
    };
    Ok(LinkSpec::new(link_id(source, target), arch, shapes))
}

/// Link `source -> target` of the bundle as an aggregator link initialization.
pub fn export_link(
    bundle: &LinkBundle,
    source: &str,
    target: &str,
) -> Result<LinkInit, ExportError> {
    let spec = link_spec(bundle, source, target)?;
    let (i, j) = (model_index(bundle, source)?, model_index(bundle, target)?);
    Ok(LinkInit::new(spec, bundle.link_params(i, j)?)?)
}

/// Checks that `spec` describes the bundle's link `source -> target` exactly.
pub fn check_spec(
    bundle: &LinkBundle,
    source: &str,
    target: &str,
    spec: &LinkSpec,
) -> Result<(), ExportError> {
    let ours = link_spec(bundle, source, target)?;
    if spec.link_id != ours.link_id {
        return Err(ExportError::WrongLink {
            expected: ours.link_id,
            found: spec.link_id.clone(),
        });
    }
    let mismatch = |what, file: String, bundle: String| ExportError::SpecMismatch {
        link_id: ours.link_id.clone(),
        what,
        file,
        bundle,
    };
    if spec.arch != ours.arch {
        return Err(mismatch(
            "architecture",
            spec.arch.clone(),
            ours.arch.clone(),
        ));
    }
    if spec.shapes != ours.shapes {
        return Err(mismatch(
            "tensor layout",
            format!("{:?}", spec.shapes),
            format!("{:?}", ours.shapes),
        ));
    }
    Ok(())
}

/// Replaces the weights of the bundle's link `source -> target` by `init`'s, after checking
/// that it describes that very link.
pub fn import_link(
    bundle: &mut LinkBundle,
    source: &str,
    target: &str,
    init: &LinkInit,
) -> Result<(), ExportError> {
    check_spec(bundle, source, target, &init.spec)?;
    let (i, j) = (model_index(bundle, source)?, model_index(bundle, target)?);
    bundle.set_link_params(i, j, &init.params.0)?;
    Ok(())
}
