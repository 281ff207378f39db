//! The checks `mlink run` makes at start-up before it loads any session, shared with
//! `mlink validate` so that whatever `run` would refuse, `validate` refuses first: each
//! model's head (its output spec), its oracle link against that spec, and a named link bundle
//! against the models.

use super::EngineError;
use crate::adapt::oracle::OracleLink;
use crate::config::{self, Pipeline};
use crate::link::LinkBundle;
use crate::models;
use crate::output::OutputSpec;
use std::path::Path;
use std::sync::Arc;

/// Per model of a pipeline: its oracle link, when it has one.
type ModelOracles = Vec<Option<Arc<OracleLink>>>;

/// Loads the models' oracle links (`models[].oracle`), checking that each maps the model's own
/// output; a model with an oracle then outputs the oracle's spec.
fn load_oracles(
    cfg: &Pipeline,
    base: &Path,
    mut specs: Vec<OutputSpec>,
) -> Result<(ModelOracles, Vec<OutputSpec>), EngineError> {
    let mut oracles = Vec::with_capacity(cfg.models.len());
    for (m, spec) in cfg.models.iter().zip(specs.iter_mut()) {
        let Some(path) = &m.oracle else {
            oracles.push(None);
            continue;
        };
        let path = config::resolve_path(base, path);
        let oracle = OracleLink::load(&path).map_err(|e| {
            EngineError::Other(format!(
                "model {}: oracle link {}: {e}",
                m.id,
                path.display()
            ))
        })?;
        if oracle.source_spec != *spec {
            return Err(EngineError::Other(format!(
                "model {}: the oracle link {} maps a different output ({:?}) than the model gives ({:?})",
                m.id,
                path.display(),
                oracle.source_spec,
                spec
            )));
        }
        *spec = oracle.spec.clone();
        oracles.push(Some(Arc::new(oracle)));
    }
    Ok((oracles, specs))
}

/// Every model's output spec (its head's, or its oracle's when it has one), with the oracles.
pub fn output_specs(
    cfg: &Pipeline,
    base: &Path,
) -> Result<(ModelOracles, Vec<OutputSpec>), EngineError> {
    let head_specs = cfg
        .models
        .iter()
        .map(|m| models::head_spec(m, base))
        .collect::<Result<Vec<_>, _>>()?;
    load_oracles(cfg, base, head_specs)
}

/// Loads a link bundle and checks it holds links for exactly these models and outputs.
pub fn load_bundle(
    cfg: &Pipeline,
    specs: &[OutputSpec],
    path: &Path,
) -> Result<LinkBundle, EngineError> {
    let bundle = LinkBundle::load(path)?;
    let models: Vec<(String, OutputSpec)> = cfg
        .models
        .iter()
        .map(|m| m.id.clone())
        .zip(specs.iter().cloned())
        .collect();
    bundle.check_models(&models)?;
    Ok(bundle)
}

/// The start-up checks of `mlink run` on a validated pipeline, without loading sessions:
/// every problem found, as messages (empty when `run` would start).
pub fn startup_checks(cfg: &Pipeline, base: &Path) -> Vec<String> {
    let specs = match output_specs(cfg, base) {
        Ok((_, specs)) => specs,
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    if let Some(b) = &cfg.links.bundle {
        let path = config::resolve_path(base, b);
        // A bundle not written yet is what a first run trains and saves.
        if path.exists()
            && let Err(e) = load_bundle(cfg, &specs, &path)
        {
            problems.push(format!("links.bundle {}: {e}", path.display()));
        }
    }
    problems
}
