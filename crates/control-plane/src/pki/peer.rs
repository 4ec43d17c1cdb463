//! Who is calling a gRPC service, from the client certificate rustls verified against the
//! cluster CA during the handshake.

use tonic::{Request, Status};

use super::{NodeRole, subject_of};

/// The caller of a request, as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub role: NodeRole,
    pub name: String,
}

impl Peer {
    /// An edge or GSLB certificate speaks for the node it was issued to and no other; a
    /// control-plane certificate for any.
    pub fn may_act_as(&self, node_id: &str) -> Result<(), Status> {
        if self.role == NodeRole::ControlPlane || self.name == node_id {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "node_id {node_id:?}: this certificate was issued to {:?}",
            self.name
        )))
    }
}

/// The caller, if its certificate (verified by the TLS handshake) has one of the `allowed`
/// roles. No certificate is `Unauthenticated`; another role is `PermissionDenied`.
pub fn authorize<T>(request: &Request<T>, allowed: &[NodeRole]) -> Result<Peer, Status> {
    let certs = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated(
            "a client certificate signed by the cluster CA is required (get one with a join token)",
        )
    })?;
    let (role, name) = certs
        .first()
        .and_then(|c| subject_of(c.as_ref()))
        .ok_or_else(|| {
            Status::unauthenticated("the client certificate names no role and node name")
        })?;
    if !allowed.contains(&role) {
        let allowed: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        return Err(Status::permission_denied(format!(
            "a {role} certificate may not call this (needs {})",
            allowed.join(" or ")
        )));
    }
    Ok(Peer { role, name })
}
