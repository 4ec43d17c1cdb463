//! What a follower asks of the leader through the `Forward` RPC, and what comes back.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::command::{Applied, Command};
use super::types::{ClusterNode, NodeId};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// Append a command to the log and answer what applying it said.
    Write(Command),
    /// Add a non-voting member, and wait until it has caught up.
    AddLearner { id: NodeId, node: ClusterNode },
    /// Make exactly these members voters; other voters become learners.
    SetVoters(BTreeSet<NodeId>),
    /// Remove a member (voter or learner) from the cluster.
    Remove(NodeId),
    /// Confirm leadership with a quorum and answer the log index a linearizable read must
    /// wait for.
    ReadIndex,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardReply {
    Applied(Applied),
    Done,
    ReadIndex(u64),
}

#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// Only the leader can do this; `leader` is who this node believes leads, if anyone.
    #[error("not the leader")]
    NotLeader {
        leader: Option<(NodeId, ClusterNode)>,
    },
    /// The request is not possible as asked (an unknown node, a membership with no voter...).
    #[error("{0}")]
    Refused(String),
    /// The node that got it has stopped its Raft: shutting down, or stopped by a storage
    /// failure (the reason).
    #[error("the node's Raft has stopped: {0}")]
    Stopped(String),
    /// Storage failed, or Raft stopped for another reason.
    #[error("{0}")]
    Failed(String),
}
