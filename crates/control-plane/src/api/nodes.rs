//! The edge and GSLB nodes the control plane knows, and draining an edge node out of GSLB
//! answers (for maintenance) without stopping it.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, AppState, Caller};
use crate::auth::Role;
use crate::raft::{Applied, Command};

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeView {
    #[serde(flatten)]
    node: crate::store::Node,
    /// Whether the node has a watch open on this control plane now.
    connected: bool,
}

/// `GET /api/v1/nodes`
pub async fn list(caller: Caller, State(state): State<AppState>) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let nodes: Vec<NodeView> = state
        .store
        .nodes()
        .await?
        .into_iter()
        .map(|node| NodeView {
            connected: state.watchers.is_connected(&node.id),
            node,
        })
        .collect();
    Ok(Json(json!({ "nodes": nodes })).into_response())
}

/// `POST /api/v1/nodes/{id}/drain`: GSLB servers stop answering with the node (it keeps
/// serving the clients it has).
pub async fn drain(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_drained(caller, state, id, true).await
}

/// `POST /api/v1/nodes/{id}/undrain`: the node is answered again (when healthy).
pub async fn undrain(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_drained(caller, state, id, false).await
}

async fn set_drained(
    caller: Caller,
    state: AppState,
    id: String,
    drained: bool,
) -> Result<Response, ApiError> {
    caller.require(Role::Editor)?;
    let command = Command::NodeDrain {
        node_id: id.clone(),
        drained,
    };
    match state.cluster.write(command).await? {
        Applied::Done => {}
        Applied::Refused(why) => return Err(ApiError::Refused(why)),
        other => return Err(ApiError::unexpected(other)),
    }
    tracing::info!(node = %id, drained, "node drain changed");
    Ok(Json(json!({ "id": id, "drained": drained })).into_response())
}
