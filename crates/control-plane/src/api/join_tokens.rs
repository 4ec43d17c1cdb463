//! Join tokens: what a new node presents to get its certificate (admin only).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, AppState, Caller, parse_body};
use crate::auth::Role;
use crate::cluster::ClusterError;
use crate::pki::{self, JoinToken, NodeRole};
use crate::raft::{Applied, Command};
use crate::store::now_ms;

/// A token lives an hour unless asked otherwise, and at most thirty days.
const DEFAULT_TTL_SECONDS: u64 = 3600;
const MAX_TTL_SECONDS: u64 = 30 * 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewJoinToken {
    role: NodeRole,
    ttl_seconds: Option<u64>,
}

/// `POST /api/v1/join-tokens {"role": "edge", "ttlSeconds": 3600}`: a join token, shown once.
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let req: NewJoinToken = parse_body(&body)?;
    let ttl = req.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if ttl == 0 || ttl > MAX_TTL_SECONDS {
        return Err(ApiError::invalid(
            "ttlSeconds",
            &format!("must be from 1 to {MAX_TTL_SECONDS}"),
        ));
    }
    let ca = match state.store.cluster_ca().await? {
        Some(ca) => ca,
        None => {
            state.cluster.read_barrier().await?;
            state.store.cluster_ca().await?.ok_or_else(|| {
                ApiError::Cluster(ClusterError::NoLeader("the cluster has no CA yet".into()))
            })?
        }
    };
    let pin = pki::pin(&ca.cert_pem)
        .map_err(|e| ApiError::Cluster(ClusterError::Failed(e.to_string())))?;
    let token = JoinToken::new(&pin);
    let now = now_ms();
    let expires_at_ms = now + (ttl * 1000) as i64;
    let command = Command::CreateJoinToken {
        sha256: token.hash(),
        role: req.role,
        expires_at_ms,
        at_ms: now,
    };
    match state.cluster.write(command).await? {
        Applied::Done => {}
        Applied::Refused(why) => return Err(ApiError::Refused(why)),
        other => return Err(ApiError::unexpected(other)),
    }
    tracing::info!(role = %req.role, ttl, "join token created");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "token": token.to_string(),
            "role": req.role,
            "expiresAtMs": expires_at_ms,
            "caSha256": pin,
        })),
    )
        .into_response())
}
