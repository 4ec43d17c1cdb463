//! Replication of the control plane's state with Raft (openraft).
//!
//! Every change to the replicated state (the working config, releases, tokens, nodes) is a
//! [`Command`] appended to the Raft log; once a quorum holds it, each node applies it to its own
//! SQLite tables in the order of the log. Reads come from those tables.
//!
//! - [`types`]: the type configuration and what a cluster member is.
//! - [`command`]: the commands and what applying one answers.
//! - [`log_store`] and [`state_machine`]: openraft's storage traits over one SQLite file.
//! - [`network`] and [`service`]: Raft RPCs over gRPC (the `Raft` service in `proto`), client
//!   and server side.
pub mod command;
pub mod forward;
pub mod log_store;
pub mod network;
pub mod service;
pub mod state_machine;
pub mod types;

pub use command::{Applied, Command, Refusal};
pub use types::{ClusterNode, NodeId, TypeConfig};

#[cfg(test)]
mod storage_suite;
