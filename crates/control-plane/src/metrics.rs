//! Prometheus metrics of a control-plane node (`outpost_cp_*`), at `GET /metrics` on the admin listener (no
//! token: like every Outpost component's metrics, it is for the operator's scraper).
//!
//! Raft and release gauges are read when scraped, so they cannot go stale; counters are
//! bumped where things happen. Label sets are bounded: routes are the router's patterns,
//! statuses and event kinds short fixed sets.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cluster::ClusterStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    events: Family<EventLabels, Counter>,
    event_bytes: Family<EventLabels, Counter>,
    term: Gauge,
    is_leader: Gauge,
    quorum_contact: Gauge,
    raft_running: Gauge,
    last_log_index: Gauge,
    applied_index: Gauge,
    snapshot_index: Gauge,
    voters: Gauge,
    watch_streams: Gauge,
    latest_release: Gauge,
    general_release: Gauge,
    last_purge: Gauge,
}

/// What the scrape reads from the node besides the counters.
pub struct Snapshot {
    pub cluster: ClusterStatus,
    /// In touch with a leader that has a quorum (a leader: confirmed by a quorum just now).
    pub contact: bool,
    pub raft_running: bool,
    pub watch_streams: usize,
    pub latest_release: u64,
    pub general_release: u64,
    pub last_purge: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("outpost");
        let requests = Family::<RequestLabels, Counter>::default();
        r.register(
            "cp_api_requests",
            "Admin API requests, by method, route pattern and status",
            requests.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        r.register(
            "cp_watch_events",
            "Messages sent down Watch streams, by kind (release, delta, purge)",
            events.clone(),
        );
        let event_bytes = Family::<EventLabels, Counter>::default();
        r.register(
            "cp_watch_event_bytes",
            "Encoded bytes of the messages sent down Watch streams, by kind",
            event_bytes.clone(),
        );
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        Metrics {
            term: gauge(&mut r, "cp_raft_term", "This node's current Raft term"),
            is_leader: gauge(
                &mut r,
                "cp_raft_is_leader",
                "1 when this node leads with a quorum behind it, 0 otherwise (a leader cut off \
                 from the majority is 0)",
            ),
            quorum_contact: gauge(
                &mut r,
                "cp_quorum_contact",
                "1 when this node is in touch with a leader that has a quorum, 0 when cut off",
            ),
            raft_running: gauge(
                &mut r,
                "cp_raft_running",
                "1 while Raft runs on this node, 0 once it stopped (a storage failure): restart \
                 the node",
            ),
            last_log_index: gauge(
                &mut r,
                "cp_raft_last_log_index",
                "Index of the last entry in this node's log",
            ),
            applied_index: gauge(
                &mut r,
                "cp_raft_applied_index",
                "Index of the last entry applied to this node's state",
            ),
            snapshot_index: gauge(
                &mut r,
                "cp_raft_snapshot_index",
                "Last index covered by this node's snapshot",
            ),
            voters: gauge(
                &mut r,
                "cp_raft_voters",
                "Voters in the membership this node knows",
            ),
            watch_streams: gauge(
                &mut r,
                "cp_watch_streams",
                "Watch streams open on this node",
            ),
            latest_release: gauge(
                &mut r,
                "cp_latest_release_version",
                "The newest release (what staging nodes run)",
            ),
            general_release: gauge(
                &mut r,
                "cp_general_release_version",
                "The newest release every node runs (not staged, or promoted)",
            ),
            last_purge: gauge(&mut r, "cp_last_purge_id", "The newest purge's id"),
            registry: r,
            requests,
            events,
            event_bytes,
        }
    }
}

impl Metrics {
    pub fn request(&self, method: &str, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
    }

    pub fn event_sent(&self, kind: &'static str, bytes: usize) {
        let labels = EventLabels { kind };
        self.events.get_or_create(&labels).inc();
        self.event_bytes.get_or_create(&labels).inc_by(bytes as u64);
    }

    /// The text exposition, with the gauges read from `now`.
    pub fn encode(&self, now: Snapshot) -> String {
        let c = &now.cluster;
        self.term.set(c.term as i64);
        self.is_leader.set(i64::from(
            c.leader == Some(c.id) && now.contact && now.raft_running,
        ));
        self.quorum_contact
            .set(i64::from(now.contact && now.raft_running));
        self.raft_running.set(i64::from(now.raft_running));
        self.last_log_index
            .set(c.last_log_index.unwrap_or(0) as i64);
        self.applied_index
            .set(c.last_applied_index.unwrap_or(0) as i64);
        self.snapshot_index
            .set(c.snapshot_index.unwrap_or(0) as i64);
        self.voters.set(c.voters.len() as i64);
        self.watch_streams.set(now.watch_streams as i64);
        self.latest_release.set(now.latest_release as i64);
        self.general_release.set(now.general_release as i64);
        self.last_purge.set(now.last_purge as i64);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }
}
