//! Scenario 3: the whole control plane is down (every node killed with SIGKILL). The edges
//! keep serving the last release; an edge restarted meanwhile serves the config it persisted;
//! the GSLB server, which probes the edges itself, keeps answering with every live edge, drops
//! a dead one and takes it back once it serves again.

use std::time::Duration;

use outpost_cluster_tests::workload::EdgeLoad;
use outpost_cluster_tests::{Cluster, config};

const PROPAGATION: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_outlive_the_whole_control_plane_and_a_restarted_edge_serves_its_persisted_config() {
    let mut c = Cluster::new();
    let leader = c.start_control_plane(3).await;
    let site = c.site_listen();
    let api = c.api().clone();
    let via = c.cp(leader).api_url();
    api.put_object(
        &via,
        "applications",
        "site",
        &config::respond_app(site, "v1"),
    )
    .await;
    api.release(&via, "v1").await;
    api.put_object(
        &via,
        "applications",
        "site",
        &config::respond_app(site, "v2"),
    )
    .await;
    let v2 = api.release(&via, "v2").await;

    let eu = c.start_edge("edge-eu", "eu-west", &[1]).await;
    let us = c.start_edge("edge-us", "us-east", &[2]).await;
    for e in [eu, us] {
        c.wait_edge_serves(e, "/", "v2", PROPAGATION).await;
    }
    let gslb = c.start_gslb("cdn.test").await;
    c.wait_gslb_answers(gslb, &[eu, us], PROPAGATION).await;

    // Every control-plane node dies at once.
    for id in c.cp_ids() {
        c.kill_cp(id);
    }
    assert!(c.wait_cps_down().await, "no control-plane node answers");

    // Both edges keep serving version 2 (50 requests each, none failing).
    let targets = vec![c.edge_target(eu).unwrap(), c.edge_target(us).unwrap()];
    let load = EdgeLoad::start(targets, &["v2"], Duration::from_secs(60));
    load.wait_served(50, Duration::from_secs(30)).await;
    let report = load.stop().await;
    assert_eq!(report.failure_count, 0, "{:?}", report.failures);
    c.wait_gslb_answers(gslb, &[eu, us], PROPAGATION).await;

    // One edge dies: DNS stops sending clients to it, the other edge serves on.
    c.kill_edge(eu);
    c.wait_gslb_answers(gslb, &[us], PROPAGATION).await;
    c.wait_edge_serves(us, "/", "v2", PROPAGATION).await;

    // Restarted with no control plane to ask, it serves the config it persisted, and DNS
    // takes it back.
    c.restart_edge(eu).await;
    c.wait_edge_serves(eu, "/", "v2", PROPAGATION).await;
    assert_eq!(c.edge_version(eu).await, Some(v2));
    c.wait_gslb_answers(gslb, &[eu, us], PROPAGATION).await;
    assert!(c.live_cps().is_empty());
}
