//! `outpost control-plane --data DIR`: the control plane (admin API and gRPC push). On first run
//! it creates the database and prints the first admin token.

use std::net::SocketAddr;
use std::path::PathBuf;

use outpost_control_plane::{ControlPlane, Settings};
use tokio::signal::unix::{SignalKind, signal};

#[derive(clap::Args)]
pub struct ControlPlaneArgs {
    /// Directory for the database (created if missing).
    #[arg(long)]
    data: PathBuf,
    /// Admin REST API listener.
    #[arg(long, default_value = "127.0.0.1:9400")]
    listen: SocketAddr,
    /// gRPC listener nodes watch for releases on.
    #[arg(long, default_value = "127.0.0.1:9401")]
    grpc_listen: SocketAddr,
}

pub async fn run(args: ControlPlaneArgs) -> anyhow::Result<()> {
    let cp = ControlPlane::start(Settings {
        data_dir: args.data,
        api_listen: args.listen,
        grpc_listen: args.grpc_listen,
    })
    .await?;
    if let Some(token) = cp.bootstrap_token() {
        eprintln!("first admin token (shown once, keep it): {token}");
    }
    eprintln!("admin API: http://{}/api/v1", cp.api_addr());
    eprintln!("gRPC (ConfigWatch): {}", cp.grpc_addr());
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    cp.shutdown().await;
    Ok(())
}
