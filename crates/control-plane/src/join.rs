//! The gRPC `ClusterJoin` service: the CA for anyone, a certificate for a valid join token,
//! and membership for a control-plane node that has joined. Any control-plane node serves it:
//! the CA and the tokens are replicated.

use std::sync::Arc;

use outpost_proto::controlplane::v1 as cp;
use outpost_proto::controlplane::v1::cluster_join_server::ClusterJoin;
use tonic::{Request, Response, Status};

use crate::cluster::Cluster;
use crate::pki::peer::authorize;
use crate::pki::{self, CaKeys, JoinRefusal, JoinToken, NodeRole, PkiError};
use crate::raft::ClusterNode;
use crate::store::{Store, StoreError, now_ms};

pub struct JoinService {
    store: Arc<Store>,
    cluster: Arc<Cluster>,
}

impl JoinService {
    pub fn new(store: Arc<Store>, cluster: Arc<Cluster>) -> JoinService {
        JoinService { store, cluster }
    }

    /// The CA, catching up with the leader first if this node has none yet.
    async fn ca(&self) -> Result<CaKeys, Status> {
        if let Some(ca) = self.store.cluster_ca().await.map_err(internal)? {
            return Ok(ca);
        }
        let _ = self.cluster.read_barrier().await;
        self.store
            .cluster_ca()
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::unavailable("the cluster has no CA yet"))
    }

    /// The token's record, catching up with the leader if it is not known here: a token made
    /// through another node a moment ago may not be applied here yet.
    async fn token(&self, token: &JoinToken) -> Result<Option<pki::JoinTokenRecord>, Status> {
        let hash = token.hash();
        if let Some(r) = self.store.join_token(&hash).await.map_err(internal)? {
            return Ok(Some(r));
        }
        let _ = self.cluster.read_barrier().await;
        self.store.join_token(&hash).await.map_err(internal)
    }
}

fn internal(e: StoreError) -> Status {
    tracing::error!(error = %e, "join service storage error");
    Status::internal("storage error")
}

fn refused(r: JoinRefusal) -> Status {
    match r {
        JoinRefusal::Malformed => Status::invalid_argument(r.to_string()),
        JoinRefusal::WrongRole { .. } => Status::permission_denied(r.to_string()),
        JoinRefusal::WrongCluster | JoinRefusal::Unknown | JoinRefusal::Expired { .. } => {
            Status::unauthenticated(r.to_string())
        }
    }
}

fn bad_request(e: PkiError) -> Status {
    match e {
        PkiError::Generate(_) | PkiError::BadCaKey(_) => {
            tracing::error!(error = %e, "signing a join");
            Status::internal("could not sign the certificate")
        }
        other => Status::invalid_argument(other.to_string()),
    }
}

#[tonic::async_trait]
impl ClusterJoin for JoinService {
    async fn get_ca(
        &self,
        _request: Request<cp::GetCaRequest>,
    ) -> Result<Response<cp::GetCaReply>, Status> {
        let ca = self.ca().await?;
        Ok(Response::new(cp::GetCaReply {
            ca_pem: ca.cert_pem,
        }))
    }

    async fn join(
        &self,
        request: Request<cp::JoinRequest>,
    ) -> Result<Response<cp::JoinReply>, Status> {
        let req = request.into_inner();
        let token = JoinToken::parse(&req.token).map_err(refused)?;
        let role = NodeRole::parse(&req.role)
            .ok_or_else(|| Status::invalid_argument("role: must be control-plane, edge or gslb"))?;
        let ca = self.ca().await?;
        if pki::pin(&ca.cert_pem).map_err(bad_request)? != token.pin {
            return Err(refused(JoinRefusal::WrongCluster));
        }
        let record = self.token(&token).await?;
        if let Err(why) = pki::check_join(record, role, now_ms()) {
            tracing::warn!(node = %req.node_name, %role, reason = %why, "join refused");
            return Err(refused(why));
        }
        let cert_pem = pki::issue(&ca, &req.csr_pem, &req.node_name, role, &req.sans, now_ms())
            .map_err(bad_request)?;
        tracing::info!(node = %req.node_name, %role, sans = ?req.sans, "join: certificate issued");
        Ok(Response::new(cp::JoinReply {
            cert_pem,
            ca_pem: ca.cert_pem,
        }))
    }

    async fn add_voter(
        &self,
        request: Request<cp::AddVoterRequest>,
    ) -> Result<Response<cp::AddVoterReply>, Status> {
        let peer = authorize(&request, &[NodeRole::ControlPlane])?;
        let req = request.into_inner();
        if req.node_id == 0 {
            return Err(Status::invalid_argument(
                "node_id: must be a positive integer",
            ));
        }
        for (field, value) in [("grpc_addr", &req.grpc_addr), ("api_addr", &req.api_addr)] {
            if !crate::api::is_host_port(value) {
                return Err(Status::invalid_argument(format!(
                    "{field}: must be host:port"
                )));
            }
        }
        let node = ClusterNode {
            grpc_addr: req.grpc_addr,
            api_addr: req.api_addr,
        };
        self.cluster
            .add_voter(req.node_id, node)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        tracing::info!(id = req.node_id, by = %peer.name, "cluster member added as a voter");
        Ok(Response::new(cp::AddVoterReply {}))
    }
}
