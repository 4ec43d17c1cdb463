//! `outpost gslb --config FILE`: a standalone GSLB server (authoritative DNS steering clients
//! to healthy edge nodes). SIGHUP or a change to the file reloads it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use outpost_gslb::{Gslb, GslbSettings};
use outpost_proto::gslb::v1::GslbConfig;
use outpost_proto::{SourceFormat, parse_gslb_config};
use tokio::signal::unix::{SignalKind, signal};

#[derive(clap::Args)]
pub struct GslbArgs {
    /// Config file, YAML or JSON (by extension).
    #[arg(long, short)]
    config: PathBuf,
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

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

pub async fn run(args: GslbArgs) -> anyhow::Result<()> {
    let config = read_config(&args.config)?;
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
                Ok(cfg) => match gslb.apply(cfg) {
                    Ok(()) => tracing::info!(version = gslb.version(), "config reloaded"),
                    Err(e) => {
                        tracing::error!("config not reloaded, the old one keeps serving: {e}")
                    }
                },
            }
        }
    }
    tracing::info!("shutting down");
    gslb.shutdown().await;
    Ok(())
}
