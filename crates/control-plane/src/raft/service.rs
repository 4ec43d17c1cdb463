//! The server side of the `Raft` gRPC service: decode, hand to openraft (or to the cluster, for
//! forwarded requests), encode the `Result` back.

use std::sync::Arc;

use outpost_proto::controlplane::v1::RaftPayload;
use outpost_proto::controlplane::v1::raft_server::Raft as RaftRpc;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use super::forward::ForwardRequest;
use crate::cluster::Cluster;
use crate::pki::NodeRole;
use crate::pki::peer::authorize;

pub struct RaftService {
    cluster: Arc<Cluster>,
}

impl RaftService {
    pub fn new(cluster: Arc<Cluster>) -> RaftService {
        RaftService { cluster }
    }
}

/// Only control-plane nodes (by their client certificate) may speak Raft or forward requests.
fn decode<T: DeserializeOwned>(request: Request<RaftPayload>) -> Result<T, Status> {
    authorize(&request, &[NodeRole::ControlPlane])?;
    serde_json::from_slice(&request.into_inner().payload)
        .map_err(|e| Status::invalid_argument(format!("payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    serde_json::to_vec(value)
        .map(|payload| Response::new(RaftPayload { payload }))
        .map_err(|e| Status::internal(format!("encoding the reply: {e}")))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request)?;
        encode(&self.cluster.raft().append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request)?;
        encode(&self.cluster.raft().vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request)?;
        encode(&self.cluster.raft().install_snapshot(rpc).await)
    }

    async fn forward(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let req: ForwardRequest = decode(request)?;
        encode(&self.cluster.handle_as_leader(req).await)
    }
}
