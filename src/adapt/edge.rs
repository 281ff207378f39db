//! The edge side of Algorithm 1 for a real link of a [`LinkBundle`], as blocking calls for
//! code that does not run inside an async runtime (the engine's worker threads, the CLI).
//!
//! One round: pull the global link, load its weights into the bundle's link, train it
//! locally ([`LinkBundle::train_round`]) and upload the change. The bundle then holds the
//! locally trained weights; the next round starts again from the global ones.

use super::aggregate::{AggregatorClient, ClientError, GlobalLink, LocalUpdate, UpdateAccepted};
use super::export::{ExportError, check_spec, link_id, model_index};
use crate::link::{LinkBundle, Sample};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the global link does not fit this edge's bundle: {0}")]
    Spec(#[from] ExportError),
    #[error("local training: {0}")]
    Link(#[from] crate::link::LinkError),
    #[error("no local sample has outputs of both {source_model:?} and {target:?}")]
    NoSamples {
        source_model: String,
        target: String,
    },
}

/// What one round did on this edge.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundReport {
    /// The round the update was computed for.
    pub round: u64,
    pub accepted: UpdateAccepted,
    /// Local (source, target) pairs the update was trained on.
    pub n_samples: u64,
    /// Euclidean norm of the uploaded delta.
    pub delta_norm: f64,
    /// Bytes this round wrote to and read from the network (HTTP headers included).
    pub sent_bytes: u64,
    pub received_bytes: u64,
}

fn runtime() -> Result<tokio::runtime::Runtime, EdgeError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(EdgeError::Runtime)
}

/// One federated round for the bundle's link `source -> target` (model ids) on the local
/// aligned samples (`samples[n][m]`: model m's output on frame n), `epochs` local epochs.
///
/// Must not be called from inside an async runtime (it runs its own small one).
pub fn federated_round(
    bundle: &mut LinkBundle,
    source: &str,
    target: &str,
    local_samples: &[Sample],
    client: &AggregatorClient,
    epochs: usize,
) -> Result<RoundReport, EdgeError> {
    let (i, j) = (model_index(bundle, source)?, model_index(bundle, target)?);
    let n_samples = local_samples
        .iter()
        .filter(|s| s.pair(i, j).is_some())
        .count() as u64;
    if n_samples == 0 {
        return Err(EdgeError::NoSamples {
            source_model: source.to_string(),
            target: target.to_string(),
        });
    }
    let id = link_id(source, target);
    let before = client.wire_bytes();
    let rt = runtime()?;
    let global = rt.block_on(client.pull(&id))?;
    check_spec(bundle, source, target, &global.spec)?;
    bundle.set_link_params(i, j, &global.params.0)?;
    let delta = bundle.train_round(i, j, local_samples, epochs)?;
    let delta_norm = delta
        .iter()
        .map(|d| f64::from(*d) * f64::from(*d))
        .sum::<f64>()
        .sqrt();
    let update = LocalUpdate {
        delta,
        n_samples: Some(n_samples),
    };
    let accepted = rt.block_on(client.push_for(&global, &update))?;
    let after = client.wire_bytes();
    Ok(RoundReport {
        round: global.round,
        accepted,
        n_samples,
        delta_norm,
        sent_bytes: after.sent - before.sent,
        received_bytes: after.received - before.received,
    })
}

/// Pulls the global link of `source -> target` into the bundle (serving the global link, or
/// the starting point of a local fine-tune). Returns what was pulled.
pub fn pull_global(
    bundle: &mut LinkBundle,
    source: &str,
    target: &str,
    client: &AggregatorClient,
) -> Result<GlobalLink, EdgeError> {
    let (i, j) = (model_index(bundle, source)?, model_index(bundle, target)?);
    let global = runtime()?.block_on(client.pull(&link_id(source, target)))?;
    check_spec(bundle, source, target, &global.spec)?;
    bundle.set_link_params(i, j, &global.params.0)?;
    Ok(global)
}

/// Waits until the link's open round is at least `round` (the round this edge uploaded to has
/// closed), polling every 50 ms for at most `max_wait`.
pub fn wait_for_round(
    client: &AggregatorClient,
    source: &str,
    target: &str,
    round: u64,
    max_wait: Duration,
) -> Result<GlobalLink, EdgeError> {
    Ok(runtime()?.block_on(client.wait_for_round(
        &link_id(source, target),
        round,
        Duration::from_millis(50),
        max_wait,
    ))?)
}
