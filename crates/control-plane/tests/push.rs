//! The gRPC push: a real tonic client watching, receiving releases and reporting.

mod support;

use std::time::Duration;

use outpost_proto::controlplane::v1::config_watch_client::ConfigWatchClient;
use outpost_proto::controlplane::v1::watch_event::Event;
use outpost_proto::controlplane::v1::{
    ApplyReport, ConfigDelta, NodeKind, Purge, Release, WatchEvent, WatchRequest,
};
use prost::Message;
use support::{Api, UPSTREAM_API, any_node_client, start, watch_client};
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(5);

/// A watch client with an edge certificate for `node_id`, as an edge gets one.
async fn client(
    cp: &outpost_control_plane::ControlPlane,
    node_id: &str,
) -> ConfigWatchClient<tonic::transport::Channel> {
    watch_client(cp, cp.bootstrap_token().unwrap(), node_id).await
}

fn hello(node_id: &str, have_version: u64) -> WatchRequest {
    WatchRequest {
        node_id: node_id.into(),
        kind: NodeKind::Edge as i32,
        region: "eu-west".into(),
        labels: [("tier".to_string(), "staging".to_string())].into(),
        have_version,
        addresses: vec!["192.0.2.10:443".into()],
        ..Default::default()
    }
}

async fn next_event(stream: &mut Streaming<WatchEvent>) -> Event {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a message within the bounded wait")
        .expect("stream healthy")
        .expect("stream open")
        .event
        .expect("an event")
}

/// The next message, which must be a full release.
async fn next(stream: &mut Streaming<WatchEvent>) -> Release {
    match next_event(stream).await {
        Event::Release(r) => r,
        other => panic!("expected a full release, got {other:?}"),
    }
}

async fn next_delta(stream: &mut Streaming<WatchEvent>) -> ConfigDelta {
    match next_event(stream).await {
        Event::Delta(d) => d,
        other => panic!("expected a delta, got {other:?}"),
    }
}

async fn next_purge(stream: &mut Streaming<WatchEvent>) -> Purge {
    match next_event(stream).await {
        Event::Purge(p) => p,
        other => panic!("expected a purge, got {other:?}"),
    }
}

/// Nothing arrives for a while (what a node that should get nothing sees).
async fn quiet(stream: &mut Streaming<WatchEvent>) {
    let early = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(early.is_err(), "expected nothing, got {early:?}");
}

#[tokio::test]
async fn a_watching_node_gets_the_latest_release_then_each_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, cp.bootstrap_token().unwrap());
    api.put("/api/v1/config/upstreams/api", UPSTREAM_API).await;
    assert_eq!(
        api.post("/api/v1/releases", r#"{"note":"one"}"#)
            .await
            .status,
        201
    );

    let mut grpc = client(&cp, "edge-1").await;
    let mut stream = grpc.watch(hello("edge-1", 0)).await.unwrap().into_inner();
    let first = next(&mut stream).await;
    assert_eq!(first.version, 1);
    assert_eq!(first.note, "one");
    let config = first.config.expect("a full config");
    assert_eq!(config.version, 1);
    assert_eq!(config.upstreams[0].peers[0].address, "127.0.0.1:8080");

    // A new release reaches the open stream.
    api.put(
        "/api/v1/config/shared_dicts/limits",
        r#"{"capacityBytes": 8192}"#,
    )
    .await;
    let made = api.post("/api/v1/releases", r#"{"note":"two"}"#).await;
    assert_eq!(made.status, 201, "{}", made.text);
    // As a delta: the node holds version 1, which the stream sent.
    let second = next_delta(&mut stream).await;
    assert_eq!((second.version, second.base_version), (2, 1));
    assert_eq!(second.upsert_shared_dicts[0].name, "limits");
    assert!(second.upsert_upstreams.is_empty());
    assert_eq!(second.sha256, made.json()["sha256"]);
    let applied = outpost_proto::delta::apply(&config, &second).unwrap();
    assert_eq!(applied.shared_dicts[0].name, "limits");

    // So does a rollback.
    api.post("/api/v1/releases/1/rollback", "").await;
    let third = next_delta(&mut stream).await;
    assert_eq!(third.version, 3);
    assert_eq!(third.remove_shared_dicts, vec!["limits".to_string()]);

    let nodes = api.get("/api/v1/nodes").await.json();
    assert_eq!(nodes["nodes"][0]["id"], "edge-1");
    assert_eq!(nodes["nodes"][0]["connected"], true);
    assert_eq!(nodes["nodes"][0]["labels"]["tier"], "staging");
    drop(stream);
    cp.shutdown().await;
}

#[tokio::test]
async fn a_node_that_is_up_to_date_is_sent_nothing_until_the_next_release() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, cp.bootstrap_token().unwrap());
    api.put("/api/v1/config/upstreams/api", UPSTREAM_API).await;
    api.post("/api/v1/releases", r#"{"note":"one"}"#).await;

    let mut grpc = client(&cp, "edge-2").await;
    let mut stream = grpc.watch(hello("edge-2", 1)).await.unwrap().into_inner();
    // Nothing is sent to a node holding the latest version.
    quiet(&mut stream).await;

    api.put(
        "/api/v1/config/shared_dicts/d",
        r#"{"capacityBytes": 8192}"#,
    )
    .await;
    api.post("/api/v1/releases", r#"{"note":"two"}"#).await;
    // It did not say which copy of version 1 it holds: it gets the whole release.
    assert_eq!(next(&mut stream).await.version, 2);
    drop(stream);
    cp.shutdown().await;
}

#[tokio::test]
async fn reports_are_recorded_per_node_and_shown_in_the_nodes_api() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, cp.bootstrap_token().unwrap());
    api.put("/api/v1/config/upstreams/api", UPSTREAM_API).await;
    api.post("/api/v1/releases", r#"{"note":"one"}"#).await;

    let mut grpc = client(&cp, "edge-3").await;
    // A node must introduce itself with a watch before it reports.
    let unknown = client(&cp, "ghost")
        .await
        .report(ApplyReport {
            node_id: "ghost".into(),
            version: 1,
            ok: true,
            error: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut stream = grpc.watch(hello("edge-3", 0)).await.unwrap().into_inner();
    let got = next(&mut stream).await;
    grpc.report(ApplyReport {
        node_id: "edge-3".into(),
        version: got.version,
        ok: true,
        error: String::new(),
    })
    .await
    .unwrap();
    let node = &api.get("/api/v1/nodes").await.json()["nodes"][0];
    assert_eq!(node["appliedVersion"], 1);
    assert_eq!(node["lastError"], serde_json::Value::Null);

    grpc.report(ApplyReport {
        node_id: "edge-3".into(),
        version: 2,
        ok: false,
        error: "lua: syntax error near 'end'".into(),
    })
    .await
    .unwrap();
    let node = &api.get("/api/v1/nodes").await.json()["nodes"][0];
    assert_eq!(node["appliedVersion"], 1, "the node still runs version 1");
    assert_eq!(node["rejectedVersion"], 2);
    assert_eq!(node["lastError"], "lua: syntax error near 'end'");
    assert_eq!(node["kind"], "edge");
    assert_eq!(node["region"], "eu-west");
    assert_eq!(node["addresses"][0], "192.0.2.10:443");

    // The stream ends when the node goes away; the node then shows as disconnected.
    drop(stream);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let nodes = api.get("/api/v1/nodes").await.json();
        if nodes["nodes"][0]["connected"] == false {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still connected: {nodes}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What the nodes reported survives a restart.
    let token = cp.bootstrap_token().unwrap().to_string();
    cp.shutdown().await;
    let cp = start(dir.path()).await;
    let node = &Api::new(&cp, &token).get("/api/v1/nodes").await.json()["nodes"][0];
    assert_eq!(node["appliedVersion"], 1);
    assert_eq!(node["lastError"], "lua: syntax error near 'end'");
    assert_eq!(node["connected"], false);
    cp.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_open_watch_streams() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let mut grpc = client(&cp, "edge-4").await;
    let mut stream = grpc.watch(hello("edge-4", 0)).await.unwrap().into_inner();
    tokio::time::timeout(WAIT, cp.shutdown())
        .await
        .expect("shutdown does not wait for watchers");
    let end = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None) | Err(_)));
}

/// A config of `apps` applications, each with a page rule, as the API takes it.
fn application(i: usize, body: &str) -> String {
    format!(
        r#"{{"domains": ["app{i}.example"], "upstream": "api",
            "listeners": [{{"address": "127.0.0.1:8080"}}],
            "rules": [{{"actions": [{{"respond": {{"status": 200, "body": "{body}"}}}}]}}]}}"#
    )
}

#[tokio::test]
async fn a_node_close_behind_gets_a_delta_sized_to_the_change_and_any_other_the_full_release() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, cp.bootstrap_token().unwrap());
    api.put("/api/v1/config/upstreams/api", UPSTREAM_API).await;
    for i in 0..100 {
        let r = api
            .put(
                &format!("/api/v1/config/applications/app{i}"),
                &application(i, "v1"),
            )
            .await;
        assert!(r.status < 300, "{}", r.text);
    }
    api.post("/api/v1/releases", r#"{"note":"one"}"#).await;

    let mut grpc = any_node_client(&cp).await;
    let mut close = grpc.watch(hello("close", 0)).await.unwrap().into_inner();
    let one = next(&mut close).await;
    let full_bytes = one.encoded_len();

    // A node that says it holds version 1 but gives another sha256 is not trusted with a delta.
    let mut other = grpc
        .watch(WatchRequest {
            have_sha256: "not-the-sha".into(),
            ..hello("other", 1)
        })
        .await
        .unwrap()
        .into_inner();
    // One that gives the right one is.
    let mut right = grpc
        .watch(WatchRequest {
            have_sha256: one.sha256.clone(),
            ..hello("right", 1)
        })
        .await
        .unwrap()
        .into_inner();

    let r = api
        .put("/api/v1/config/applications/app42", &application(42, "v2"))
        .await;
    assert!(r.status < 300, "{}", r.text);
    api.post("/api/v1/releases", r#"{"note":"two"}"#).await;

    let delta = next_delta(&mut close).await;
    assert_eq!(delta.upsert_applications.len(), 1);
    assert_eq!(delta.upsert_applications[0].name, "app42");
    let object_bytes = delta.upsert_applications[0].encoded_len();
    // Bytes in proportion to the object changed, not to the config.
    assert!(
        delta.encoded_len() < object_bytes + 200,
        "delta {} bytes for a {object_bytes}-byte object",
        delta.encoded_len()
    );
    assert!(delta.encoded_len() * 20 < full_bytes);
    assert_eq!(next_delta(&mut right).await, delta);
    let whole = next(&mut other).await;
    assert_eq!(whole.version, 2);
    // The delta rebuilds exactly the release.
    let rebuilt = outpost_proto::delta::apply(one.config.as_ref().unwrap(), &delta).unwrap();
    assert_eq!(Some(rebuilt), whole.config);
    cp.shutdown().await;
}

#[tokio::test]
async fn purges_reach_every_watching_node_without_a_release() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, cp.bootstrap_token().unwrap());
    let mut grpc = any_node_client(&cp).await;
    let mut a = grpc.watch(hello("a", 0)).await.unwrap().into_inner();
    let mut b = grpc.watch(hello("b", 0)).await.unwrap().into_inner();

    let bad = api
        .post("/api/v1/purges", r#"{"url": "", "soft": true}"#)
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.text.contains("url"), "{}", bad.text);
    let bad = api
        .post("/api/v1/purges", r#"{"url": "a", "tag": "t"}"#)
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);

    let made = api
        .post("/api/v1/purges", r#"{"url": "http://site.example/a.css"}"#)
        .await;
    assert_eq!(made.status, 202, "{}", made.text);
    assert_eq!(made.json()["id"], 1);
    for s in [&mut a, &mut b] {
        let p = next_purge(s).await;
        assert_eq!(p.id, 1);
        assert_eq!(
            p.selector,
            Some(outpost_proto::controlplane::v1::purge::Selector::Url(
                "http://site.example/a.css".into()
            ))
        );
    }
    drop(b);
    api.post(
        "/api/v1/purges",
        r#"{"prefix": "http://site.example/img/", "soft": true}"#,
    )
    .await;
    api.post("/api/v1/purges", r#"{"tag": "product-7"}"#).await;
    assert_eq!(next_purge(&mut a).await.id, 2);
    assert_eq!(next_purge(&mut a).await.id, 3);

    // A node that comes back gets what it missed, in order.
    let mut b = grpc
        .watch(WatchRequest {
            have_purge: 1,
            ..hello("b", 0)
        })
        .await
        .unwrap()
        .into_inner();
    let second = next_purge(&mut b).await;
    assert_eq!((second.id, second.soft), (2, true));
    assert_eq!(next_purge(&mut b).await.id, 3);
    // A new node gets no old purges: its cache holds nothing older.
    let mut fresh = grpc.watch(hello("fresh", 0)).await.unwrap().into_inner();
    quiet(&mut fresh).await;

    let listed = api.get("/api/v1/purges").await.json();
    assert_eq!(listed["purges"][0]["id"], 3);
    assert_eq!(listed["purges"][0]["request"]["tag"], "product-7");
    assert_eq!(
        listed["purges"][2]["request"]["url"],
        "http://site.example/a.css"
    );

    // The node's metrics count what the streams sent and show where Raft and purges are.
    let metrics = api.get("/metrics").await.text;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{metrics}"))
    };
    // a and b got purge 1, a got 2 and 3, b (back) got 2 and 3.
    assert_eq!(value("outpost_cp_watch_events_total{kind=\"purge\"}"), 6.0);
    assert_eq!(value("outpost_cp_last_purge_id"), 3.0);
    assert_eq!(value("outpost_cp_raft_is_leader"), 1.0);
    assert_eq!(value("outpost_cp_watch_streams"), 3.0);
    assert!(
        value(
            "outpost_cp_api_requests_total{method=\"POST\",route=\"/api/v1/purges\",status=\"202\"}"
        ) >= 3.0
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn a_staged_release_goes_to_staging_nodes_until_it_is_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, cp.bootstrap_token().unwrap());
    api.put("/api/v1/config/upstreams/api", UPSTREAM_API).await;
    api.post("/api/v1/releases", r#"{"note":"one"}"#).await;

    let mut grpc = any_node_client(&cp).await;
    let mut staging = grpc
        .watch(WatchRequest {
            labels: [("staging".to_string(), "true".to_string())].into(),
            ..hello("canary", 0)
        })
        .await
        .unwrap()
        .into_inner();
    let mut general = grpc.watch(hello("main", 0)).await.unwrap().into_inner();
    assert_eq!(next(&mut staging).await.version, 1);
    assert_eq!(next(&mut general).await.version, 1);

    api.put(
        "/api/v1/config/shared_dicts/d",
        r#"{"capacityBytes": 8192}"#,
    )
    .await;
    let made = api
        .post("/api/v1/releases", r#"{"note":"try it", "staged": true}"#)
        .await;
    assert_eq!(made.status, 201, "{}", made.text);
    assert_eq!(made.json()["staged"], true);
    assert_eq!(next_delta(&mut staging).await.version, 2);
    quiet(&mut general).await;

    let promoted = api.post("/api/v1/releases/2/promote", "").await;
    assert_eq!(promoted.status, 200, "{}", promoted.text);
    assert!(promoted.json()["promotedAtMs"].as_i64().unwrap() > 0);
    assert_eq!(next_delta(&mut general).await.version, 2);
    quiet(&mut staging).await;

    let again = api.post("/api/v1/releases/2/promote", "").await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert!(again.text.contains("not staged"), "{}", again.text);
    assert_eq!(
        api.post("/api/v1/releases/99/promote", "").await.status,
        404
    );
    let listed = api.get("/api/v1/releases").await.json();
    assert_eq!(listed["releases"][0]["staged"], true);
    cp.shutdown().await;
}

#[tokio::test]
async fn each_partition_has_its_own_config_and_releases_and_its_nodes_get_them() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, cp.bootstrap_token().unwrap());
    api.put("/api/v1/config/upstreams/api", UPSTREAM_API).await;
    api.post("/api/v1/releases", r#"{"note":"default one"}"#)
        .await;

    // Bad and unknown partitions.
    let bad = api
        .post("/api/v1/partitions", r#"{"name": "EU West"}"#)
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.text.contains("partition"), "{}", bad.text);
    let unknown = api.get("/api/v1/config?partition=nowhere").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    let unknown = api
        .post("/api/v1/releases?partition=nowhere", r#"{"note":"x"}"#)
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);

    let made = api.post("/api/v1/partitions", r#"{"name": "eu"}"#).await;
    assert_eq!(made.status, 201, "{}", made.text);
    assert_eq!(
        api.post("/api/v1/partitions", r#"{"name": "eu"}"#)
            .await
            .status,
        409
    );
    // Its own working config: empty, whatever the default partition holds.
    let eu_config = api.get("/api/v1/config?partition=eu").await.json();
    assert_eq!(eu_config, serde_json::json!({}));
    let r = api
        .put(
            "/api/v1/config/shared_dicts/eu_only?partition=eu",
            r#"{"capacityBytes": 8192}"#,
        )
        .await;
    assert!(r.status < 300, "{}", r.text);
    assert!(
        api.get("/api/v1/config/shared_dicts")
            .await
            .json()
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "the default partition does not see it"
    );
    let released = api
        .post("/api/v1/releases?partition=eu", r#"{"note":"eu one"}"#)
        .await;
    assert_eq!(released.status, 201, "{}", released.text);
    assert_eq!(
        released.json()["version"],
        1,
        "versions count per partition"
    );

    let mut grpc = any_node_client(&cp).await;
    let mut eu = grpc
        .watch(WatchRequest {
            labels: [("partition".to_string(), "eu".to_string())].into(),
            ..hello("eu-edge", 0)
        })
        .await
        .unwrap()
        .into_inner();
    let mut default = grpc
        .watch(hello("default-edge", 0))
        .await
        .unwrap()
        .into_inner();
    let got = next(&mut eu).await;
    assert_eq!(got.note, "eu one");
    assert_eq!(got.config.unwrap().shared_dicts[0].name, "eu_only");
    let got = next(&mut default).await;
    assert_eq!(got.note, "default one");

    // A release in one partition reaches only its nodes.
    api.put(
        "/api/v1/config/shared_dicts/more?partition=eu",
        r#"{"capacityBytes": 8192}"#,
    )
    .await;
    api.post("/api/v1/releases?partition=eu", r#"{"note":"eu two"}"#)
        .await;
    assert_eq!(next_delta(&mut eu).await.version, 2);
    quiet(&mut default).await;

    let listed = api.get("/api/v1/partitions").await.json();
    assert_eq!(listed["partitions"][0]["name"], "default");
    assert_eq!(listed["partitions"][1]["name"], "eu");
    assert_eq!(listed["partitions"][1]["latestVersion"], 2);
    assert_eq!(api.delete("/api/v1/partitions/default").await.status, 409);
    assert_eq!(api.delete("/api/v1/partitions/eu").await.status, 204);
    assert_eq!(api.get("/api/v1/releases?partition=eu").await.status, 404);

    // All of it survives a restart (and the migration from one config to partitions).
    let token = cp.bootstrap_token().unwrap().to_string();
    cp.shutdown().await;
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, &token);
    let listed = api.get("/api/v1/partitions").await.json();
    assert_eq!(listed["partitions"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.get("/api/v1/releases").await.json()["releases"][0]["note"],
        "default one"
    );
    cp.shutdown().await;
}
