//! The gRPC `ConfigWatch` service: nodes watch for releases and purges, and report what they
//! applied. What a stream sends is [`stream`]'s business.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::Stream;
use outpost_proto::controlplane::v1 as cp;
use outpost_proto::controlplane::v1::config_watch_server::ConfigWatch;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::cluster::{Cluster, ClusterError};
use crate::pki::NodeRole;
use crate::pki::peer::{Peer, authorize};
use crate::raft::{Applied, Command, Refusal};
use crate::store::{NodeHello, NodeKind, Store, now_ms};

mod stream;

pub use stream::DeltaCache;
use stream::WatchStream;

/// Which nodes have a watch open right now (in memory: it says nothing after a restart until
/// the nodes reconnect).
#[derive(Default)]
pub struct Watchers {
    open: Mutex<HashMap<String, usize>>,
}

impl Watchers {
    /// Streams open now.
    pub fn count(&self) -> usize {
        self.open.lock().map(|m| m.values().sum()).unwrap_or(0)
    }

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
    deltas: Arc<DeltaCache>,
    metrics: Arc<crate::metrics::Metrics>,
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
            deltas: Arc::default(),
            metrics: Arc::default(),
            stop,
        }
    }

    /// Counts what the streams send in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }
}

/// A node labelled `staging` (with any value but `false`) gets staged releases.
fn is_staging(labels: &[(String, String)]) -> bool {
    labels.iter().any(|(k, v)| k == "staging" && v != "false")
}

/// A node's partition: its `partition` label, or the default one.
fn partition_of(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .find(|(k, _)| k == "partition")
        .map_or(crate::store::DEFAULT_PARTITION, |(_, v)| v.as_str())
        .to_string()
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

/// Watching and reporting need a certificate of the cluster: an edge's or GSLB server's (for
/// its own node id only), or a control-plane node's.
fn authorize_node<T>(request: &Request<T>) -> Result<Peer, Status> {
    authorize(
        request,
        &[NodeRole::Edge, NodeRole::Gslb, NodeRole::ControlPlane],
    )
}

type EventStream = Pin<Box<dyn Stream<Item = Result<cp::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigWatch for ConfigWatchService {
    type WatchStream = EventStream;

    async fn watch(
        &self,
        request: Request<cp::WatchRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let peer = authorize_node(&request)?;
        let req = request.into_inner();
        check_node_id(&req.node_id)?;
        peer.may_act_as(&req.node_id)?;
        let kind = match cp::NodeKind::try_from(req.kind) {
            Ok(cp::NodeKind::Edge) => NodeKind::Edge,
            Ok(cp::NodeKind::Gslb) => NodeKind::Gslb,
            _ => return Err(Status::invalid_argument("kind: must be EDGE or GSLB")),
        };
        // A node cut off from the quorum (or whose Raft stopped) sends nothing new: refuse, so
        // that the node tries another control-plane node.
        if !*self.cluster.contact().borrow() || self.cluster.raft_stopped() {
            return Err(Status::unavailable(
                "this control-plane node is cut off from the cluster's quorum: try another",
            ));
        }
        let mut labels: Vec<(String, String)> = req.labels.into_iter().collect();
        labels.sort();
        let staging = is_staging(&labels);
        let partition = partition_of(&labels);
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
        tracing::info!(node = %req.node_id, have = req.have_version, have_purge = req.have_purge, staging, %partition, "watch opened");

        // A node new to purges starts from now: its cache holds nothing older.
        let purged = if req.have_purge == 0 {
            *self.store.subscribe_purges().borrow()
        } else {
            req.have_purge
        };
        let stream = WatchStream {
            store: self.store.clone(),
            deltas: self.deltas.clone(),
            partition: partition.clone(),
            target: if staging {
                self.store.subscribe(&partition)
            } else {
                self.store.subscribe_general(&partition)
            },
            purges: (kind == NodeKind::Edge).then(|| self.store.subscribe_purges()),
            registry: (kind == NodeKind::Gslb).then(|| self.store.subscribe_registry()),
            registry_sent: None,
            stop: self.stop.clone(),
            contact: self.cluster.contact(),
            held: (req.have_version, req.have_sha256),
            purged,
            queue: Default::default(),
        };
        let guard = self.watchers.enter(&req.node_id);
        let metrics = self.metrics.clone();
        let events = futures_util::stream::unfold((stream, guard), move |(mut s, g)| {
            let metrics = metrics.clone();
            async move {
                let event = s.next().await?;
                use outpost_proto::controlplane::v1::watch_event::Event;
                let kind = match &event.event {
                    Some(Event::Release(_)) => "release",
                    Some(Event::Delta(_)) => "delta",
                    Some(Event::Purge(_)) => "purge",
                    Some(Event::Nodes(_)) => "nodes",
                    None => "empty",
                };
                metrics.event_sent(kind, prost::Message::encoded_len(&event));
                Some((Ok(event), (s, g)))
            }
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn report(
        &self,
        request: Request<cp::ApplyReport>,
    ) -> Result<Response<cp::ReportAck>, Status> {
        let peer = authorize_node(&request)?;
        let r = request.into_inner();
        check_node_id(&r.node_id)?;
        peer.may_act_as(&r.node_id)?;
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
