//! Cross-domain evaluation of link aggregation and fusion (the paper's Fig. 8) on any trace.
//!
//! The trace is split into domains (its cameras, or contiguous time segments of it). One
//! domain is the *target*: it has only a small labelled local sample (both models run on a
//! few frames), and the rest of it is the test set. Every other domain is an *edge* with all of
//! its aligned samples. For the link `source -> target model`:
//!
//! - **local-only**: a link trained on the target domain's local sample alone;
//! - **edge-local**: each edge's own link applied to the target domain (Fig. 8a's G, H);
//! - **global**: the link aggregated by federated averaging across the edges, through a real
//!   aggregator served in-process on 127.0.0.1 and real HTTP clients (Algorithm 1), without
//!   any target-domain sample;
//! - **fused**: local and global fused by ensemble weights trained on the local sample.
//!
//! The global link starts from a link distributed to every edge (random weights with the
//! standardisations of the first edge's samples), so that all edges share one architecture and
//! standardisation and their updates can be averaged. Bytes on the wire are those the edges'
//! clients actually wrote and read, HTTP headers included.

use super::aggregate::{
    AggregatorClient, AggregatorConfig, AggregatorServer, EdgeTokens, RoundPolicy, Token,
};
use super::edge::{EdgeError, federated_round, pull_global};
use super::export::export_link;
use super::fusion::{Fusion, FusionParams, FusionSample};
use crate::link::trace::{TraceHeader, TraceRecord};
use crate::link::{LinkBundle, Sample, TrainParams};
use crate::output::{OutputForm, OutputSpec, metric_name, try_mean_score};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Duration;

/// How the trace is cut into domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainSplit {
    /// Cameras when the trace has several, time segments otherwise.
    Auto,
    /// One domain per camera.
    Camera,
    /// Contiguous time segments with equal numbers of frames.
    Time,
}

#[derive(Clone, Debug)]
pub struct CrossDomainConfig {
    /// Source model id (default: the first model other than the target).
    pub source: Option<String>,
    /// Target model id (default: the last model with a vector output).
    pub target: Option<String>,
    pub split: DomainSplit,
    /// Number of time segments (time split).
    pub domains: usize,
    /// Index of the target domain (default: the last).
    pub target_domain: Option<usize>,
    /// Labelled frames of the target domain available for training.
    pub local_samples: usize,
    pub rounds: usize,
    /// Local epochs per round on each edge.
    pub local_epochs: usize,
    /// Training of the local-only and edge-local links (and the shared architecture).
    pub params: TrainParams,
    pub fusion: FusionParams,
}

impl Default for CrossDomainConfig {
    fn default() -> Self {
        Self {
            source: None,
            target: None,
            split: DomainSplit::Auto,
            domains: 4,
            target_domain: None,
            local_samples: 30,
            rounds: 20,
            local_epochs: 2,
            params: TrainParams::default(),
            fusion: FusionParams::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CrossDomainError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Edge(#[from] EdgeError),
    #[error(transparent)]
    Export(#[from] super::export::ExportError),
    #[error(transparent)]
    Fusion(#[from] super::fusion::FusionError),
    #[error("link: {0}")]
    Link(#[from] crate::link::LinkError),
    #[error("bundle: {0}")]
    Bundle(#[from] crate::link::BundleError),
    #[error("aggregator: {0}")]
    Aggregator(#[from] super::aggregate::AggregateError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct DomainInfo {
    pub name: String,
    /// Frames with outputs of both models.
    pub samples: usize,
    pub role: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct EdgeLocalScore {
    pub domain: String,
    pub score: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct WireReport {
    /// Parameters of the shared link.
    pub params: usize,
    /// The weights as raw little-endian f32.
    pub raw_weight_bytes: usize,
    /// Mean bytes one edge wrote per round (pull request + update upload).
    pub sent_per_edge_round: f64,
    /// Mean bytes one edge read per round (global link + answers).
    pub received_per_edge_round: f64,
    pub total_sent: u64,
    pub total_received: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CrossDomainReport {
    pub trace: String,
    pub source_model: String,
    pub target_model: String,
    pub metric: String,
    pub split: DomainSplit,
    pub domains: Vec<DomainInfo>,
    pub target_domain: String,
    pub local_samples: usize,
    pub test_samples: usize,
    pub rounds: usize,
    pub local_epochs: usize,
    /// Score of the link trained on the target domain's local sample alone.
    pub local_only: f64,
    pub edge_local: Vec<EdgeLocalScore>,
    pub global: f64,
    /// Global link's target-domain score after each round.
    pub global_by_round: Vec<f64>,
    pub fused: f64,
    /// Mean fusion weight of (local, global).
    pub fused_weights: [f32; 2],
    /// Set when one member dominated on the local sample and was selected alone.
    pub fused_selected: Option<&'static str>,
    pub wire: WireReport,
}

impl CrossDomainReport {
    /// A short Markdown report.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "# Cross-domain link aggregation: {} -> {}\n\n\
             Trace `{}`, split by {:?}; target domain **{}** ({} local samples, {} test frames); \
             {} rounds of {} local epochs. Metric: {}.\n\n\
             | domain | samples | role |\n|---|---:|---|\n",
            self.source_model,
            self.target_model,
            self.trace,
            self.split,
            self.target_domain,
            self.local_samples,
            self.test_samples,
            self.rounds,
            self.local_epochs,
            self.metric
        );
        for d in &self.domains {
            s += &format!("| {} | {} | {} |\n", d.name, d.samples, d.role);
        }
        s += "\n| link | target-domain score |\n|---|---:|\n";
        s += &format!("| local-only | {:.4} |\n", self.local_only);
        for e in &self.edge_local {
            s += &format!("| edge-local ({}) | {:.4} |\n", e.domain, e.score);
        }
        s += &format!("| global (federated) | {:.4} |\n", self.global);
        s += &format!(
            "| fused (local {:.2}, global {:.2}) | {:.4} |\n",
            self.fused_weights[0], self.fused_weights[1], self.fused
        );
        let w = &self.wire;
        s += &format!(
            "\nWire: the link has {} parameters ({} bytes as f32); per edge and round {:.0} bytes sent and {:.0} received (HTTP included); {} sent and {} received in total.\n",
            w.params,
            w.raw_weight_bytes,
            w.sent_per_edge_round,
            w.received_per_edge_round,
            w.total_sent,
            w.total_received
        );
        s
    }
}

type Samples = Vec<Sample>;

/// Splits the aligned (source, target) pairs of the trace into named domains.
fn split_domains(
    records: &[TraceRecord],
    si: usize,
    ti: usize,
    split: DomainSplit,
    n: usize,
) -> Result<(DomainSplit, Vec<(String, Samples)>), CrossDomainError> {
    let pair = |r: &TraceRecord| match (&r.outputs[si], &r.outputs[ti]) {
        (Some(a), Some(b)) => Some(Sample::complete([a.clone(), b.clone()])),
        _ => None,
    };
    let mut cameras: Vec<&str> = Vec::new();
    for r in records {
        if !cameras.contains(&r.camera.as_str()) {
            cameras.push(&r.camera);
        }
    }
    let split = match split {
        DomainSplit::Auto if cameras.len() >= 2 => DomainSplit::Camera,
        DomainSplit::Auto => DomainSplit::Time,
        s => s,
    };
    let domains = match split {
        DomainSplit::Camera => cameras
            .iter()
            .map(|c| {
                let s: Samples = records
                    .iter()
                    .filter(|r| r.camera == *c)
                    .filter_map(pair)
                    .collect();
                (format!("camera {c}"), s)
            })
            .collect(),
        _ => {
            if n < 2 {
                return Err(CrossDomainError::Setup(format!(
                    "a time split needs at least 2 domains, not {n}"
                )));
            }
            let mut order: Vec<&TraceRecord> = records.iter().collect();
            order.sort_by(|a, b| a.time_s.total_cmp(&b.time_s));
            let aligned: Vec<(f64, Sample)> = order
                .iter()
                .filter_map(|r| pair(r).map(|p| (r.time_s, p)))
                .collect();
            let len = aligned.len();
            (0..n)
                .map(|d| {
                    let (a, b) = (d * len / n, (d + 1) * len / n);
                    let name = match (
                        aligned.get(a),
                        b.checked_sub(1).and_then(|e| aligned.get(e)),
                    ) {
                        (Some(x), Some(y)) if a < b => {
                            format!("t {:.1}s-{:.1}s", x.0, y.0)
                        }
                        _ => format!("segment {d}"),
                    };
                    (name, aligned[a..b].iter().map(|p| p.1.clone()).collect())
                })
                .collect()
        }
    };
    Ok((split, domains))
}

fn mean_link_score(
    bundle: &LinkBundle,
    spec: &OutputSpec,
    test: &Samples,
) -> Result<f64, CrossDomainError> {
    let net = &bundle
        .link(0, 1)
        .ok_or(crate::link::LinkError::NoLink { from: 0, target: 1 })?
        .net;
    let mean = try_mean_score(
        spec,
        test.iter()
            .filter_map(|s| s.pair(0, 1))
            .map(|(x, y)| Ok::<_, crate::link::LinkError>((net.predict(x)?, y))),
    )?;
    Ok(mean.map_or(0.0, |m| m.score))
}

fn random_token(rng: &mut StdRng) -> Token {
    Token::new(
        (0..32)
            .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
            .collect::<String>(),
    )
}

/// Runs the evaluation. `progress` receives a line per finished step.
pub fn evaluate(
    trace: &str,
    header: &TraceHeader,
    records: &[TraceRecord],
    cfg: &CrossDomainConfig,
    progress: &dyn Fn(&str),
) -> Result<CrossDomainReport, CrossDomainError> {
    let setup = |m: String| CrossDomainError::Setup(m);
    let find = |id: &str| {
        header
            .models
            .iter()
            .position(|m| m.id == id)
            .ok_or_else(|| setup(format!("the trace has no model {id:?}")))
    };
    let ti = match &cfg.target {
        Some(id) => find(id)?,
        None => header
            .models
            .iter()
            .rposition(|m| matches!(m.spec.form, OutputForm::Vector { .. }))
            .ok_or_else(|| setup("the trace has no model with a vector output".into()))?,
    };
    let si = match &cfg.source {
        Some(id) => find(id)?,
        None => (0..header.models.len())
            .find(|&i| i != ti)
            .ok_or_else(|| setup("the trace records fewer than two models".into()))?,
    };
    if si == ti {
        return Err(setup("the source and target models must differ".into()));
    }
    let spec = header.models[ti].spec.clone();
    if !matches!(spec.form, OutputForm::Vector { .. }) {
        return Err(setup(format!(
            "the target model {:?} outputs token sequences; fusion needs a vector target",
            header.models[ti].id
        )));
    }
    let models = vec![
        (header.models[si].id.clone(), header.models[si].spec.clone()),
        (header.models[ti].id.clone(), spec.clone()),
    ];
    let (source_id, target_id) = (models[0].0.clone(), models[1].0.clone());

    let (split, mut domains) = split_domains(records, si, ti, cfg.split, cfg.domains)?;
    if domains.len() < 2 {
        return Err(setup(format!(
            "the trace gives {} domain(s); at least 2 are needed (one target, one edge)",
            domains.len()
        )));
    }
    let target_domain = cfg.target_domain.unwrap_or(domains.len() - 1);
    if target_domain >= domains.len() {
        return Err(setup(format!(
            "target domain {target_domain} does not exist (domains 0 to {})",
            domains.len() - 1
        )));
    }
    if let Some((name, _)) = domains.iter().find(|(_, s)| s.is_empty()) {
        return Err(setup(format!(
            "domain {name} has no frame with outputs of both {source_id:?} and {target_id:?}"
        )));
    }
    let (target_name, mut target_samples) = domains.remove(target_domain);
    let edges = domains;
    let mut rng = StdRng::seed_from_u64(cfg.params.seed ^ 0xd0_3a1);
    target_samples.shuffle(&mut rng);
    if cfg.local_samples == 0 || cfg.local_samples >= target_samples.len() {
        return Err(setup(format!(
            "the target domain {target_name} has {} aligned frames; the local sample ({}) must leave at least one for testing",
            target_samples.len(),
            cfg.local_samples
        )));
    }
    let test = target_samples.split_off(cfg.local_samples);
    let local = target_samples;
    let mut domain_info: Vec<DomainInfo> = edges
        .iter()
        .map(|(n, s)| DomainInfo {
            name: n.clone(),
            samples: s.len(),
            role: "edge",
        })
        .collect();
    domain_info.insert(
        target_domain,
        DomainInfo {
            name: target_name.clone(),
            samples: local.len() + test.len(),
            role: "target",
        },
    );
    let quiet = |_: &str| {};
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Local-only: the target domain's small sample alone.
    let local_bundle = LinkBundle::train(&models, &local, &cfg.params, 0.0, threads, &quiet)?;
    let local_only = mean_link_score(&local_bundle, &spec, &test)?;
    progress(&format!("local-only link: {local_only:.4}"));

    // Each edge's own link applied to the target domain.
    let mut edge_local = Vec::new();
    for (name, samples) in &edges {
        let b = LinkBundle::train(&models, samples, &cfg.params, 0.0, threads, &quiet)?;
        let s = mean_link_score(&b, &spec, &test)?;
        progress(&format!("edge-local link of {name}: {s:.4}"));
        edge_local.push(EdgeLocalScore {
            domain: name.clone(),
            score: s,
        });
    }

    // The link every edge starts from: random weights, standardisations of edge 0.
    let dir = tempfile::tempdir().map_err(|source| CrossDomainError::Io {
        what: "creating a temporary directory",
        source,
    })?;
    let mut init_params = cfg.params.clone();
    init_params.epochs = 0;
    let initial = LinkBundle::train(&models, &edges[0].1, &init_params, 0.0, 1, &quiet)?;
    let bundle_path = dir.path().join("initial.mlinks");
    initial.save(&bundle_path)?;
    let init = export_link(&initial, &source_id, &target_id)?;
    let n_params = init.spec.num_params();

    let credentials: Vec<(String, Token)> = (0..edges.len())
        .map(|k| (format!("edge-{k}"), random_token(&mut rng)))
        .collect();
    let tokens = EdgeTokens::from_pairs(credentials.clone()).map_err(setup)?;
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|source| CrossDomainError::Io {
            what: "starting the aggregator runtime",
            source,
        })?;
    let server = AggregatorServer::open(AggregatorConfig {
        state_path: dir.path().join("aggregator-state.json"),
        tokens,
        links: vec![init],
        policy: RoundPolicy {
            deadline: Duration::from_secs(600),
            quorum: edges.len(),
            server_lr: 1.0,
        },
        max_body_bytes: None,
    })?;
    let running = server_rt
        .block_on(server.spawn("127.0.0.1:0".parse().map_err(|e| setup(format!("{e}")))?))
        .map_err(|source| CrossDomainError::Io {
            what: "binding the aggregator on 127.0.0.1",
            source,
        })?;
    let url = running.url();
    let client = |(id, token): &(String, Token)| {
        AggregatorClient::new(&url, id.clone(), token.clone())
            .map(|c| c.with_timeout(Duration::from_secs(60)))
            .map_err(EdgeError::from)
    };
    let clients: Vec<AggregatorClient> =
        credentials.iter().map(client).collect::<Result<_, _>>()?;
    // The evaluator reads the global link with its own counters, so that its pulls are not
    // counted as edge traffic.
    let observer = client(&credentials[0])?;
    let mut edge_bundles: Vec<LinkBundle> = (0..edges.len())
        .map(|_| LinkBundle::load(&bundle_path))
        .collect::<Result<_, _>>()?;
    let mut global_bundle = LinkBundle::load(&bundle_path)?;

    let result = (|| -> Result<Vec<f64>, CrossDomainError> {
        let mut by_round = Vec::with_capacity(cfg.rounds);
        for round in 0..cfg.rounds {
            for ((b, c), (_, samples)) in edge_bundles.iter_mut().zip(&clients).zip(&edges) {
                federated_round(b, &source_id, &target_id, samples, c, cfg.local_epochs)?;
            }
            let g = pull_global(&mut global_bundle, &source_id, &target_id, &observer)?;
            if g.round != round as u64 + 1 {
                return Err(setup(format!(
                    "round {round} did not close after every edge uploaded (open round {})",
                    g.round
                )));
            }
            let s = mean_link_score(&global_bundle, &spec, &test)?;
            progress(&format!("round {}: global link {s:.4}", round + 1));
            by_round.push(s);
        }
        Ok(by_round)
    })();
    let stopped = server_rt.block_on(running.stop());
    let global_by_round = result?;
    stopped.map_err(|source| CrossDomainError::Io {
        what: "stopping the aggregator",
        source,
    })?;
    let global = match global_by_round.last() {
        Some(s) => *s,
        None => mean_link_score(&global_bundle, &spec, &test)?,
    };

    // Fusion of local and global, weights fitted on the local sample.
    let members = [
        &local_bundle
            .link(0, 1)
            .ok_or(crate::link::LinkError::NoLink { from: 0, target: 1 })?
            .net,
        &global_bundle
            .link(0, 1)
            .ok_or(crate::link::LinkError::NoLink { from: 0, target: 1 })?
            .net,
    ];
    let fit: Vec<FusionSample<'_>> = local
        .iter()
        .filter_map(|s| match (&s[0], &s[1]) {
            (Some(x), Some(y)) => Some(FusionSample {
                inputs: vec![Some(x), Some(x)],
                target: y,
            }),
            _ => None,
        })
        .collect();
    let mut fparams = cfg.fusion.clone();
    fparams.seed ^= cfg.params.seed;
    let fusion = Fusion::fit(&spec, &members, &fit, &fparams)?;
    let fused = try_mean_score(
        &spec,
        test.iter().filter_map(|s| s.pair(0, 1)).map(|(x, y)| {
            Ok::<_, super::fusion::FusionError>((fusion.predict(&members, &[Some(x), Some(x)])?, y))
        }),
    )?
    .map_or(0.0, |m| m.score);
    let w = fusion.mean_weights();
    progress(&format!("fused link: {fused:.4}"));

    let (sent, received) = clients.iter().fold((0, 0), |(s, r), c| {
        let w = c.wire_bytes();
        (s + w.sent, r + w.received)
    });
    let edge_rounds = (edges.len() * cfg.rounds).max(1) as f64;
    Ok(CrossDomainReport {
        trace: trace.to_string(),
        source_model: source_id,
        target_model: target_id,
        metric: metric_name(spec.task).to_string(),
        split,
        domains: domain_info,
        target_domain: target_name,
        local_samples: local.len(),
        test_samples: test.len(),
        rounds: cfg.rounds,
        local_epochs: cfg.local_epochs,
        local_only,
        edge_local,
        global,
        global_by_round,
        fused,
        fused_weights: [w[0], w[1]],
        fused_selected: fusion.selected.map(|m| ["local", "global"][m]),
        wire: WireReport {
            params: n_params,
            raw_weight_bytes: n_params * 4,
            sent_per_edge_round: sent as f64 / edge_rounds,
            received_per_edge_round: received as f64 / edge_rounds,
            total_sent: sent,
            total_received: received,
        },
    })
}
