//! Scenario 4: a rolling restart of every control-plane node (SIGTERM, start again on the same
//! data dir, wait until it has rejoined, then the next). A client polling a write endpoint and
//! one polling a read endpoint, each going on to the next node after a failure, see no failure
//! lasting longer than an election: the longest time without a success is printed, and only
//! checked against a generous bound.

use std::time::Duration;

use outpost_cluster_tests::Cluster;
use outpost_cluster_tests::workload::{ApiLoad, Op};

/// Far above an election (400-800 ms) plus a 3 s wait for a leader: this catches an outage,
/// not a slow machine.
const GENEROUS_GAP: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_control_plane_node_keeps_reads_and_writes_going() {
    let mut c = Cluster::new();
    c.start_control_plane(3).await;
    let api = c.api().clone();
    let urls = c.live_cp_urls();
    let limit = Duration::from_secs(120);
    let writer = ApiLoad::start(Op::Write, api.clone(), urls.clone(), "roll", limit);
    let reader = ApiLoad::start(Op::Read, api.clone(), urls, "", limit);

    for id in c.cp_ids() {
        // Traffic flows through the cluster as it is before each stop.
        let (w0, r0) = (writer.successes(), reader.successes());
        outpost_cluster_tests::wait::wait_until(
            "5 more reads and writes succeed",
            Duration::from_secs(30),
            || {
                let done = writer.successes() >= w0 + 5 && reader.successes() >= r0 + 5;
                async move { done.then_some(()) }
            },
        )
        .await;
        let leader = c.leader().await;
        let clean = c.stop_cp(id).await;
        assert!(clean, "cp{id} exits cleanly on SIGTERM");
        c.restart_cp(id).await;
        eprintln!(
            "cp{id} restarted and rejoined (it {} the leader); {} writes, {} reads so far",
            if id == leader { "was" } else { "was not" },
            writer.successes(),
            reader.successes()
        );
    }
    // Some traffic after the last node is back, so the last gap is closed by a success.
    let (w0, r0) = (writer.successes(), reader.successes());
    outpost_cluster_tests::wait::wait_until(
        "reads and writes go on after the rolling restart",
        Duration::from_secs(30),
        || {
            let done = writer.successes() >= w0 + 5 && reader.successes() >= r0 + 5;
            async move { done.then_some(()) }
        },
    )
    .await;
    let writes = writer.stop().await;
    let reads = reader.stop().await;
    for (what, r) in [("writes", &writes), ("reads", &reads)] {
        eprintln!(
            "{what}: {} ok of {}, {} answered 503, {} unanswered; longest gap without a success {:?}",
            r.successes, r.requests, r.unavailable, r.unanswered, r.longest_gap
        );
        // A node shutting down answers 503 too, never 500.
        assert!(
            r.unexpected.is_empty(),
            "{what}: only 2xx, 503 or no answer: {:?}",
            r.unexpected
        );
        assert!(
            r.longest_gap < GENEROUS_GAP,
            "{what} stalled for {:?}",
            r.longest_gap
        );
    }

    // Every acknowledged write is on every node.
    for id in c.cp_ids() {
        let url = c.cp(id).api_url();
        let r = api.get(&url, "/config/shared_dicts").await.unwrap();
        assert!(r.ok(), "cp{id}: {} {}", r.status, r.text);
        let text = r.text;
        let lost: Vec<&String> = writes
            .acknowledged
            .iter()
            .filter(|n| !text.contains(&format!("\"{n}\"")))
            .collect();
        assert!(lost.is_empty(), "cp{id} lost acknowledged writes {lost:?}");
    }
}
