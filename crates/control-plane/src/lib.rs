//! Outpost's control plane: the single source of truth for a cluster's configuration.
//!
//! A tour of the crate:
//! - [`store`]: SQLite through sqlx (WAL, `synchronous=FULL`): the working config, immutable
//!   releases, API token hashes and nodes. Every acknowledged write is on disk.
//! - [`diff`]: what changed between two configs, as a pure function.
//! - [`auth`]: roles and tokens.
pub mod auth;
pub mod diff;
pub mod store;
