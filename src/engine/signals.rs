//! The `/metrics` endpoint's thread (with the status page and its API), which also turns
//! SIGINT and SIGTERM into the engine's stop flag.

use super::{EngineError, RunOptions};
use crate::config::Pipeline;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Serves `/metrics` on a thread with its own runtime, which also turns SIGINT and SIGTERM
/// into `stop`. Returns the bound address.
pub(super) fn start_metrics(
    cfg: &Pipeline,
    opts: &RunOptions,
    metrics: Arc<Metrics>,
    status: Arc<crate::status::StatusBoard>,
    stop: Arc<AtomicBool>,
) -> Result<Option<(String, std::thread::JoinHandle<()>)>, EngineError> {
    let listen = opts
        .metrics_listen
        .clone()
        .or_else(|| cfg.metrics.listen.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| EngineError::Other(format!("cannot start the async runtime: {e}")))?;
    let listener = match &listen {
        Some(addr) => {
            let l = rt
                .block_on(tokio::net::TcpListener::bind(addr.as_str()))
                .map_err(|source| EngineError::Metrics {
                    addr: addr.clone(),
                    source,
                })?;
            Some(l)
        }
        None => None,
    };
    let bound = listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string());
    if let Some(a) = &bound {
        tracing::info!("metrics at http://{a}/metrics, status page at http://{a}/");
    }
    let handle = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            rt.block_on(async move {
                let stop_wait = stop.clone();
                let stopped = async move {
                    loop {
                        if stop_wait.load(Ordering::SeqCst) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                let signals = async {
                    let mut term =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                            .ok();
                    let term_recv = async {
                        match term.as_mut() {
                            Some(t) => {
                                t.recv().await;
                            }
                            None => std::future::pending::<()>().await,
                        }
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {},
                        _ = term_recv => {},
                    }
                };
                let serve = async {
                    match listener {
                        Some(l) => {
                            if let Err(e) = crate::metrics::serve(
                                l,
                                metrics,
                                crate::status::api::router(status),
                                stopped,
                            )
                            .await
                            {
                                tracing::warn!(error = %e, "metrics server stopped");
                            }
                        }
                        None => stopped.await,
                    }
                };
                tokio::select! {
                    _ = serve => {},
                    _ = signals => { stop.store(true, Ordering::SeqCst); },
                }
            });
        })
        .map_err(|e| EngineError::Other(format!("cannot start the metrics thread: {e}")))?;
    Ok(Some((bound.unwrap_or_default(), handle)))
}
