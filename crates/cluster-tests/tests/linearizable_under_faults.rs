//! Scenario 8: the admin API stays linearizable while nodes fail. Four clients use three keys
//! of the working config as registers (write: `PUT /config/shared_dicts/kN` with a value of
//! its own as `capacityBytes`; read: `GET` of the same path), each sending every request to the
//! next node in turn. Meanwhile the leader is SIGKILLed and restarted, then a follower; in the
//! namespace variant the leader is also partitioned away and healed. Every operation is
//! recorded (invocation and completion on one monotonic clock, the operation, the outcome;
//! a 503, a 409 or no answer makes a write indeterminate), and the history must be
//! linearizable, key by key, as a register (`outpost_cluster_tests::linearizability`).

use std::time::{Duration, Instant};

use outpost_cluster_tests::history::{Plan, RegisterClients};
use outpost_cluster_tests::linearizability::Outcome;
use outpost_cluster_tests::{Cluster, linearizability, netns};

/// The longest one step of the schedule may wait for the clients to get on.
const STEP: Duration = Duration::from_secs(40);

/// Operations with a known outcome between two faults.
const OPS_PER_STEP: usize = 40;

const PLAN: Plan = Plan {
    clients: 4,
    keys: 3,
    max_ops_per_client: 1500,
    limit: Duration::from_secs(200),
    seed: 0x0075_7470_6f73,
};

async fn registers_under_faults(mut c: Cluster, regions: &[&str], partition: bool) {
    c.start_control_plane_in(regions).await;
    let clients = RegisterClients::start(c.api().clone(), c.live_cp_urls(), PLAN);
    clients.wait_progress(OPS_PER_STEP, STEP).await;

    // The leader dies, and comes back.
    let old = c.leader().await;
    c.kill_cp(old);
    let survivors: Vec<u64> = c.cp_ids().into_iter().filter(|id| *id != old).collect();
    let new = c.wait_leader(&survivors, Some(old)).await;
    eprintln!("cp{old} (leader) killed; cp{new} leads");
    clients.wait_progress(OPS_PER_STEP, STEP).await;
    c.restart_cp(old).await;
    clients.wait_progress(OPS_PER_STEP, STEP).await;

    // A follower dies, and comes back.
    let leader = c.leader().await;
    let follower = c.cp_ids().into_iter().find(|id| *id != leader).unwrap();
    c.kill_cp(follower);
    eprintln!("cp{follower} (follower) killed");
    clients.wait_progress(OPS_PER_STEP, STEP).await;
    c.restart_cp(follower).await;
    clients.wait_progress(OPS_PER_STEP, STEP).await;

    if partition {
        // The leader is cut off from the others; clients still reach it.
        let leader = c.leader().await;
        c.isolate_cp(leader);
        let majority: Vec<u64> = c.cp_ids().into_iter().filter(|id| *id != leader).collect();
        let new = c.wait_leader(&majority, Some(leader)).await;
        eprintln!("cp{leader} (leader) partitioned away; cp{new} leads the majority");
        clients.wait_progress(OPS_PER_STEP, STEP).await;
        c.reconnect_cp(leader);
        c.wait_rejoined(leader).await;
        clients.wait_progress(OPS_PER_STEP, STEP).await;
    }

    let recorded = clients.stop().await;
    let (written, read, unknown) = recorded.counts();
    eprintln!(
        "history: {} operations: {written} writes acknowledged, {read} reads, {unknown} \
         indeterminate {:?}",
        recorded.history.len(),
        recorded.indeterminate
    );
    let mut took: Vec<Duration> = recorded
        .history
        .iter()
        .filter(|e| e.outcome != Outcome::Indeterminate)
        .map(|e| e.completed - e.invoked)
        .collect();
    took.sort();
    let span = recorded
        .history
        .last()
        .map_or(Duration::ZERO, |e| e.completed);
    eprintln!(
        "over {span:?}: median operation {:?}, slowest {:?}",
        took.get(took.len() / 2).copied().unwrap_or_default(),
        took.last().copied().unwrap_or_default()
    );
    let text: String = recorded.history.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(c.dir().join("history.txt"), text).expect("history.txt");
    assert!(
        recorded.unexpected.is_empty(),
        "only 2xx, 404 (reads), 409 (writes), 503 or no answer: {:?}",
        recorded.unexpected
    );
    assert!(written > 0 && read > 0, "the clients got work done");

    let started = Instant::now();
    let violations = linearizability::check(&recorded.history);
    eprintln!(
        "linearizability checked in {:?}: {} violation(s)",
        started.elapsed(),
        violations.len()
    );
    for v in &violations {
        eprintln!("{v}");
    }
    assert!(
        violations.is_empty(),
        "the history is not linearizable (full history in {}/history.txt)",
        c.dir().display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_stays_linearizable_while_nodes_are_killed_and_restarted() {
    registers_under_faults(Cluster::new(), &["", "", ""], false).await;
}

#[test]
fn in_namespaces_the_admin_api_stays_linearizable_through_kills_and_a_partition() {
    netns::run_scenario(None, |c| {
        registers_under_faults(c, &["eu-west", "us-east", "ap-south"], true)
    });
}
