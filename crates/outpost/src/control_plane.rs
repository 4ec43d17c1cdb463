//! `outpost control-plane --data DIR`: one control-plane node (admin API, gRPC for Raft, config
//! watches and joins, all gRPC over TLS).
//!
//! The first node of a cluster forms it alone on first start: it makes the cluster CA, its own
//! certificate, and prints the first admin token. Each further node starts with
//! `--node-id N --join https://MEMBER:GRPC-PORT --join-token OPJ1...` (a token made with
//! `POST /api/v1/join-tokens {"role":"control-plane"}`): it gets its certificate, then asks the
//! cluster to add it, which waits until it has caught up and makes it a voter. Later starts
//! need neither: the certificate is in `DATA/tls`, the membership in the log.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use outpost_control_plane::pki::join::JoinTicket;
use outpost_control_plane::{ClusterInit, ControlPlane, RaftTuning, Settings};
use tokio::signal::unix::{SignalKind, signal};

#[derive(clap::Args)]
pub struct ControlPlaneArgs {
    /// Directory for the database and this node's TLS key and certificates (created if
    /// missing).
    #[arg(long)]
    data: PathBuf,
    /// Admin REST API listener.
    #[arg(long, default_value = "127.0.0.1:9400")]
    listen: SocketAddr,
    /// gRPC listener (TLS): Raft between control-plane nodes, config watches from nodes, joins.
    #[arg(long, default_value = "127.0.0.1:9401")]
    grpc_listen: SocketAddr,
    /// This node's Raft id, unique in the cluster (a positive integer).
    #[arg(long, default_value_t = 1)]
    node_id: u64,
    /// Join the cluster that this gRPC URL belongs to (any member, `https://HOST:PORT`),
    /// instead of forming a new one.
    #[arg(long, requires = "join_token")]
    join: Option<String>,
    /// A join token with role control-plane (`POST /api/v1/join-tokens`); needed on the first
    /// start only.
    #[arg(long, env = "OUTPOST_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// Another name (DNS or IP) for this node's certificate, besides the --grpc-listen address:
    /// the one peers and edges use to reach it. Repeatable; read on the first start only.
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// Build a Raft snapshot (and compact the log) after this many entries.
    #[arg(long, default_value_t = RaftTuning::default().snapshot_after_logs)]
    snapshot_after_logs: u64,
}

pub async fn run(args: ControlPlaneArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.node_id > 0, "--node-id must be a positive integer");
    let join = match (args.join, args.join_token) {
        (Some(url), Some(token)) => Some(JoinTicket { url, token }),
        (Some(_), None) => anyhow::bail!("--join needs --join-token (or OUTPOST_JOIN_TOKEN)"),
        (None, _) => None,
    };
    let init = if join.is_some() {
        ClusterInit::Join
    } else {
        ClusterInit::Single
    };
    let joining = join.as_ref().map(|j| j.url.clone());
    let cp = ControlPlane::start(Settings {
        data_dir: args.data,
        api_listen: args.listen,
        grpc_listen: args.grpc_listen,
        node_id: args.node_id,
        init,
        raft: RaftTuning {
            snapshot_after_logs: args.snapshot_after_logs,
            ..RaftTuning::default()
        },
        tls_sans: args.tls_sans,
        join,
    })
    .await
    .context("starting the control plane")?;
    if let Some(token) = cp.bootstrap_token() {
        eprintln!("first admin token (shown once, keep it): {token}");
    }
    eprintln!(
        "control-plane node {}: admin API http://{}/api/v1, gRPC https://{}",
        cp.node_id(),
        cp.api_addr(),
        cp.grpc_addr()
    );
    if let Some(url) = joining {
        eprintln!("member of the cluster at {url}");
    }
    let mut term = signal(SignalKind::terminate())?;
    let stopped = tokio::select! {
        _ = term.recv() => None,
        _ = tokio::signal::ctrl_c() => None,
        why = cp.raft_stopped() => Some(why),
    };
    if let Some(why) = stopped {
        // A storage failure (a full disk, say) stopped Raft for good: exit, so that the
        // supervisor restarts the node once the cause is fixed; the others go on meanwhile.
        tracing::error!("{why}: exiting");
        cp.shutdown().await;
        anyhow::bail!("{why}");
    }
    tracing::info!("shutting down");
    cp.shutdown().await;
    Ok(())
}
