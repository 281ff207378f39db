//! The status page and the versioned JSON API, served beside `/metrics`:
//!
//! - `GET /`: the status page (HTML, CSS and JavaScript compiled into the binary).
//! - `GET /api/v1/status`: the page's data ([`super::StatusView`]).
//! - `GET /api/v1/links`: the link score matrix.
//! - `GET /api/v1/cameras/{id}/snapshot.jpg[?overlay=1]`: the latest frame, boxes optional.
//! - `POST /api/v1/cameras`, `DELETE /api/v1/cameras/{id}`: add or remove a camera, with the
//!   bearer token; applied by the engine through hot reload and written to the pipeline file.
//!
//! Every error is JSON: `{"error": "..."}`.

use super::edit::{self, EditError};
use super::{Mutation, StatusBoard, snapshot};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::time::Duration;

const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_CSS: &str = include_str!("page/status.css");
const PAGE_JS: &str = include_str!("page/status.js");

/// How long a camera edit waits for the engine to apply it.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

struct ApiState {
    board: Arc<StatusBoard>,
    /// One edit of the pipeline file at a time, from reading it to the engine's answer.
    edits: tokio::sync::Mutex<()>,
}

type Shared = State<Arc<ApiState>>;

/// The routes of the page and the API.
pub fn router(board: Arc<StatusBoard>) -> Router {
    let state = Arc::new(ApiState {
        board,
        edits: tokio::sync::Mutex::new(()),
    });
    Router::new()
        .route("/", get(page))
        .route("/status.css", get(css))
        .route("/status.js", get(js))
        .route("/api/v1/status", get(status))
        .route("/api/v1/links", get(links))
        .route("/api/v1/cameras", axum::routing::post(add_camera))
        .route("/api/v1/cameras/{id}", axum::routing::delete(remove_camera))
        .route("/api/v1/cameras/{id}/snapshot.jpg", get(snapshot_jpg))
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .with_state(state)
}

/// A JSON error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method",
    )
}

async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        PAGE_HTML,
    )
        .into_response()
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        PAGE_CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        PAGE_JS,
    )
        .into_response()
}

async fn status(State(s): Shared) -> Response {
    axum::Json(s.board.view()).into_response()
}

async fn links(State(s): Shared) -> Response {
    axum::Json(s.board.links()).into_response()
}

#[derive(serde::Deserialize)]
struct SnapshotQuery {
    #[serde(default)]
    overlay: Option<String>,
}

async fn snapshot_jpg(
    State(s): Shared,
    Path(id): Path<String>,
    query: Result<Query<SnapshotQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let overlay = match query.map(|q| q.0.overlay) {
        Ok(None) => false,
        Ok(Some(v)) => match v.as_str() {
            "1" | "true" => true,
            "0" | "false" => false,
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("overlay must be 1 or 0, not `{other}`"),
                );
            }
        },
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let latest = match s.board.latest(&id) {
        None => return error(StatusCode::NOT_FOUND, format!("no camera `{id}`")),
        Some(None) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("camera `{id}` has delivered no frame yet"),
            );
        }
        Some(Some(l)) => l,
    };
    let board = s.board.clone();
    let encoded = tokio::task::spawn_blocking(move || {
        let (frame, boxes) = latest;
        board
            .encoded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        snapshot::encode(&frame, overlay.then_some(boxes.as_slice()))
    })
    .await;
    match encoded {
        Ok(Ok(jpeg)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            jpeg,
        )
            .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("snapshot task: {e}"),
        ),
    }
}

/// The refusal of a mutating call without the configured bearer token (None: allowed).
fn refusal(board: &StatusBoard, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &board.token else {
        let why = match &board.token_env {
            Some(var) => format!(
                "camera changes are disabled: the token variable `{var}` is unset or empty in \
                 the engine's environment"
            ),
            None => "camera changes are disabled: the pipeline file names no \
                     `metrics.api_token_env`"
                .to_string(),
        };
        return Some(error(StatusCode::FORBIDDEN, why));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => None,
        _ => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "this call needs `Authorization: Bearer <token>` with the engine's API token",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(r)
        }
    }
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn edit_error(e: EditError) -> Response {
    let status = match &e {
        EditError::BadRequest(_) => StatusCode::BAD_REQUEST,
        EditError::NotFound(_) => StatusCode::NOT_FOUND,
        EditError::Conflict(_) => StatusCode::CONFLICT,
        EditError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        EditError::File(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

async fn add_camera(State(s): Shared, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refusal(&s.board, &headers) {
        return r;
    }
    let camera: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            );
        }
    };
    let id = match edit::parse_camera(&camera) {
        Ok(c) => c.id,
        Err(e) => return edit_error(e),
    };
    let _one_at_a_time = s.edits.lock().await;
    let path = s.board.pipeline_path.clone();
    let text = match read_pipeline(&path).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let new = match edit::add_camera(&text, &path, &camera) {
        Ok(t) => t,
        Err(e) => return edit_error(e),
    };
    match apply(&s.board, new, Some(id.clone())).await {
        Ok(()) => (
            StatusCode::CREATED,
            axum::Json(serde_json::json!({ "added": id })),
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn remove_camera(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = refusal(&s.board, &headers) {
        return r;
    }
    let _one_at_a_time = s.edits.lock().await;
    let path = s.board.pipeline_path.clone();
    let text = match read_pipeline(&path).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let new = match edit::remove_camera(&text, &path, &id) {
        Ok(t) => t,
        Err(e) => return edit_error(e),
    };
    match apply(&s.board, new, None).await {
        Ok(()) => axum::Json(serde_json::json!({ "removed": id })).into_response(),
        Err(r) => r,
    }
}

async fn read_pipeline(path: &std::path::Path) -> Result<String, Response> {
    tokio::fs::read_to_string(path).await.map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the pipeline file {}: {e}", path.display()),
        )
    })
}

/// Hands a validated pipeline text to the engine's frame loop and waits for its answer.
async fn apply(
    board: &StatusBoard,
    text: String,
    expect_camera: Option<String>,
) -> Result<(), Response> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let m = Mutation {
        text,
        expect_camera,
        reply,
    };
    if board.mutations_tx.try_send(m).is_err() {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine is busy with other changes: retry",
        ));
    }
    match tokio::time::timeout(APPLY_TIMEOUT, answer).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(error(StatusCode::UNPROCESSABLE_ENTITY, e)),
        Ok(Err(_)) | Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine did not apply the change (is it still running?)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
