//! The worker's REST API, shaped after Kafka Connect's (see docs/rest-api.md).
//!
//! Every answer is JSON; every error is `{"error_code": STATUS, "message": ...}` with
//! that status. Bodies are parsed here rather than by axum's `Json` extractor so that
//! malformed JSON, a wrong content or an oversized body gets the same JSON error shape.

mod connectors;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use plexus_config::RestConfig;
use serde_json::Value as Json;

use crate::Worker;
use crate::ui::History;
use crate::worker::ControlError;

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct AppState {
    pub worker: Arc<Worker>,
    pub history: History,
    token: Option<Arc<str>>,
}

/// A running REST API.
#[derive(Debug)]
pub struct RestServer {
    pub addr: SocketAddr,
    handle: tokio::task::JoinHandle<()>,
}

impl RestServer {
    /// Binds `listen` (refusing a non-loopback address without a token), and serves
    /// until [`RestServer::stop`].
    pub async fn start(worker: Arc<Worker>, config: &RestConfig, listen: SocketAddr) -> anyhow::Result<RestServer> {
        let token = read_token(config)?;
        if !listen.ip().is_loopback() && token.is_none() {
            anyhow::bail!(
                "refusing to serve the REST API on {listen} without a token: anyone who can reach it could change connectors; \
                 set `token` or `token_file` in [worker.rest], or listen on 127.0.0.1"
            );
        }
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
            format!("listen on {listen} for the REST API (set [worker.rest] listen or --rest-listen)")
        })?;
        let addr = listener.local_addr().context("read the REST API's address")?;
        worker.set_rest_port(addr.port());
        let history = History::spawn(&worker, std::time::Duration::from_secs(2), 300);
        let state = AppState {
            worker,
            history,
            token: token.map(Arc::from),
        };
        let max_body = usize::try_from(config.max_body.0).unwrap_or(usize::MAX);
        let app = router(state, max_body);
        let handle = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "The REST API stopped.");
            }
        });
        Ok(RestServer { addr, handle })
    }

    pub fn stop(self) {
        self.handle.abort();
    }
}

fn router(state: AppState, max_body: usize) -> Router {
    let api = Router::new()
        .merge(worker::routes())
        .merge(connectors::routes())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        // The page itself holds no data: it asks for a token when the API wants one.
        .route("/ui", axum::routing::get(worker::ui_page))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), time_limit))
        .with_state(state)
}

/// No request runs unbounded: a client that never finishes its body, or an operation
/// stuck behind a connector that does not stop, gets `503` instead of a hang.
/// The limit leaves room for a connector's graceful stop (`shutdown_timeout`).
async fn time_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.worker.shutdown_timeout() + std::time::Duration::from_secs(10);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request did not complete within {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

fn read_token(config: &RestConfig) -> anyhow::Result<Option<String>> {
    if let Some(token) = &config.token {
        return Ok(Some(token.expose().to_owned()));
    }
    let Some(path) = &config.token_file else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("read the REST token file `{}`", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        anyhow::bail!("the REST token file `{}` is empty", path.display());
    }
    Ok(Some(token))
}

async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|given| same_secret(given.as_bytes(), token.as_bytes())) {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this worker requires a bearer token: send `Authorization: Bearer TOKEN`",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// Compares in time that depends only on the length, not on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no such endpoint: {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// An error answer: `{"error_code": STATUS, "message": ...}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    /// Every problem of an invalid configuration.
    problems: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            problems: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        let status = match &e {
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let problems = match &e {
            ControlError::Invalid { problems, .. } => problems.clone(),
            _ => Vec::new(),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "A REST request failed.");
        }
        ApiError {
            status,
            message: e.to_string(),
            problems,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error_code": self.status.as_u16(),
            "message": self.message,
        });
        if !self.problems.is_empty() {
            body["problems"] = Json::from(self.problems);
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is left unread, so the connection cannot carry
            // another request: say so, or a client sends its next one on a connection
            // about to close (and gets a broken pipe).
            return (self.status, [(header::CONNECTION, "close")], axum::Json(body)).into_response();
        }
        (self.status, axum::Json(body)).into_response()
    }
}

/// A request body parsed as JSON, with JSON errors for every way it can be wrong.
pub(crate) fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Json, ApiError> {
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "the request body is larger than [worker.rest] max_body allows")
        } else {
            ApiError::new(status, format!("cannot read the request body: {rejection}"))
        }
    })?;
    if let Some(kind) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
        && !kind.starts_with("application/json")
        && !kind.starts_with("application/merge-patch+json")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("expected a JSON body (Content-Type: application/json), got `{kind}`"),
        ));
    }
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the request needs a JSON body"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// An answer with a status and a JSON body.
pub(crate) fn json(status: StatusCode, body: Json) -> Response {
    (status, axum::Json(body)).into_response()
}

/// `expand=status&expand=info` and the like, from a raw query string.
pub(crate) fn query_values<'q>(query: Option<&'q str>, key: &str) -> Vec<&'q str> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect()
}

/// A boolean query parameter: absent is `false`; `true`/`false` only.
pub(crate) fn query_flag(query: Option<&str>, key: &str) -> Result<bool, ApiError> {
    match query_values(query, key).last() {
        None => Ok(false),
        Some(&"true") | Some(&"") => Ok(true),
        Some(&"false") => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "query parameter `{key}` must be true or false, found `{other}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_repeat() {
        assert_eq!(
            query_values(Some("expand=status&expand=info"), "expand"),
            vec!["status", "info"]
        );
        assert!(query_values(None, "expand").is_empty());
        assert!(query_flag(Some("includeTasks=true"), "includeTasks").unwrap());
        assert!(!query_flag(Some("includeTasks=false"), "includeTasks").unwrap());
        assert!(query_flag(Some("includeTasks=yes"), "includeTasks").is_err());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
