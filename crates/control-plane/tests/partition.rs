//! A partition that cuts real links: the test runs in a network namespace of its own, each
//! control-plane node on its own 127.0.0.x, and the links between the leader and the others
//! are cut with routing rules (blackhole) in that namespace, then restored.
//!
//! Needs root (to create the namespace); without it the test says so and passes nothing.

mod support;

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use support::cluster::Cluster;
use support::fast_raft;

fn ip(args: &str) {
    let status = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("runs ip (iproute2)");
    assert!(status.success(), "ip {args}");
}

/// Moves this thread (and the threads it starts later) into a new network namespace with
/// loopback up, and makes room for rules ahead of local delivery. False if not permitted.
fn private_network() -> bool {
    // SAFETY: unshare only changes this thread's namespaces; no memory is involved.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return false;
    }
    ip("link set lo up");
    ip("rule add pref 100 lookup local");
    ip("rule del pref 0");
    true
}

fn node_ip(id: u64) -> IpAddr {
    IpAddr::from([127, 0, 0, id as u8])
}

fn cut(a: u64, b: u64, on: bool) {
    let verb = if on { "add" } else { "del" };
    for (x, y) in [(a, b), (b, a)] {
        ip(&format!(
            "rule {verb} pref 10 from {} to {} blackhole",
            node_ip(x),
            node_ip(y)
        ));
    }
}

#[test]
fn a_partitioned_leader_commits_nothing_and_every_node_converges_after_healing() {
    if !private_network() {
        eprintln!("skipped: creating a network namespace needs root");
        return;
    }
    // Built after unshare: the runtime's threads inherit the namespace.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ips: Vec<IpAddr> = (1..=3).map(node_ip).collect();
        let client = Some(IpAddr::from([127, 0, 0, 100]));
        let c = Cluster::start_on(&ips, fast_raft(1000), client).await;
        let old = c.leader().await;
        let others: Vec<u64> = (1..=3).filter(|i| *i != old).collect();
        for o in &others {
            cut(old, *o, true);
        }

        // The majority elects a new leader and goes on.
        let deadline = Instant::now() + Duration::from_secs(10);
        let new = loop {
            let s = c.node(others[0]).cluster().status();
            if let Some(l) = s.leader
                && l != old
                && c.node(others[1]).cluster().status().leader == Some(l)
            {
                break l;
            }
            assert!(Instant::now() < deadline, "the majority elected no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let w = c
            .api(new)
            .put(
                "/api/v1/config/shared_dicts/majority",
                r#"{"capacityBytes":8192}"#,
            )
            .await;
        assert_eq!(w.status, 201, "{}", w.text);

        // The old leader cannot commit: its write is refused as unavailable, and so is a
        // linearizable read; a stale read still answers from what it has.
        let w = c
            .api(old)
            .put(
                "/api/v1/config/shared_dicts/minority",
                r#"{"capacityBytes":8192}"#,
            )
            .await;
        assert_eq!(w.status, 503, "{}", w.text);
        let r = c.api(old).get("/api/v1/config/shared_dicts").await;
        assert_eq!(r.status, 503, "{}", r.text);
        let stale = c
            .api(old)
            .get("/api/v1/config/shared_dicts?stale=true")
            .await;
        assert_eq!(stale.status, 200, "{}", stale.text);
        assert!(!stale.text.contains("majority"), "{}", stale.text);
        // It knows it is cut off: its metrics stop calling it leader, and it refuses watches
        // so that nodes go to the majority (checked once a second: bounded wait).
        let deadline = Instant::now() + Duration::from_secs(10);
        while *c.node(old).cluster().contact().borrow() {
            assert!(
                Instant::now() < deadline,
                "the old leader never saw it was cut off"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let metrics = c.api(old).get("/metrics").await.text;
        assert!(metrics.contains("outpost_cp_quorum_contact 0"), "{metrics}");
        assert!(metrics.contains("outpost_cp_raft_is_leader 0"), "{metrics}");
        assert!(!*c.node(old).cluster().contact().borrow());

        for o in &others {
            cut(old, *o, false);
        }
        c.caught_up(old).await;
        for id in 1..=3 {
            let got = c.api(id).get("/api/v1/config/shared_dicts").await;
            assert_eq!(got.status, 200, "node {id}: {}", got.text);
            assert!(got.text.contains("majority"), "node {id}: {}", got.text);
            assert!(!got.text.contains("minority"), "node {id}: {}", got.text);
            assert_eq!(c.node(id).cluster().status().leader, Some(new), "node {id}");
        }
        c.shutdown().await;
    });
}
