//! Online link training (paper section 4.1), off the frame path. The engine hands every batch
//! of exactly labelled samples (profiling frames, and under the `uncertainty` policy the
//! uncertain frames queued for labelling) to a trainer thread, which fine-tunes its own copy
//! of the links on them together with a bounded reservoir of earlier samples (so that a short
//! batch does not make the links forget), saves the bundle atomically and sends the updated
//! bundle back; the engine swaps it in between two frames.
//!
//! The view links (the few-sample links over the link views, which serve wherever the bundle
//! has them) are trained again on the same samples with their views, once the trainer holds
//! at least as many as they learned from: an engine that trained its links itself hands the
//! warm-up samples over first, so they keep learning from the first period on.
//!
//! With `adaptation.aggregator` in the pipeline the engine is also an edge of cross-site
//! aggregation (paper Algorithm 1): after each batch, for every link the aggregator shares
//! whose models this pipeline has, the trainer pulls the global link, computes its update on
//! the local samples, pushes it, and keeps the global-initialised, locally trained link.

use crate::adapt::aggregate::client::AggregatorClient;
use crate::adapt::aggregate::tokens::Token;
use crate::adapt::edge::federated_round;
use crate::config::AggregatorConfig;
use crate::link::reservoir::{Reservoir, view_inputs};
use crate::link::{LinkBundle, Sample};
use crate::metrics::Metrics;
use crate::output::OutputValue;
use crossbeam_channel::{Receiver, Sender, bounded};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Epochs of each fine-tuning run.
pub const FINE_TUNE_EPOCHS: usize = 20;
/// Local epochs of each federated round.
const FEDERATED_EPOCHS: usize = 5;

/// The edge side of cross-site aggregation: the client and the shared links it takes part in.
struct Federation {
    client: AggregatorClient,
    /// (source, target) model ids of the shared links this bundle has.
    links: Vec<(String, String)>,
}

impl Federation {
    /// Connects and asks the aggregator which links it shares.
    fn connect(cfg: &AggregatorConfig, bundle: &LinkBundle) -> Result<Self, String> {
        let token = std::env::var(&cfg.token_env).map_err(|_| {
            format!(
                "the environment variable {} (the edge token) is not set",
                cfg.token_env
            )
        })?;
        let client = AggregatorClient::new(&cfg.url, cfg.edge_id.clone(), Token::new(token))
            .map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let state = rt.block_on(client.state()).map_err(|e| e.to_string())?;
        let links = state
            .links
            .iter()
            .filter_map(|l| l.link_id.split_once("->"))
            .filter(|(a, b)| bundle.model_index(a).is_some() && bundle.model_index(b).is_some())
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Ok(Self { client, links })
    }

    /// One round for every shared link on `samples`; returns how many rounds were accepted.
    fn rounds(&self, bundle: &mut LinkBundle, samples: &[Sample]) -> usize {
        let mut accepted = 0;
        for (source, target) in &self.links {
            match federated_round(
                bundle,
                source,
                target,
                samples,
                &self.client,
                FEDERATED_EPOCHS,
            ) {
                Ok(report) => {
                    accepted += 1;
                    tracing::info!(
                        link = %format!("{source}->{target}"),
                        round = report.round,
                        sent_bytes = report.sent_bytes,
                        "federated round"
                    );
                }
                Err(e) => {
                    tracing::warn!(link = %format!("{source}->{target}"), error = %e, "federated round failed")
                }
            }
        }
        accepted
    }
}

/// A batch of complete samples (every model's exact output, bundle order) and why it came.
pub struct TrainBatch {
    pub rows: Vec<Vec<OutputValue>>,
    /// Per row, every model's link view (bundle order; empty where unknown).
    pub views: Vec<Vec<Vec<f32>>>,
    /// `periodic`, `uncertainty` or `loss_prediction`: the metrics label of the run.
    pub policy: &'static str,
}

/// Handle of the trainer thread.
pub struct Trainer {
    tx: Option<Sender<TrainBatch>>,
    /// Updated bundles, newest last.
    pub updates: Receiver<Arc<LinkBundle>>,
    thread: Option<JoinHandle<()>>,
}

impl Trainer {
    /// Starts the trainer on the bundle saved at `path` (it keeps its own copy). `learned`
    /// are the samples the links were trained on, with their views (bundle order), where the
    /// engine has them: the reservoir starts with them.
    pub fn start(
        path: PathBuf,
        seed: u64,
        aggregator: Option<AggregatorConfig>,
        metrics: Arc<Metrics>,
        learned: TrainBatch,
    ) -> Result<Self, crate::link::BundleError> {
        let mut bundle = LinkBundle::load(&path)?;
        let (tx, rx) = bounded::<TrainBatch>(4);
        let (up_tx, updates) = bounded(4);
        let thread = std::thread::Builder::new()
            .name("link trainer".into())
            .spawn(move || {
                let mut reservoir = Reservoir::online(seed);
                reservoir.keep_batch(learned.rows, learned.views);
                let mut federation: Option<Federation> = None;
                for batch in rx {
                    let policy = batch.policy;
                    let labelled = reservoir.with_batch(&batch.rows, &batch.views);
                    let samples: Vec<Sample> = labelled
                        .iter()
                        .map(|k| Sample::complete(k.row.iter().cloned()))
                        .collect();
                    let started = std::time::Instant::now();
                    // The newest block is held out to rescore on (samples are in time order).
                    let (fit_on, held_out) = bundle.split_in_time(&samples);
                    if let Err(e) = bundle.fine_tune(fit_on, FINE_TUNE_EPOCHS) {
                        tracing::warn!(error = %e, "online link training failed; keeping the previous links");
                        continue;
                    }
                    metrics.link_training_runs.with_label_values(&[policy]).inc();
                    if let Some(cfg) = &aggregator {
                        if federation.is_none() {
                            match Federation::connect(cfg, &bundle) {
                                Ok(f) => federation = Some(f),
                                Err(e) => tracing::warn!(url = %cfg.url, error = %e, "aggregator unavailable; retrying next period"),
                            }
                        }
                        if let Some(f) = &federation {
                            let n = f.rounds(&mut bundle, &samples);
                            metrics.link_training_runs.with_label_values(&["federated"]).inc_by(n as u64);
                        }
                    }
                    // Ensembles, subset scores and link priors follow the changed links.
                    if let Err(e) = bundle.refit(fit_on, held_out) {
                        tracing::warn!(error = %e, "refitting the ensembles and scores failed; keeping the previous ones");
                    }
                    // The view links learn again from every labelled sample held.
                    let params = bundle.meta.params.clone();
                    if let Some(n) = bundle.retrain_view_links(view_inputs(&labelled), &params) {
                        metrics.link_training_runs.with_label_values(&["view_links"]).inc();
                        tracing::info!(frames = n, "view links trained again on the labelled samples");
                    }
                    reservoir.keep_batch(batch.rows, batch.views);
                    if let Err(e) = bundle.save(&path) {
                        tracing::warn!(error = %e, path = %path.display(), "cannot save the updated links");
                        continue;
                    }
                    // The engine gets an independent copy, read back from the file just written.
                    match LinkBundle::load(&path) {
                        Ok(copy) => {
                            tracing::info!(
                                policy,
                                samples = samples.len(),
                                seconds = started.elapsed().as_secs_f64(),
                                "links fine-tuned online"
                            );
                            let _ = up_tx.try_send(Arc::new(copy));
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot reload the updated links"),
                    }
                }
            })
            .ok();
        Ok(Self {
            tx: Some(tx),
            updates,
            thread,
        })
    }

    /// Queues a batch; dropped (and logged) when the trainer is still busy with earlier ones.
    pub fn submit(&self, batch: TrainBatch) {
        if let Some(tx) = &self.tx
            && tx.try_send(batch).is_err()
        {
            tracing::warn!("link trainer busy; a batch of online samples was skipped");
        }
    }

    /// Waits for queued batches to finish.
    pub fn finish(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
