use std::collections::HashMap;
use std::net::IpAddr;

use super::*;
use crate::geo::Region;

/// fra-1, fra-2 (Frankfurt), ams-1 (Amsterdam), nyc-1 (New York), and v6-1 in Frankfurt.
fn world() -> (Vec<NodeView>, RegionMap) {
    let regions = RegionMap::new(vec![
        Region {
            name: "fra".into(),
            latitude: 50.1,
            longitude: 8.7,
        },
        Region {
            name: "ams".into(),
            latitude: 52.4,
            longitude: 4.9,
        },
        Region {
            name: "nyc".into(),
            latitude: 40.7,
            longitude: -74.0,
        },
    ]);
    let node = |name: &str, ip: &str, region: usize, weight: u32| NodeView {
        address: ip.parse().unwrap(),
        region: Some(region),
        weight,
        id: hash_str(name),
    };
    let nodes = vec![
        node("fra-1", "192.0.2.1", 0, 1),
        node("fra-2", "192.0.2.2", 0, 1),
        node("ams-1", "192.0.2.3", 1, 1),
        node("nyc-1", "192.0.2.4", 2, 1),
        node("v6-1", "2001:db8::1", 0, 1),
    ];
    (nodes, regions)
}

fn plan(policy: Policy, groups: Vec<Vec<usize>>, count: usize) -> RecordPlan {
    RecordPlan {
        policy,
        groups,
        count,
        ttl: 20,
        weighted_mode: WeightedMode::Random,
        when_none_healthy: WhenNoneHealthy::All,
        default_region: None,
    }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn run(p: &RecordPlan, down: &[usize], client: ClientView, random: u64) -> Choice {
    let (nodes, regions) = world();
    choose(
        p,
        &nodes,
        |i| !down.contains(&i),
        Family::V4,
        client,
        &regions,
        random,
    )
}

fn in_region(region: usize) -> ClientView {
    ClientView {
        region: Some(region),
        subnet_hash: 7,
    }
}

#[test]
fn failover_answers_from_the_first_group_with_a_healthy_node() {
    let p = plan(Policy::Failover, vec![vec![0], vec![2, 3]], 1);
    assert_eq!(run(&p, &[], in_region(2), 1).addresses, ips(&["192.0.2.1"]));
    let second = run(&p, &[0], in_region(2), 1);
    assert!(!second.fallback);
    assert_eq!(second.addresses.len(), 1);
    assert!(ips(&["192.0.2.3", "192.0.2.4"]).contains(&second.addresses[0]));
    // Never mixes groups, even when asked for more addresses than the group has.
    let p = plan(Policy::Failover, vec![vec![0, 1], vec![2, 3]], 4);
    let mut got = run(&p, &[], in_region(2), 9).addresses;
    got.sort();
    assert_eq!(got, ips(&["192.0.2.1", "192.0.2.2"]));
}

#[test]
fn weighted_random_follows_the_weights() {
    let (mut nodes, regions) = world();
    nodes[0].weight = 3;
    let p = plan(Policy::Weighted, vec![vec![0, 1]], 1);
    let mut hits: HashMap<IpAddr, u32> = HashMap::new();
    for r in 0..4000u64 {
        let c = choose(
            &p,
            &nodes,
            |_| true,
            Family::V4,
            ClientView::default(),
            &regions,
            mix(r),
        );
        *hits.entry(c.addresses[0]).or_default() += 1;
    }
    let share = f64::from(hits[&"192.0.2.1".parse::<IpAddr>().unwrap()]) / 4000.0;
    assert!((share - 0.75).abs() < 0.04, "weight 3 of 4 got {share}");
}

#[test]
fn weighted_stable_keeps_a_subnet_on_its_node_until_that_node_fails() {
    let mut p = plan(Policy::Weighted, vec![vec![0, 1, 2, 3]], 1);
    p.weighted_mode = WeightedMode::StableSubnet;
    let client = |s: u64| ClientView {
        region: None,
        subnet_hash: mix(s),
    };
    let before: Vec<IpAddr> = (0..200)
        .map(|s| run(&p, &[], client(s), s * 31).addresses[0])
        .collect();
    // Same subnet, other random numbers: same answer.
    for s in 0..200 {
        assert_eq!(
            run(&p, &[], client(s), 12345).addresses[0],
            before[s as usize]
        );
    }
    // Node 0 fails: only its clients move.
    let dead: IpAddr = "192.0.2.1".parse().unwrap();
    let mut moved = 0;
    for s in 0..200u64 {
        let now = run(&p, &[0], client(s), 0).addresses[0];
        assert_ne!(now, dead);
        if before[s as usize] != dead {
            assert_eq!(now, before[s as usize], "subnet {s} moved needlessly");
        } else {
            moved += 1;
        }
    }
    assert!(
        moved > 20,
        "about a quarter of subnets were on node 0, got {moved}"
    );
}

#[test]
fn geo_answers_from_the_client_region_then_the_next_closest() {
    let p = plan(Policy::Geo, vec![vec![0, 1, 2, 3]], 2);
    let mut got = run(&p, &[], in_region(0), 5).addresses;
    got.sort();
    assert_eq!(got, ips(&["192.0.2.1", "192.0.2.2"]));
    // Frankfurt down: Amsterdam is closer than New York.
    assert_eq!(
        run(&p, &[0, 1], in_region(0), 5).addresses,
        ips(&["192.0.2.3"])
    );
    // Amsterdam down too: New York.
    assert_eq!(
        run(&p, &[0, 1, 2], in_region(0), 5).addresses,
        ips(&["192.0.2.4"])
    );
    // A New York client stays home.
    assert_eq!(run(&p, &[], in_region(2), 5).addresses, ips(&["192.0.2.4"]));
}

#[test]
fn geo_uses_the_default_region_for_unknown_clients() {
    let mut p = plan(Policy::Geo, vec![vec![0, 1, 2, 3]], 1);
    p.default_region = Some(2);
    assert_eq!(
        run(&p, &[], ClientView::default(), 5).addresses,
        ips(&["192.0.2.4"])
    );
    p.default_region = None;
    assert_eq!(run(&p, &[], ClientView::default(), 5).addresses.len(), 1);
}

#[test]
fn closest_ranks_every_healthy_node_by_distance() {
    let p = plan(Policy::Closest, vec![vec![0, 2, 3]], 2);
    assert_eq!(
        run(&p, &[], in_region(2), 5).addresses,
        ips(&["192.0.2.4", "192.0.2.3"]),
        "New York, then Amsterdam (closer to New York than Frankfurt)"
    );
    assert_eq!(
        run(&p, &[3], in_region(2), 5).addresses,
        ips(&["192.0.2.3", "192.0.2.1"])
    );
}

#[test]
fn all_healthy_lists_every_healthy_node_in_config_order() {
    let p = plan(Policy::AllHealthy, vec![vec![0, 1, 2, 3]], 0);
    assert_eq!(
        run(&p, &[1], in_region(0), 5).addresses,
        ips(&["192.0.2.1", "192.0.2.3", "192.0.2.4"])
    );
    let p = plan(Policy::AllHealthy, vec![vec![0, 1, 2, 3]], 2);
    assert_eq!(run(&p, &[], in_region(0), 5).addresses.len(), 2);
}

#[test]
fn nothing_healthy_answers_everything_or_the_fixed_addresses() {
    let p = plan(Policy::AllHealthy, vec![vec![0, 1]], 0);
    let c = run(&p, &[0, 1], in_region(0), 5);
    assert!(c.fallback);
    assert_eq!(c.addresses, ips(&["192.0.2.1", "192.0.2.2"]));

    let mut p = plan(Policy::Failover, vec![vec![0], vec![1]], 1);
    p.when_none_healthy = WhenNoneHealthy::Fixed(ips(&["203.0.113.1", "2001:db8::99"]));
    let c = run(&p, &[0, 1], in_region(0), 5);
    assert!(c.fallback);
    assert_eq!(c.addresses, ips(&["203.0.113.1"]));
}

#[test]
fn each_family_is_chosen_from_its_own_addresses() {
    let (nodes, regions) = world();
    let p = plan(Policy::AllHealthy, vec![vec![0, 4]], 0);
    let v6 = choose(&p, &nodes, |_| true, Family::V6, in_region(0), &regions, 1);
    assert_eq!(v6.addresses, ips(&["2001:db8::1"]));
    // No IPv6 candidate at all: no data, not a fallback.
    let p = plan(Policy::AllHealthy, vec![vec![0, 1]], 0);
    let v6 = choose(&p, &nodes, |_| false, Family::V6, in_region(0), &regions, 1);
    assert_eq!(v6, Choice::default());
}
