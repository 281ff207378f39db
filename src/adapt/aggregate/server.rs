//! The cloud side of Algorithm 1 over HTTP (axum): edges pull global links, upload their
//! round updates, and the server averages them when a round closes.
//!
//! Routes (every `/v1` route needs `Authorization: Bearer TOKEN`):
//! - `GET  /v1/links/{link_id}`          -> [`GlobalLink`]
//! - `POST /v1/links/{link_id}/updates`  [`UpdateRequest`] -> [`UpdateAccepted`]
//! - `GET  /v1/state`                    -> [`StateView`] (rounds, pending edges, weight hashes)
//! - `GET  /metrics`                     Prometheus text (no secrets, no authentication)
//! - `GET  /healthz`                     `ok`
//!
//! Errors are an HTTP status with an [`ErrorBody`]. The server speaks plain HTTP; put it
//! behind a TLS-terminating reverse proxy (or a private network) when edges reach it over
//! an untrusted network, since bearer tokens must not travel in clear text there.

use super::messages::{ErrorBody, ErrorCode, PROTOCOL_VERSION, UpdateAccepted, UpdateRequest};
use super::state::{AggregatorState, DeadlineEvent, LinkInit, Rejection, RoundPolicy, StateError};
use super::tokens::EdgeTokens;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Everything `mlink aggregate` needs to run.
#[derive(Clone, Debug)]
pub struct AggregatorConfig {
    pub state_path: PathBuf,
    pub tokens: EdgeTokens,
    /// Links to create when the state file lacks them.
    pub links: Vec<LinkInit>,
    pub policy: RoundPolicy,
    /// Largest accepted request body; `None` sizes it from the largest link.
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Default body limit: twice the encoded size of the largest link's update, at least 1 MiB.
pub fn default_max_body_bytes(max_params: usize) -> usize {
    let encoded = (max_params * 4).div_ceil(3) * 4;
    (2 * encoded + 64 * 1024).max(1 << 20)
}

/// The aggregator's own metric families, served at its `/metrics`.
struct AggregatorMetrics {
    registry: Registry,
    rounds_completed: IntCounterVec,
    round: IntGaugeVec,
    round_extensions: IntCounterVec,
    updates_accepted: IntCounterVec,
    updates_rejected: IntCounterVec,
    pending_updates: IntGaugeVec,
    received_bytes: IntCounterVec,
    round_received_bytes: IntGaugeVec,
    sent_bytes: IntCounterVec,
}

impl AggregatorMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, label: &str| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge = |name: &str, help: &str| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), &["link"])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let m = Self {
            rounds_completed: counter(
                "mlink_aggregator_rounds_completed_total",
                "Aggregation rounds closed and applied",
                "link",
            )?,
            round: gauge("mlink_aggregator_round", "Round currently open per link")?,
            round_extensions: counter(
                "mlink_aggregator_round_extensions_total",
                "Deadlines passed without a quorum",
                "link",
            )?,
            updates_accepted: counter(
                "mlink_aggregator_updates_accepted_total",
                "Edge updates accepted",
                "link",
            )?,
            updates_rejected: counter(
                "mlink_aggregator_updates_rejected_total",
                "Requests refused (updates, pulls and state reads), by reason",
                "reason",
            )?,
            pending_updates: gauge(
                "mlink_aggregator_pending_updates",
                "Updates accepted in the open round",
            )?,
            received_bytes: counter(
                "mlink_aggregator_received_bytes_total",
                "Body bytes of accepted updates",
                "link",
            )?,
            round_received_bytes: gauge(
                "mlink_aggregator_round_received_bytes",
                "Body bytes of the accepted updates of the last closed round",
            )?,
            sent_bytes: counter(
                "mlink_aggregator_sent_bytes_total",
                "Body bytes of global links sent to edges",
                "link",
            )?,
            registry,
        };
        for code in ErrorCode::ALL {
            m.updates_rejected.with_label_values(&[code.as_str()]);
        }
        Ok(m)
    }

    fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding our own registry into memory cannot fail short of a bug in prometheus.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

struct Shared {
    state: Mutex<AggregatorState>,
    tokens: EdgeTokens,
    metrics: AggregatorMetrics,
    max_body_bytes: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, AggregatorState> {
        // A panic while holding the lock cannot leave a half-applied round (rounds are applied
        // by replacing whole vectors), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reject(&self, r: Rejection) -> Response {
        self.metrics
            .updates_rejected
            .with_label_values(&[r.code.as_str()])
            .inc();
        tracing::info!(code = r.code.as_str(), message = %r.message, "request refused");
        error_response(r)
    }

    fn record_close(&self, link_id: &str, summary: &super::messages::RoundSummary) {
        self.metrics
            .rounds_completed
            .with_label_values(&[link_id])
            .inc();
        self.metrics
            .round
            .with_label_values(&[link_id])
            .set(summary.round as i64 + 1);
        self.metrics
            .pending_updates
            .with_label_values(&[link_id])
            .set(0);
        self.metrics
            .round_received_bytes
            .with_label_values(&[link_id])
            .set(summary.received_bytes as i64);
        tracing::info!(
            link = link_id,
            round = summary.round,
            edges = ?summary.edges,
            closed_by = ?summary.closed_by,
            bytes = summary.received_bytes,
            "round closed"
        );
    }
}

fn error_response(r: Rejection) -> Response {
    let status =
        StatusCode::from_u16(r.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ErrorBody {
        version: PROTOCOL_VERSION,
        error: r.code,
        message: r.message,
    };
    (status, axum::Json(body)).into_response()
}

/// The authenticated edge of a request.
#[derive(Clone, Debug)]
struct Edge(String);

/// A configured aggregator, ready to serve.
pub struct AggregatorServer {
    shared: Arc<Shared>,
}

impl AggregatorServer {
    /// Opens (or resumes) the persisted state and prepares the routes.
    pub fn open(config: AggregatorConfig) -> Result<Self, AggregateError> {
        let state = AggregatorState::open(
            &config.state_path,
            config.links,
            config.tokens.edge_ids(),
            config.policy,
            Instant::now(),
        )?;
        let view = state.view();
        let max_params = view.links.iter().map(|l| l.num_params).max().unwrap_or(0);
        let metrics = AggregatorMetrics::new()?;
        for l in &view.links {
            metrics
                .round
                .with_label_values(&[&l.link_id])
                .set(l.round as i64);
            tracing::info!(link = %l.link_id, round = l.round, params = l.num_params, "link ready");
        }
        Ok(Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                tokens: config.tokens,
                metrics,
                max_body_bytes: config
                    .max_body_bytes
                    .unwrap_or_else(|| default_max_body_bytes(max_params)),
            }),
        })
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        let v1 = Router::new()
            .route("/v1/state", get(get_state))
            .route("/v1/links/{link_id}", get(get_link))
            .route(
                "/v1/links/{link_id}/updates",
                post(post_update).layer(DefaultBodyLimit::max(self.shared.max_body_bytes)),
            )
            .route_layer(middleware::from_fn_with_state(
                self.shared.clone(),
                authenticate,
            ));
        Router::new()
            .merge(v1)
            .route("/metrics", get(get_metrics))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(self.shared.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, closing overdue rounds meanwhile.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let ticker = tokio::spawn(deadline_loop(self.shared.clone()));
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await;
        ticker.abort();
        result
    }

    /// Binds `addr` and serves in a background task.
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<RunningAggregator> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(listener, async {
            let _ = stopped.await;
        }));
        Ok(RunningAggregator { addr, stop, task })
    }
}

/// A server running in the background.
pub struct RunningAggregator {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningAggregator {
    /// `http://ADDR`, the URL edges use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests, lets running ones finish and waits for the server to end.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Wakes at the earliest round deadline (at least once a second) and closes or extends the
/// overdue rounds, so a silent edge never blocks a round.
async fn deadline_loop(shared: Arc<Shared>) {
    loop {
        let wait = {
            let state = shared.lock();
            let now = Instant::now();
            state
                .next_deadline()
                .map_or(Duration::from_secs(1), |d| d.saturating_duration_since(now))
                .clamp(Duration::from_millis(5), Duration::from_secs(1))
        };
        tokio::time::sleep(wait).await;
        let events = shared.lock().on_deadlines(Instant::now());
        for event in events {
            match event {
                DeadlineEvent::Closed { link_id, summary } => {
                    shared.record_close(&link_id, &summary)
                }
                DeadlineEvent::Extended {
                    link_id,
                    round,
                    updates,
                } => {
                    shared
                        .metrics
                        .round_extensions
                        .with_label_values(&[&link_id])
                        .inc();
                    // An idle round (no edge online) is routine; a partial one is worth a warning.
                    if updates > 0 {
                        tracing::warn!(link = %link_id, round, updates, "deadline passed without a quorum; round extended");
                    } else {
                        tracing::debug!(link = %link_id, round, "deadline passed with no update; round extended");
                    }
                }
            }
        }
    }
}

async fn authenticate(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let edge = bearer(req.headers()).and_then(|t| shared.tokens.authenticate(t));
    match edge {
        Some(edge) => {
            req.extensions_mut().insert(Edge(edge.to_string()));
            next.run(req).await
        }
        None => shared.reject(Rejection::new(
            ErrorCode::Unauthenticated,
            "missing, malformed or unknown bearer token (send `Authorization: Bearer TOKEN`)",
        )),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn get_state(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.lock().view()).into_response()
}

async fn get_link(
    State(shared): State<Arc<Shared>>,
    UrlPath(link_id): UrlPath<String>,
) -> Response {
    let global = shared.lock().global(&link_id);
    match global.map(|g| serde_json::to_vec(&g)) {
        Ok(Ok(body)) => {
            shared
                .metrics
                .sent_bytes
                .with_label_values(&[&link_id])
                .inc_by(body.len() as u64);
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Ok(Err(e)) => error_response(Rejection::new(
            ErrorCode::Internal,
            format!("encoding the link: {e}"),
        )),
        Err(r) => shared.reject(r),
    }
}

async fn post_update(
    State(shared): State<Arc<Shared>>,
    Extension(Edge(edge)): Extension<Edge>,
    UrlPath(link_id): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return shared.reject(Rejection::new(
                ErrorCode::BodyTooLarge,
                format!(
                    "request body over the limit of {} bytes",
                    shared.max_body_bytes
                ),
            ));
        }
        Err(e) => {
            return shared.reject(Rejection::new(
                ErrorCode::Malformed,
                format!("reading the body: {e}"),
            ));
        }
    };
    let req = match parse_update(&body) {
        Ok(r) => r,
        Err(r) => return shared.reject(r),
    };
    let result = shared
        .lock()
        .submit(&edge, &link_id, req, body.len() as u64, Instant::now());
    match result {
        Ok(acc) => {
            let m = &shared.metrics;
            m.updates_accepted.with_label_values(&[&link_id]).inc();
            m.received_bytes
                .with_label_values(&[&link_id])
                .inc_by(body.len() as u64);
            m.pending_updates
                .with_label_values(&[&link_id])
                .set(acc.accepted_in_round as i64);
            if let Some(summary) = &acc.closed {
                shared.record_close(&link_id, summary);
            }
            axum::Json(UpdateAccepted {
                version: PROTOCOL_VERSION,
                link_id,
                round: acc.round,
                accepted_in_round: acc.accepted_in_round,
                round_closed: acc.closed.is_some(),
                open_round: acc.open_round,
            })
            .into_response()
        }
        Err(r) => shared.reject(r),
    }
}

/// Parses an update body; a body of another protocol version is named as such rather than
/// as malformed.
pub fn parse_update(body: &[u8]) -> Result<UpdateRequest, Rejection> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, UpdateRequest>(de) {
        Ok(r) => Ok(r),
        Err(e) => {
            #[derive(serde::Deserialize)]
            struct VersionOnly {
                version: u32,
            }
            if let Ok(v) = serde_json::from_slice::<VersionOnly>(body)
                && v.version != PROTOCOL_VERSION
            {
                return Err(Rejection::new(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "message version {} (this server speaks version {PROTOCOL_VERSION})",
                        v.version
                    ),
                ));
            }
            Err(Rejection::new(
                ErrorCode::Malformed,
                format!("invalid update at {}: {}", e.path(), e.inner()),
            ))
        }
    }
}

async fn get_metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
        .into_response()
}
