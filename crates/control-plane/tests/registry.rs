//! What GSLB servers get from the control plane: the release's `gslb` section and the node
//! registry (the edges that advertise an address), over a real mTLS Watch stream.

mod support;

use std::time::Duration;

use outpost_proto::controlplane::v1::watch_event::Event;
use outpost_proto::controlplane::v1::{
    ApplyReport, NodeKind, RegisteredNode, WatchEvent, WatchRequest,
};
use support::{Api, UPSTREAM_API, any_node_client, start};
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(5);

const GSLB: &str = r#"{
  "zones": [{"name": "cdn.example.com", "soa": {"rname": "hostmaster.example.com"},
             "ns": ["ns1.example.com"]}],
  "regions": [{"name": "eu", "latitude": 50, "longitude": 8}],
  "registryHealth": {"kind": "PROBE_KIND_HTTP", "port": 8080, "httpPath": "/health"},
  "records": [{"zone": "cdn.example.com", "name": "www", "policy": "POLICY_GEO",
               "pools": [{"regions": ["eu"]}]}]
}"#;

fn hello(
    node_id: &str,
    kind: NodeKind,
    labels: &[(&str, &str)],
    addresses: &[&str],
) -> WatchRequest {
    WatchRequest {
        node_id: node_id.into(),
        kind: kind as i32,
        region: "eu".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
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

async fn next_registry(stream: &mut Streaming<WatchEvent>) -> Vec<RegisteredNode> {
    match next_event(stream).await {
        Event::Nodes(r) => r.nodes,
        other => panic!("expected the node registry, got {other:?}"),
    }
}

#[tokio::test]
async fn gslb_nodes_get_the_gslb_section_and_their_partitions_edges_and_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, cp.bootstrap_token().unwrap());

    // A bad GSLB section is refused before it is stored, naming the field.
    let bad = GSLB.replace(
        r#""zone": "cdn.example.com""#,
        r#""zone": "nope.example.com""#,
    );
    let refused = api.put("/api/v1/gslb", &bad).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(
        refused.text.contains("gslb.records[0].zone") && refused.text.contains("unknown zone"),
        "{}",
        refused.text
    );
    assert_eq!(api.get("/api/v1/gslb").await.status, 404);

    api.put("/api/v1/config/upstreams/api", UPSTREAM_API).await;
    let put = api.put("/api/v1/gslb", GSLB).await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(
        api.get("/api/v1/gslb").await.json()["records"][0]["name"],
        "www"
    );
    api.post("/api/v1/releases", r#"{"note":"one"}"#).await;

    let mut grpc = any_node_client(&cp).await;
    // Edges: one in the default partition that advertises an address and runs the release,
    // one in another partition, one that advertises nothing.
    let mut edge_a = grpc
        .watch(hello(
            "edge-a",
            NodeKind::Edge,
            &[("tier", "gold")],
            &["192.0.2.10"],
        ))
        .await
        .unwrap()
        .into_inner();
    let Event::Release(r) = next_event(&mut edge_a).await else {
        panic!("an edge gets the release")
    };
    assert!(
        r.config.unwrap().gslb.is_some(),
        "edges get it too (and ignore it)"
    );
    grpc.report(ApplyReport {
        node_id: "edge-a".into(),
        version: 1,
        ok: true,
        error: String::new(),
    })
    .await
    .unwrap();
    let _edge_b = grpc
        .watch(hello(
            "edge-b",
            NodeKind::Edge,
            &[("partition", "asia")],
            &["192.0.2.11"],
        ))
        .await
        .unwrap()
        .into_inner();
    let _edge_c = grpc
        .watch(hello("edge-c", NodeKind::Edge, &[], &[]))
        .await
        .unwrap()
        .into_inner();

    // The GSLB server: the registry first (so its first answer already has the edges), then the
    // release.
    let mut gslb = grpc
        .watch(hello("gslb-1", NodeKind::Gslb, &[], &["127.0.0.1:53"]))
        .await
        .unwrap()
        .into_inner();
    let registry = next_registry(&mut gslb).await;
    assert_eq!(registry.len(), 1, "{registry:?}");
    assert_eq!(registry[0].id, "edge-a");
    assert_eq!(registry[0].addresses, ["192.0.2.10"]);
    assert_eq!(registry[0].region, "eu");
    assert_eq!(registry[0].labels["tier"], "gold");
    assert_eq!(registry[0].applied_version, 1);
    assert!(!registry[0].drained);
    let Event::Release(r) = next_event(&mut gslb).await else {
        panic!("then the release")
    };
    let section = r.config.unwrap().gslb.unwrap();
    assert_eq!(section.records[0].name, "www");
    assert_eq!(section.registry_health.unwrap().http_path, "/health");

    // Draining takes the edge out; undraining puts it back. Each change is sent whole.
    assert_eq!(api.post("/api/v1/nodes/ghost/drain", "").await.status, 404);
    let drained = api.post("/api/v1/nodes/edge-a/drain", "").await;
    assert_eq!(drained.status, 200, "{}", drained.text);
    assert!(next_registry(&mut gslb).await[0].drained);
    let nodes = api.get("/api/v1/nodes").await.json();
    let a = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "edge-a")
        .unwrap()
        .clone();
    assert_eq!(a["drained"], true);
    api.post("/api/v1/nodes/edge-a/undrain", "").await;
    assert!(!next_registry(&mut gslb).await[0].drained);

    // A new edge in the partition joins the registry once it has advertised itself.
    let _edge_d = grpc
        .watch(hello("edge-d", NodeKind::Edge, &[], &["192.0.2.12"]))
        .await
        .unwrap()
        .into_inner();
    let registry = next_registry(&mut gslb).await;
    let ids: Vec<&str> = registry.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["edge-a", "edge-d"]);
    assert_eq!(registry[1].applied_version, 0, "it has applied nothing yet");

    // Purges are for caches: GSLB servers are not sent them.
    api.post("/api/v1/purges", r#"{"all": true}"#).await;
    let early = tokio::time::timeout(Duration::from_millis(300), gslb.message()).await;
    assert!(early.is_err(), "a GSLB server got {early:?}");

    // Removing the section is a release like any other (a delta, as the server holds v1).
    let removed = api.delete("/api/v1/gslb").await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    let changes = api.get("/api/v1/changes?format=text").await.text;
    assert_eq!(changes.trim(), "- gslb/gslb");
    api.post("/api/v1/releases", r#"{"note":"no gslb"}"#).await;
    match next_event(&mut gslb).await {
        Event::Release(r) => assert!(r.config.unwrap().gslb.is_none()),
        Event::Delta(d) => assert_eq!(d.gslb, Some(Default::default()), "removed"),
        other => panic!("expected release 2, got {other:?}"),
    }
    cp.shutdown().await;
}
