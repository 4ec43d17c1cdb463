//! DNS discovery: the peers of an upstream re-resolved from an A, AAAA or SRV name every
//! interval (as users do with Consul). A failed or empty answer keeps the last good peers.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use outpost_proto::pb::DnsRecordType;

use super::{DiscoveryParams, PeerSpec, Upstream};

fn resolver(p: &DiscoveryParams) -> Result<TokioResolver, String> {
    let mut builder = match p.resolver {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            ns.connections = vec![ConnectionConfig::udp(), ConnectionConfig::tcp()];
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
    };
    // We ask every interval ourselves; a cache would hide changes until the TTL ran out.
    builder.options_mut().cache_size = 0;
    builder.build().map_err(|e| e.to_string())
}

/// One resolution of the discovery name into peers.
pub async fn resolve(
    resolver: &TokioResolver,
    p: &DiscoveryParams,
) -> Result<Vec<PeerSpec>, String> {
    let record_type = match p.record_type {
        DnsRecordType::A => RecordType::A,
        DnsRecordType::Aaaa => RecordType::AAAA,
        DnsRecordType::Srv => RecordType::SRV,
    };
    let lookup = resolver
        .lookup(p.name.as_str(), record_type)
        .await
        .map_err(|e| e.to_string())?;
    let mut peers = Vec::new();
    for record in lookup.answers() {
        match &record.data {
            RData::A(a) => peers.push(address_peer(IpAddr::V4(a.0), p)),
            RData::AAAA(a) => peers.push(address_peer(IpAddr::V6(a.0), p)),
            RData::SRV(srv) => {
                let target = srv.target.to_string();
                // Addresses of the target: from the additional section, else a lookup.
                let mut ips: Vec<IpAddr> = lookup
                    .additionals()
                    .iter()
                    .filter(|r| r.name == srv.target)
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    })
                    .collect();
                if ips.is_empty()
                    && let Ok(found) = resolver.lookup_ip(target.as_str()).await
                {
                    ips = found.iter().collect();
                }
                for ip in ips {
                    peers.push(PeerSpec {
                        addr: SocketAddr::new(ip, srv.port),
                        name: format!("{}:{}", target.trim_end_matches('.'), srv.port),
                        weight: (srv.weight as u32).max(1),
                        backup: false,
                    });
                }
            }
            _ => {}
        }
    }
    peers.sort_by_key(|a| a.addr);
    peers.dedup_by(|a, b| a.addr == b.addr);
    Ok(peers)
}

fn address_peer(ip: IpAddr, p: &DiscoveryParams) -> PeerSpec {
    let addr = SocketAddr::new(ip, p.port);
    PeerSpec {
        addr,
        name: addr.to_string(),
        weight: p.weight,
        backup: false,
    }
}

/// Re-resolves until the upstream is retired or dropped.
pub async fn run(upstream: Weak<Upstream>) {
    let Some(params) = upstream.upgrade().and_then(|u| u.discovery.clone()) else {
        return;
    };
    let resolver = match resolver(&params) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(name = %params.name, error = %e, "DNS discovery cannot start");
            return;
        }
    };
    loop {
        let result = resolve(&resolver, &params).await;
        let Some(u) = upstream.upgrade() else { return };
        if u.is_retired() {
            return;
        }
        match result {
            Ok(peers) if !peers.is_empty() => {
                let current: Vec<SocketAddr> = u.peers.load().all().map(|p| p.addr).collect();
                let next: Vec<SocketAddr> = peers.iter().map(|p| p.addr).collect();
                if current != next {
                    tracing::info!(upstream = %u.name, name = %params.name, peers = ?next, "DNS discovery changed the peers");
                    u.set_discovered(peers);
                }
            }
            Ok(_) => {
                tracing::warn!(upstream = %u.name, name = %params.name, "DNS discovery found no peers; keeping the last ones")
            }
            Err(e) => {
                tracing::warn!(upstream = %u.name, name = %params.name, error = %e, "DNS discovery failed; keeping the last peers")
            }
        }
        drop(u);
        tokio::time::sleep(params.interval).await;
    }
}

pub fn spawn(upstream: &Arc<Upstream>) {
    if upstream.discovery.is_some() {
        tokio::spawn(run(Arc::downgrade(upstream)));
    }
}
