//! Pending changes, releases and rollbacks.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use outpost_proto::pb::Config;
use serde::Deserialize;
use serde_json::json;

use super::partitions::Partition;
use super::{ApiError, AppState, Caller, parse_body};
use crate::auth::Role;
use crate::diff;
use crate::raft::{Applied, Command};
use crate::store::{Release, now_ms};

#[derive(Deserialize)]
pub struct ChangesQuery {
    format: Option<String>,
}

/// `GET /api/v1/changes[?format=text]`: the working config against the latest release.
pub async fn changes(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
    Query(q): Query<ChangesQuery>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let working = state.store.working_config(&partition).await?;
    let latest = state.store.latest_release(&partition).await?;
    let base = latest.as_ref().map(|r| &r.config);
    let empty = Config::default();
    let changes = diff::diff(base.unwrap_or(&empty), &working);
    match q.format.as_deref() {
        Some("text") => Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            diff::to_text(&changes),
        )
            .into_response()),
        None | Some("json") => Ok(Json(json!({
            "baseVersion": latest.map(|r| r.version),
            "changes": changes,
        }))
        .into_response()),
        Some(other) => Err(ApiError::BadRequest(format!(
            "format: {other:?} is not json or text"
        ))),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    #[serde(default)]
    note: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    #[serde(default)]
    note: String,
    /// Nodes labelled `staging` get it; the others when it is promoted.
    #[serde(default)]
    staged: bool,
}

fn with_config(r: &Release) -> Result<serde_json::Value, ApiError> {
    let mut v = serde_json::to_value(r.summary())
        .map_err(|e| ApiError::BadRequest(format!("encoding release: {e}")))?;
    let config: serde_json::Value = serde_json::from_str(&r.config_json)
        .map_err(|e| ApiError::Store(crate::store::StoreError::Corrupt(e)))?;
    v["config"] = config;
    Ok(v)
}

/// `POST /api/v1/releases {"note": ..., "staged": bool}`: the working config becomes the next
/// version.
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Editor)?;
    let req: ReleaseBody = parse_body(&body)?;
    // Writes were validated, but the validator may have grown stricter since: check again.
    state.cluster.read_barrier().await?;
    let working = state.store.working_config(&partition).await?;
    outpost_proto::validate(&working).map_err(|e| ApiError::Invalid(e.0))?;
    let command = Command::Release {
        partition: partition.clone(),
        note: req.note,
        staged: req.staged,
        at_ms: now_ms(),
    };
    let release = match state.cluster.write(command).await? {
        Applied::Release(r) => r,
        Applied::Refused(why) => return Err(ApiError::Refused(why)),
        other => return Err(ApiError::unexpected(other)),
    };
    tracing::info!(version = release.version, note = %release.note, staged = release.staged, "release made");
    Ok((StatusCode::CREATED, Json(release)).into_response())
}

pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(json!({ "releases": state.store.releases(&partition).await? })).into_response())
}

pub async fn get_one(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
    Path(version): Path<u64>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    match state.store.release(&partition, version).await? {
        Some(r) => Ok(Json(with_config(&r)?).into_response()),
        None => Err(ApiError::NotFound(format!(
            "release {version} does not exist"
        ))),
    }
}

/// `POST /api/v1/releases/{n}/rollback [{"note": ...}]`: a new release with version n's config.
pub async fn rollback(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
    Path(version): Path<u64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Editor)?;
    let req: NoteBody = if body.iter().all(u8::is_ascii_whitespace) {
        NoteBody::default()
    } else {
        parse_body(&body)?
    };
    let command = Command::Rollback {
        partition: partition.clone(),
        of: version,
        note: req.note,
        at_ms: now_ms(),
    };
    let release = match state.cluster.write(command).await? {
        Applied::Release(r) => r,
        Applied::Refused(why) => return Err(ApiError::Refused(why)),
        other => return Err(ApiError::unexpected(other)),
    };
    tracing::info!(version = release.version, of = version, "rollback released");
    Ok((StatusCode::CREATED, Json(release)).into_response())
}

/// `POST /api/v1/releases/{n}/promote`: a staged release goes to every node.
pub async fn promote(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
    Path(version): Path<u64>,
) -> Result<Response, ApiError> {
    caller.require(Role::Editor)?;
    let command = Command::Promote {
        partition: partition.clone(),
        version,
        at_ms: now_ms(),
    };
    let release = match state.cluster.write(command).await? {
        Applied::Release(r) => r,
        Applied::Refused(why) => return Err(ApiError::Refused(why)),
        other => return Err(ApiError::unexpected(other)),
    };
    tracing::info!(version, "staged release promoted");
    Ok(Json(release).into_response())
}
