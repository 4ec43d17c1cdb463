//! openraft's type configuration for the control plane.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use super::command::{Applied, Command};

pub type NodeId = u64;

/// A member of the control-plane cluster: where its peers and clients reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNode {
    /// `host:port` of the gRPC listener (Raft RPCs and config watches).
    pub grpc_addr: String,
    /// `host:port` of the admin REST API.
    pub api_addr: String,
}

impl fmt::Display for ClusterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "grpc={} api={}", self.grpc_addr, self.api_addr)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = ClusterNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, ClusterNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, ClusterNode>;
