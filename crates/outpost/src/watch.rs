//! A node fed by the control plane (an edge, or a GSLB server): it watches `ConfigWatch`,
//! applies each release (sent whole or as a delta from the version it holds), each purge (edges)
//! and each node registry (GSLB), reports the result, and keeps the last good config on disk so
//! that a restart while the control plane is down still serves it. Control-plane nodes are
//! tried in turn, with capped, jittered backoff. What applying means is the [`Target`]'s
//! business.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use outpost_proto::controlplane::v1::config_watch_client::ConfigWatchClient;
use outpost_proto::controlplane::v1::watch_event::Event;
use outpost_proto::controlplane::v1::{ApplyReport, NodeKind, Purge, RegisteredNode, WatchRequest};
use outpost_proto::{SourceFormat, parse_config, pb};
use serde::{Deserialize, Serialize};

/// What a watching node does with what the control plane sends.
pub trait Target: Send + 'static {
    const KIND: NodeKind;
    /// The version it runs now.
    fn version(&self) -> u64;
    /// Runs a whole config; an error (the reason, reported) leaves the previous one running.
    fn apply(
        &mut self,
        config: pb::Config,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
    /// Edges: removes cached responses.
    fn purge(&mut self, _purge: &Purge) {}
    /// GSLB servers: the edge nodes they may answer with.
    fn registry(&mut self, _nodes: Vec<RegisteredNode>) {}
}

#[derive(Clone)]
pub struct WatchSettings {
    /// `https://host:port` of control-plane nodes' gRPC listeners, tried in turn.
    pub control_planes: Vec<String>,
    /// Mutual TLS: this node's certificate, trusting only the cluster CA.
    pub tls: tonic::transport::ClientTlsConfig,
    pub node_id: String,
    pub region: String,
    /// `staging` (any value but `false`) gets staged releases.
    pub labels: HashMap<String, String>,
    /// Where the last applied config is kept (`config.json`, `held.json`).
    pub state_dir: PathBuf,
}

/// What the node keeps beside its config: which release it is (so the control plane can send
/// a delta) and the last purge it applied (so it gets the ones it missed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Held {
    version: u64,
    sha256: String,
    purge: u64,
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("config.json")
}

fn held_file(dir: &Path) -> PathBuf {
    dir.join("held.json")
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
pub fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// One node's watch: the config it runs and what it holds, across reconnections.
struct Watcher<T: Target> {
    node: T,
    s: WatchSettings,
    addresses: Vec<String>,
    current: pb::Config,
    held: Held,
    /// The last attempt opened a stream (the control plane answered).
    streamed: bool,
}

/// Watches forever: each release is applied (or refused, with the reason reported), each purge
/// and registry applied.
pub async fn run<T: Target>(node: T, s: WatchSettings, addresses: Vec<String>) {
    let current = persisted(&s.state_dir).ok().flatten().unwrap_or_default();
    let held = std::fs::read(held_file(&s.state_dir))
        .ok()
        .and_then(|b| serde_json::from_slice::<Held>(&b).ok())
        // A sha256 for another version than the config's says nothing about the config.
        .filter(|h| h.version == current.version)
        .unwrap_or_else(|| Held {
            version: current.version,
            ..Held::default()
        });
    let mut w = Watcher {
        node,
        s,
        addresses,
        current,
        held,
        streamed: false,
    };
    let mut backoff = Duration::from_millis(200);
    let mut next = 0usize;
    loop {
        let Some(url) =
            w.s.control_planes
                .get(next % w.s.control_planes.len().max(1))
        else {
            tracing::error!("no control plane to watch");
            return;
        };
        let url = url.clone();
        match w.watch_once(&url).await {
            Ok(()) => tracing::warn!(control_plane = %url, "control plane closed the watch"),
            Err(e) => tracing::warn!(control_plane = %url, "watch failed: {e:#}"),
        }
        if w.streamed {
            backoff = Duration::from_millis(200);
        }
        next += 1;
        // A full round over the control planes failed: wait before the next one.
        if next.is_multiple_of(w.s.control_planes.len()) {
            let jitter = Duration::from_millis(rand::random::<u64>() % 250);
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(Duration::from_secs(15));
        }
    }
}

impl<T: Target> Watcher<T> {
    async fn watch_once(&mut self, url: &str) -> anyhow::Result<()> {
        self.streamed = false;
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())?
            .tls_config(self.s.tls.clone())?
            .connect_timeout(Duration::from_secs(3))
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let mut client = ConfigWatchClient::new(endpoint.connect().await?);
        // The sha256 vouches for the config only if the node runs exactly that version.
        let (have_version, have_sha256) = if self.node.version() == self.held.version {
            (self.held.version, self.held.sha256.clone())
        } else {
            (self.node.version(), String::new())
        };
        let mut stream = client
            .watch(WatchRequest {
                node_id: self.s.node_id.clone(),
                kind: T::KIND as i32,
                region: self.s.region.clone(),
                labels: self.s.labels.clone(),
                have_version,
                addresses: self.addresses.clone(),
                have_purge: self.held.purge,
                have_sha256,
            })
            .await?
            .into_inner();
        self.streamed = true;
        tracing::info!(control_plane = %url, version = have_version, "watching the control plane");
        while let Some(message) = stream.message().await? {
            match message.event {
                Some(Event::Release(r)) => {
                    let Some(mut cfg) = r.config else { continue };
                    cfg.version = r.version;
                    self.apply(&mut client, cfg, r.sha256).await?;
                }
                Some(Event::Delta(d)) => {
                    let cfg = match outpost_proto::delta::apply(&self.current, &d) {
                        Ok(cfg) => cfg,
                        Err(e) => {
                            // Our copy is not the one the delta is for: ask again, for the
                            // whole release.
                            self.held.sha256.clear();
                            anyhow::bail!("delta for version {} not applicable: {e}", d.version);
                        }
                    };
                    self.apply(&mut client, cfg, d.sha256).await?;
                }
                Some(Event::Purge(p)) => {
                    self.node.purge(&p);
                    self.held.purge = p.id;
                    self.save_held();
                }
                Some(Event::Nodes(registry)) => self.node.registry(registry.nodes),
                None => {}
            }
        }
        Ok(())
    }

    async fn apply(
        &mut self,
        client: &mut ConfigWatchClient<tonic::transport::Channel>,
        cfg: pb::Config,
        sha256: String,
    ) -> anyhow::Result<()> {
        let version = cfg.version;
        let (ok, error) = match self.node.apply(cfg.clone()).await {
            Ok(()) => {
                let dir = &self.s.state_dir;
                let saved = serde_json::to_vec(&cfg)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| write_atomically(dir, &state_file(dir), &b));
                if let Err(e) = saved {
                    tracing::error!("applied version {version} but could not persist it: {e:#}");
                }
                self.current = cfg;
                self.held.version = version;
                self.held.sha256 = sha256;
                self.save_held();
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
                node_id: self.s.node_id.clone(),
                version,
                ok,
                error,
            })
            .await?;
        Ok(())
    }

    fn save_held(&self) {
        let dir = &self.s.state_dir;
        let saved = serde_json::to_vec(&self.held)
            .map_err(anyhow::Error::from)
            .and_then(|b| write_atomically(dir, &held_file(dir), &b));
        if let Err(e) = saved {
            tracing::error!("could not persist what the node holds: {e:#}");
        }
    }
}
