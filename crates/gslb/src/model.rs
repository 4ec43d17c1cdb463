//! The validated, compiled form of a GSLB config: what the handler and the probers read. Wire
//! types (prost) stop here; nothing past this module sees them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Name;
use ipnet::IpNet;
use outpost_proto::controlplane::v1::RegisteredNode;
use outpost_proto::gslb::v1 as pb;
use outpost_proto::validate::{FieldError, ValidationErrors};
use outpost_proto::validate_gslb::{selects, validate_gslb, validate_gslb_section};

use crate::geo::{GeoMatch, GeoTable, Region, RegionMap};
use crate::geoip::{GeoIp, GeoIpCache};
use crate::health::{Probe, ProbeKind};
use crate::select::{self, NodeView, Policy, RecordPlan, WeightedMode, WhenNoneHealthy};
use crate::zone::ZoneData;

/// Default TTL of GSLB answers: short, so resolvers come back soon after a failover.
pub const DEFAULT_GSLB_TTL: u32 = 20;
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(250);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(200);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 2;

#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub view: NodeView,
    pub probe: Probe,
}

#[derive(Debug, Clone)]
pub struct RecordSpec {
    /// Index into [`Model::zones`].
    pub zone: usize,
    /// `name.zone`, for metrics and logs.
    pub label: String,
    pub plan: RecordPlan,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub version: u64,
    pub zones: Vec<ZoneData>,
    pub nodes: Vec<NodeSpec>,
    /// `nodes[i].view`, contiguous for the selector.
    pub views: Vec<NodeView>,
    pub regions: RegionMap,
    pub geo: GeoTable,
    /// Placing clients the table does not, when the config names a database.
    pub geoip: Option<Arc<GeoIp>>,
    pub records: Vec<RecordSpec>,
    /// For each node, the records whose pools include it.
    pub records_of_node: Vec<Vec<usize>>,
    pub axfr_allow: Vec<IpNet>,
}

impl Model {
    /// Validates and compiles a config. Every error comes back with its field path.
    pub fn build(config: &pb::GslbConfig) -> Result<Model, ValidationErrors> {
        Self::build_cached(config, &GeoIpCache::default())
    }

    /// As [`Model::build`], reusing the GeoIP database `cache` holds when its file is unchanged.
    pub fn build_cached(
        config: &pb::GslbConfig,
        cache: &GeoIpCache,
    ) -> Result<Model, ValidationErrors> {
        validate_gslb(config)?;
        Self::compile(config, cache)
    }

    /// A config from the control plane with the edge nodes of its registry (see
    /// [`crate::registry`]): pools may select no node until edges register.
    pub fn build_with_registry(
        config: &pb::GslbConfig,
        registry: &[RegisteredNode],
        cache: &GeoIpCache,
    ) -> Result<Model, ValidationErrors> {
        let (merged, left) = crate::registry::merge(config, registry);
        for (node, why) in left {
            tracing::debug!(%node, ?why, "registered node not answered with");
        }
        validate_gslb_section(&merged)?;
        Self::compile(&merged, cache)
    }

    /// Compiles a validated config (opening its GeoIP database, if any).
    fn compile(config: &pb::GslbConfig, cache: &GeoIpCache) -> Result<Model, ValidationErrors> {
        let regions = RegionMap::new(
            config
                .regions
                .iter()
                .map(|r| Region {
                    name: r.name.clone(),
                    latitude: r.latitude,
                    longitude: r.longitude,
                })
                .collect(),
        );
        // Validated above: every address, CIDR and reference parses and resolves.
        let nodes: Vec<NodeSpec> = config
            .nodes
            .iter()
            .map(|n| node_spec(n, &regions))
            .collect();
        let node_index = |name: &str| config.nodes.iter().position(|n| n.name == name);
        let geo = GeoTable::new(
            config
                .geo_cidrs
                .iter()
                .filter_map(|g| Some((g.cidr.parse().ok()?, regions.index_of(&g.region)?)))
                .collect(),
        );

        let mut errors = Vec::<FieldError>::new();
        let geoip = match &config.geoip {
            None => None,
            Some(g) => match GeoIp::open(g, &regions, cache) {
                Ok(db) => Some(Arc::new(db)),
                Err(message) => {
                    errors.push(FieldError {
                        path: "geoip.path".into(),
                        message,
                    });
                    None
                }
            },
        };
        let mut zones = Vec::new();
        for (zi, zone) in config.zones.iter().enumerate() {
            let gslb_names: Vec<(&str, usize)> = config
                .records
                .iter()
                .enumerate()
                .filter(|(_, r)| r.zone == zone.name)
                .map(|(i, r)| (r.name.as_str(), i))
                .collect();
            match ZoneData::build(zone, config.version, &gslb_names, &format!("zones[{zi}]")) {
                Ok(z) => zones.push(z),
                Err(mut e) => errors.append(&mut e),
            }
        }
        if !errors.is_empty() {
            return Err(ValidationErrors(errors));
        }

        let mut records_of_node = vec![Vec::new(); nodes.len()];
        let records = config
            .records
            .iter()
            .enumerate()
            .map(|(ri, r)| {
                let pools: Vec<pb::Pool> = if r.pools.is_empty() {
                    vec![pb::Pool::default()]
                } else {
                    r.pools.clone()
                };
                let mut groups: Vec<Vec<usize>> = pools
                    .iter()
                    .map(|p| {
                        selects(config, p)
                            .filter_map(|n| node_index(&n.name))
                            .collect()
                    })
                    .collect();
                let policy = policy_of(r.policy());
                if policy != Policy::Failover {
                    let mut union: Vec<usize> = groups.concat();
                    union.sort_unstable();
                    union.dedup();
                    groups = vec![union];
                }
                for &n in groups.iter().flatten() {
                    if !records_of_node[n].contains(&ri) {
                        records_of_node[n].push(ri);
                    }
                }
                let when_none_healthy = match r.when_none_healthy() {
                    pb::WhenNoneHealthy::All => WhenNoneHealthy::All,
                    pb::WhenNoneHealthy::Fixed => WhenNoneHealthy::Fixed(
                        r.fallback_addresses
                            .iter()
                            .filter_map(|a| a.parse().ok())
                            .collect(),
                    ),
                };
                let zone = zones.iter().position(|z| z.label == r.zone).unwrap_or(0);
                RecordSpec {
                    zone,
                    label: if r.name == "@" {
                        r.zone.clone()
                    } else {
                        format!("{}.{}", r.name.to_ascii_lowercase(), r.zone)
                    },
                    plan: RecordPlan {
                        policy,
                        groups,
                        count: match (r.count, policy) {
                            (0, Policy::AllHealthy) => 0,
                            (0, _) => 1,
                            (c, _) => c as usize,
                        },
                        ttl: if r.ttl == 0 { DEFAULT_GSLB_TTL } else { r.ttl },
                        weighted_mode: match r.weighted_mode() {
                            pb::WeightedMode::Random => WeightedMode::Random,
                            pb::WeightedMode::StableSubnet => WeightedMode::StableSubnet,
                        },
                        when_none_healthy,
                        default_region: regions.index_of(&r.default_region),
                    },
                }
            })
            .collect();

        Ok(Model {
            version: config.version,
            views: nodes.iter().map(|n| n.view.clone()).collect(),
            zones,
            nodes,
            regions,
            geo,
            geoip,
            records,
            records_of_node,
            axfr_allow: config
                .axfr_allow
                .iter()
                .filter_map(|a| {
                    a.parse::<IpNet>()
                        .ok()
                        .or_else(|| a.parse::<IpAddr>().ok().map(IpNet::from))
                })
                .collect(),
        })
    }

    /// The zone that holds `name` (lowercase), the most specific when zones nest.
    pub fn zone_for(&self, name: &Name) -> Option<&ZoneData> {
        self.zones
            .iter()
            .filter(|z| z.contains(name))
            .max_by_key(|z| z.origin.num_labels())
    }

    /// The region of a client subnet: the `geo_cidrs` table first, then the GeoIP database.
    pub fn locate(&self, addr: IpAddr, source_prefix: u8) -> Option<GeoMatch> {
        self.geo.lookup(addr, source_prefix).or_else(|| {
            let subnet = IpNet::new(addr, source_prefix).ok()?.trunc().network();
            self.geoip.as_ref()?.lookup(subnet, &self.regions)
        })
    }

    pub fn axfr_allowed(&self, ip: IpAddr) -> bool {
        self.axfr_allow.iter().any(|n| n.contains(&ip))
    }
}

fn policy_of(p: pb::Policy) -> Policy {
    match p {
        pb::Policy::Failover => Policy::Failover,
        pb::Policy::Weighted => Policy::Weighted,
        pb::Policy::Geo => Policy::Geo,
        pb::Policy::Closest => Policy::Closest,
        pb::Policy::AllHealthy => Policy::AllHealthy,
    }
}

fn node_spec(n: &pb::Node, regions: &RegionMap) -> NodeSpec {
    let address: IpAddr = n
        .address
        .parse()
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let h = n.health.clone().unwrap_or_default();
    let ms = |v: u32, d: Duration| {
        if v == 0 {
            d
        } else {
            Duration::from_millis(u64::from(v))
        }
    };
    let port = if h.port == 0 { 80 } else { h.port as u16 };
    let kind = match h.kind() {
        pb::ProbeKind::Tcp => ProbeKind::Tcp,
        pb::ProbeKind::None => ProbeKind::None,
        pb::ProbeKind::Http => ProbeKind::Http {
            path: if h.http_path.is_empty() {
                "/".into()
            } else {
                h.http_path.clone()
            },
            host: if h.http_host.is_empty() {
                SocketAddr::new(address, port).to_string()
            } else {
                h.http_host.clone()
            },
        },
    };
    NodeSpec {
        name: n.name.clone(),
        view: NodeView {
            address,
            region: regions.index_of(&n.region),
            weight: n.weight.max(1),
            id: select::hash_str(&n.name),
        },
        probe: Probe {
            kind,
            target: SocketAddr::new(address, port),
            interval: ms(h.interval_ms, DEFAULT_PROBE_INTERVAL),
            timeout: ms(h.timeout_ms, DEFAULT_PROBE_TIMEOUT),
            rise: if h.rise == 0 { DEFAULT_RISE } else { h.rise },
            fall: if h.fall == 0 { DEFAULT_FALL } else { h.fall },
        },
    }
}
