//! Scenario 2: the control-plane leader is killed with SIGKILL while a client keeps writing
//! through the API (to every node in turn, going on to the next one after a failure). The
//! edges keep serving, the two survivors elect a new leader, a release made after the failover
//! reaches the edges (one of them was watching the dead leader and moves to a survivor), and
//! every write that was acknowledged is read back from both survivors.

use std::time::Duration;

use outpost_cluster_tests::workload::{ApiLoad, EdgeLoad, Op};
use outpost_cluster_tests::{Cluster, config};

const PROPAGATION: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_writes_loses_no_acknowledged_write_and_edges_keep_serving() {
    let mut c = Cluster::new();
    let old = c.start_control_plane(3).await;
    let survivors: Vec<u64> = c.cp_ids().into_iter().filter(|id| *id != old).collect();
    let site = c.site_listen();
    let api = c.api().clone();
    let via = c.cp(survivors[0]).api_url();
    api.put_object(
        &via,
        "applications",
        "site",
        &config::respond_app(site, "v1"),
    )
    .await;
    api.release(&via, "v1").await;

    // Each edge knows every control-plane node and tries them in turn; edge-eu watches the
    // leader first, so it has to move to a survivor when the leader dies.
    let eu = c
        .start_edge("edge-eu", "eu-west", &[old, survivors[0], survivors[1]])
        .await;
    let us = c
        .start_edge("edge-us", "us-east", &[survivors[1], old, survivors[0]])
        .await;
    for e in [eu, us] {
        c.wait_edge_serves(e, "/", "v1", PROPAGATION).await;
    }
    let targets = vec![c.edge_target(eu).unwrap(), c.edge_target(us).unwrap()];
    let edges = EdgeLoad::start(targets, &["v1", "v2"], Duration::from_secs(90));

    let writer = ApiLoad::start(
        Op::Write,
        api.clone(),
        c.live_cp_urls(),
        "w",
        Duration::from_secs(90),
    );
    outpost_cluster_tests::wait::wait_until(
        "20 writes are acknowledged before the kill",
        Duration::from_secs(30),
        || {
            let n = writer.successes();
            async move { (n >= 20).then_some(()) }
        },
    )
    .await;
    let before_kill = writer.successes();
    c.kill_cp(old);

    // The survivors agree on a new leader, and writes go on.
    let new = c.wait_leader(&survivors, Some(old)).await;
    outpost_cluster_tests::wait::wait_until(
        "20 more writes are acknowledged after the kill",
        Duration::from_secs(30),
        || {
            let n = writer.successes();
            async move { (n >= before_kill + 20).then_some(()) }
        },
    )
    .await;
    let report = writer.stop().await;
    eprintln!(
        "leader cp{old} killed, cp{new} took over; writes: {} acknowledged, {} answered 503, \
         {} unanswered (the dead node), longest gap {:?}",
        report.acknowledged.len(),
        report.unavailable,
        report.unanswered,
        report.longest_gap
    );
    assert!(
        report.unexpected.is_empty(),
        "only 2xx, 503 or no answer: {:?}",
        report.unexpected
    );

    // A release after the failover reaches both edges.
    let via = c.cp(new).api_url();
    api.put_object(
        &via,
        "applications",
        "site",
        &config::respond_app(site, "v2"),
    )
    .await;
    api.release(&via, "v2").await;
    for e in [eu, us] {
        c.wait_edge_serves(e, "/", "v2", PROPAGATION).await;
    }
    let served = edges.stop().await;
    eprintln!(
        "edges: {} requests, served {:?}, {} failures",
        served.requests, served.served, served.failure_count
    );
    assert_eq!(
        served.failure_count, 0,
        "the edges kept serving: {:?}",
        served.failures
    );
    assert!(served.served.iter().all(|n| *n > 0), "{served:?}");

    // Every acknowledged write is on both survivors (linearizable reads).
    for id in &survivors {
        let url = c.cp(*id).api_url();
        let r = api.get(&url, "/config/shared_dicts").await.unwrap();
        assert!(r.ok(), "cp{id}: {} {}", r.status, r.text);
        let names: Vec<String> = r
            .json()
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|d| d["name"].as_str().map(str::to_string))
            .collect();
        let lost: Vec<&String> = report
            .acknowledged
            .iter()
            .filter(|n| !names.contains(n))
            .collect();
        assert!(lost.is_empty(), "cp{id} lost acknowledged writes {lost:?}");
    }
}
