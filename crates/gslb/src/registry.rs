//! Under a control plane, the edge nodes GSLB answers with come from two places: the config's
//! own `nodes`, and the control plane's node registry (every edge started with `--advertise`).
//! [`merge`] turns the registry into config nodes, so pools select them by region and labels
//! like any other. Pure: the caller validates and compiles the result.

use std::net::{IpAddr, SocketAddr};

use outpost_proto::controlplane::v1::RegisteredNode;
use outpost_proto::gslb::v1::{GslbConfig, HealthCheck, Node};

/// Why a registered node is not answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// An operator drained it.
    Drained,
    /// It has not applied any release yet: it has no site to serve.
    NoConfig,
    /// Its name is taken by a node of the config (which wins).
    NameTaken,
    /// An advertised address that is not an IP address.
    BadAddress(String),
    /// Its id is not a node name (letters, digits, `_`, `-`, `.`).
    BadName,
}

/// The label that sets a registered node's weight for WEIGHTED (default 1).
pub const WEIGHT_LABEL: &str = "weight";

/// The config with the usable registered nodes appended to its `nodes`, and the registered
/// nodes left out, with why. A node with several addresses becomes one node per address
/// (`id`, then `id.2`, `id.3`...). An address advertised with a port (`ip:port`) is probed on
/// that port, whatever `registry_health` says: it is where clients reach that node. A region the config does not define becomes no region: such
/// nodes are chosen last by GEO and CLOSEST.
pub fn merge(
    config: &GslbConfig,
    registry: &[RegisteredNode],
) -> (GslbConfig, Vec<(String, Left)>) {
    let mut out = config.clone();
    let mut left = Vec::new();
    let health = config.registry_health.clone();
    for r in registry {
        if r.drained {
            left.push((r.id.clone(), Left::Drained));
            continue;
        }
        if r.applied_version == 0 {
            left.push((r.id.clone(), Left::NoConfig));
            continue;
        }
        let name_ok =
            r.id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if r.id.is_empty() || !name_ok {
            left.push((r.id.clone(), Left::BadName));
            continue;
        }
        let region = if config.regions.iter().any(|g| g.name == r.region) {
            r.region.clone()
        } else {
            String::new()
        };
        let weight = r
            .labels
            .get(WEIGHT_LABEL)
            .and_then(|w| w.parse::<u32>().ok())
            .unwrap_or(1);
        let mut n = 0;
        for a in &r.addresses {
            let Some((ip, port)) = address(a) else {
                left.push((r.id.clone(), Left::BadAddress(a.clone())));
                continue;
            };
            n += 1;
            let name = if n == 1 {
                r.id.clone()
            } else {
                format!("{}.{n}", r.id)
            };
            if out.nodes.iter().any(|x| x.name == name) {
                left.push((name, Left::NameTaken));
                continue;
            }
            out.nodes.push(Node {
                name,
                address: ip.to_string(),
                region: region.clone(),
                labels: r.labels.clone(),
                weight,
                health: match port {
                    None => health.clone(),
                    Some(port) => Some(HealthCheck {
                        port: u32::from(port),
                        ..health.clone().unwrap_or_default()
                    }),
                },
            });
        }
    }
    (out, left)
}

/// An advertised address: an IP, or an `ip:port`.
fn address(a: &str) -> Option<(IpAddr, Option<u16>)> {
    a.parse::<IpAddr>().ok().map(|ip| (ip, None)).or_else(|| {
        a.parse::<SocketAddr>()
            .ok()
            .map(|s| (s.ip(), Some(s.port())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::gslb::v1::Region;

    fn registered(id: &str, region: &str, addresses: &[&str]) -> RegisteredNode {
        RegisteredNode {
            id: id.into(),
            region: region.into(),
            labels: [("tier".to_string(), "gold".to_string())].into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            drained: false,
            applied_version: 3,
        }
    }

    fn config() -> GslbConfig {
        GslbConfig {
            regions: vec![Region {
                name: "eu".into(),
                latitude: 50.0,
                longitude: 8.0,
            }],
            nodes: vec![Node {
                name: "static-1".into(),
                address: "192.0.2.1".into(),
                ..Node::default()
            }],
            ..GslbConfig::default()
        }
    }

    #[test]
    fn registered_nodes_join_the_config_nodes() {
        let (merged, left) = merge(
            &config(),
            &[
                registered("edge-a", "eu", &["192.0.2.10"]),
                registered(
                    "edge-b",
                    "mars",
                    &["192.0.2.11", "[2001:db8::11]:443", "nope"],
                ),
            ],
        );
        let names: Vec<&str> = merged.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["static-1", "edge-a", "edge-b", "edge-b.2"]);
        assert_eq!(merged.nodes[1].region, "eu");
        assert_eq!(merged.nodes[2].region, "", "unknown region: none");
        assert_eq!(merged.nodes[3].address, "2001:db8::11");
        // Probed where it is reached.
        assert_eq!(merged.nodes[3].health.as_ref().map(|h| h.port), Some(443));
        assert_eq!(merged.nodes[2].health, None);
        assert_eq!(merged.nodes[1].labels["tier"], "gold");
        assert_eq!(
            left,
            [("edge-b".to_string(), Left::BadAddress("nope".into()))]
        );
    }

    #[test]
    fn drained_unconfigured_and_clashing_nodes_are_left_out() {
        let mut drained = registered("edge-a", "eu", &["192.0.2.10"]);
        drained.drained = true;
        let mut fresh = registered("edge-b", "eu", &["192.0.2.11"]);
        fresh.applied_version = 0;
        let clash = registered("static-1", "eu", &["192.0.2.12"]);
        let spaced = registered("edge c", "eu", &["192.0.2.13"]);
        let (merged, left) = merge(&config(), &[drained, fresh, clash, spaced]);
        assert_eq!(merged.nodes.len(), 1);
        assert_eq!(merged.nodes[0].address, "192.0.2.1");
        assert_eq!(
            left,
            [
                ("edge-a".to_string(), Left::Drained),
                ("edge-b".to_string(), Left::NoConfig),
                ("static-1".to_string(), Left::NameTaken),
                ("edge c".to_string(), Left::BadName),
            ]
        );
    }

    #[test]
    fn weight_comes_from_the_weight_label() {
        let mut heavy = registered("edge-a", "eu", &["192.0.2.10"]);
        heavy.labels.insert(WEIGHT_LABEL.into(), "5".into());
        let (merged, _) = merge(&config(), &[heavy]);
        assert_eq!(merged.nodes[1].weight, 5);
    }
}
