//! The worker itself: `/`, `/health`, `/metrics`, `/ui`, `/topics`, `/connector-plugins`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, put};
use plexus_config::{ConnectorKind, FieldSpec};
use serde_json::{Value as Json, json};

use super::{ApiError, AppState, json as answer, json_body};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/ui/history", get(history))
        .route("/topics", get(topics))
        .route("/topics/{name}", get(topic))
        .route("/connector-plugins", get(plugins))
        .route("/connector-plugins/{type}/config/validate", put(validate))
}

async fn root(State(state): State<AppState>) -> Response {
    answer(
        StatusCode::OK,
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "worker_id": state.worker.id(),
            "data_dir": state.worker.data_dir().display().to_string(),
        }),
    )
}

/// Healthy while the log can take writes; failed connectors are listed but do not make
/// the worker unhealthy (they are the connectors' problem, shown by their status).
async fn health(State(state): State<AppState>) -> Response {
    let mut reasons = Vec::new();
    let log = state.worker.log();
    for name in log.topic_names() {
        let Some(topic) = log.topic(&name) else { continue };
        for p in topic.partitions() {
            if let Some(reason) = p.poisoned() {
                reasons.push(format!("partition {name}/{} is read-only: {reason}", p.id()));
            }
        }
    }
    let failed: Vec<String> = state
        .worker
        .connectors()
        .into_iter()
        .filter(|c| c.state == crate::TaskState::Failed)
        .map(|c| c.name)
        .collect();
    if reasons.is_empty() {
        answer(
            StatusCode::OK,
            json!({
                "status": "healthy",
                "message": "The worker is running and its log accepts writes.",
                "reasons": [],
                "failed_connectors": failed,
            }),
        )
    } else {
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "status": "unhealthy",
                "message": reasons.join("; "),
                "reasons": reasons,
                "failed_connectors": failed,
            }),
        )
    }
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = crate::metrics::render(&state.worker)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("encode the metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

pub(super) async fn ui_page() -> Html<&'static str> {
    Html(crate::ui::INDEX_HTML)
}

async fn history(State(state): State<AppState>) -> Response {
    answer(StatusCode::OK, state.history.to_json())
}

async fn topics(State(state): State<AppState>) -> Response {
    let log = state.worker.log();
    let list: Vec<Json> = log
        .topic_names()
        .into_iter()
        .filter_map(|name| log.topic(&name))
        .map(|topic| {
            let parts = topic.partitions();
            json!({
                "name": topic.name(),
                "partitions": parts.len(),
                "bytes": parts.iter().map(|p| p.size_bytes()).sum::<u64>(),
                "segments": parts.iter().map(|p| p.segment_count()).sum::<usize>(),
                "records": parts.iter().map(|p| (p.end_offset() - p.start_offset()).max(0)).sum::<i64>(),
                "internal": topic.name().starts_with("__"),
            })
        })
        .collect();
    answer(StatusCode::OK, Json::from(list))
}

async fn topic(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let topic = state
        .worker
        .log()
        .topic(&name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("topic `{name}` not found")))?;
    let c = topic.config();
    let partitions: Vec<Json> = topic
        .partitions()
        .iter()
        .map(|p| {
            json!({
                "partition": p.id(),
                "start_offset": p.start_offset(),
                "end_offset": p.end_offset(),
                "bytes": p.size_bytes(),
                "segments": p.segment_count(),
            })
        })
        .collect();
    Ok(answer(
        StatusCode::OK,
        json!({
            "name": topic.name(),
            "config": {
                "partitions": c.partitions,
                "cleanup_policy": format!("{:?}", c.cleanup_policy).to_lowercase(),
                "retention_ms": c.retention_time.map(|d| d.as_millis() as u64),
                "retention_bytes": c.retention_bytes,
                "segment_bytes": c.segment_bytes,
                "segment_ms": c.segment_time.as_millis() as u64,
                "fsync": format!("{:?}", c.fsync),
                "max_batch_bytes": c.max_batch_bytes,
            },
            "partitions": partitions,
        }),
    ))
}

async fn plugins(State(state): State<AppState>) -> Response {
    let registry = state.worker.registry();
    let list: Vec<Json> = registry
        .iter()
        .map(|factory| {
            let fields: Vec<Json> = factory.schema().fields.iter().map(field_json).collect();
            json!({
                "type": factory.type_name(),
                "kind": match factory.kind() { ConnectorKind::Source => "source", ConnectorKind::Sink => "sink" },
                "origin": registry.origin(factory.type_name()),
                "config": fields,
            })
        })
        .collect();
    answer(StatusCode::OK, Json::from(list))
}

fn field_json(field: &FieldSpec) -> Json {
    json!({
        "name": field.name,
        "kind": field.kind.to_string(),
        "required": field.required,
        "secret": field.secret,
        "default": field.default.as_ref().map(plexus_config::Value::to_json),
        "doc": field.doc,
    })
}

/// Checks a configuration for a type exactly as `plexus validate` checks a file.
async fn validate(
    State(state): State<AppState>,
    Path(type_name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if state.worker.registry().get(&type_name).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("connector type `{type_name}` not found (GET /connector-plugins lists them)"),
        ));
    }
    let body = json_body(&headers, body)?;
    let Json::Object(mut config) = body else {
        return Err(ApiError::bad_request("the configuration must be a JSON object"));
    };
    match config.get("type").and_then(Json::as_str) {
        None => {
            config.insert("type".into(), Json::String(type_name.clone()));
        }
        Some(other) if other != type_name => {
            return Err(ApiError::bad_request(format!(
                "the configuration is of type `{other}`, but was sent to validate `{type_name}`"
            )));
        }
        Some(_) => {}
    }
    let name = config
        .get("name")
        .and_then(Json::as_str)
        .unwrap_or("validate")
        .to_owned();
    let errors = match state.worker.validate(&name, &config) {
        Ok(_) => Vec::new(),
        Err(crate::worker::ControlError::Invalid { problems, .. }) => problems,
        Err(other) => return Err(other.into()),
    };
    Ok(answer(
        StatusCode::OK,
        json!({
            "type": type_name,
            "valid": errors.is_empty(),
            "error_count": errors.len(),
            "errors": errors,
        }),
    ))
}
