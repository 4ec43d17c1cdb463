//! `outpost edge --config FILE`: a standalone edge node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use outpost_control_plane::pki::NodeRole;
use outpost_edge_node::{EdgeNode, EdgeSettings};
use outpost_proto::controlplane::v1::{NodeKind, Purge};
use outpost_proto::{SourceFormat, parse_config, pb};
use tokio::signal::unix::{SignalKind, signal};

#[derive(clap::Args)]
pub struct EdgeArgs {
    /// Config file, YAML or JSON (by extension).
    #[arg(long, short, required_unless_present = "control_plane")]
    config: Option<PathBuf>,
    #[command(flatten)]
    fed: crate::fed::FedArgs,
    /// The address clients reach this edge at, sent to the control plane so that GSLB servers
    /// answer with it: an IP, or `IP:PORT` to have GSLB servers probe that port; repeatable.
    /// None: GSLB does not know this edge.
    #[arg(long = "advertise", requires = "control_plane", value_parser = parse_advertise)]
    advertise: Vec<String>,
    /// Where a control-plane-fed edge keeps its last applied config and its TLS identity.
    #[arg(long, default_value = "./outpost-edge-state")]
    state_dir: PathBuf,
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

fn parse_advertise(s: &str) -> Result<String, String> {
    if s.parse::<std::net::IpAddr>().is_ok() || s.parse::<SocketAddr>().is_ok() {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?}: expected an IP address or IP:PORT"))
    }
}

pub fn read_config(path: &Path) -> anyhow::Result<pb::Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_config(&text, SourceFormat::from_path(path))
        .with_context(|| format!("parsing {}", path.display()))
}

pub async fn run(args: EdgeArgs) -> anyhow::Result<()> {
    if args.fed.control_plane.is_some() {
        return run_fed(args).await;
    }
    let path = args.config.clone().unwrap_or_default();
    let config = read_config(&path)?;
    let settings = EdgeSettings {
        workers: args.workers,
        admin_listen: Some(args.admin),
        access_log: (args.access_log != "off").then(|| PathBuf::from(&args.access_log)),
    };
    let node = EdgeNode::start(settings, config).await?;
    if let Some(a) = node.admin_addr() {
        eprintln!("admin: http://{a}/metrics");
    }
    let node_ref = &node;
    let path_ref = path.as_path();
    crate::reload::until_stopped(path_ref, move || async move {
        match read_config(path_ref) {
            Err(e) => tracing::error!("config not reloaded, the old one keeps serving: {e:#}"),
            Ok(cfg) => match node_ref.apply(cfg).await {
                Ok(()) => tracing::info!(version = node_ref.version(), "config reloaded"),
                Err(e) => tracing::error!("config not reloaded, the old one keeps serving: {e}"),
            },
        }
    })
    .await?;
    tracing::info!("shutting down");
    node.shutdown(node.shutdown_grace()).await;
    Ok(())
}

/// An edge whose config comes from the control plane: it starts from the config it persisted
/// last time (so it serves while the control plane is unreachable), or from an empty one.
/// It watches over mutual TLS with the certificate it got with its join token.
async fn run_fed(args: EdgeArgs) -> anyhow::Result<()> {
    let node_id = args.fed.node_id("edge");
    let control_planes = args.fed.control_planes()?;
    let identity = args
        .fed
        .identity(NodeRole::Edge, &node_id, &control_planes, &args.state_dir)
        .await
        .context("getting this edge's certificate")?;
    let config = match crate::watch::persisted(&args.state_dir)? {
        Some(c) => {
            tracing::info!(
                version = c.version,
                "serving the persisted config until the control plane answers"
            );
            c
        }
        None => pb::Config::default(),
    };
    let settings = EdgeSettings {
        workers: args.workers,
        admin_listen: Some(args.admin),
        access_log: (args.access_log != "off").then(|| PathBuf::from(&args.access_log)),
    };
    let node = EdgeNode::start(settings, config).await?;
    let watch = tokio::spawn(crate::watch::run(
        node.clone(),
        crate::watch::WatchSettings {
            control_planes,
            tls: identity.client_tls(),
            node_id,
            region: args.fed.region.clone(),
            labels: args.fed.labels.iter().cloned().collect(),
            state_dir: args.state_dir.clone(),
        },
        args.advertise.clone(),
    ));
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    watch.abort();
    tracing::info!("shutting down");
    node.shutdown(node.shutdown_grace()).await;
    Ok(())
}

/// An edge fed by the control plane runs each release and purge.
impl crate::watch::Target for Arc<EdgeNode> {
    const KIND: NodeKind = NodeKind::Edge;

    fn version(&self) -> u64 {
        EdgeNode::version(self)
    }

    async fn apply(&mut self, config: pb::Config) -> Result<(), String> {
        EdgeNode::apply(self, config)
            .await
            .map_err(|e| e.to_string())
    }

    fn purge(&mut self, p: &Purge) {
        if let Some((selector, soft)) = outpost_edge_node::purge::selector(p) {
            let n = EdgeNode::purge(self, &selector, soft);
            tracing::info!(id = p.id, ?selector, soft, purged = n, "purge applied");
        }
    }
}
