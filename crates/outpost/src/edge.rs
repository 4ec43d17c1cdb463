//! `outpost edge --config FILE`: a standalone edge node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use outpost_control_plane::pki::NodeRole;
use outpost_control_plane::pki::identity::TlsIdentity;
use outpost_control_plane::pki::join::{self, JoinError, JoinTicket};
use outpost_edge_node::{EdgeNode, EdgeSettings};
use outpost_proto::{SourceFormat, parse_config, pb};
use tokio::signal::unix::{SignalKind, signal};

#[derive(clap::Args)]
pub struct EdgeArgs {
    /// Config file, YAML or JSON (by extension).
    #[arg(long, short, required_unless_present = "control_plane")]
    config: Option<PathBuf>,
    /// Take the config from the control plane instead: the gRPC URLs of its nodes, comma
    /// separated, tried in turn (e.g. `https://10.0.0.5:9401,https://10.0.0.6:9401`). The last
    /// applied config is kept in --state-dir.
    #[arg(long, conflicts_with = "config")]
    control_plane: Option<String>,
    /// A label for the control plane, `KEY=VALUE`, repeatable; `staging=true` gets staged
    /// releases.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// A join token with role edge (`POST /api/v1/join-tokens`): on the first start the edge
    /// gets its certificate with it and keeps it in --state-dir/tls; later starts need none.
    #[arg(
        long,
        env = "OUTPOST_JOIN_TOKEN",
        hide_env_values = true,
        requires = "control_plane"
    )]
    join_token: Option<String>,
    /// This node's name for the control plane (default: the host name).
    #[arg(long)]
    node_id: Option<String>,
    /// This node's region, reported to the control plane.
    #[arg(long, default_value = "")]
    region: String,
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

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
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
    if let Some(cp) = args.control_plane.clone() {
        return run_fed(args, cp).await;
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
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut last_seen = modified(&path);
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        let reload = tokio::select! {
            _ = hup.recv() => true,
            _ = poll.tick() => {
                let now = modified(&path);
                let changed = now != last_seen;
                last_seen = now;
                changed
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        if reload {
            match read_config(&path) {
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

/// The certificate kept in --state-dir/tls; on the first start, one got with --join-token from
/// the first control-plane node that answers.
async fn edge_identity(
    args: &EdgeArgs,
    node_id: &str,
    control_planes: &[String],
) -> anyhow::Result<TlsIdentity> {
    let dir = args.state_dir.join("tls");
    if let Some(id) = TlsIdentity::load(&dir)? {
        return Ok(id);
    }
    let Some(token) = &args.join_token else {
        anyhow::bail!(
            "{}: no certificate yet: the first start needs --join-token (a token with role edge)",
            dir.display()
        );
    };
    let mut unreachable = Vec::new();
    for url in control_planes {
        let ticket = JoinTicket {
            url: url.clone(),
            token: token.clone(),
        };
        match join::load_or_join(&dir, Some(&ticket), NodeRole::Edge, node_id, &[], None).await {
            Ok(id) => return Ok(id),
            Err(e @ JoinError::Connect { .. }) => unreachable.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("no control plane answered: {}", unreachable.join("; "))
}

/// An edge whose config comes from the control plane: it starts from the config it persisted
/// last time (so it serves while the control plane is unreachable), or from an empty one.
/// It watches over mutual TLS with the certificate it got with its join token.
async fn run_fed(args: EdgeArgs, control_plane: String) -> anyhow::Result<()> {
    let node_id = args.node_id.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "edge".into())
    });
    let control_planes: Vec<String> = control_plane
        .split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    anyhow::ensure!(!control_planes.is_empty(), "--control-plane: no URL given");
    if let Some(plain) = control_planes.iter().find(|u| !u.starts_with("https://")) {
        anyhow::bail!(
            "--control-plane {plain}: the control plane's gRPC is TLS: use https://HOST:PORT"
        );
    }
    let identity = edge_identity(&args, &node_id, &control_planes)
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
            region: args.region.clone(),
            labels: args.labels.iter().cloned().collect(),
            state_dir: args.state_dir.clone(),
        },
        node.admin_addr()
            .map(|a| a.to_string())
            .into_iter()
            .collect(),
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
