//! A real three-node control plane: Raft over gRPC on loopback, each node with its own SQLite
//! file. Nodes are stopped and restarted on the same addresses and data; every wait is bounded.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::Cluster;
use support::{Api, fast_raft};

fn dict_body() -> &'static str {
    r#"{"capacityBytes": 8192}"#
}

fn names(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_takes_writes_and_every_node_reads_them() {
    let c = Cluster::start(3, fast_raft(1000)).await;
    let status = c.api(1).get("/api/v1/cluster").await.json();
    assert_eq!(status["voters"], serde_json::json!([1, 2, 3]));
    let leader = c.leader().await;
    let follower = if leader == 1 { 2 } else { 1 };

    // A write through a follower is forwarded to the leader.
    let put = c
        .api(follower)
        .put("/api/v1/config/shared_dicts/from_follower", dict_body())
        .await;
    assert_eq!(put.status, 201, "{}", put.text);
    // A linearizable read on any node sees it at once.
    for id in 1..=3 {
        let got = c.api(id).get("/api/v1/config/shared_dicts").await.json();
        assert_eq!(names(&got), vec!["from_follower"], "node {id}");
    }
    // A release made through one node reaches watchers of every node's state.
    let release = c.api(3).post("/api/v1/releases", r#"{"note":"one"}"#).await;
    assert_eq!(release.status, 201, "{}", release.text);
    for id in 1..=3 {
        let r = c.api(id).get("/api/v1/releases/1").await;
        assert_eq!(r.status, 200, "node {id}");
    }
    // A token made through one node authenticates on another straight away.
    let made = c
        .api(2)
        .post("/api/v1/tokens", r#"{"name":"ci","role":"viewer"}"#)
        .await
        .json();
    let viewer = Api::new(c.node(3), made["token"].as_str().unwrap());
    assert_eq!(viewer.get("/api/v1/releases").await.status, 200);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_writes_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3, fast_raft(1000)).await;
    let old_leader = c.leader().await;
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != old_leader).collect();
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let mut i = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Writes go round-robin to every running node; the leader is stopped after 20.
    while acknowledged.len() < 60 && i < 400 && Instant::now() < deadline {
        if i == 20 {
            c.stop(old_leader).await;
        }
        let targets: Vec<u64> = if i < 20 {
            vec![1, 2, 3]
        } else {
            survivors.clone()
        };
        let id = targets[i % targets.len()];
        let name = format!("d{i}");
        let reply = c
            .api(id)
            .try_call(
                "PUT",
                &format!("/api/v1/config/shared_dicts/{name}"),
                Some(dict_body()),
            )
            .await;
        match reply {
            Some(r) if r.status == 201 => acknowledged.push(name),
            Some(r) => {
                assert_eq!(r.status, 503, "only 'no leader' is acceptable: {}", r.text);
                refused += 1;
            }
            None => refused += 1,
        }
        i += 1;
    }
    assert!(
        acknowledged.len() >= 60,
        "writes resumed after the failover"
    );
    let new_leader = c.leader().await;
    assert_ne!(new_leader, old_leader);
    for id in &survivors {
        let got = names(&c.api(*id).get("/api/v1/config/shared_dicts").await.json());
        for name in &acknowledged {
            assert!(got.contains(name), "node {id} lost acknowledged {name}");
        }
    }
    eprintln!(
        "{} acknowledged, {refused} refused during the election",
        acknowledged.len()
    );
    // The old leader comes back as a follower and converges.
    c.restart(old_leader).await;
    c.caught_up(old_leader).await;
    let got = names(
        &c.api(old_leader)
            .get("/api/v1/config/shared_dicts?stale=true")
            .await
            .json(),
    );
    for name in &acknowledged {
        assert!(got.contains(name), "restarted node misses {name}");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_catches_up_from_a_snapshot() {
    let mut c = Cluster::start(3, fast_raft(10)).await;
    let leader = c.leader().await;
    let lagging = if leader == 3 { 2 } else { 3 };
    let before = c.node(lagging).cluster().status().last_log_index.unwrap();
    c.stop(lagging).await;
    for i in 0..40 {
        let r = c
            .api(leader)
            .put(&format!("/api/v1/config/shared_dicts/s{i}"), dict_body())
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    // The leader compacted its log past what the stopped node has: only a snapshot helps.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.node(leader).cluster().status().purged_index.unwrap_or(0) <= before {
        assert!(Instant::now() < deadline, "the leader never purged its log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.restart(lagging).await;
    c.caught_up(lagging).await;
    let status = c.node(lagging).cluster().status();
    assert!(
        status.snapshot_index.unwrap_or(0) > before,
        "installed a snapshot: {status:?}"
    );
    let got = c
        .api(lagging)
        .get("/api/v1/config/shared_dicts?stale=true")
        .await
        .json();
    assert_eq!(got.as_array().unwrap().len(), 40);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_and_removed_at_run_time() {
    let mut c = Cluster::start(3, fast_raft(1000)).await;
    let leader = c.leader().await;
    let gone = if leader == 3 { 2 } else { 3 };
    let r = c
        .api(leader)
        .delete(&format!("/api/v1/cluster/nodes/{gone}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let status = c.api(leader).get("/api/v1/cluster").await.json();
    assert_eq!(status["members"].as_array().unwrap().len(), 2);
    c.stop(gone).await;
    // Two voters left: both are needed, and both are there.
    let w = c
        .api(leader)
        .put("/api/v1/config/shared_dicts/after", dict_body())
        .await;
    assert_eq!(w.status, 201, "{}", w.text);
    // Asking to remove a stranger is refused with a reason.
    let r = c.api(leader).delete("/api/v1/cluster/nodes/9").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("not a member"), "{}", r.text);
    // A bad address is refused before anything happens.
    let r = c
        .api(leader)
        .post(
            "/api/v1/cluster/nodes",
            r#"{"id":4,"grpcAddr":"nowhere","apiAddr":"127.0.0.1:1"}"#,
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("grpcAddr"), "{}", r.text);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_restarted_keeps_all_data() {
    let mut c = Cluster::start(3, fast_raft(15)).await;
    for i in 0..25 {
        let r = c
            .api((i % 3) + 1)
            .put(&format!("/api/v1/config/shared_dicts/k{i}"), dict_body())
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    assert_eq!(
        c.api(1)
            .post("/api/v1/releases", r#"{"note":"r"}"#)
            .await
            .status,
        201
    );
    for id in 1..=3 {
        c.stop(id).await;
    }
    for id in 1..=3 {
        c.restart(id).await;
    }
    c.leader().await;
    for id in 1..=3 {
        let got = c.api(id).get("/api/v1/config/shared_dicts").await.json();
        assert_eq!(got.as_array().unwrap().len(), 25, "node {id}");
        assert_eq!(c.api(id).get("/api/v1/releases/1").await.status, 200);
    }
    let w = c
        .api(2)
        .put("/api/v1/config/shared_dicts/more", dict_body())
        .await;
    assert_eq!(w.status, 201, "{}", w.text);
    c.shutdown().await;
}
