//! Scenario 1: a release made through the admin API reaches every edge, in every region, and
//! changes what clients see; a second release changes it again. Three control-plane nodes, two
//! edges in two regions, two origins, one GSLB server.

use std::time::Duration;

use outpost_cluster_tests::{Cluster, config};

const PROPAGATION: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_through_the_api_reaches_every_edge_and_changes_what_clients_see() {
    let mut c = Cluster::new();
    let leader = c.start_control_plane(3).await;
    let followers: Vec<u64> = c.cp_ids().into_iter().filter(|id| *id != leader).collect();
    let site = c.site_listen();
    let blue = c.start_origin("blue").await;
    let green = c.start_origin("green").await;

    // Edges in two regions, each watching a different node (neither of them the leader).
    let eu = c.start_edge("edge-eu", "eu-west", &[followers[0]]).await;
    let us = c.start_edge("edge-us", "us-east", &[followers[1]]).await;
    let gslb = c.start_gslb("cdn.test").await;
    c.wait_gslb_answers(gslb, &[eu, us], PROPAGATION).await;

    // Release 1, made through a follower (forwarded to the leader): the site proxies to blue.
    let api = c.api().clone();
    let via = c.cp(followers[0]).api_url();
    api.put_object(&via, "upstreams", "origin", &config::upstream(&[blue]))
        .await;
    api.put_object(
        &via,
        "applications",
        "site",
        &config::proxy_app(site, "origin"),
    )
    .await;
    let v1 = api.release(&via, "blue").await;
    for e in [eu, us] {
        c.wait_edge_serves(e, "/", "blue", PROPAGATION).await;
    }
    assert!(c.origin("blue").served() > 0, "the edges proxied to blue");

    // Release 2, made through another node: the upstream moves to green.
    let via = c.cp(followers[1]).api_url();
    api.put_object(&via, "upstreams", "origin", &config::upstream(&[green]))
        .await;
    let v2 = api.release(&via, "green").await;
    assert!(v2 > v1);
    for e in [eu, us] {
        c.wait_edge_serves(e, "/", "green", PROPAGATION).await;
        assert_eq!(c.edge_version(e).await, Some(v2), "{}", c.edge(e).name);
    }

    // Every node of the control plane shows both edges on version 2, in their regions.
    let listed = c.wait_api_shows_applied(&[eu, us], v2).await;
    assert_eq!(listed[0]["region"], "eu-west", "{listed:?}");
    assert_eq!(listed[1]["region"], "us-east", "{listed:?}");
    // DNS still steers clients to both edges.
    c.wait_gslb_answers(gslb, &[eu, us], PROPAGATION).await;
}
