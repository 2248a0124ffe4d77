//! `/connectors`: create, configure, steer and inspect connectors; their offsets.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use plexus_config::ConnectorKind;
use serde_json::{Map, Value as Json, json};

use super::{ApiError, AppState, json as answer, json_body, query_flag, query_values};
use crate::store::config_to_json;
use crate::worker::{ConnectorView, OffsetEntry};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/connectors", get(list).post(create))
        .route("/connectors/{name}", get(info).put(put_config).delete(delete))
        .route(
            "/connectors/{name}/config",
            get(config).put(put_config).patch(patch_config),
        )
        .route("/connectors/{name}/status", get(status))
        .route("/connectors/{name}/tasks", get(tasks))
        .route("/connectors/{name}/restart", axum::routing::post(restart))
        .route("/connectors/{name}/pause", put(pause))
        .route("/connectors/{name}/resume", put(resume))
        .route("/connectors/{name}/stop", put(stop))
        .route(
            "/connectors/{name}/offsets",
            get(offsets).patch(alter_offsets).delete(reset_offsets),
        )
}

async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let expand = query_values(query.as_deref(), "expand");
    if let Some(bad) = expand.iter().find(|e| !matches!(**e, "status" | "info")) {
        return Err(ApiError::bad_request(format!(
            "`expand` may be `status` or `info`, found `{bad}`"
        )));
    }
    let connectors = state.worker.connectors();
    if expand.is_empty() {
        let names: Vec<&str> = connectors.iter().map(|c| c.name.as_str()).collect();
        return Ok(answer(StatusCode::OK, json!(names)));
    }
    let mut out = Map::new();
    for c in &connectors {
        let mut entry = Map::new();
        if expand.contains(&"status") {
            entry.insert("status".into(), status_json(&state, c));
        }
        if expand.contains(&"info") {
            entry.insert("info".into(), info_json(c));
        }
        out.insert(c.name.clone(), Json::Object(entry));
    }
    Ok(answer(StatusCode::OK, Json::Object(out)))
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body)?;
    let name = body.get("name").and_then(Json::as_str).ok_or_else(|| {
        ApiError::bad_request("the body must be {\"name\": \"...\", \"config\": {...}}: `name` is missing")
    })?;
    let config = config_object(body.get("config"), name)?;
    let view = state.worker.create(name, &config).await?;
    Ok(answer(StatusCode::CREATED, info_json(&view)))
}

async fn info(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let view = find(&state, &name)?;
    Ok(answer(StatusCode::OK, info_json(&view)))
}

async fn config(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let view = find(&state, &name)?;
    Ok(answer(StatusCode::OK, config_to_json(&view.config, false)))
}

async fn put_config(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body)?;
    let config = config_object(Some(&body), &name)?;
    let (view, created) = state.worker.put_config(&name, &config).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(answer(status, info_json(&view)))
}

async fn patch_config(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let patch = json_body(&headers, body)?;
    if !patch.is_object() {
        return Err(ApiError::bad_request("a configuration patch must be a JSON object"));
    }
    if let Some(other) = patch.get("name").and_then(Json::as_str).filter(|n| *n != name) {
        return Err(ApiError::bad_request(format!(
            "the patch renames the connector to `{other}`; names cannot change"
        )));
    }
    let view = state.worker.patch_config(&name, &patch).await?;
    Ok(answer(StatusCode::OK, info_json(&view)))
}

async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    state.worker.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn status(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let view = find(&state, &name)?;
    Ok(answer(StatusCode::OK, status_json(&state, &view)))
}

async fn tasks(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let view = find(&state, &name)?;
    Ok(answer(
        StatusCode::OK,
        json!([{ "id": { "connector": view.name, "task": 0 }, "config": config_to_json(&view.config, false) }]),
    ))
}

async fn restart(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let include_tasks = query_flag(query.as_deref(), "includeTasks")?;
    let only_failed = query_flag(query.as_deref(), "onlyFailed")?;
    state.worker.restart(&name, only_failed).await?;
    if include_tasks {
        let view = find(&state, &name)?;
        Ok(answer(StatusCode::ACCEPTED, status_json(&state, &view)))
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

async fn pause(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    state.worker.pause(&name).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn resume(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    state.worker.resume(&name).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn stop(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    state.worker.stop(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn offsets(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let entries = state.worker.offsets(&name).await?;
    let list: Vec<Json> = entries
        .into_iter()
        .map(|e| json!({ "partition": e.partition, "offset": e.offset }))
        .collect();
    Ok(answer(StatusCode::OK, json!({ "offsets": list })))
}

async fn alter_offsets(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body)?;
    let list = body.get("offsets").and_then(Json::as_array).ok_or_else(|| {
        ApiError::bad_request("the body must be {\"offsets\": [{\"partition\": {...}, \"offset\": {...}}]}")
    })?;
    let mut entries = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let partition = item
            .get("partition")
            .filter(|p| p.is_object())
            .ok_or_else(|| ApiError::bad_request(format!("offsets[{i}] has no `partition` object")))?;
        entries.push(OffsetEntry {
            partition: partition.clone(),
            offset: item.get("offset").cloned(),
        });
    }
    if entries.is_empty() {
        return Err(ApiError::bad_request("`offsets` is empty: nothing to change"));
    }
    let message = state.worker.alter_offsets(&name, &entries).await?;
    Ok(answer(StatusCode::OK, json!({ "message": message })))
}

async fn reset_offsets(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let message = state.worker.reset_offsets(&name).await?;
    Ok(answer(StatusCode::OK, json!({ "message": message })))
}

fn find(state: &AppState, name: &str) -> Result<ConnectorView, ApiError> {
    state
        .worker
        .connector(name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("connector `{name}` not found")))
}

/// The `config` object of a request, whose `name` (if any) must be the connector's.
fn config_object(config: Option<&Json>, name: &str) -> Result<Map<String, Json>, ApiError> {
    let Some(Json::Object(config)) = config else {
        return Err(ApiError::bad_request(
            "the configuration must be a JSON object such as {\"type\": \"datagen\", \"topic\": \"t\", \"settings\": {...}}",
        ));
    };
    if let Some(other) = config.get("name").and_then(Json::as_str).filter(|n| *n != name) {
        return Err(ApiError::bad_request(format!(
            "the configuration names connector `{other}`, but the request is for `{name}`"
        )));
    }
    Ok(config.clone())
}

fn kind_name(kind: ConnectorKind) -> &'static str {
    match kind {
        ConnectorKind::Source => "source",
        ConnectorKind::Sink => "sink",
    }
}

pub(super) fn info_json(view: &ConnectorView) -> Json {
    json!({
        "name": view.name,
        "config": config_to_json(&view.config, false),
        "tasks": [{ "connector": view.name, "task": 0 }],
        "type": kind_name(view.kind),
    })
}

pub(super) fn status_json(state: &AppState, view: &ConnectorView) -> Json {
    let worker_id = state.worker.id();
    let last_error = view
        .last_error
        .as_ref()
        .map(|(message, time)| json!({ "message": message, "time": rfc3339(*time) }));
    let trace = if matches!(view.state, crate::TaskState::Failed | crate::TaskState::Restarting) {
        view.last_error.as_ref().map(|(message, _)| message.clone())
    } else {
        None
    };
    json!({
        "name": view.name,
        "type": kind_name(view.kind),
        "connector_type": view.type_name,
        "connector": { "state": view.state.as_str(), "worker_id": worker_id },
        "tasks": [{ "id": 0, "state": view.state.as_str(), "worker_id": worker_id, "trace": trace }],
        "restarts": view.restarts,
        "last_error": last_error,
        "origin": view.origin.to_string(),
    })
}

/// `2026-11-22T10:15:03.512Z`.
pub(crate) fn rfc3339(time: std::time::SystemTime) -> String {
    let ms = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut out = Vec::with_capacity(24);
    plexus_connector::json::push_utc_millis(&mut out, ms);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_350_903_512);
        assert_eq!(rfc3339(t), "2026-11-22T12:35:03.512Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
