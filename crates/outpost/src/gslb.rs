//! `outpost gslb`: a GSLB server (authoritative DNS steering clients to healthy edge nodes),
//! standalone from a file (SIGHUP or a change to the file reloads it), or fed by the control
//! plane: the release's `gslb` section, with the edge nodes of the control plane's registry.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use outpost_control_plane::pki::NodeRole;
use outpost_gslb::{Gslb, GslbSettings};
use outpost_proto::controlplane::v1::{NodeKind, NodeRegistry, RegisteredNode};
use outpost_proto::gslb::v1::GslbConfig;
use outpost_proto::{SourceFormat, parse_gslb_config, pb};
use prost::Message;
use tokio::signal::unix::{SignalKind, signal};

#[derive(clap::Args)]
pub struct GslbArgs {
    /// Config file, YAML or JSON (by extension).
    #[arg(long, short, required_unless_present = "control_plane")]
    config: Option<PathBuf>,
    #[command(flatten)]
    fed: crate::fed::FedArgs,
    /// Where a control-plane-fed server keeps its last config, the node registry and its TLS
    /// identity.
    #[arg(long, default_value = "./outpost-gslb-state")]
    state_dir: PathBuf,
    /// DNS listener, UDP and TCP on the same port.
    #[arg(long, default_value = "127.0.0.1:8053")]
    listen: SocketAddr,
    /// Admin listener for /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:9153")]
    admin: SocketAddr,
}

fn read_config(path: &Path) -> anyhow::Result<GslbConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_gslb_config(&text, SourceFormat::from_path(path))
        .with_context(|| format!("parsing {}", path.display()))
}

pub async fn run(args: GslbArgs) -> anyhow::Result<()> {
    if args.fed.control_plane.is_some() {
        return run_fed(args).await;
    }
    let path = args.config.clone().unwrap_or_default();
    let config = read_config(&path)?;
    let gslb = start(&args, config).await?;
    let gslb_ref = &gslb;
    let path_ref = path.as_path();
    crate::reload::until_stopped(path_ref, move || async move {
        match read_config(path_ref) {
            Err(e) => tracing::error!("config not reloaded, the old one keeps serving: {e:#}"),
            Ok(cfg) => match gslb_ref.apply(cfg) {
                Ok(()) => tracing::info!(version = gslb_ref.version(), "config reloaded"),
                Err(e) => tracing::error!("config not reloaded, the old one keeps serving: {e}"),
            },
        }
    })
    .await?;
    tracing::info!("shutting down");
    gslb.shutdown().await;
    Ok(())
}

async fn start(args: &GslbArgs, config: GslbConfig) -> anyhow::Result<Gslb> {
    let gslb = Gslb::start(
        GslbSettings {
            listen: args.listen,
            admin_listen: Some(args.admin),
        },
        config,
    )
    .await?;
    eprintln!("dns: {} (udp+tcp)", gslb.dns_addr());
    if let Some(a) = gslb.admin_addr() {
        eprintln!("admin: http://{a}/metrics");
    }
    Ok(gslb)
}

/// A GSLB server fed by the control plane. It answers from what it persisted last time (so a
/// restart while the control plane is down still answers), then from each release and
/// registry the control plane sends.
async fn run_fed(args: GslbArgs) -> anyhow::Result<()> {
    let node_id = args.fed.node_id("gslb");
    let control_planes = args.fed.control_planes()?;
    let identity = args
        .fed
        .identity(NodeRole::Gslb, &node_id, &control_planes, &args.state_dir)
        .await
        .context("getting this GSLB server's certificate")?;
    let gslb = Arc::new(start(&args, GslbConfig::default()).await?);
    let mut fed = FedGslb::new(gslb.clone(), args.state_dir.clone());
    if let Some(config) = crate::watch::persisted(&args.state_dir)? {
        tracing::info!(
            version = config.version,
            "answering from the persisted config until the control plane answers"
        );
        if let Err(e) = crate::watch::Target::apply(&mut fed, config).await {
            tracing::error!("the persisted config does not load: {e}");
        }
    }
    let watch = tokio::spawn(crate::watch::run(
        fed,
        crate::watch::WatchSettings {
            control_planes,
            tls: identity.client_tls(),
            node_id,
            region: args.fed.region.clone(),
            labels: args.fed.labels.iter().cloned().collect(),
            state_dir: args.state_dir.clone(),
        },
        vec![gslb.dns_addr().to_string()],
    ));
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    watch.abort();
    tracing::info!("shutting down");
    // The watch task held the other reference; it is gone once aborted.
    let _ = watch.await;
    if let Ok(gslb) = Arc::try_unwrap(gslb) {
        gslb.shutdown().await;
    }
    Ok(())
}

/// The release's `gslb` section and the registry, applied together whenever either changes.
pub struct FedGslb {
    gslb: Arc<Gslb>,
    state_dir: PathBuf,
    config: GslbConfig,
    registry: Vec<RegisteredNode>,
}

impl FedGslb {
    /// Starts from the registry persisted last time, if any.
    pub fn new(gslb: Arc<Gslb>, state_dir: PathBuf) -> FedGslb {
        let registry = std::fs::read(registry_file(&state_dir))
            .ok()
            .and_then(|b| NodeRegistry::decode(b.as_slice()).ok())
            .map(|r| r.nodes)
            .unwrap_or_default();
        FedGslb {
            gslb,
            state_dir,
            config: GslbConfig::default(),
            registry,
        }
    }
}

fn registry_file(dir: &Path) -> PathBuf {
    dir.join("registry.pb")
}

impl crate::watch::Target for FedGslb {
    const KIND: NodeKind = NodeKind::Gslb;

    fn version(&self) -> u64 {
        self.gslb.version()
    }

    async fn apply(&mut self, config: pb::Config) -> Result<(), String> {
        let mut section = config.gslb.unwrap_or_default();
        // The SOA serial follows the release.
        section.version = config.version;
        self.gslb
            .apply_with_registry(&section, &self.registry)
            .map_err(|e| e.to_string())?;
        self.config = section;
        Ok(())
    }

    fn registry(&mut self, nodes: Vec<RegisteredNode>) {
        tracing::info!(nodes = nodes.len(), "node registry from the control plane");
        self.registry = nodes;
        let bytes = NodeRegistry {
            nodes: self.registry.clone(),
        }
        .encode_to_vec();
        if let Err(e) =
            crate::watch::write_atomically(&self.state_dir, &registry_file(&self.state_dir), &bytes)
        {
            tracing::error!("could not persist the node registry: {e:#}");
        }
        if let Err(e) = self.gslb.apply_with_registry(&self.config, &self.registry) {
            tracing::error!("the node registry does not load with the config: {e}");
        }
    }
}
