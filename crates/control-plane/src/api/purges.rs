//! Purges: accepted by any control-plane node, replicated, and sent to every node through its
//! Watch stream at once, without a release.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState, Caller};
use crate::auth::Role;
use crate::raft::{Applied, Command};
use crate::store::now_ms;

/// `POST /api/v1/purges` with `{"url"|"prefix"|"tag": "...", "soft": bool}` or `{"all": true}`:
/// 202 with the purge's id once it is committed; nodes apply it as their streams deliver it.
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Editor)?;
    let purge = outpost_proto::purge::parse_request(&body).map_err(ApiError::BadRequest)?;
    let request = outpost_proto::purge::to_json(&purge);
    let command = Command::Purge {
        request_json: request.to_string(),
        at_ms: now_ms(),
    };
    let id = match state.cluster.write(command).await? {
        Applied::Purge(id) => id,
        Applied::Refused(why) => return Err(ApiError::Refused(why)),
        other => return Err(ApiError::unexpected(other)),
    };
    tracing::info!(id, %request, "purge accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "request": request })),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
}

/// `GET /api/v1/purges[?limit=N]`: the newest purges, newest first (default 100).
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = q.limit.unwrap_or(100).min(1000);
    Ok(Json(json!({ "purges": state.store.purges(limit).await? })).into_response())
}
