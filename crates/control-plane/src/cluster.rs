//! This node's handle on the Raft cluster: writes that reach the leader from any node,
//! linearizable reads (ReadIndex), membership changes and status.
//!
//! Whatever only the leader may do goes through [`Cluster::run`]: done here when this node
//! leads, else forwarded to the leader over the `Raft` gRPC service, and retried while
//! leadership moves, until a deadline. A write is retried only when it surely was not appended
//! (the node asked was not the leader); a forward whose outcome is unknown is reported as such.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use outpost_proto::controlplane::v1::RaftPayload;
use outpost_proto::controlplane::v1::raft_client::RaftClient;
use serde::Serialize;
use tokio::time::Instant;
use tonic::transport::{Channel, ClientTlsConfig};

use crate::raft::forward::{ForwardError, ForwardReply, ForwardRequest};
use crate::raft::network::channel;
use crate::raft::types::Raft;
use crate::raft::{Applied, ClusterNode, Command, NodeId};

/// How long a request may wait for a leader (an election on loopback takes well under one).
const LEADER_DEADLINE: Duration = Duration::from_secs(3);
/// A learner being added must catch up within this.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between attempts while there is no leader.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No leader answered in time; nothing was written.
    #[error("no leader is reachable: {0}")]
    NoLeader(String),
    /// The write was sent but its outcome is unknown (the leader went away or did not commit
    /// it in time): it may still be applied.
    #[error("the outcome is unknown: {0}")]
    Unknown(String),
    /// The request is not possible as asked.
    #[error("{0}")]
    Refused(String),
    #[error("raft: {0}")]
    Failed(String),
}

pub struct Cluster {
    id: NodeId,
    raft: Raft,
    /// The source address of forwarded requests (as for Raft RPCs).
    local: Option<IpAddr>,
    /// Mutual TLS to peers: this node's certificate, trusting only the cluster CA.
    tls: ClientTlsConfig,
    peers: Mutex<HashMap<String, RaftClient<Channel>>>,
    /// Whether this node is in touch with a leader that has a quorum (see [`Cluster::contact`]).
    contact: tokio::sync::watch::Sender<bool>,
}

/// What `GET /api/v1/cluster` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub id: NodeId,
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// Entries up to here were compacted into the snapshot and deleted from the log.
    pub purged_index: Option<u64>,
    pub voters: Vec<NodeId>,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub id: NodeId,
    #[serde(flatten)]
    pub node: ClusterNode,
    pub voter: bool,
    /// The leader's view of how far the member's log matches (only on the leader).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_index: Option<u64>,
}

impl Cluster {
    pub fn new(id: NodeId, raft: Raft, local: Option<IpAddr>, tls: ClientTlsConfig) -> Cluster {
        Cluster {
            id,
            raft,
            local,
            tls,
            peers: Mutex::new(HashMap::new()),
            contact: tokio::sync::watch::channel(true).0,
        }
    }

    /// Whether this node is in touch with a leader that has a quorum, as last checked by
    /// [`Cluster::check_contact`] (true until the first check).
    pub fn contact(&self) -> tokio::sync::watch::Receiver<bool> {
        self.contact.subscribe()
    }

    /// Raft on this node has stopped (shut down, or stopped by a storage failure).
    pub fn raft_stopped(&self) -> bool {
        self.raft.metrics().borrow().state == openraft::ServerState::Shutdown
    }

    /// Checks whether this node is in touch with a leader that has a quorum, and publishes it:
    /// a leader must confirm its leadership with a quorum within `timeout` (a leader cut off
    /// from the majority keeps calling itself leader until then); a follower must know its
    /// leader (cut off, it becomes a candidate after an election timeout).
    pub async fn check_contact(&self, timeout: Duration) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let ok = match m.state {
            openraft::ServerState::Leader => matches!(
                tokio::time::timeout(timeout, self.raft.ensure_linearizable()).await,
                Ok(Ok(_))
            ),
            openraft::ServerState::Follower | openraft::ServerState::Learner => {
                m.current_leader.is_some()
            }
            _ => false,
        };
        self.contact
            .send_if_modified(|c| std::mem::replace(c, ok) != ok);
        ok
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Appends a command to the log and answers what applying it said.
    pub async fn write(&self, command: Command) -> Result<Applied, ClusterError> {
        match self.run(ForwardRequest::Write(command)).await? {
            ForwardReply::Applied(applied) => Ok(applied),
            other => Err(ClusterError::Failed(format!("unexpected reply {other:?}"))),
        }
    }

    /// Returns once this node has applied everything committed before the call: a read of the
    /// local tables afterwards is linearizable.
    pub async fn read_barrier(&self) -> Result<(), ClusterError> {
        let index = match self.run(ForwardRequest::ReadIndex).await? {
            ForwardReply::ReadIndex(i) => i,
            other => return Err(ClusterError::Failed(format!("unexpected reply {other:?}"))),
        };
        self.raft
            .wait(Some(LEADER_DEADLINE))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::NoLeader(format!("catching up to index {index}: {e}")))
    }

    pub async fn add_learner(&self, id: NodeId, node: ClusterNode) -> Result<(), ClusterError> {
        self.run(ForwardRequest::AddLearner { id, node })
            .await
            .map(drop)
    }

    /// Adds a learner, waits until it has caught up, then makes it a voter too.
    pub async fn add_voter(&self, id: NodeId, node: ClusterNode) -> Result<(), ClusterError> {
        self.add_learner(id, node).await?;
        let mut voters: BTreeSet<NodeId> = self.status().voters.into_iter().collect();
        voters.insert(id);
        self.set_voters(voters).await
    }

    pub async fn set_voters(&self, voters: BTreeSet<NodeId>) -> Result<(), ClusterError> {
        self.run(ForwardRequest::SetVoters(voters)).await.map(drop)
    }

    pub async fn remove(&self, id: NodeId) -> Result<(), ClusterError> {
        self.run(ForwardRequest::Remove(id)).await.map(drop)
    }

    /// The leader, as this node knows it.
    pub fn leader(&self) -> Option<(NodeId, ClusterNode)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                node: node.clone(),
                voter: voters.contains(id),
                matched_index: m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|l| l.index),
            })
            .collect();
        ClusterStatus {
            id: self.id,
            state: format!("{:?}", m.state),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            voters: voters.into_iter().collect(),
            members,
        }
    }

    /// Does `req` on the leader, wherever it is.
    async fn run(&self, req: ForwardRequest) -> Result<ForwardReply, ClusterError> {
        let deadline = Instant::now()
            + match req {
                ForwardRequest::AddLearner { .. } => CATCH_UP_DEADLINE,
                _ => LEADER_DEADLINE,
            };
        let is_write = matches!(req, ForwardRequest::Write(_));
        let mut last_problem = String::from("no leader elected");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClusterError::NoLeader(last_problem));
            }
            let self_leads = matches!(self.leader(), Some((id, _)) if id == self.id);
            let result = match self.leader() {
                Some((id, _)) if id == self.id => {
                    match tokio::time::timeout(remaining, self.handle_as_leader(req.clone())).await
                    {
                        Ok(r) => r,
                        Err(_) if is_write => {
                            return Err(ClusterError::Unknown(format!(
                                "not committed within {LEADER_DEADLINE:?}"
                            )));
                        }
                        Err(_) => Err(ForwardError::NotLeader { leader: None }),
                    }
                }
                Some((id, node)) => match self.forward(&node, &req, remaining).await {
                    Ok(r) => r,
                    Err(status) if is_write && status.code() != tonic::Code::Unavailable => {
                        return Err(ClusterError::Unknown(format!(
                            "forwarded to node {id}: {status}"
                        )));
                    }
                    Err(status) => {
                        last_problem =
                            format!("node {id} ({}): {}", node.grpc_addr, status.message());
                        Err(ForwardError::NotLeader { leader: None })
                    }
                },
                None => Err(ForwardError::NotLeader { leader: None }),
            };
            match result {
                Ok(reply) => return Ok(reply),
                Err(ForwardError::NotLeader { .. }) => {
                    if self_leads {
                        last_problem =
                            "this node leads, but no quorum confirms it (cut off from the majority?)"
                                .into();
                    }
                    tokio::time::sleep(RETRY_PAUSE).await
                }
                Err(ForwardError::Refused(m)) => return Err(ClusterError::Refused(m)),
                // A node shutting down (this one or the leader) is an outage, not a bug: a
                // write there may or may not have been committed.
                Err(ForwardError::Stopped(why)) if is_write => {
                    return Err(ClusterError::Unknown(format!(
                        "a node's Raft stopped: {why}"
                    )));
                }
                Err(ForwardError::Stopped(why)) => {
                    return Err(ClusterError::NoLeader(format!(
                        "a node's Raft stopped: {why}"
                    )));
                }
                Err(ForwardError::Failed(m)) => return Err(ClusterError::Failed(m)),
            }
        }
    }

    async fn forward(
        &self,
        node: &ClusterNode,
        req: &ForwardRequest,
        timeout: Duration,
    ) -> Result<Result<ForwardReply, ForwardError>, tonic::Status> {
        let mut client = {
            let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            match peers.get(&node.grpc_addr) {
                Some(c) => c.clone(),
                None => {
                    let ch = channel(&node.grpc_addr, self.local, &self.tls)
                        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                    let c = RaftClient::new(ch);
                    peers.insert(node.grpc_addr.clone(), c.clone());
                    c
                }
            }
        };
        let payload =
            serde_json::to_vec(req).map_err(|e| tonic::Status::internal(e.to_string()))?;
        let mut request = tonic::Request::new(RaftPayload { payload });
        request.set_timeout(timeout);
        let reply = client.forward(request).await?.into_inner();
        serde_json::from_slice(&reply.payload)
            .map_err(|e| tonic::Status::internal(format!("decoding the leader's reply: {e}")))
    }

    /// Does `req` if this node is the leader; the `Forward` RPC lands here.
    pub async fn handle_as_leader(
        &self,
        req: ForwardRequest,
    ) -> Result<ForwardReply, ForwardError> {
        match req {
            ForwardRequest::Write(command) => match self.raft.client_write(command).await {
                Ok(resp) => Ok(ForwardReply::Applied(resp.data)),
                Err(e) => Err(write_error(e)),
            },
            ForwardRequest::ReadIndex => match self.raft.ensure_linearizable().await {
                Ok(log_id) => Ok(ForwardReply::ReadIndex(log_id.map_or(0, |l| l.index))),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    Err(ForwardError::NotLeader {
                        leader: f.leader_id.zip(f.leader_node),
                    })
                }
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                    Err(ForwardError::NotLeader { leader: None })
                }
                Err(RaftError::Fatal(f)) => Err(fatal(f)),
            },
            ForwardRequest::AddLearner { id, node } => self
                .raft
                .add_learner(id, node, true)
                .await
                .map(|_| ForwardReply::Done)
                .map_err(write_error),
            ForwardRequest::SetVoters(voters) => {
                if voters.is_empty() {
                    return Err(ForwardError::Refused("voters: must not be empty".into()));
                }
                self.raft
                    .change_membership(ChangeMembers::ReplaceAllVoters(voters), true)
                    .await
                    .map(|_| ForwardReply::Done)
                    .map_err(write_error)
            }
            ForwardRequest::Remove(id) => {
                let m = self.raft.metrics().borrow().clone();
                let membership = m.membership_config.membership();
                if membership.get_node(&id).is_none() {
                    return Err(ForwardError::Refused(format!("node {id} is not a member")));
                }
                if membership.voter_ids().any(|v| v == id) {
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters([id].into()), false)
                        .await
                        .map_err(write_error)?;
                } else {
                    self.raft
                        .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                        .await
                        .map_err(write_error)?;
                }
                Ok(ForwardReply::Done)
            }
        }
    }
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, ClusterNode>>) -> ForwardError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ForwardError::NotLeader {
            leader: f.leader_id.zip(f.leader_node),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            ForwardError::Refused(c.to_string())
        }
        RaftError::Fatal(f) => fatal(f),
    }
}

/// Raft stopped on this node: for shutdown, or by a storage failure that stopped it for good
/// (the process should be restarted). Either way an outage of this node, answered 503.
fn fatal(f: openraft::error::Fatal<NodeId>) -> ForwardError {
    match f {
        openraft::error::Fatal::Stopped => ForwardError::Stopped("shutting down".into()),
        other => ForwardError::Stopped(other.to_string()),
    }
}
