//! The gRPC `ConfigWatch` service: nodes watch for releases and report what they applied.
//!
//! A watch is a stream over the store's "latest release" channel. It sends the latest release
//! at once when the node holds another version, then each release as it is committed. If
//! several releases are made while a node's stream is busy, the node gets the newest one: every
//! message is a full snapshot, so skipping intermediate versions loses nothing.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::Stream;
use outpost_proto::controlplane::v1 as cp;
use outpost_proto::controlplane::v1::config_watch_server::ConfigWatch;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::cluster::{Cluster, ClusterError};
use crate::raft::{Applied, Command, Refusal};
use crate::store::{NodeHello, NodeKind, Release, Store, now_ms};

/// Which nodes have a watch open right now (in memory: it says nothing after a restart until
/// the nodes reconnect).
#[derive(Default)]
pub struct Watchers {
    open: Mutex<HashMap<String, usize>>,
}

impl Watchers {
    pub fn is_connected(&self, node_id: &str) -> bool {
        self.open
            .lock()
            .map(|m| m.get(node_id).is_some_and(|n| *n > 0))
            .unwrap_or(false)
    }

    fn enter(self: &Arc<Self>, node_id: &str) -> WatchGuard {
        if let Ok(mut m) = self.open.lock() {
            *m.entry(node_id.to_string()).or_default() += 1;
        }
        WatchGuard {
            watchers: self.clone(),
            node_id: node_id.to_string(),
        }
    }
}

/// Counts a stream as open until the stream is dropped (the node went away or we shut down).
struct WatchGuard {
    watchers: Arc<Watchers>,
    node_id: String,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.watchers.open.lock()
            && let Some(n) = m.get_mut(&self.node_id)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.node_id);
            }
        }
    }
}

pub struct ConfigWatchService {
    store: Arc<Store>,
    cluster: Arc<Cluster>,
    watchers: Arc<Watchers>,
    /// Becomes `true` at shutdown, ending every stream so the server can stop.
    stop: watch::Receiver<bool>,
}

impl ConfigWatchService {
    pub fn new(
        store: Arc<Store>,
        cluster: Arc<Cluster>,
        watchers: Arc<Watchers>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        ConfigWatchService {
            store,
            cluster,
            watchers,
            stop,
        }
    }
}

fn to_message(r: &Release) -> cp::Release {
    cp::Release {
        version: r.version,
        note: r.note.clone(),
        created_at_ms: r.created_at_ms,
        sha256: r.sha256.clone(),
        config: Some(r.config.clone()),
    }
}

fn unavailable(e: ClusterError) -> Status {
    Status::unavailable(format!("control plane: {e}"))
}

fn check_node_id(id: &str) -> Result<(), Status> {
    if id.is_empty() || id.len() > 253 || id.chars().any(|c| c.is_control()) {
        return Err(Status::invalid_argument(
            "node_id: must be 1 to 253 printable characters",
        ));
    }
    Ok(())
}

type ReleaseStream = Pin<Box<dyn Stream<Item = Result<cp::Release, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigWatch for ConfigWatchService {
    type WatchStream = ReleaseStream;

    async fn watch(
        &self,
        request: Request<cp::WatchRequest>,
    ) -> Result<Response<ReleaseStream>, Status> {
        let req = request.into_inner();
        check_node_id(&req.node_id)?;
        let kind = match cp::NodeKind::try_from(req.kind) {
            Ok(cp::NodeKind::Edge) => NodeKind::Edge,
            Ok(cp::NodeKind::Gslb) => NodeKind::Gslb,
            _ => return Err(Status::invalid_argument("kind: must be EDGE or GSLB")),
        };
        let mut labels: Vec<(String, String)> = req.labels.into_iter().collect();
        labels.sort();
        let hello = NodeHello {
            id: req.node_id.clone(),
            kind,
            region: req.region,
            labels,
            addresses: req.addresses,
        };
        // Recording the node needs the leader; serving it does not. A node whose control-plane
        // peer is cut off from the leader still gets the releases this peer has.
        let seen = Command::NodeSeen {
            hello,
            at_ms: now_ms(),
        };
        if let Err(e) = self.cluster.write(seen).await {
            tracing::warn!(node = %req.node_id, error = %e, "could not record the node");
        }
        tracing::info!(node = %req.node_id, have = req.have_version, "watch opened");

        let state = StreamState {
            latest: self.store.subscribe(),
            stop: self.stop.clone(),
            sent: req.have_version,
            _guard: self.watchers.enter(&req.node_id),
        };
        let stream = futures_util::stream::unfold(state, |mut s| async move {
            loop {
                if *s.stop.borrow() {
                    return None;
                }
                let current = s.latest.borrow_and_update().clone();
                if let Some(release) = current
                    && release.version != s.sent
                {
                    s.sent = release.version;
                    return Some((Ok(to_message(&release)), s));
                }
                tokio::select! {
                    changed = s.latest.changed() => if changed.is_err() { return None },
                    _ = s.stop.changed() => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report(
        &self,
        request: Request<cp::ApplyReport>,
    ) -> Result<Response<cp::ReportAck>, Status> {
        let r = request.into_inner();
        check_node_id(&r.node_id)?;
        if !r.ok && r.error.is_empty() {
            return Err(Status::invalid_argument("error: required when ok is false"));
        }
        let report = Command::NodeReport {
            node_id: r.node_id.clone(),
            version: r.version,
            ok: r.ok,
            error: r.error.clone(),
            at_ms: now_ms(),
        };
        match self.cluster.write(report).await.map_err(unavailable)? {
            Applied::Refused(Refusal::NoSuchNode(id)) => {
                return Err(Status::not_found(format!(
                    "node {id:?} is not known: open a Watch first"
                )));
            }
            Applied::Refused(other) => return Err(Status::failed_precondition(other.to_string())),
            _ => {}
        }
        if r.ok {
            tracing::info!(node = %r.node_id, version = r.version, "node applied");
        } else {
            tracing::warn!(node = %r.node_id, version = r.version, error = %r.error, "node rejected");
        }
        Ok(Response::new(cp::ReportAck {}))
    }
}

struct StreamState {
    latest: watch::Receiver<Option<Arc<Release>>>,
    stop: watch::Receiver<bool>,
    /// The version the node holds: the last one sent, or the one it said it had.
    sent: u64,
    _guard: WatchGuard,
}
