//! Outpost's edge node: a reverse proxy configured by `outpost_proto::pb::Config`.
//!
//! A tour, in the order a request meets the code:
//! - [`server::worker`]: nginx-style workers, each a single-threaded runtime with its own
//!   `SO_REUSEPORT` sockets ([`server::listener`]) and TLS by SNI ([`server::tls`]).
//! - [`proxy::handler`]: the phase pipeline (route, rules, upstream, header filter, log).
//! - [`config`]: the compiled [`config::Snapshot`] a request runs against, and the host router.
//! - [`rules`]: page rules, conditions, `$variable` templates, rate limits. Pure.
//! - [`upstream`]: peers and their shared health, balancers (pure), the per-worker connection
//!   pool, the connector, active health checks and DNS discovery.
//! - [`proxy::upstream_call`]: the attempt loop with retries; [`proxy::body`]: streaming
//!   bodies with limits and timeouts; [`proxy::forward`]: header rewriting.
//! - [`metrics`], [`proxy::access_log`], [`admin`]: what an operator sees.
//! - [`node::EdgeNode`]: start, apply a config atomically, shut down gracefully.
//! - [`demo_origin`]: the small origin `outpost dev` puts behind the edge.

pub mod admin;
pub mod clock;
pub mod config;
pub mod demo_origin;
mod header_pool;
mod in_box;
pub mod metrics;
pub mod node;
pub mod proxy;
pub mod purge;
pub mod rules;
pub mod server;
pub mod upstream;

pub use node::{ApplyError, EdgeNode, EdgeSettings};
