//! `outpost control-plane --data DIR`: one control-plane node (admin API, gRPC for Raft and for
//! config watches).
//!
//! The first node of a cluster forms it alone on first start and prints the first admin token.
//! Each further node starts with `--node-id N --join http://MEMBER-API --token ADMIN-TOKEN`: it
//! asks the cluster to add it, which waits until it has caught up, then makes it a voter.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use outpost_control_plane::{ClusterInit, ControlPlane, RaftTuning, Settings};
use tokio::signal::unix::{SignalKind, signal};

#[derive(clap::Args)]
pub struct ControlPlaneArgs {
    /// Directory for the database (created if missing).
    #[arg(long)]
    data: PathBuf,
    /// Admin REST API listener.
    #[arg(long, default_value = "127.0.0.1:9400")]
    listen: SocketAddr,
    /// gRPC listener: Raft between control-plane nodes, and config watches from nodes.
    #[arg(long, default_value = "127.0.0.1:9401")]
    grpc_listen: SocketAddr,
    /// This node's Raft id, unique in the cluster (a positive integer).
    #[arg(long, default_value_t = 1)]
    node_id: u64,
    /// Join the cluster that the admin API at this URL belongs to (any member), instead of
    /// forming a new one. Only on the node's first start; later starts just rejoin.
    #[arg(long)]
    join: Option<String>,
    /// An admin token of the cluster to join.
    #[arg(long, env = "OUTPOST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Build a Raft snapshot (and compact the log) after this many entries.
    #[arg(long, default_value_t = RaftTuning::default().snapshot_after_logs)]
    snapshot_after_logs: u64,
}

pub async fn run(args: ControlPlaneArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.node_id > 0, "--node-id must be a positive integer");
    let init = if args.join.is_some() {
        ClusterInit::Join
    } else {
        ClusterInit::Single
    };
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
    })
    .await?;
    if let Some(token) = cp.bootstrap_token() {
        eprintln!("first admin token (shown once, keep it): {token}");
    }
    eprintln!(
        "control-plane node {}: admin API http://{}/api/v1, gRPC {}",
        cp.node_id(),
        cp.api_addr(),
        cp.grpc_addr()
    );
    if let Some(url) = &args.join {
        let token = args
            .token
            .as_deref()
            .context("--join needs an admin token (--token or OUTPOST_TOKEN)")?;
        join(&cp, url, token).await?;
        eprintln!("joined the cluster through {url} as a voter");
    }
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    cp.shutdown().await;
    Ok(())
}

/// Asks the cluster to add this node as a voter, unless it is a member already (a restart).
async fn join(cp: &ControlPlane, url: &str, token: &str) -> anyhow::Result<()> {
    if cp
        .cluster()
        .status()
        .members
        .iter()
        .any(|m| m.id == cp.node_id())
    {
        return Ok(());
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let body = serde_json::json!({
        "id": cp.node_id(),
        "grpcAddr": cp.grpc_addr().to_string(),
        "apiAddr": cp.api_addr().to_string(),
        "voter": true,
    });
    let reply = http
        .post(format!(
            "{}/api/v1/cluster/nodes",
            url.trim_end_matches('/')
        ))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .with_context(|| format!("asking {url} to add this node"))?;
    let status = reply.status();
    let text = reply.text().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "{url} refused to add this node: {status} {text}"
    );
    Ok(())
}
