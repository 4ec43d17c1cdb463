//! `outpost edge --config FILE`: a standalone edge node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use outpost_edge_node::{EdgeNode, EdgeSettings};
use outpost_proto::{SourceFormat, parse_config, pb};
use tokio::signal::unix::{SignalKind, signal};

#[derive(clap::Args)]
pub struct EdgeArgs {
    /// Config file, YAML or JSON (by extension).
    #[arg(long, short)]
    config: PathBuf,
    /// Worker threads; 0 = one per core.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Admin listener for /metrics, /status and /healthz.
    #[arg(long, default_value = "127.0.0.1:9145")]
    admin: SocketAddr,
    /// Access log: a file, `-` for standard output, or `off`.
    #[arg(long, default_value = "-")]
    access_log: String,
}

pub fn read_config(path: &Path) -> anyhow::Result<pb::Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_config(&text, SourceFormat::from_path(path))
        .with_context(|| format!("parsing {}", path.display()))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

pub async fn run(args: EdgeArgs) -> anyhow::Result<()> {
    let config = read_config(&args.config)?;
    let settings = EdgeSettings {
        workers: args.workers,
        admin_listen: Some(args.admin),
        access_log: (args.access_log != "off").then(|| PathBuf::from(&args.access_log)),
    };
    let node = EdgeNode::start(settings, config).await?;
    if let Some(a) = node.admin_addr() {
        eprintln!("admin: http://{a}/metrics");
    }
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut last_seen = modified(&args.config);
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        let reload = tokio::select! {
            _ = hup.recv() => true,
            _ = poll.tick() => {
                let now = modified(&args.config);
                let changed = now != last_seen;
                last_seen = now;
                changed
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        if reload {
            match read_config(&args.config) {
                Err(e) => tracing::error!("config not reloaded, the old one keeps serving: {e:#}"),
                Ok(cfg) => match node.apply(cfg).await {
                    Ok(()) => tracing::info!(version = node.version(), "config reloaded"),
                    Err(e) => {
                        tracing::error!("config not reloaded, the old one keeps serving: {e}")
                    }
                },
            }
        }
    }
    tracing::info!("shutting down");
    node.shutdown(node.shutdown_grace()).await;
    Ok(())
}
