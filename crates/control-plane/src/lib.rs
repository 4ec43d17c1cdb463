//! Outpost's control plane: the single source of truth for a cluster's configuration.
//!
//! Operators edit a working config through the admin REST API; a release freezes it as an
//! immutable version; nodes watching over gRPC receive each release and report whether they
//! applied it. One, three or five nodes replicate all of it with Raft; any node serves any
//! request.
//!
//! A tour of the crate:
//! - [`server`]: [`ControlPlane::start`] opens the store, starts Raft and binds both listeners.
//! - [`raft`]: openraft over SQLite and gRPC; every change is a [`raft::Command`] in the log.
//! - [`cluster`]: writes and linearizable reads from any node, membership, status.
//! - [`store`]: the replicated tables in SQLite through sqlx (WAL, `synchronous=FULL`): the
//!   working config, immutable releases, API token hashes and nodes. Reads come from here;
//!   only applied log entries write here.
//! - [`api`]: the admin REST API (axum), with bearer tokens and roles; validation with
//!   `outpost_proto::validate` before anything is stored.
//! - [`push`]: the gRPC `ConfigWatch` service (tonic): `Watch` streams releases (whole or as
//!   deltas) and purges, `Report` records what each node applied.
//! - [`diff`]: what changed between two configs, as a pure function.
//! - [`auth`]: roles and tokens.
//! - [`metrics`]: Prometheus metrics (`GET /metrics`).
//! - [`pki`]: the cluster CA, node certificates and join tokens; every gRPC listener is TLS and
//!   services know their caller from its client certificate. [`join`] is the `ClusterJoin`
//!   service that signs a new node's certificate for a valid join token.
pub mod api;
pub mod auth;
pub mod cluster;
pub mod diff;
pub mod join;
pub mod lua_check;
pub mod metrics;
pub mod pki;
pub mod push;
pub mod raft;
pub mod server;
pub mod store;

pub use server::{ClusterInit, ControlPlane, RaftTuning, Settings, StartError};
