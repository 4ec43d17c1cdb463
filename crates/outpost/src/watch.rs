//! An edge fed by the control plane: it watches `ConfigWatch`, applies each release, reports
//! the result, and keeps the last good config on disk so that a restart while the control
//! plane is down still serves it. Reconnects with capped, jittered backoff.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use outpost_edge_node::EdgeNode;
use outpost_proto::controlplane::v1::config_watch_client::ConfigWatchClient;
use outpost_proto::controlplane::v1::{ApplyReport, NodeKind, WatchRequest};
use outpost_proto::{SourceFormat, parse_config, pb};

#[derive(Clone)]
pub struct WatchSettings {
    /// `http://host:port` of any control-plane node's gRPC listener.
    pub control_plane: String,
    pub node_id: String,
    pub region: String,
    /// Where the last applied config is kept (`config.json`).
    pub state_dir: PathBuf,
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("config.json")
}

/// The config persisted by an earlier run, if any.
pub fn persisted(dir: &Path) -> anyhow::Result<Option<pb::Config>> {
    let path = state_file(dir);
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(
        parse_config(&text, SourceFormat::Json)
            .with_context(|| format!("parsing {}", path.display()))?,
    ))
}

/// Written to a temporary file, synced, then renamed: a crash leaves the old or the new one.
fn persist(dir: &Path, cfg: &pb::Config) -> anyhow::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("config.json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(serde_json::to_string(cfg)?.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, state_file(dir))?;
    Ok(())
}

/// Watches forever: each release is applied (or refused, with the reason reported).
pub async fn run(node: Arc<EdgeNode>, s: WatchSettings, addresses: Vec<String>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match watch_once(&node, &s, &addresses).await {
            Ok(()) => tracing::warn!("control plane closed the watch; reconnecting"),
            Err(e) => tracing::warn!(control_plane = %s.control_plane, "watch failed: {e:#}"),
        }
        let jitter = Duration::from_millis(rand::random::<u64>() % 250);
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(Duration::from_secs(15));
    }
}

async fn watch_once(
    node: &Arc<EdgeNode>,
    s: &WatchSettings,
    addresses: &[String],
) -> anyhow::Result<()> {
    let mut client = ConfigWatchClient::connect(s.control_plane.clone()).await?;
    let mut stream = client
        .watch(WatchRequest {
            node_id: s.node_id.clone(),
            kind: NodeKind::Edge as i32,
            region: s.region.clone(),
            labels: Default::default(),
            have_version: node.version(),
            addresses: addresses.to_vec(),
        })
        .await?
        .into_inner();
    tracing::info!(control_plane = %s.control_plane, version = node.version(), "watching the control plane");
    while let Some(release) = stream.message().await? {
        let version = release.version;
        let Some(mut cfg) = release.config else {
            continue;
        };
        cfg.version = version;
        let result = node.apply(cfg.clone()).await;
        let (ok, error) = match &result {
            Ok(()) => {
                if let Err(e) = persist(&s.state_dir, &cfg) {
                    tracing::error!("applied version {version} but could not persist it: {e:#}");
                }
                tracing::info!(version, "release applied");
                (true, String::new())
            }
            Err(e) => {
                tracing::error!(
                    version,
                    "release refused, the previous config keeps serving: {e}"
                );
                (false, e.to_string())
            }
        };
        client
            .report(ApplyReport {
                node_id: s.node_id.clone(),
                version,
                ok,
                error,
            })
            .await?;
    }
    Ok(())
}
