//! The edge as a client sees it: real sockets, real origins, real TLS.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::*;

const TWO_PEERS: &str = r#"
upstreams:
  - name: web
    balancer: @BALANCER@
    @EXTRA@
    peers: [{address: "@A@", weight: 3}, {address: "@B@", weight: 1}]
applications:
  - name: site
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: web
"#;

async fn distribution(
    balancer: &str,
    extra: &str,
    n: usize,
    path: impl Fn(usize) -> String,
) -> HashMap<String, usize> {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let node = edge(
        TWO_PEERS,
        &[
            ("BALANCER", balancer.into()),
            ("EXTRA", extra.into()),
            ("A", a.addr.to_string()),
            ("B", b.addr.to_string()),
        ],
    )
    .await;
    let base = base_url(&node);
    let c = client();
    let mut seen = HashMap::new();
    for i in 0..n {
        let body = c
            .get(format!("{base}{}", path(i)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        *seen.entry(body).or_default() += 1;
    }
    node.shutdown(Duration::from_secs(1)).await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_follows_the_weights() {
    let seen = distribution("BALANCER_ROUND_ROBIN", "", 400, |_| "/".into()).await;
    // Two workers each run nginx's smooth WRR: 3:1 exactly per worker.
    assert_eq!(seen["a"] + seen["b"], 400);
    assert!(
        (seen["a"] as f64 / seen["b"] as f64 - 3.0).abs() < 0.35,
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_spreads_sequential_requests() {
    let seen = distribution("BALANCER_LEAST_CONN", "", 300, |_| "/".into()).await;
    // With one request at a time every peer is idle: ties go to weight (3:1 counts as less
    // loaded per weight), so both are used.
    assert!(
        seen.get("a").copied().unwrap_or(0) > 30 && seen.get("b").copied().unwrap_or(0) > 30,
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_sends_a_key_to_one_peer() {
    let seen = distribution(
        "BALANCER_CONSISTENT_HASH",
        "hash_key: \"$arg_user\"",
        50,
        |_| "/?user=alice".into(),
    )
    .await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let spread = distribution(
        "BALANCER_CONSISTENT_HASH",
        "hash_key: \"$arg_user\"",
        200,
        |i| format!("/?user=u{i}"),
    )
    .await;
    assert_eq!(spread.len(), 2, "{spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_prefers_the_fast_peer() {
    let fast = Origin::start("fast").await;
    let slow = Origin::start_slow("slow", Duration::from_millis(40)).await;
    let node = edge(
        r#"
upstreams:
  - name: web
    balancer: BALANCER_PEAK_EWMA
    peers: [{address: "@FAST@"}, {address: "@SLOW@"}]
applications:
  - {name: site, is_default: true, listeners: [{address: "127.0.0.1:0"}], upstream: web}
"#,
        &[
            ("FAST", fast.addr.to_string()),
            ("SLOW", slow.addr.to_string()),
        ],
    )
    .await;
    let base = base_url(&node);
    let c = client();
    let mut by = HashMap::<String, usize>::new();
    for _ in 0..60 {
        let r = c.get(format!("{base}/")).send().await.unwrap();
        let origin = r.headers()["x-origin"].to_str().unwrap().to_string();
        *by.entry(origin).or_default() += 1;
    }
    // Both peers are compared on every pick: once the slow one has answered slowly, it loses.
    assert!(by.get("fast").copied().unwrap_or(0) >= 50, "{by:?}");
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_mid_test_causes_no_client_error_on_idempotent_gets() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let node = edge(
        r#"
upstreams:
  - name: web
    retries: 1
    connect_timeout_ms: 500
    peers: [{address: "@A@"}, {address: "@B@"}]
applications:
  - {name: site, is_default: true, listeners: [{address: "127.0.0.1:0"}], upstream: web}
"#,
        &[("A", a.addr.to_string()), ("B", b.addr.to_string())],
    )
    .await;
    let base = base_url(&node);
    let c = client();
    let mut statuses = HashMap::<u16, usize>::new();
    for i in 0..300 {
        if i == 100 {
            a.kill();
        }
        let r = c.get(format!("{base}/")).send().await.unwrap();
        *statuses.entry(r.status().as_u16()).or_default() += 1;
    }
    assert_eq!(statuses.get(&200), Some(&300), "{statuses:?}");
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_remove_and_restore_a_peer() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let node = edge(
        r#"
upstreams:
  - name: web
    passive_health: {disabled: true}
    health_check: {path: /health, interval_ms: 100, timeout_ms: 100, rise: 2, fall: 2}
    peers: [{address: "@A@"}, {address: "@B@"}]
applications:
  - {name: site, is_default: true, listeners: [{address: "127.0.0.1:0"}], upstream: web}
"#,
        &[("A", a.addr.to_string()), ("B", b.addr.to_string())],
    )
    .await;
    let base = base_url(&node);
    let c = client();
    let a_addr = a.addr;
    a.kill();
    // Down: every answer comes from b, with no failed request once the check has run.
    let only_b = eventually(Duration::from_secs(5), || async {
        let mut all_b = true;
        for _ in 0..10 {
            let r = c.get(format!("{base}/")).send().await.unwrap();
            all_b &= r.status() == 200 && r.text().await.unwrap() == "b";
        }
        all_b
    })
    .await;
    assert!(only_b, "peer a was never taken out");
    // Back on the same address: it returns.
    let a2 = Origin::start_on("a", a_addr).await;
    let a_back = eventually(Duration::from_secs(5), || async {
        let mut saw_a = false;
        for _ in 0..10 {
            saw_a |= c
                .get(format!("{base}/"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                == "a";
        }
        saw_a
    })
    .await;
    assert!(a_back, "peer a never came back");
    drop(a2);
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_refused_with_field_paths_and_the_old_one_keeps_serving() {
    let a = Origin::start("a").await;
    let yaml = r#"
version: 1
upstreams: [{name: web, peers: [{address: "@A@"}]}]
applications:
  - {name: site, is_default: true, listeners: [{address: "127.0.0.1:0"}], upstream: web}
"#;
    let node = edge(yaml, &[("A", a.addr.to_string())]).await;
    let base = base_url(&node);
    let bad = outpost_proto::parse_config(
        &fill(
            r#"
version: 2
upstreams: [{name: web, peers: [{address: "@A@"}]}]
applications:
  - name: site
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: web
    rules: [{actions: [{set_request_header: {name: X-A, value: a}}, {upstream: api-v2}]}]
"#,
            &[("A", a.addr.to_string())],
        ),
        outpost_proto::SourceFormat::Yaml,
    )
    .unwrap();
    let err = node.apply(bad).await.unwrap_err().to_string();
    assert!(
        err.contains(r#"applications[0].rules[0].actions[1].upstream: unknown upstream "api-v2""#),
        "{err}"
    );
    assert_eq!(node.version(), 1);
    assert_eq!(
        client()
            .get(format!("{base}/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "a"
    );
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_port_in_use_fails_the_reload_and_changes_nothing() {
    let a = Origin::start("a").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let yaml = r#"
version: @V@
upstreams: [{name: web, peers: [{address: "@A@"}]}]
applications:
  - {name: site, is_default: true, listeners: [{address: "127.0.0.1:0"}, @MORE@], upstream: web}
"#;
    let node = edge(
        yaml,
        &[
            ("V", "1".into()),
            ("A", a.addr.to_string()),
            ("MORE", r#"{address: "127.0.0.3:0"}"#.into()),
        ],
    )
    .await;
    let bad = outpost_proto::parse_config(
        &fill(
            yaml,
            &[
                ("V", "2".into()),
                ("A", a.addr.to_string()),
                (
                    "MORE",
                    format!(r#"{{address: "{}"}}"#, taken.local_addr().unwrap()),
                ),
            ],
        ),
        outpost_proto::SourceFormat::Yaml,
    )
    .unwrap();
    let err = node.apply(bad).await.unwrap_err().to_string();
    assert!(err.contains("cannot listen on"), "{err}");
    assert_eq!(node.version(), 1);
    assert!(node.bound_addr("127.0.0.3:0".parse().unwrap()).is_some());
    node.shutdown(Duration::from_secs(1)).await;
}
