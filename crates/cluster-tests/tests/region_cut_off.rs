//! Scenario 6: a whole region is cut off. Edges in three regions (two in eu-west, one in
//! eu-central, one in us-east) and a GSLB server answering `near.cdn.test` by the client's
//! region (`POLICY_GEO`), the client located by the EDNS Client Subnet of the query, or by the
//! query's source address in the config's CIDR table. While one eu-west edge is down its
//! clients still get eu-west (the other edge). Once both are gone, eu-west's clients get
//! eu-central, the next closest region, within a generous bound; clients elsewhere see no
//! change. When eu-west returns, its clients get it again.
//!
//! On loopback the region is cut off by killing its edges (SIGKILL) and restarting them. In
//! the namespace variant (root only) their hosts' links go down while the processes keep
//! running, and a client following the answer during the cut is served by eu-central's edge.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use outpost_cluster_tests::config::{self, GslbRegion};
use outpost_cluster_tests::dns::Asker;
use outpost_cluster_tests::edge::EdgeTarget;
use outpost_cluster_tests::{Cluster, netns};

const PROPAGATION: Duration = Duration::from_secs(30);

/// Far above what the GSLB takes (two failed probes 250 ms apart: about half a second, plus a
/// probe timeout when packets are dropped rather than refused). It catches an answer that does
/// not change, not a slow machine.
const FAILOVER_BOUND: Duration = Duration::from_secs(10);

const ZONE: &str = "cdn.test";

fn regions() -> [GslbRegion; 3] {
    [
        GslbRegion {
            name: "eu-west",
            latitude: 48.86,
            longitude: 2.35,
        },
        GslbRegion {
            name: "eu-central",
            latitude: 50.11,
            longitude: 8.68,
        },
        GslbRegion {
            name: "us-east",
            latitude: 40.71,
            longitude: -74.01,
        },
    ]
}

/// Resolvers asking for clients in each region (documentation prefixes, sent as ECS).
fn subnet(a: u8, b: u8, c: u8) -> Asker {
    Asker::in_subnet(IpAddr::V4(Ipv4Addr::new(a, b, c, 0)), 24)
}

/// How the region is cut off and brought back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// SIGKILL its edges, then start them again (loopback).
    KillEdges,
    /// Take its edges' hosts off the network, then put them back (namespaces).
    Links,
}

async fn a_region_cut_off(mut c: Cluster, how: Cut) {
    c.start_control_plane(1).await;
    let site = c.site_listen();
    let api = c.api().clone();
    let via = c.cp(1).api_url();
    api.put_object(
        &via,
        "applications",
        "site",
        &config::respond_app(site, "v1"),
    )
    .await;
    api.release(&via, "v1").await;
    let paris1 = c.start_edge("edge-paris-1", "eu-west", &[1]).await;
    let paris2 = c.start_edge("edge-paris-2", "eu-west", &[1]).await;
    let frankfurt = c.start_edge("edge-frankfurt", "eu-central", &[1]).await;
    let newyork = c.start_edge("edge-newyork", "us-east", &[1]).await;
    for e in [paris1, paris2, frankfurt, newyork] {
        c.wait_edge_serves(e, "/", "v1", PROPAGATION).await;
    }

    // Clients in 198.51.100/24 are in eu-west, 203.0.113/24 in eu-central, 192.0.2/24 in
    // us-east; so is the test's own address (no ECS: located by the query's source).
    let me = c.network().client_ip();
    let cidrs = vec![
        ("198.51.100.0/24".to_string(), "eu-west"),
        ("203.0.113.0/24".to_string(), "eu-central"),
        ("192.0.2.0/24".to_string(), "us-east"),
        (format!("{me}/32"), "eu-west"),
    ];
    let g = c.start_gslb_geo(ZONE, &regions(), &cidrs).await;
    let in_paris = subnet(198, 51, 100);
    let in_frankfurt = subnet(203, 0, 113);
    let in_newyork = subnet(192, 0, 2);
    let direct = Asker::from(me);

    // Every client gets the edges of its own region.
    c.wait_gslb_answer(g, "near", in_paris, &[paris1, paris2], PROPAGATION)
        .await;
    c.wait_gslb_answer(g, "near", direct, &[paris1, paris2], PROPAGATION)
        .await;
    c.wait_gslb_answer(g, "near", in_frankfurt, &[frankfurt], PROPAGATION)
        .await;
    c.wait_gslb_answer(g, "near", in_newyork, &[newyork], PROPAGATION)
        .await;

    let cut = |c: &mut Cluster, e: usize| match how {
        Cut::KillEdges => c.kill_edge(e),
        Cut::Links => c.take_offline(e),
    };

    // One eu-west edge down: eu-west's clients still get eu-west, the edge that is left.
    cut(&mut c, paris1);
    c.wait_gslb_answer(g, "near", in_paris, &[paris2], FAILOVER_BOUND)
        .await;

    // The whole region: its clients get eu-central, the next closest.
    cut(&mut c, paris2);
    let took = c
        .wait_gslb_answer(g, "near", in_paris, &[frankfurt], FAILOVER_BOUND)
        .await;
    eprintln!("eu-west cut off: its clients got eu-central after {took:?}");
    c.wait_gslb_answer(g, "near", direct, &[frankfurt], FAILOVER_BOUND)
        .await;
    // Clients of the other regions see no change.
    for _ in 0..5 {
        let f = c.gslb_answer(g, "near", in_frankfurt).await.unwrap();
        assert_eq!(f, vec![c.edge(frankfurt).host.ip], "eu-central's clients");
        let n = c.gslb_answer(g, "near", in_newyork).await.unwrap();
        assert_eq!(n, vec![c.edge(newyork).host.ip], "us-east's clients");
    }
    if how == Cut::Links {
        // Each edge has its own address here: following the answer reaches eu-central's edge.
        for ip in c.gslb_answer(g, "near", in_paris).await.unwrap() {
            let target = EdgeTarget {
                name: format!("the edge at {ip}"),
                base: format!("http://{ip}:{}", site.port()),
                pid: None,
            };
            let r = target.get("/").await.expect("the answered edge serves");
            assert_eq!((r.status, r.body.as_str()), (200, "v1"));
            assert_eq!(r.pid, c.edge(frankfurt).pid(), "answered by edge-frankfurt");
        }
    }

    // eu-west comes back: its clients get it again.
    for e in [paris1, paris2] {
        match how {
            Cut::KillEdges => c.restart_edge(e).await,
            Cut::Links => c.set_edge_online(e, true),
        }
    }
    let took = c
        .wait_gslb_answer(g, "near", in_paris, &[paris1, paris2], FAILOVER_BOUND)
        .await;
    eprintln!("eu-west back: its clients got it again after {took:?}");
    c.wait_gslb_answer(g, "near", direct, &[paris1, paris2], FAILOVER_BOUND)
        .await;
    c.wait_gslb_answer(g, "near", in_frankfurt, &[frankfurt], FAILOVER_BOUND)
        .await;
    for e in [paris1, paris2] {
        c.wait_edge_serves(e, "/", "v1", PROPAGATION).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_whole_region_is_cut_off_its_clients_get_the_next_closest_region_then_their_own_again()
 {
    a_region_cut_off(Cluster::new(), Cut::KillEdges).await;
}

#[test]
fn in_namespaces_a_region_whose_links_are_down_is_replaced_by_the_next_closest_until_it_returns() {
    netns::run_scenario(None, |c| a_region_cut_off(c, Cut::Links));
}
