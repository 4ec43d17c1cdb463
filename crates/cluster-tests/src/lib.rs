//! Outpost cluster tests: a harness that runs **real multi-process clusters** of the `outpost`
//! binary on one machine, and breaks them on purpose (SIGKILL, SIGTERM, restarts, ports taken,
//! the whole control plane gone). The scenarios are in `tests/`, one behaviour each; this
//! library is what they share. Nothing here is shipped (`publish = false`).
//!
//! Layout:
//! - [`binary`]: finding the `outpost` binary next to the test binary (or building it once).
//! - [`process`]: one child process: its log file, SIGKILL/SIGTERM, restart with the same
//!   arguments; killed and reaped on drop.
//! - [`network`]: a `127.0.0.x` address per node on loopback; [`netns`]: a network namespace
//!   per node, with delay between regions (root only); [`partition`]: links between nodes cut
//!   and restored, in namespaces or on loopback inside a private namespace (root only).
//! - [`cluster`]: [`Cluster`], owner of every process, origin and the temp dir; prints every
//!   log when a scenario fails. Each role adds its methods in its own file:
//!   [`control_plane`] (three Raft nodes: bootstrap, join, leader, kill, stop, restart),
//!   [`edge`] (edges fed by the control plane, and requests answered by one given edge),
//!   [`gslb`] (authoritative DNS probing the edges).
//! - [`origin`]: an HTTP origin inside the test process.
//! - [`api`]: the admin REST API client; [`dns`]: a DNS query over UDP; [`config`]: the
//!   applications, upstreams and GSLB config the scenarios use.
//! - [`workload`]: clients that keep writing, reading or fetching from edges while a
//!   scenario breaks things, and report what they saw.
//! - [`history`]: concurrent clients using the admin API as registers and recording every
//!   operation; [`linearizability`]: the checker their history goes through (a register per
//!   key, Wing & Gong's search with Lowe's memoization).
//! - [`wait`]: polling with a deadline and a bounded number of attempts; nothing sleeps to let
//!   something happen, and nothing asserts on how long it took.
//!
//! A scenario in a few lines:
//!
//! ```no_run
//! # async fn scenario() {
//! use outpost_cluster_tests::{Cluster, config};
//! let mut c = Cluster::new();
//! let leader = c.start_control_plane(3).await;
//! let site = c.site_listen();
//! let cp = c.cp(leader).api_url();
//! c.api().put_object(&cp, "applications", "site", &config::respond_app(site, "v1")).await;
//! c.api().release(&cp, "first").await;
//! let edge = c.start_edge("edge-eu", "eu-west", &[leader]).await;
//! c.wait_edge_serves(edge, "/", "v1", std::time::Duration::from_secs(20)).await;
//! # }
//! ```

pub mod api;
pub mod binary;
pub mod cluster;
pub mod config;
pub mod control_plane;
pub mod dns;
pub mod edge;
pub mod gslb;
pub mod history;
pub mod linearizability;
pub mod netns;
pub mod network;
pub mod origin;
pub mod partition;
pub mod process;
pub mod wait;
pub mod workload;

pub use cluster::Cluster;
