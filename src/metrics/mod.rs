//! Every Prometheus metric the engine exports, declared in one place, and the `/metrics`
//! HTTP endpoint.
//!
//! Components take the handles they need once (e.g. `metrics.frames_ingested.with_label_values(&[camera])`)
//! and keep them, so the per-frame path never looks a metric up by name.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::{Arc, OnceLock};

/// Latency buckets in seconds, from 100 us (a link prediction) to 10 s (a stalled frame).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The source states of a camera, as exported in `mlink_source_state{state=...}`.
pub const SOURCE_STATES: &[&str] = &[
    "starting", "running", "stalled", "retrying", "stopped", "finished", "failed",
];

/// All metric families of one engine.
pub struct Metrics {
    pub registry: Registry,
    /// Frames delivered by a camera after sampling.
    pub frames_ingested: IntCounterVec,
    /// Frames dropped because the engine was slower than the camera (drop-oldest).
    pub frames_dropped: IntCounterVec,
    /// 1 for the camera's current state, 0 for the others.
    pub source_state: IntGaugeVec,
    /// Reconnections of a source after an error or a stall.
    pub source_reconnects: IntCounterVec,
    /// Exact executions of a model.
    pub model_executions: IntCounterVec,
    /// Outputs of a model predicted by links.
    pub model_predictions: IntCounterVec,
    /// Outputs of a triggered model served from its last exact output (policy hybrid).
    pub model_reused: IntCounterVec,
    /// Explicit session loads and unloads.
    pub model_loads: IntCounterVec,
    pub model_unloads: IntCounterVec,
    /// 1 when the model is in the active set.
    pub model_active: IntGaugeVec,
    /// Model inference latency (pre, run, post).
    pub inference_seconds: HistogramVec,
    /// Link ensemble prediction latency per target model.
    pub link_seconds: HistogramVec,
    /// End-to-end latency per frame, from delivery to the last record written.
    pub frame_seconds: HistogramVec,
    /// Budget and use, per resource (`memory_mb`, `ms_per_frame`).
    pub budget: GaugeVec,
    pub budget_used: GaugeVec,
    /// Re-selections by cause (`startup`, `period`, `drift`, `reload`).
    pub reselections: IntCounterVec,
    /// Profiled score of a link (source -> target), and of each target's ensemble (source `ensemble`).
    pub link_score: GaugeVec,
    /// Expected average output accuracy F(A) of the active set.
    pub expected_accuracy: GaugeVec,
    /// Link training runs by policy (`initial`, `periodic`, `uncertainty`, `loss_prediction`).
    pub link_training_runs: IntCounterVec,
    /// Selections that left no model active, by cause (every output then unavailable).
    pub empty_selections: IntCounterVec,
    /// Failed inferences, oracle applications or loads per model.
    pub model_failures: IntCounterVec,
    /// Accuracy of a model's predicted outputs, measured on profiling frames.
    pub predicted_accuracy: GaugeVec,
    /// Selections made when no set keeps up with the cameras' offered rate, by cause.
    pub rate_unmet: IntCounterVec,
    /// Frames per second the cameras offer and the time per frame that allows on the
    /// engine's cores (ms), as the scheduler plans with them.
    pub offered_rate: GaugeVec,
    /// Link bundles read again after the file changed on disk, by result (`installed`,
    /// `rejected`: unreadable or for other models, the links held keep serving).
    pub link_reloads: IntCounterVec,
    /// Records written and dropped per sink.
    pub sink_records: IntCounterVec,
    pub sink_dropped: IntCounterVec,
}

impl Metrics {
    /// A fresh registry with every family registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            let g =
                IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
            .expect("static metric definition");
            registry
                .register(Box::new(h.clone()))
                .expect("metric registered once");
            h
        };
        Self {
            frames_ingested: counter(
                "mlink_frames_ingested_total",
                "Frames delivered by a camera after sampling",
                &["camera"],
            ),
            frames_dropped: counter(
                "mlink_frames_dropped_total",
                "Frames dropped because the engine was behind (drop-oldest)",
                &["camera"],
            ),
            source_state: int_gauge(
                "mlink_source_state",
                "1 for the camera source's current state",
                &["camera", "state"],
            ),
            source_reconnects: counter(
                "mlink_source_reconnects_total",
                "Source reconnections after an error or stall",
                &["camera"],
            ),
            model_executions: counter(
                "mlink_model_executions_total",
                "Exact executions of a model",
                &["model"],
            ),
            model_predictions: counter(
                "mlink_model_predictions_total",
                "Model outputs predicted by links",
                &["model"],
            ),
            model_reused: counter(
                "mlink_model_reused_total",
                "Model outputs served from the model's last exact output (policy hybrid)",
                &["model"],
            ),
            model_loads: counter("mlink_model_loads_total", "Model session loads", &["model"]),
            model_unloads: counter(
                "mlink_model_unloads_total",
                "Model session unloads",
                &["model"],
            ),
            model_active: int_gauge(
                "mlink_model_active",
                "1 when the model is in the active set",
                &["model"],
            ),
            inference_seconds: histogram(
                "mlink_inference_seconds",
                "Model inference latency, pre- and post-processing included",
                &["model"],
            ),
            link_seconds: histogram(
                "mlink_link_seconds",
                "Link ensemble prediction latency",
                &["model"],
            ),
            frame_seconds: histogram(
                "mlink_frame_seconds",
                "End-to-end latency of a frame",
                &["camera"],
            ),
            budget: gauge(
                "mlink_budget",
                "Scheduler budget per resource",
                &["resource"],
            ),
            budget_used: gauge(
                "mlink_budget_used",
                "Budget in use by loaded models per resource",
                &["resource"],
            ),
            reselections: counter(
                "mlink_reselections_total",
                "Re-selections of the active set by cause",
                &["cause"],
            ),
            link_score: gauge(
                "mlink_link_score",
                "Profiled score of a link or ensemble",
                &["source", "target"],
            ),
            expected_accuracy: gauge(
                "mlink_expected_accuracy",
                "Expected average output accuracy F(A) of the active set",
                &["pipeline"],
            ),
            link_training_runs: counter(
                "mlink_link_training_runs_total",
                "Link training runs by policy",
                &["policy"],
            ),
            empty_selections: counter(
                "mlink_empty_selections_total",
                "Selections that left no model active, by cause",
                &["cause"],
            ),
            model_failures: counter(
                "mlink_model_failures_total",
                "Failed inferences, oracle applications or loads of a model",
                &["model"],
            ),
            predicted_accuracy: gauge(
                "mlink_predicted_accuracy",
                "Accuracy of the model's predicted outputs measured on profiling frames",
                &["model"],
            ),
            link_reloads: counter(
                "mlink_link_reloads_total",
                "Link bundles read again after the file changed on disk, by result",
                &["result"],
            ),
            sink_records: counter(
                "mlink_sink_records_total",
                "Records written per sink",
                &["sink"],
            ),
            sink_dropped: counter(
                "mlink_sink_dropped_total",
                "Records dropped per sink",
                &["sink"],
            ),
            rate_unmet: counter(
                "mlink_rate_unmet_selections_total",
                "Selections made when no set of models keeps up with the cameras' offered rate",
                &["cause"],
            ),
            offered_rate: gauge(
                "mlink_offered_rate",
                "Frames per second the cameras offer (fps) and the time per frame it allows on \
                 the engine's cores (ms_per_frame)",
                &["quantity"],
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Sets the camera's state gauge: 1 for `state`, 0 for every other state.
    pub fn set_source_state(&self, camera: &str, state: &str) {
        for s in SOURCE_STATES {
            self.source_state
                .with_label_values(&[camera, s])
                .set(i64::from(*s == state));
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The process-wide metrics, for code that has no engine handle (CLI tools).
pub fn global() -> Arc<Metrics> {
    static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();
    GLOBAL.get_or_init(|| Arc::new(Metrics::new())).clone()
}

/// Serves `GET /metrics` (and `GET /healthz`), and the routes of `extra` (the status page
/// and its API), on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    extra: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::{Router, routing::get};
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .merge(extra);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_family_once_used() {
        let m = Metrics::new();
        m.frames_ingested.with_label_values(&["cam"]).inc();
        m.set_source_state("cam", "running");
        let text = m.render();
        assert!(text.contains("mlink_frames_ingested_total{camera=\"cam\"} 1"));
        assert!(text.contains("mlink_source_state{camera=\"cam\",state=\"running\"} 1"));
        assert!(text.contains("mlink_source_state{camera=\"cam\",state=\"stalled\"} 0"));
    }
}
