//! Scenario 7: the control-plane leader is partitioned away from the two other nodes, while
//! clients can still reach every node. The old leader, now a minority of one, accepts no
//! write: each one it gets (an edit, a delete, a release, a rollback) is answered 503 within a
//! bounded wait, and none of them is ever applied. Its linearizable reads get 503 too, while
//! `?stale=true` still answers from what it has. The majority elects a leader and takes writes
//! and a release. After healing, every node converges to the same state: the same releases
//! and the same working config, read with `?stale=true` from each node, and an edge that was
//! watching the old leader runs the majority's release.
//!
//! During the partition the cut-off node knows it is cut off: it ends its watch streams, so the
//! edge that watched it moves to a majority node and gets the majority's release before the
//! partition heals, and its `outpost_cp_raft_is_leader` drops to 0.
//!
//! Links are cut with blackhole routes: on loopback inside a private network namespace the
//! test enters (routing rules on the two nodes' addresses), in the namespace variant in each
//! node's own namespace. Both need root; without it each says so and checks nothing.

use std::time::{Duration, Instant};

use outpost_cluster_tests::api::{AdminApi, Reply};
use outpost_cluster_tests::wait::{poll_until, wait_until};
use outpost_cluster_tests::{Cluster, config, netns, partition};
use serde_json::{Value, json};

/// The longest a request to the minority may take to be answered. The control plane waits up
/// to 3 s for a leader before answering 503, and edits through one node take turns, so the
/// second of the two edits sent at once is answered after about 6 s. This catches a request
/// left hanging.
const MINORITY_ANSWER: Duration = Duration::from_secs(9);

const CONVERGENCE: Duration = Duration::from_secs(30);

/// How long the edge may take to get release 2 during the partition: the cut-off node's
/// contact check (1 s), its grace (3 s), the edge's reconnection; a generous outage bound.
const EDGE_LOOK: Duration = Duration::from_secs(20);

/// A request to the isolated node, how long its answer took, and the answer.
async fn timed(
    what: &'static str,
    f: impl std::future::Future<Output = Result<Reply, outpost_cluster_tests::api::NoAnswer>>,
) -> (&'static str, Duration, Result<Reply, String>) {
    let t = Instant::now();
    let r = f.await.map_err(|e| e.to_string());
    (what, t.elapsed(), r)
}

/// `GET path?stale=true` on every node: each node's own state, as JSON.
async fn stale_views(api: &AdminApi, urls: &[String], path: &str) -> Option<Vec<Value>> {
    let mut views = Vec::new();
    for url in urls {
        let r = api.get(url, &format!("{path}?stale=true")).await.ok()?;
        if !r.ok() {
            return None;
        }
        views.push(r.json());
    }
    Some(views)
}

async fn the_leader_partitioned_away(mut c: Cluster, regions: &[&str]) {
    let old = c.start_control_plane_in(regions).await;
    let majority: Vec<u64> = c.cp_ids().into_iter().filter(|id| *id != old).collect();
    let api = c.api().clone();
    let old_url = c.cp(old).api_url();
    api.put_object(&old_url, "shared_dicts", "before", &config::shared_dict())
        .await;
    let v1 = api.release(&old_url, "before the partition").await;

    // An edge watching the old leader first (then the others), on version 1.
    let mut watch_order = vec![old];
    watch_order.extend(&majority);
    let edge = c.start_edge("edge-eu", "eu-west", &watch_order).await;
    // Its report is committed: nothing it does next needs a write.
    c.wait_api_shows_applied(&[edge], v1).await;

    c.isolate_cp(old);
    let new = c.wait_leader(&majority, Some(old)).await;
    let new_url = c.cp(new).api_url();
    eprintln!("cp{old} cut off; cp{new} leads the majority {majority:?}");

    // The minority gets writes of every kind, and reads, at the same time.
    let dict = config::shared_dict();
    let answers = {
        let (api, u) = (&api, old_url.as_str());
        let rollback = format!("/releases/{v1}/rollback");
        let note = json!({ "note": "from the minority" });
        let empty = json!({});
        let (a, b, c2, d, e, f) = tokio::join!(
            timed(
                "PUT shared_dicts/minority",
                api.put(u, "/config/shared_dicts/minority", &dict)
            ),
            timed(
                "DELETE shared_dicts/before",
                api.delete(u, "/config/shared_dicts/before")
            ),
            timed("POST /releases", api.post(u, "/releases", &note)),
            timed("POST /releases/1/rollback", api.post(u, &rollback, &empty)),
            timed(
                "GET shared_dicts (linearizable)",
                api.get(u, "/config/shared_dicts")
            ),
            timed(
                "GET shared_dicts?stale=true",
                api.get(u, "/config/shared_dicts?stale=true")
            ),
        );
        [a, b, c2, d, e, f]
    };
    for (what, took, r) in &answers {
        match r {
            Ok(r) => eprintln!("minority: {what}: {} after {took:?}: {}", r.status, r.text),
            Err(e) => eprintln!("minority: {what}: no answer after {took:?}: {e}"),
        }
    }
    for (what, took, r) in &answers[..5] {
        let r = r
            .as_ref()
            .unwrap_or_else(|e| panic!("{what} on the minority got no answer: {e}"));
        assert_eq!(r.status, 503, "{what} on the minority: {}", r.text);
        let message = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            message.starts_with("no leader is reachable")
                || message.starts_with("the outcome is unknown"),
            "{what}: {message}"
        );
        assert!(*took < MINORITY_ANSWER, "{what} took {took:?}");
    }
    let (_, _, stale) = &answers[5];
    let stale = stale.as_ref().expect("a stale read answers");
    assert_eq!(stale.status, 200, "{}", stale.text);
    assert!(stale.text.contains("\"before\""), "{}", stale.text);

    // What the cut-off node says of itself (printed: openraft keeps calling it leader), and
    // its metrics, which must not (checked once a second: a bounded wait).
    if let Some(s) = api.cluster_status(&old_url).await {
        eprintln!(
            "cp{old} cut off says: state {}, leader {}, term {}",
            s["state"], s["leader"], s["term"]
        );
    }
    let http = outpost_cluster_tests::api::http_client(Duration::from_secs(5));
    let not_leader = poll_until(Duration::from_secs(10), || {
        let (http, url) = (&http, &old_url);
        async move {
            let text = http
                .get(format!("{url}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.lines()
                .any(|l| l == "outpost_cp_raft_is_leader 0")
                .then_some(())
        }
    })
    .await;
    assert!(
        not_leader.is_some(),
        "cp{old}, cut off, still reports outpost_cp_raft_is_leader 1"
    );

    // The majority takes writes and a release.
    api.put_object(&new_url, "shared_dicts", "majority", &config::shared_dict())
        .await;
    let v2 = api.release(&new_url, "from the majority").await;
    assert_eq!(v2, v1 + 1);
    let stale = api
        .get(&old_url, "/config/shared_dicts?stale=true")
        .await
        .expect("a stale read answers");
    assert!(
        !stale.text.contains("\"majority\""),
        "the cut-off node cannot have the majority's write yet: {}",
        stale.text
    );

    // The old leader ends the edge's watch once it sees it is cut off; the edge moves to a
    // majority node and gets version 2 while the partition lasts.
    let started = Instant::now();
    let during = poll_until(EDGE_LOOK, || {
        let c = &c;
        async move { (c.edge_version(edge).await == Some(v2)).then_some(()) }
    })
    .await;
    assert!(
        during.is_some(),
        "the edge watching cp{old} first did not get release {v2} within {EDGE_LOOK:?}, during \
         the partition"
    );
    eprintln!(
        "the edge watching cp{old} first got release {v2} {:?} into the partition",
        started.elapsed()
    );

    // Healed: every node ends with the same releases and working config.
    c.reconnect_cp(old);
    c.wait_rejoined(old).await;
    let all = c.cp_ids();
    let leader = c.wait_leader(&all, None).await;
    let urls: Vec<String> = all.iter().map(|id| c.cp(*id).api_url()).collect();
    let mut converged = Vec::new();
    for path in ["/releases", "/config"] {
        let what = format!("every node answers the same {path}?stale=true");
        let view = wait_until(&what, CONVERGENCE, || {
            let (api, urls) = (&api, &urls);
            async move {
                let views = stale_views(api, urls, path).await?;
                views
                    .windows(2)
                    .all(|w| w[0] == w[1])
                    .then(|| views[0].clone())
            }
        })
        .await;
        converged.push(view);
    }
    let (releases, working) = (&converged[0], &converged[1]);
    let notes: Vec<&str> = releases["releases"]
        .as_array()
        .expect("a list of releases")
        .iter()
        .filter_map(|r| r["note"].as_str())
        .collect();
    assert_eq!(
        notes,
        ["from the majority", "before the partition"],
        "{releases}"
    );
    let dicts: Vec<&str> = working["sharedDicts"]
        .as_array()
        .expect("shared dicts")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(dicts, ["before", "majority"], "{working}");
    wait_until("the edge runs version 2 after healing", CONVERGENCE, || {
        let c = &c;
        async move { (c.edge_version(edge).await == Some(v2)).then_some(()) }
    })
    .await;
    eprintln!(
        "healed: every node has releases {notes:?}, shared dicts {dicts:?}, leader cp{leader}"
    );
}

#[test]
fn a_partitioned_leader_accepts_no_write_the_majority_goes_on_and_all_converge_after_healing() {
    partition::run_on_private_loopback(|c| the_leader_partitioned_away(c, &["", "", ""]));
}

#[test]
fn in_namespaces_a_partitioned_leader_accepts_no_write_and_all_converge_after_healing() {
    netns::run_scenario(None, |c| {
        the_leader_partitioned_away(c, &["eu-west", "us-east", "ap-south"])
    });
}
