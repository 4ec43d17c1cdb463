//! What one Watch stream sends: the purges the node has not applied, then the release it should
//! run (a delta from the version it holds when that is exact and smaller, the full release
//! otherwise), then each new purge and release as they are committed.
//!
//! A node labelled `staging` follows the newest release; the others follow the newest release
//! that is not staged or was promoted. When several releases are made while a stream is busy the
//! node gets the newest: a delta is taken from the version the node holds, so skipping
//! versions loses nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use outpost_proto::controlplane::v1 as cp;
use outpost_proto::controlplane::v1::purge::Selector;
use outpost_proto::controlplane::v1::watch_event::Event;
use prost::Message;
use tokio::sync::{OnceCell, watch};

use crate::store::{Release, Store};

/// A delta and the sha256 of the release it applies to.
type CachedDelta = Option<(Arc<cp::ConfigDelta>, String)>;

/// Deltas by (partition, base version, version): every node one release behind needs the same
/// one, and it is computed once while the others wait for it (a release reaches every stream
/// at the same moment). Small: cleared when full.
#[derive(Default)]
pub struct DeltaCache {
    map: Mutex<HashMap<DeltaKey, Arc<OnceCell<CachedDelta>>>>,
}

/// (partition, base version, version).
type DeltaKey = (String, u64, u64);

const DELTAS_CACHED: usize = 256;

/// How long a stream stays open on a node cut off from the quorum (longer than an election).
const CUT_OFF_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

impl DeltaCache {
    /// The delta from `base` (the node's copy, whose sha256 it gave) to `release`, or `None`
    /// when the full release must be sent.
    async fn delta(
        &self,
        store: &Store,
        partition: &str,
        base: u64,
        base_sha256: &str,
        release: &Release,
    ) -> Option<Arc<cp::ConfigDelta>> {
        if base == 0 || base_sha256.is_empty() {
            return None;
        }
        let key = (partition.to_string(), base, release.version);
        let cell = {
            let mut map = self.map.lock().ok()?;
            if map.len() >= DELTAS_CACHED && !map.contains_key(&key) {
                map.clear();
            }
            map.entry(key).or_default().clone()
        };
        let entry = cell
            .get_or_init(|| Self::make(store, partition, base, release))
            .await;
        entry
            .as_ref()
            .filter(|(_, sha)| sha == base_sha256)
            .map(|(delta, _)| delta.clone())
    }

    async fn make(store: &Store, partition: &str, base: u64, release: &Release) -> CachedDelta {
        let base_release = store.release(partition, base).await.ok()??;
        let mut d = outpost_proto::delta::make(&base_release.config, &release.config)?;
        d.version = release.version;
        d.note = release.note.clone();
        d.created_at_ms = release.created_at_ms;
        d.sha256 = release.sha256.clone();
        // Not smaller than the release: send the release.
        if d.encoded_len() >= full(release).encoded_len() {
            return None;
        }
        Some((Arc::new(d), base_release.sha256))
    }
}

fn full(r: &Release) -> cp::WatchEvent {
    cp::WatchEvent {
        event: Some(Event::Release(cp::Release {
            version: r.version,
            note: r.note.clone(),
            created_at_ms: r.created_at_ms,
            sha256: r.sha256.clone(),
            config: Some(r.config.clone()),
        })),
    }
}

/// A registered node's partition: its `partition` label, or the default one.
fn partition_of(n: &cp::RegisteredNode) -> &str {
    n.labels
        .get("partition")
        .map_or(crate::store::DEFAULT_PARTITION, |p| p.as_str())
}

/// Waits for a change of an optional channel; without one, forever.
async fn changed_opt<T>(
    rx: &mut Option<watch::Receiver<T>>,
) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

/// The state of one stream between two messages.
pub struct WatchStream {
    pub store: Arc<Store>,
    pub deltas: Arc<DeltaCache>,
    pub partition: String,
    /// The release this node should run (staging or general).
    pub target: watch::Receiver<Option<Arc<Release>>>,
    /// `None` for GSLB nodes: they cache nothing.
    pub purges: Option<watch::Receiver<u64>>,
    /// GSLB nodes only: the node registry, of which they get their partition's edges.
    pub registry: Option<watch::Receiver<Arc<Vec<cp::RegisteredNode>>>>,
    /// The registry as last sent.
    pub registry_sent: Option<Vec<cp::RegisteredNode>>,
    pub stop: watch::Receiver<bool>,
    /// Whether this control-plane node is in touch with a leader that has a quorum.
    pub contact: watch::Receiver<bool>,
    /// The version the node holds (the last one sent, or the one it said it had) and its sha256.
    pub held: (u64, String),
    /// The last purge sent (or the one the node said it had applied).
    pub purged: u64,
    pub queue: VecDeque<cp::WatchEvent>,
}

impl WatchStream {
    /// The next message, or `None` when the stream ends (shutdown, or the store went away).
    pub async fn next(&mut self) -> Option<cp::WatchEvent> {
        loop {
            if *self.stop.borrow() {
                return None;
            }
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if let Some(purges) = &mut self.purges {
                let newest_purge = *purges.borrow_and_update();
                if newest_purge > self.purged {
                    self.queue_purges(newest_purge).await;
                    continue;
                }
            }
            if let Some(registry) = &mut self.registry {
                let mine: Vec<cp::RegisteredNode> = registry
                    .borrow_and_update()
                    .iter()
                    .filter(|n| partition_of(n) == self.partition)
                    .cloned()
                    .collect();
                if self.registry_sent.as_ref() != Some(&mine) {
                    self.registry_sent = Some(mine.clone());
                    return Some(cp::WatchEvent {
                        event: Some(Event::Nodes(cp::NodeRegistry { nodes: mine })),
                    });
                }
            }
            let target = self.target.borrow_and_update().clone();
            if let Some(release) = target
                && release.version != self.held.0
            {
                let event = match self
                    .deltas
                    .delta(
                        &self.store,
                        &self.partition,
                        self.held.0,
                        &self.held.1,
                        &release,
                    )
                    .await
                {
                    Some(d) => cp::WatchEvent {
                        event: Some(Event::Delta((*d).clone())),
                    },
                    None => full(&release),
                };
                self.held = (release.version, release.sha256.clone());
                return Some(event);
            }
            tokio::select! {
                changed = self.target.changed() => if changed.is_err() { return None },
                changed = changed_opt(&mut self.purges) => if changed.is_err() { return None },
                changed = changed_opt(&mut self.registry) => if changed.is_err() { return None },
                _ = self.stop.changed() => return None,
                changed = self.contact.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    // Cut off from the quorum, this node gets no new release or purge: end
                    // the stream (after a grace for a passing election) so that the node
                    // watches another control-plane node.
                    if !*self.contact.borrow_and_update() {
                        let back = tokio::time::timeout(CUT_OFF_GRACE, self.contact.wait_for(|c| *c));
                        if !matches!(back.await, Ok(Ok(_))) {
                            tracing::warn!("cut off from the quorum: ending a watch so the node moves on");
                            return None;
                        }
                    }
                }
            }
        }
    }

    /// Queues the purges after the last one sent; when some of them are no longer kept, one
    /// purge of everything stands for them.
    async fn queue_purges(&mut self, newest: u64) {
        match self.store.purges_after(self.purged).await {
            Ok((purges, true)) => {
                for p in purges {
                    self.purged = self.purged.max(p.id);
                    self.queue.push_back(cp::WatchEvent {
                        event: Some(Event::Purge(p)),
                    });
                }
            }
            Ok((_, false)) => {
                tracing::warn!(
                    from = self.purged,
                    "purges the node missed are no longer kept: it is told to purge everything"
                );
                self.queue.push_back(cp::WatchEvent {
                    event: Some(Event::Purge(cp::Purge {
                        id: newest,
                        created_at_ms: crate::store::now_ms(),
                        selector: Some(Selector::All(true)),
                        soft: false,
                    })),
                });
                self.purged = newest;
            }
            Err(e) => {
                // Try again at the next change; meanwhile releases still flow.
                tracing::error!("reading purges: {e}");
                self.purged = newest;
            }
        }
    }
}
