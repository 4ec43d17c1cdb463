//! A GSLB server fed by a real control plane (all `outpost` processes): it answers with the
//! edges the control plane knows (those started with `--advertise`), stops answering with one
//! an operator drains and with one that dies (its own probes), and, restarted while the control
//! plane is down, answers from what it persisted. Real DNS over UDP.

mod support;

use std::process::Stdio;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use reqwest::Method;
use support::{ControlPlaneProc, Proc, eventually, free_port, outpost};

/// The A records for `name` from the server at `dns`, sorted; empty when it does not answer.
async fn a_records(dns: std::net::SocketAddr, name: &str) -> Vec<String> {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let Ok(sock) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        return Vec::new();
    };
    if sock.send_to(&m.to_vec().unwrap(), dns).await.is_err() {
        return Vec::new();
    }
    let mut buf = vec![0u8; 4096];
    let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await
    else {
        return Vec::new();
    };
    let Ok(reply) = Message::from_vec(&buf[..n]) else {
        return Vec::new();
    };
    let mut out: Vec<String> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

const GSLB: &str = r#"{
  "zones": [{"name": "cdn.test", "soa": {"rname": "hostmaster.cdn.test"}, "ns": ["ns1.cdn.test"],
             "staticRecords": [{"name": "ns1", "type": "A", "data": ["127.0.0.1"]}]}],
  "registryHealth": {"kind": "PROBE_KIND_TCP", "intervalMs": 250},
  "records": [{"zone": "cdn.test", "name": "www", "policy": "POLICY_ALL_HEALTHY",
               "whenNoneHealthy": "WHEN_NONE_HEALTHY_FIXED", "fallbackAddresses": ["127.0.0.99"]}]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fed_gslb_answers_with_the_registered_edges_and_follows_drains_and_deaths() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneProc::start(&dir.path().join("cp"));
    let site = free_port();
    let app = format!(
        r#"{{"isDefault":true,"listeners":[{{"address":"127.0.0.1:{site}"}}],"rules":[{{"actions":[{{"respond":{{"status":200,"body":"hi"}}}}]}}]}}"#
    );
    let (s, b) = cp
        .call(Method::PUT, "/config/applications/site", Some(app))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = cp.call(Method::PUT, "/gslb", Some(GSLB.into())).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = cp
        .call(Method::POST, "/releases", Some(r#"{"note":"one"}"#.into()))
        .await;
    assert_eq!(s, 201, "{b}");

    // Three edges on 127.0.0.2-4, each advertising its admin listener (what GSLB probes).
    let edge_token = cp.join_token("edge").await;
    let mut edges = Vec::new();
    for i in 2..=4 {
        let ip = format!("127.0.0.{i}");
        let admin = format!("{ip}:{}", free_port());
        let state = dir.path().join(format!("edge{i}"));
        let edge = outpost(&[
            "edge",
            "--control-plane",
            &cp.grpc_url(),
            "--join-token",
            &edge_token,
            "--node-id",
            &format!("edge-{i}"),
            "--advertise",
            &admin,
            "--admin",
            &admin,
            "--state-dir",
            state.to_str().unwrap(),
            "--access-log",
            "off",
            "--workers",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        edges.push(Some(Proc(edge)));
    }

    let dns: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gslb_state = dir.path().join("gslb");
    let grpc_url = cp.grpc_url();
    let gslb_args = |token: Option<&str>| {
        let mut args = vec![
            "gslb".to_string(),
            "--control-plane".into(),
            grpc_url.clone(),
            "--node-id".into(),
            "gslb-1".into(),
            "--state-dir".into(),
            gslb_state.display().to_string(),
            "--listen".into(),
            dns.to_string(),
            "--admin".into(),
            format!("127.0.0.1:{}", free_port()),
        ];
        if let Some(t) = token {
            args.extend(["--join-token".into(), t.to_string()]);
        }
        args
    };
    let spawn_gslb = |args: Vec<String>| {
        Proc(
            std::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let gslb_token = cp.join_token("gslb").await;
    let gslb = spawn_gslb(gslb_args(Some(&gslb_token)));

    // Polls (bounded: 20 s) until the answer is `want`; the answer and the last one seen.
    let answers_are = |want: &'static [&'static str]| async move {
        let ok = eventually(Duration::from_secs(20), || async {
            a_records(dns, "www.cdn.test").await == want
        })
        .await;
        (ok, a_records(dns, "www.cdn.test").await)
    };
    let (ok, last) = answers_are(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]).await;
    assert!(ok, "every registered edge answered, got {last:?}");

    // An operator drains edge-3: answers stop naming it; undrained, it is back.
    let (s, b) = cp.call(Method::POST, "/nodes/edge-3/drain", None).await;
    assert_eq!(s, 200, "{b}");
    let (ok, last) = answers_are(&["127.0.0.2", "127.0.0.4"]).await;
    assert!(ok, "drained edge-3 left the answers, got {last:?}");
    cp.call(Method::POST, "/nodes/edge-3/undrain", None).await;
    let (ok, last) = answers_are(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]).await;
    assert!(ok, "undrained edge-3 is back, got {last:?}");

    // edge-4 dies: the GSLB's own probes take it out, with no one telling it.
    edges[2].take();
    let (ok, last) = answers_are(&["127.0.0.2", "127.0.0.3"]).await;
    assert!(ok, "dead edge-4 left the answers, got {last:?}");

    // The control plane goes away and the GSLB server restarts: it answers from the config
    // and registry it persisted (edge-4 is still registered, and still down).
    drop(cp);
    drop(gslb);
    let _gslb = spawn_gslb(gslb_args(None));
    let (ok, last) = answers_are(&["127.0.0.2", "127.0.0.3"]).await;
    assert!(
        ok,
        "a restarted GSLB answers from its persisted state, got {last:?}"
    );
    drop(edges);
}
