//! The client side of Raft RPCs: openraft's messages, JSON-encoded, in a tonic call to the
//! target's `Raft` gRPC service.

use std::net::IpAddr;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use outpost_proto::controlplane::v1::RaftPayload;
use outpost_proto::controlplane::v1::raft_client::RaftClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::types::{ClusterNode, NodeId, TypeConfig};

/// How long to wait for a TCP connection to a peer before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A lazily connected channel to a peer's gRPC listener, from `local` when given: a node
/// listening on one address talks to its peers from that address too. Mutual TLS: `tls`
/// presents this node's certificate and trusts only the cluster CA.
pub fn channel(
    grpc_addr: &str,
    local: Option<IpAddr>,
    tls: &ClientTlsConfig,
) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("https://{grpc_addr}"))?
        .tls_config(tls.clone())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .local_address(local)
        .connect_lazy())
}

pub struct NetworkFactory {
    /// The source address of connections to peers (`None`: the kernel's choice).
    pub local: Option<IpAddr>,
    pub tls: ClientTlsConfig,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &ClusterNode) -> PeerClient {
        PeerClient {
            target,
            client: channel(&node.grpc_addr, self.local, &self.tls)
                .ok()
                .map(RaftClient::new),
            addr: node.grpc_addr.clone(),
        }
    }
}

/// openraft's connection to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    /// `None` when the peer's address does not parse: every call is then unreachable.
    client: Option<RaftClient<Channel>>,
}

#[derive(Debug, thiserror::Error)]
#[error("peer {addr}: {message}")]
struct TransportError {
    addr: String,
    message: String,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, ClusterNode, E>>;

impl PeerClient {
    /// One call: encode, send with the deadline openraft gives, decode the peer's `Result`.
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let transport = |message: String| TransportError {
            addr: self.addr.clone(),
            message,
        };
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(&transport(
                "address does not parse".into(),
            ))));
        };
        let payload =
            serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { payload });
        request.set_timeout(option.hard_ttl());
        let reply = match method {
            Method::Append => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::Snapshot => client.install_snapshot(request).await,
        };
        let reply = match reply {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let err = TransportError {
                    addr: self.addr.clone(),
                    message: status.to_string(),
                };
                // A peer that is down or not listening: openraft backs off before retrying.
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                        RPCError::Unreachable(Unreachable::new(&err))
                    }
                    _ => RPCError::Network(NetworkError::new(&err)),
                });
            }
        };
        let result: Result<Resp, E> = serde_json::from_slice(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

enum Method {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        self.call(Method::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.call(Method::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.call(Method::Vote, &rpc, &option).await
    }
}
