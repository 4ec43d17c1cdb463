//! Scenario 5: an edge refuses a release it cannot apply (one of its listeners is on an
//! address something else already listens on, on that host). It keeps serving the previous
//! version, whole (the release's other changes are not applied either), and the admin API
//! shows, on every control-plane node, the refused version and the edge's error. A release
//! without the bad listener is then applied.

use std::time::Duration;

use outpost_cluster_tests::{Cluster, config};

const PROPAGATION: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_refuses_a_release_it_cannot_apply_keeps_serving_and_the_api_shows_why() {
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
    let v1 = api.release(&via, "v1").await;
    let eu = c.start_edge("edge-eu", "eu-west", &[1]).await;
    let us = c.start_edge("edge-us", "us-east", &[2]).await;
    for e in [eu, us] {
        c.wait_edge_serves(e, "/", "v1", PROPAGATION).await;
    }

    // Release 2 changes the site and adds an application on a port that is taken here.
    let (taken, _holder) = c.taken_listen();
    api.put_object(
        &via,
        "applications",
        "site",
        &config::respond_app(site, "v2"),
    )
    .await;
    let other = config::respond_app_for("other.test", taken, "other");
    api.put_object(&via, "applications", "other", &other).await;
    let v2 = api.release(&via, "taken port").await;

    // Every control-plane node shows the refusal, with the edge's reason naming the address.
    let port = taken.port().to_string();
    for id in c.cp_ids() {
        let url = c.cp(id).api_url();
        for e in [eu, us] {
            let name = c.edge(e).name.clone();
            let what = format!("cp{id} shows {name} refused version {v2}");
            let node = outpost_cluster_tests::wait::wait_until(&what, PROPAGATION, || {
                let (api, url, name, port) = (api.clone(), url.clone(), name.clone(), port.clone());
                async move {
                    let nodes = api.nodes(&url).await?;
                    let n = nodes.into_iter().find(|n| n["id"] == name.as_str())?;
                    let refused = n["rejectedVersion"] == v2
                        && n["lastError"].as_str().is_some_and(|e| e.contains(&port));
                    refused.then_some(n)
                }
            })
            .await;
            assert_eq!(node["appliedVersion"], v1, "cp{id}: {node}");
            if id == leader {
                eprintln!("{name} refused version {v2}: {}", node["lastError"]);
            }
        }
    }
    // The edges serve version 1, whole.
    for e in [eu, us] {
        assert_eq!(c.edge_version(e).await, Some(v1), "{}", c.edge(e).name);
        let r = c.edge_get(e, "/").await.expect("the edge answers");
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "v1"),
            "{}",
            c.edge(e).name
        );
    }

    // Without the bad listener, the next release is applied everywhere.
    let r = api
        .delete(&via, "/config/applications/other")
        .await
        .expect("an answer");
    assert!(r.ok(), "{} {}", r.status, r.text);
    let v3 = api.release(&via, "without the taken port").await;
    for e in [eu, us] {
        c.wait_edge_serves(e, "/", "v2", PROPAGATION).await;
        assert_eq!(c.edge_version(e).await, Some(v3));
    }
    c.wait_api_shows_applied(&[eu, us], v3).await;
}
