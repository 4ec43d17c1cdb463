//! The cluster itself: status, and membership changed at run time (admin only).

use std::collections::BTreeSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, AppState, Caller, parse_body};
use crate::auth::Role;
use crate::raft::{ClusterNode, NodeId};

/// `GET /api/v1/cluster`: this node's view: its role, the leader, the term, the log, members.
pub async fn status(caller: Caller, State(state): State<AppState>) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.cluster.status()).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewMember {
    id: NodeId,
    grpc_addr: String,
    api_addr: String,
    /// Promote it to voter once it has caught up (default: stay a learner).
    #[serde(default)]
    voter: bool,
}

fn check_addr(field: &str, value: &str) -> Result<(), ApiError> {
    if is_host_port(value) {
        Ok(())
    } else {
        Err(ApiError::invalid(field, "must be host:port"))
    }
}

/// `host:port` with a non-empty host and a port from 1 to 65535.
pub(crate) fn is_host_port(value: &str) -> bool {
    matches!(value.rsplit_once(':'),
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

/// `POST /api/v1/cluster/nodes {"id", "grpcAddr", "apiAddr", "voter"}`: adds a learner, waits
/// until it has caught up with the log, and promotes it when `voter` is true.
pub async fn add_node(
    caller: Caller,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let req: NewMember = parse_body(&body)?;
    if req.id == 0 {
        return Err(ApiError::invalid("id", "must be a positive integer"));
    }
    check_addr("grpcAddr", &req.grpc_addr)?;
    check_addr("apiAddr", &req.api_addr)?;
    let node = ClusterNode {
        grpc_addr: req.grpc_addr,
        api_addr: req.api_addr,
    };
    if req.voter {
        state.cluster.add_voter(req.id, node).await?;
    } else {
        state.cluster.add_learner(req.id, node).await?;
    }
    tracing::info!(id = req.id, voter = req.voter, "cluster member added");
    Ok((StatusCode::CREATED, Json(state.cluster.status())).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Voters {
    voters: BTreeSet<NodeId>,
}

/// `PUT /api/v1/cluster/voters {"voters": [1, 2, 3]}`: exactly these members vote; each must
/// already be a member. Voters left out stay as learners.
pub async fn set_voters(
    caller: Caller,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let req: Voters = parse_body(&body)?;
    if req.voters.is_empty() {
        return Err(ApiError::invalid("voters", "must name at least one member"));
    }
    state.cluster.set_voters(req.voters).await?;
    Ok(Json(state.cluster.status()).into_response())
}

/// `DELETE /api/v1/cluster/nodes/{id}`: removes a member, voter or learner.
pub async fn remove_node(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<NodeId>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    state.cluster.remove(id).await?;
    tracing::info!(id, "cluster member removed");
    Ok(Json(state.cluster.status()).into_response())
}
