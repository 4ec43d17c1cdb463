//! Partitions: groups of nodes (by their `partition` label) with their own working config and
//! releases. Every config and release endpoint takes `?partition=NAME` (`default` when left
//! out).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState, Caller, parse_body};
use crate::auth::Role;
use crate::raft::{Applied, Command};
use crate::store::{DEFAULT_PARTITION, now_ms};

/// The partition a request is about, from `?partition=NAME`.
pub struct Partition(pub String);

#[derive(Deserialize)]
struct PartitionQuery {
    partition: Option<String>,
}

/// A partition name is what a node label value can carry and a URL can hold as is.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "partition: {name:?} must be 1 to 63 of a-z, 0-9, '-' and '_'"
        )))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Partition {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = Query::<PartitionQuery>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?;
        let name = q.0.partition.unwrap_or_else(|| DEFAULT_PARTITION.into());
        check_name(&name)?;
        Ok(Partition(name))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
}

/// `GET /api/v1/partitions`
pub async fn list(caller: Caller, State(state): State<AppState>) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(json!({ "partitions": state.store.partitions().await? })).into_response())
}

/// `POST /api/v1/partitions {"name": ...}`: a new partition with an empty working config.
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let req: CreateBody = parse_body(&body)?;
    check_name(&req.name)?;
    let command = Command::CreatePartition {
        name: req.name.clone(),
        at_ms: now_ms(),
    };
    match state.cluster.write(command).await? {
        Applied::Done => {}
        Applied::Refused(why) => return Err(ApiError::Refused(why)),
        other => return Err(ApiError::unexpected(other)),
    }
    tracing::info!(partition = %req.name, "partition created");
    Ok((StatusCode::CREATED, Json(json!({ "name": req.name }))).into_response())
}

/// `DELETE /api/v1/partitions/{name}`: the partition, its working config and its releases.
/// Its nodes get nothing new until they are labelled for another partition.
pub async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    check_name(&name)?;
    match state
        .cluster
        .write(Command::DeletePartition { name: name.clone() })
        .await?
    {
        Applied::Done => {}
        Applied::Refused(why) => return Err(ApiError::Refused(why)),
        other => return Err(ApiError::unexpected(other)),
    }
    tracing::info!(partition = %name, "partition deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
