//! Outpost's control plane: the single source of truth for a cluster's configuration.
//!
//! Operators edit a working config through the admin REST API; a release freezes it as an
//! immutable version; nodes watching over gRPC receive each release and report whether they
//! applied it. This slice runs as a single node: Raft replication is not built yet.
//!
//! A tour of the crate:
//! - [`server`]: [`ControlPlane::start`] opens the store and binds both listeners.
//! - [`store`]: SQLite through sqlx (WAL, `synchronous=FULL`): the working config, immutable
//!   releases, API token hashes and nodes. Every acknowledged write is on disk.
//! - [`api`]: the admin REST API (axum), with bearer tokens and roles; validation with
//!   `outpost_proto::validate` before anything is stored.
//! - [`push`]: the gRPC `ConfigWatch` service (tonic): `Watch` streams releases, `Report` records
//!   what each node applied.
//! - [`diff`]: what changed between two configs, as a pure function.
//! - [`auth`]: roles and tokens.
pub mod api;
pub mod auth;
pub mod diff;
pub mod push;
pub mod server;
pub mod store;

pub use server::{ControlPlane, Settings, StartError};
