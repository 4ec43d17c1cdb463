//! Prometheus metrics of the edge, served on the admin listener at `/metrics`.
//!
//! Label sets are bounded: application and upstream names come from the config, status is a
//! class (`2xx`), peers are the configured or discovered ones. Per-application and
//! per-upstream handles are resolved when a config is compiled, so the request path only
//! increments atomics.

use std::net::SocketAddr;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
pub use sharded_counter::ShardedCounter;

mod sharded_counter;
mod sharded_histogram;
pub use sharded_histogram::{ShardClaim, ShardedHistogram, claim_worker_shard};

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<Labels, ShardedCounter>,
    request_duration: Family<Labels, ShardedHistogram>,
    bytes_sent: Family<Labels, ShardedCounter>,
    bytes_received: Family<Labels, ShardedCounter>,
    upstream_duration: Family<Labels, ShardedHistogram>,
    upstream_errors: Family<Labels, Counter>,
    upstream_requests: Family<Labels, ShardedCounter>,
    peer_up: Family<Labels, Gauge>,
    pub open_connections: Gauge,
    pub config_version: Gauge,
    pub config_loads: Family<Labels, Counter>,
    cache_requests: Family<Labels, ShardedCounter>,
    cache_bytes: Family<Labels, Gauge>,
    cache_objects: Family<Labels, Gauge>,
    pub lua: LuaMetrics,
    /// Connections the edge's own HTTP/1.1 path handed to hyper, by reason.
    http1_handoffs: [Counter; 5],
}

/// How the cache answered a request a cache rule applied to.
pub const CACHE_RESULTS: [&str; 6] = ["hit", "stale", "revalidated", "miss", "collapsed", "pass"];

/// Why the edge's own HTTP/1.1 path hands a connection to hyper, as the metric's label says.
pub const HTTP1_HANDOFF_REASONS: [&str; 5] =
    ["body", "upgrade", "version", "too_large", "malformed"];

/// The limits a Lua request can be stopped by (`lua_runtime`), as the metric's label says them.
pub const LUA_LIMITS: [&str; 3] = ["instructions", "cpu_time", "memory"];

/// Handles for the Lua runtime's limits, shared by every worker.
#[derive(Clone)]
pub struct LuaMetrics {
    stopped: [Counter; 3],
    pub vm_recycles: Counter,
}

impl LuaMetrics {
    /// A request stopped by a limit: counted once, by the phase that went past it.
    pub fn stopped(&self, why: &outpost_lua::Exceeded) {
        let i = match why {
            outpost_lua::Exceeded::Instructions(_) => 0,
            outpost_lua::Exceeded::CpuTime(_) => 1,
            outpost_lua::Exceeded::Memory(_) => 2,
        };
        self.stopped[i].inc();
    }
}

/// Handles for one application.
#[derive(Clone)]
pub struct AppMetrics {
    by_class: [ShardedCounter; 5],
    pub duration: ShardedHistogram,
    pub bytes_sent: ShardedCounter,
    pub bytes_received: ShardedCounter,
    cache: [ShardedCounter; 6],
}

impl AppMetrics {
    /// `result` is one of [`CACHE_RESULTS`].
    pub fn cache(&self, result: &str) {
        if let Some(i) = CACHE_RESULTS.iter().position(|r| *r == result) {
            self.cache[i].inc();
        }
    }

    pub fn count(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
    }
}

/// Handles for one upstream.
#[derive(Clone)]
pub struct UpstreamMetrics {
    name: String,
    pub duration: ShardedHistogram,
    errors: Family<Labels, Counter>,
    peer_up: Family<Labels, Gauge>,
    /// Tries sent by the edge's own HTTP/1.1 client and by hyper's (`upstream/h1_client.rs`).
    pub sent_own: ShardedCounter,
    pub sent_hyper: ShardedCounter,
}

impl UpstreamMetrics {
    pub fn error(&self, kind: &'static str) {
        self.errors
            .get_or_create(&vec![
                ("upstream", self.name.clone()),
                ("kind", kind.to_string()),
            ])
            .inc();
    }

    pub fn set_peer_up(&self, peer: &str, addr: SocketAddr, up: bool) {
        self.peer_up
            .get_or_create(&vec![
                ("upstream", self.name.clone()),
                ("peer", peer.to_string()),
                ("address", addr.to_string()),
            ])
            .set(up as i64);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let lua_stopped = Family::<Labels, Counter>::default();
        // Made now, so every limit shows (at 0) before the first stop.
        let lua = LuaMetrics {
            stopped: LUA_LIMITS.map(|kind| {
                lua_stopped
                    .get_or_create(&vec![("limit", kind.to_string())])
                    .clone()
            }),
            vm_recycles: Counter::default(),
        };
        let handoffs = Family::<Labels, Counter>::default();
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("outpost_edge")),
            requests: Family::default(),
            request_duration: Family::default(),
            bytes_sent: Family::default(),
            bytes_received: Family::default(),
            upstream_duration: Family::default(),
            upstream_errors: Family::default(),
            upstream_requests: Family::default(),
            peer_up: Family::default(),
            open_connections: Gauge::default(),
            config_version: Gauge::default(),
            config_loads: Family::default(),
            cache_requests: Family::default(),
            cache_bytes: Family::default(),
            cache_objects: Family::default(),
            lua,
            // Made now, so every reason shows (at 0) before the first hand-over.
            http1_handoffs: HTTP1_HANDOFF_REASONS.map(|reason| {
                handoffs
                    .get_or_create(&vec![("reason", reason.to_string())])
                    .clone()
            }),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register(
                "http1_handoffs",
                "Connections the edge's HTTP/1.1 path handed to hyper, by reason",
                handoffs,
            );
            r.register(
                "requests",
                "Requests answered, by application and status class",
                m.requests.clone(),
            );
            r.register(
                "request_duration_seconds",
                "Time from the first bytes of the request head to the response head, by application",
                m.request_duration.clone(),
            );
            r.register(
                "sent_bytes",
                "Response body bytes sent to clients, by application",
                m.bytes_sent.clone(),
            );
            r.register(
                "received_bytes",
                "Request body bytes received from clients, by application",
                m.bytes_received.clone(),
            );
            r.register(
                "upstream_response_duration_seconds",
                "Time from sending to an upstream to its response head",
                m.upstream_duration.clone(),
            );
            r.register(
                "upstream_errors",
                "Failed upstream attempts, by upstream and kind",
                m.upstream_errors.clone(),
            );
            r.register(
                "upstream_requests",
                "Tries sent to an upstream, by upstream and client (own: the edge's HTTP/1.1 client; hyper: requests with a body, TLS, upgrades)",
                m.upstream_requests.clone(),
            );
            r.register(
                "upstream_peer_up",
                "Whether a peer is healthy (1) or down (0) by active checks",
                m.peer_up.clone(),
            );
            r.register(
                "open_connections",
                "Client connections open now",
                m.open_connections.clone(),
            );
            r.register(
                "config_version",
                "Version of the config being served",
                m.config_version.clone(),
            );
            r.register(
                "cache_requests",
                "Requests a cache rule applied to, by application and result",
                m.cache_requests.clone(),
            );
            r.register(
                "cache_size_bytes",
                "Bytes stored in the HTTP cache, by tier",
                m.cache_bytes.clone(),
            );
            r.register(
                "cache_objects",
                "Objects stored in the HTTP cache, by tier",
                m.cache_objects.clone(),
            );
            r.register(
                "lua_requests_stopped",
                "Lua requests stopped by a lua_runtime limit, by limit (instructions, cpu_time, memory)",
                lua_stopped,
            );
            r.register(
                "lua_vm_recycles",
                "Worker Lua VMs replaced after hitting their memory limit",
                m.lua.vm_recycles.clone(),
            );
            r.register(
                "config_loads",
                "Config loads, by result (applied, rejected)",
                m.config_loads.clone(),
            );
        }
        m
    }
}

impl Metrics {
    pub fn app(&self, name: &str) -> AppMetrics {
        let labels = |class: &str| {
            vec![
                ("application", name.to_string()),
                ("status", class.to_string()),
            ]
        };
        AppMetrics {
            by_class: ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .map(|c| self.requests.get_or_create(&labels(c)).clone()),
            duration: self
                .request_duration
                .get_or_create(&vec![("application", name.to_string())])
                .clone(),
            bytes_sent: self
                .bytes_sent
                .get_or_create(&vec![("application", name.to_string())])
                .clone(),
            bytes_received: self
                .bytes_received
                .get_or_create(&vec![("application", name.to_string())])
                .clone(),
            cache: CACHE_RESULTS.map(|r| {
                self.cache_requests
                    .get_or_create(&vec![
                        ("application", name.to_string()),
                        ("result", r.to_string()),
                    ])
                    .clone()
            }),
        }
    }

    pub fn upstream(&self, name: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            name: name.to_string(),
            duration: self
                .upstream_duration
                .get_or_create(&vec![("upstream", name.to_string())])
                .clone(),
            errors: self.upstream_errors.clone(),
            peer_up: self.peer_up.clone(),
            sent_own: self.upstream_request_counter(name, "own"),
            sent_hyper: self.upstream_request_counter(name, "hyper"),
        }
    }

    fn upstream_request_counter(&self, name: &str, client: &str) -> ShardedCounter {
        self.upstream_requests
            .get_or_create(&vec![
                ("upstream", name.to_string()),
                ("client", client.to_string()),
            ])
            .clone()
    }

    /// The cache's size per tier, refreshed before each scrape.
    pub fn set_cache_size(&self, tier: &str, bytes: u64, objects: u64) {
        let l = vec![("tier", tier.to_string())];
        self.cache_bytes.get_or_create(&l).set(bytes as i64);
        self.cache_objects.get_or_create(&l).set(objects as i64);
    }

    /// A connection went to hyper; `reason` is one of [`HTTP1_HANDOFF_REASONS`].
    pub fn http1_handoff(&self, reason: &str) {
        if let Some(i) = HTTP1_HANDOFF_REASONS.iter().position(|r| *r == reason) {
            self.http1_handoffs[i].inc();
        }
    }

    pub fn config_load(&self, result: &'static str) {
        self.config_loads
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = encode(&mut out, &r);
        out
    }
}
