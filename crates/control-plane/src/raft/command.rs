//! What the replicated log carries, and what applying an entry answers.
//!
//! A command holds everything its effect depends on, the time included (taken by the node that
//! proposes it), so that every node applying it reaches the same state. Decisions that depend
//! on the state (is there anything to release? does the node exist?) are taken when the
//! command is applied, in log order, and come back as a [`Refusal`].

use serde::{Deserialize, Serialize};

use crate::auth::Role;
use crate::pki::NodeRole;
use crate::store::{NodeHello, ReleaseSummary};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Replaces a partition's working config, if it is still at `base_revision`.
    SetWorking {
        #[serde(default = "default_partition")]
        partition: String,
        base_revision: u64,
        /// The config in the proto3 JSON mapping, already validated.
        config_json: String,
        at_ms: i64,
    },
    /// Makes the working config the next release; a staged one goes to nodes labelled
    /// `staging` only, until promoted.
    Release {
        #[serde(default = "default_partition")]
        partition: String,
        note: String,
        #[serde(default)]
        staged: bool,
        at_ms: i64,
    },
    /// A staged release goes to every node.
    Promote {
        #[serde(default = "default_partition")]
        partition: String,
        version: u64,
        at_ms: i64,
    },
    /// Remove cached responses on every node (`request_json` as `POST /api/v1/purges` took it,
    /// already checked).
    Purge { request_json: String, at_ms: i64 },
    /// A new release with the content of release `of`, which also becomes the working config.
    Rollback {
        #[serde(default = "default_partition")]
        partition: String,
        of: u64,
        note: String,
        at_ms: i64,
    },
    /// A new partition with an empty working config.
    CreatePartition { name: String, at_ms: i64 },
    /// A partition and all its releases are deleted (not `default`).
    DeletePartition { name: String },
    /// A new API token, known only by its hash.
    CreateToken {
        name: String,
        role: Role,
        sha256: String,
        at_ms: i64,
    },
    /// The first admin token: stored only if there is no token at all.
    BootstrapToken { sha256: String, at_ms: i64 },
    /// A node opened a watch.
    NodeSeen { hello: NodeHello, at_ms: i64 },
    /// A node's verdict on a version.
    NodeReport {
        node_id: String,
        version: u64,
        ok: bool,
        error: String,
        at_ms: i64,
    },
    /// An operator takes an edge node out of GSLB answers, or puts it back.
    NodeDrain { node_id: String, drained: bool },
    /// The cluster CA, written once by the node that bootstraps the cluster.
    SetClusterCa {
        cert_pem: String,
        key_pem: String,
        at_ms: i64,
    },
    /// A join token, known only by the sha256 of its secret.
    CreateJoinToken {
        sha256: String,
        role: NodeRole,
        expires_at_ms: i64,
        at_ms: i64,
    },
}

/// What applying one log entry answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum Applied {
    /// Done; nothing to say (also the answer to blank and membership entries).
    #[default]
    Done,
    /// The working config now has this revision.
    Revision(u64),
    Release(ReleaseSummary),
    /// A token row was inserted with this id.
    Token(i64),
    /// The purge got this id.
    Purge(u64),
    Refused(Refusal),
}

/// A command that was applied but changed nothing, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("the working config changed meanwhile (now at revision {current})")]
    Conflict { current: u64 },
    #[error("the working config has no changes since the latest release")]
    NothingToRelease,
    #[error("release {0} does not exist")]
    NoSuchRelease(u64),
    #[error("release {0} is not staged, or was promoted already")]
    NotStaged(u64),
    #[error(
        "release {version} is older than release {general}, which every node runs already (roll back instead)"
    )]
    OlderThanGeneral { version: u64, general: u64 },
    #[error("node {0:?} is not known: it must open a Watch first")]
    NoSuchNode(String),
    #[error("a token exists already")]
    TokensExist,
    #[error("a token with this hash exists already")]
    DuplicateToken,
    #[error("the config does not parse")]
    BadConfig,
    #[error("partition {0:?} does not exist")]
    NoSuchPartition(String),
    #[error("partition {0:?} exists already")]
    PartitionExists(String),
    #[error("the default partition cannot be deleted")]
    DefaultPartition,
    #[error("the cluster has a CA already")]
    CaExists,
}

/// Commands logged before partitions existed were all for the default one.
fn default_partition() -> String {
    crate::store::DEFAULT_PARTITION.to_string()
}
