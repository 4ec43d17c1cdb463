//! Upstreams at run time: their peers (static or discovered), how to pick one, how to reach
//! it, and the background work that keeps peer health current.

pub mod balancer;
pub mod connector;
pub mod discovery;
pub mod h1_body;
pub mod h1_client;
pub mod health_check;
pub mod peer;
pub mod pool;

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use outpost_proto::pb;

use crate::metrics::{Metrics, UpstreamMetrics};
use crate::rules::Template;
use balancer::{BalancerKind, PeerSet};
use connector::UpstreamTls;
use peer::{PassiveParams, Peer, PeerState};

/// Which failures move a request to the next peer.
#[derive(Debug, Clone, Copy, Default)]
pub struct NextUpstream {
    pub error: bool,
    pub timeout: bool,
    pub statuses: [bool; 5], // 500, 502, 503, 504, 429
    pub non_idempotent: bool,
}

impl NextUpstream {
    pub fn on_status(&self, status: u16) -> bool {
        match status {
            500 => self.statuses[0],
            502 => self.statuses[1],
            503 => self.statuses[2],
            504 => self.statuses[3],
            429 => self.statuses[4],
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct HealthCheckParams {
    pub path: String,
    pub host: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub expected: Vec<u16>,
}

#[derive(Debug, Clone)]
pub struct DiscoveryParams {
    pub name: String,
    pub record_type: pb::DnsRecordType,
    pub port: u16,
    pub interval: Duration,
    pub resolver: Option<SocketAddr>,
    pub weight: u32,
}

pub struct Upstream {
    pub name: Arc<str>,
    pub kind: BalancerKind,
    pub hash_key: Option<Template>,
    pub peers: ArcSwap<PeerSet>,
    pub keepalive: usize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub send_timeout: Duration,
    pub tries: u32,
    pub next_upstream: NextUpstream,
    pub tls: Option<UpstreamTls>,
    pub passive: PassiveParams,
    pub health: Option<HealthCheckParams>,
    pub discovery: Option<DiscoveryParams>,
    pub metrics: UpstreamMetrics,
    /// `lua_balancer`: run before every try to pick the peer (`require "ngx.balancer"`).
    pub lua_balancer: Option<Arc<crate::rules::LuaChunk>>,
    /// Set when a newer config replaces this upstream: its background tasks stop.
    pub retired: AtomicBool,
    states: Arc<PeerStates>,
}

/// Peer state and discovered peers that outlive one config, keyed by upstream name and address.
#[derive(Default)]
pub struct PeerStates {
    states: Mutex<HashMap<(String, SocketAddr), Arc<PeerState>>>,
    discovered: Mutex<HashMap<String, Vec<PeerSpec>>>,
}

/// A peer before it gets its shared state.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSpec {
    pub addr: SocketAddr,
    pub name: String,
    pub weight: u32,
    pub backup: bool,
}

impl PeerStates {
    fn state(&self, upstream: &str, addr: SocketAddr) -> Arc<PeerState> {
        let mut m = self.states.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((upstream.to_string(), addr)).or_default().clone()
    }

    /// Forgets the state of peers no config mentions any more.
    pub fn retain(&self, live: &std::collections::HashSet<(String, SocketAddr)>) {
        let mut m = self.states.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|k, _| live.contains(k));
    }
}

impl Upstream {
    pub fn compile(
        u: &pb::Upstream,
        states: &Arc<PeerStates>,
        metrics: &Metrics,
    ) -> Result<Upstream, (String, String)> {
        let kind = match pb::Balancer::try_from(u.balancer) {
            Ok(pb::Balancer::RoundRobin) => BalancerKind::RoundRobin,
            Ok(pb::Balancer::LeastConn) => BalancerKind::LeastConn,
            Ok(pb::Balancer::ConsistentHash) => BalancerKind::ConsistentHash,
            Ok(pb::Balancer::PeakEwma) => BalancerKind::PeakEwma,
            Err(_) => return Err(("balancer".into(), "unknown balancer".into())),
        };
        let hash_key = if u.hash_key.is_empty() {
            None
        } else {
            Some(Template::compile(&u.hash_key).map_err(|e| ("hash_key".to_string(), e))?)
        };
        let mut next = NextUpstream::default();
        if u.next_upstream.is_empty() {
            next.error = true;
            next.timeout = true;
        }
        for n in &u.next_upstream {
            match pb::NextUpstream::try_from(*n) {
                Ok(pb::NextUpstream::Error) => next.error = true,
                Ok(pb::NextUpstream::Timeout) => next.timeout = true,
                Ok(pb::NextUpstream::Http500) => next.statuses[0] = true,
                Ok(pb::NextUpstream::Http502) => next.statuses[1] = true,
                Ok(pb::NextUpstream::Http503) => next.statuses[2] = true,
                Ok(pb::NextUpstream::Http504) => next.statuses[3] = true,
                Ok(pb::NextUpstream::Http429) => next.statuses[4] = true,
                Ok(pb::NextUpstream::NonIdempotent) => next.non_idempotent = true,
                _ => return Err(("next_upstream".into(), "unknown condition".into())),
            }
        }
        let tls = match &u.tls {
            Some(t) if t.enabled => Some(
                UpstreamTls::new(&t.sni, t.verify, &t.ca_pem)
                    .map_err(|e| ("tls".to_string(), e))?,
            ),
            _ => None,
        };
        let passive = match &u.passive_health {
            Some(p) => PassiveParams {
                enabled: !p.disabled,
                max_fails: p.max_fails.max(1),
                fail_timeout_ms: if p.fail_timeout_ms == 0 {
                    10_000
                } else {
                    p.fail_timeout_ms as u64
                },
            },
            None => PassiveParams {
                enabled: true,
                max_fails: 1,
                fail_timeout_ms: 10_000,
            },
        };
        let health = u
            .health_check
            .as_ref()
            .filter(|h| !h.path.is_empty())
            .map(|h| HealthCheckParams {
                path: h.path.clone(),
                host: (!h.host.is_empty()).then(|| h.host.clone()),
                interval: ms_or(h.interval_ms, 2000),
                timeout: ms_or(h.timeout_ms, 1000),
                rise: if h.rise == 0 { 2 } else { h.rise },
                fall: if h.fall == 0 { 3 } else { h.fall },
                expected: h.expected_statuses.iter().map(|s| *s as u16).collect(),
            });
        let discovery = match &u.discovery {
            None => None,
            Some(d) => Some(DiscoveryParams {
                name: d.name.clone(),
                record_type: pb::DnsRecordType::try_from(d.record_type)
                    .unwrap_or(pb::DnsRecordType::A),
                port: d.port as u16,
                interval: Duration::from_secs(if d.interval_seconds == 0 {
                    10
                } else {
                    d.interval_seconds as u64
                }),
                resolver: if d.resolver.is_empty() {
                    None
                } else {
                    Some(d.resolver.parse().map_err(|_| {
                        ("discovery.resolver".to_string(), "not ip:port".to_string())
                    })?)
                },
                weight: d.weight.max(1),
            }),
        };

        // Static peers; a host name is resolved now, once.
        let mut specs = Vec::new();
        for (i, p) in u.peers.iter().enumerate() {
            let addrs: Vec<SocketAddr> = match p.address.parse::<SocketAddr>() {
                Ok(a) => vec![a],
                Err(_) => p
                    .address
                    .to_socket_addrs()
                    .map_err(|e| {
                        (
                            format!("peers[{i}].address"),
                            format!("cannot resolve {:?}: {e}", p.address),
                        )
                    })?
                    .collect(),
            };
            for addr in addrs {
                specs.push(PeerSpec {
                    addr,
                    name: p.address.clone(),
                    weight: p.weight.max(1),
                    backup: p.backup,
                });
            }
        }
        if discovery.is_some() {
            // Keep the last DNS answer across reloads rather than falling back to static peers.
            if let Some(found) = states
                .discovered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&u.name)
            {
                specs = found.clone();
            }
        }

        let lua_balancer = crate::rules::LuaChunk::compile(
            u.lua_balancer.as_ref(),
            &format!("{}.balancer", u.name),
            "lua_balancer",
        )?;
        let upstream = Upstream {
            lua_balancer,
            name: Arc::from(u.name.as_str()),
            kind,
            hash_key,
            peers: ArcSwap::from_pointee(PeerSet::new(Vec::new(), kind)),
            keepalive: if u.keepalive == 0 {
                32
            } else {
                u.keepalive as usize
            },
            connect_timeout: ms_or(u.connect_timeout_ms, 5_000),
            read_timeout: ms_or(u.read_timeout_ms, 60_000),
            send_timeout: ms_or(u.send_timeout_ms, 60_000),
            tries: u.retries + 1,
            next_upstream: next,
            tls,
            passive,
            health,
            discovery,
            metrics: metrics.upstream(&u.name),
            retired: AtomicBool::new(false),
            states: states.clone(),
        };
        upstream.set_peers(specs);
        Ok(upstream)
    }

    /// Replaces the peer set (static load or a new DNS answer), keeping each peer's state.
    pub fn set_peers(&self, specs: Vec<PeerSpec>) {
        let peers = specs
            .into_iter()
            .map(|s| Peer {
                state: self.states.state(&self.name, s.addr),
                addr: s.addr,
                name: Arc::from(s.name.as_str()),
                weight: s.weight,
                backup: s.backup,
            })
            .collect();
        self.peers.store(Arc::new(PeerSet::new(peers, self.kind)));
    }

    pub fn set_discovered(&self, specs: Vec<PeerSpec>) {
        self.states
            .discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.name.to_string(), specs.clone());
        self.set_peers(specs);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }
}

fn ms_or(ms: u32, default: u64) -> Duration {
    Duration::from_millis(if ms == 0 { default } else { ms as u64 })
}
