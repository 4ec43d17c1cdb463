//! Choosing the addresses of a GSLB answer: a pure function of the record's plan, node health,
//! the client and a random number. No I/O, no clock; the DNS handler supplies everything.
//!
//! Every policy ranks candidates with one primitive, a weighted rendezvous key per node
//! (`key = u^(1/weight)` with `u` a hash of a seed and the node's identity): seeded with a
//! fresh random number it is a weighted random sample without replacement; seeded with the
//! client's subnet it is stable per subnet, and a client only moves when its own node fails.

use std::net::IpAddr;

use crate::geo::RegionMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Failover,
    Weighted,
    Geo,
    Closest,
    AllHealthy,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Failover => "failover",
            Policy::Weighted => "weighted",
            Policy::Geo => "geo",
            Policy::Closest => "closest",
            Policy::AllHealthy => "all_healthy",
        }
    }

    /// Whether the answer depends on where the client is (so the ECS scope matters).
    pub fn uses_client_location(self) -> bool {
        matches!(self, Policy::Geo | Policy::Closest)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightedMode {
    Random,
    StableSubnet,
}

/// What to answer when no candidate is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhenNoneHealthy {
    /// Choose as if every candidate were healthy.
    All,
    /// These addresses.
    Fixed(Vec<IpAddr>),
}

/// An edge node as the selector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub address: IpAddr,
    pub region: Option<usize>,
    pub weight: u32,
    /// A hash of the node's name: its identity for rendezvous hashing, stable across reloads
    /// and independent of its position in the config.
    pub id: u64,
}

/// A GSLB record, ready to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordPlan {
    pub policy: Policy,
    /// Indices into the node list. FAILOVER: priority groups, in order. Other policies: one
    /// group.
    pub groups: Vec<Vec<usize>>,
    /// 0 = every chosen node (ALL_HEALTHY); the builder turns 0 into 1 for the others.
    pub count: usize,
    pub ttl: u32,
    pub weighted_mode: WeightedMode,
    pub when_none_healthy: WhenNoneHealthy,
    pub default_region: Option<usize>,
}

/// The client as far as the answer depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientView {
    /// The client's region from the geo table, if any matched.
    pub region: Option<usize>,
    /// A hash of the client's subnet, for WEIGHTED stable-per-subnet.
    pub subnet_hash: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
}

/// The addresses chosen, and whether they come from the "nothing healthy" rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Choice {
    pub addresses: Vec<IpAddr>,
    pub fallback: bool,
}

/// Chooses the answer for `plan` in `family`. `healthy(i)` tells whether node `i` is up;
/// `random` seeds the random policies. An empty result means the record has no address of
/// that family (NODATA), never that everything is down.
pub fn choose(
    plan: &RecordPlan,
    nodes: &[NodeView],
    healthy: impl Fn(usize) -> bool,
    family: Family,
    client: ClientView,
    regions: &RegionMap,
    random: u64,
) -> Choice {
    let in_family = |i: &usize| {
        nodes
            .get(*i)
            .is_some_and(|n| Family::of(&n.address) == family)
    };
    let groups: Vec<Vec<usize>> = plan
        .groups
        .iter()
        .map(|g| g.iter().copied().filter(in_family).collect())
        .collect();
    let any_candidate = groups.iter().any(|g| !g.is_empty());
    let up: Vec<Vec<usize>> = groups
        .iter()
        .map(|g| g.iter().copied().filter(|&i| healthy(i)).collect())
        .collect();
    if up.iter().any(|g| !g.is_empty()) {
        return Choice {
            addresses: pick(plan, nodes, &up, client, regions, random),
            fallback: false,
        };
    }
    match &plan.when_none_healthy {
        WhenNoneHealthy::All if any_candidate => Choice {
            addresses: pick(plan, nodes, &groups, client, regions, random),
            fallback: true,
        },
        WhenNoneHealthy::All => Choice::default(),
        WhenNoneHealthy::Fixed(addrs) => Choice {
            addresses: addrs
                .iter()
                .copied()
                .filter(|a| Family::of(a) == family)
                .collect(),
            fallback: true,
        },
    }
}

/// Applies the policy to candidate groups that all count as up.
fn pick(
    plan: &RecordPlan,
    nodes: &[NodeView],
    groups: &[Vec<usize>],
    client: ClientView,
    regions: &RegionMap,
    random: u64,
) -> Vec<IpAddr> {
    let all: Vec<usize> = groups.iter().flatten().copied().collect();
    let count = if plan.count == 0 {
        usize::MAX
    } else {
        plan.count
    };
    let seed = match plan.weighted_mode {
        WeightedMode::Random => random,
        WeightedMode::StableSubnet => client.subnet_hash,
    };
    let client_region = client.region.or(plan.default_region);
    let chosen: Vec<usize> = match plan.policy {
        Policy::Failover => {
            let first = groups
                .iter()
                .find(|g| !g.is_empty())
                .cloned()
                .unwrap_or_default();
            ranked(&first, nodes, seed, count)
        }
        Policy::Weighted => ranked(&all, nodes, seed, count),
        Policy::AllHealthy => all.into_iter().take(count).collect(),
        Policy::Geo => match client_region {
            None => ranked(&all, nodes, seed, count),
            Some(home) => {
                // The client's region, or the nearest region that has a candidate.
                let nearest = regions.nearest_first(home).iter().find_map(|&r| {
                    let here: Vec<usize> = all
                        .iter()
                        .copied()
                        .filter(|&i| nodes[i].region == Some(r))
                        .collect();
                    (!here.is_empty()).then_some(here)
                });
                ranked(&nearest.unwrap_or(all), nodes, seed, count)
            }
        },
        Policy::Closest => match client_region {
            None => ranked(&all, nodes, seed, count),
            Some(home) => {
                let mut by_distance: Vec<(f64, u64, usize)> = all
                    .iter()
                    .map(|&i| {
                        let d = nodes[i]
                            .region
                            .map_or(f64::INFINITY, |r| regions.distance_km(home, r));
                        (d, u64::MAX - key(seed, &nodes[i]), i)
                    })
                    .collect();
                by_distance.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                by_distance
                    .into_iter()
                    .take(count)
                    .map(|(_, _, i)| i)
                    .collect()
            }
        },
    };
    chosen.into_iter().map(|i| nodes[i].address).collect()
}

/// The `count` candidates with the highest weighted rendezvous keys, highest first.
fn ranked(candidates: &[usize], nodes: &[NodeView], seed: u64, count: usize) -> Vec<usize> {
    let mut keyed: Vec<(u64, usize)> = candidates
        .iter()
        .map(|&i| (key(seed, &nodes[i]), i))
        .collect();
    keyed.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().take(count).map(|(_, i)| i).collect()
}

/// Weighted rendezvous key, scaled to u64 so that ties are rare and ordering exact:
/// `u^(1/w)` with `u` uniform in (0, 1) from the seed and the node (Efraimidis–Spirakis).
fn key(seed: u64, node: &NodeView) -> u64 {
    let h = mix(seed ^ mix(node.id));
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let w = f64::from(node.weight.max(1));
    (u.powf(1.0 / w) * u64::MAX as f64) as u64
}

/// splitmix64's finaliser: a fast, well-mixed 64-bit hash step.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of a string (FNV-1a then mixed): node identities.
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix(h)
}

#[cfg(test)]
mod tests;
