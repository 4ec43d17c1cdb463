//! The gRPC push: a real tonic client watching, receiving releases and reporting.

mod support;

use std::time::Duration;

use outpost_proto::controlplane::v1::config_watch_client::ConfigWatchClient;
use outpost_proto::controlplane::v1::{ApplyReport, NodeKind, Release, WatchRequest};
use support::{Api, UPSTREAM_API, start};
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(5);

async fn client(
    cp: &outpost_control_plane::ControlPlane,
) -> ConfigWatchClient<tonic::transport::Channel> {
    ConfigWatchClient::connect(format!("http://{}", cp.grpc_addr()))
        .await
        .expect("gRPC connects")
}

fn hello(node_id: &str, have_version: u64) -> WatchRequest {
    WatchRequest {
        node_id: node_id.into(),
        kind: NodeKind::Edge as i32,
        region: "eu-west".into(),
        labels: [("tier".to_string(), "staging".to_string())].into(),
        have_version,
        addresses: vec!["192.0.2.10:443".into()],
    }
}

async fn next(stream: &mut Streaming<Release>) -> Release {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a release within the bounded wait")
        .expect("stream healthy")
        .expect("stream open")
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

    let mut grpc = client(&cp).await;
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
    let second = next(&mut stream).await;
    assert_eq!(second.version, 2);
    assert_eq!(second.config.unwrap().shared_dicts[0].name, "limits");
    assert_eq!(second.sha256, made.json()["sha256"]);

    // So does a rollback.
    api.post("/api/v1/releases/1/rollback", "").await;
    let third = next(&mut stream).await;
    assert_eq!(third.version, 3);
    assert!(third.config.unwrap().shared_dicts.is_empty());

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

    let mut grpc = client(&cp).await;
    let mut stream = grpc.watch(hello("edge-2", 1)).await.unwrap().into_inner();
    let early = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(
        early.is_err(),
        "nothing is sent to a node holding the latest version"
    );

    api.put(
        "/api/v1/config/shared_dicts/d",
        r#"{"capacityBytes": 8192}"#,
    )
    .await;
    api.post("/api/v1/releases", r#"{"note":"two"}"#).await;
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

    let mut grpc = client(&cp).await;
    // A node must introduce itself with a watch before it reports.
    let unknown = grpc
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
    let mut grpc = client(&cp).await;
    let mut stream = grpc.watch(hello("edge-4", 0)).await.unwrap().into_inner();
    tokio::time::timeout(WAIT, cp.shutdown())
        .await
        .expect("shutdown does not wait for watchers");
    let end = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None) | Err(_)));
}
