//! Page rules end to end, TLS with SNI over HTTP/1.1 and HTTP/2, streaming bodies, upgrades,
//! and reloads under load.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::*;

const RULES: &str = r#"
upstreams:
  - {name: main, peers: [{address: "@MAIN@"}]}
  - {name: api, peers: [{address: "@API@"}]}
applications:
  - name: site
    domains: [example.test]
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: main
    rules:
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/api/]}]
        actions: [{upstream: api}, {rewrite_uri: {pattern: "^/api/(.*)$", replacement: "/$1"}}]
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_SUFFIX, values: [/echo-headers]}]
        actions:
          - {set_request_header: {name: X-Client, value: "$remote_addr $arg_tag"}}
          - {remove_request_header: X-Drop}
          - {set_response_header: {name: X-Rule, value: "hit"}}
          - {remove_response_header: X-Origin}
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/old]}]
        actions: [{redirect: {location: "https://$host/new?from=$uri", status: 301}}]
      - conditions:
          - {subject: SUBJECT_METHOD, operator: OPERATOR_EQUALS, values: [DELETE]}
        actions: [{respond: {status: 405, body: "no deleting here\n"}}]
      - conditions:
          - {subject: SUBJECT_HEADER, name: X-Tier, operator: OPERATOR_EQUALS, values: [gold], case_insensitive: true}
          - {subject: SUBJECT_COOKIE, name: session, operator: OPERATOR_EXISTS}
        actions: [{respond: {status: 200, body: "gold member\n"}}]
      - conditions:
          - {subject: SUBJECT_ARG, name: lang, operator: OPERATOR_REGEX, values: ["^(fr|de)$"]}
          - {subject: SUBJECT_HOST, operator: OPERATOR_CONTAINS, values: [example]}
          - {subject: SUBJECT_SCHEME, operator: OPERATOR_EQUALS, values: [http]}
        actions: [{respond: {status: 200, body: "lang $arg_lang\n"}}]
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/private]}]
        actions:
          - access_control:
              entries:
                - {allow: false, addresses: ["127.0.0.0/8"]}
      - conditions:
          - {subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/internal]}
          - {subject: SUBJECT_CLIENT_ADDRESS, operator: OPERATOR_IN_CIDR, values: ["10.0.0.0/8"], negate: true}
        actions: [{respond: {status: 404, body: "not here\n"}}]
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/limited]}]
        actions: [{rate_limit: {key: "$remote_addr", requests_per_second: 2, burst: 3, delay: 3, status: 429}}]
        last: true
      - actions: [{set_response_header: {name: X-Not-Last, value: "1"}}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_condition_and_action_works_end_to_end() {
    let main = Origin::start("main").await;
    let api = Origin::start("api").await;
    let node = edge(
        RULES,
        &[
            ("MAIN", main.addr.to_string()),
            ("API", api.addr.to_string()),
        ],
    )
    .await;
    let base = base_url(&node);
    let c = client();

    // choose upstream + rewrite
    let r = c
        .get(format!("{base}/api/echo-headers?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers().get("x-origin"),
        None,
        "removed by the later rule"
    );
    assert_eq!(r.headers()["x-rule"], "hit");
    let body = r.text().await.unwrap();
    assert!(body.starts_with("GET /echo-headers?x=1\n"), "{body}");
    assert_eq!(api.hits(), 1);

    // request headers set and removed; forwarding headers present
    let body = c
        .get(format!("{base}/echo-headers?tag=t1"))
        .header("x-drop", "secret")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("x-client: 127.0.0.1 t1\n"), "{body}");
    assert!(!body.contains("x-drop"), "{body}");
    assert!(body.contains("x-forwarded-for: 127.0.0.1\n"), "{body}");
    assert!(body.contains("via: 1.1 outpost\n"), "{body}");
    assert!(body.contains("x-request-id: "), "{body}");

    // redirect with variables
    let r = c
        .get(format!("{base}/old"))
        .header("host", "example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.headers()["location"],
        "https://example.test/new?from=/old"
    );

    // method condition + respond
    let r = c.delete(format!("{base}/x")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.text().await.unwrap(), "no deleting here\n");

    // header (case-insensitive) AND cookie exists
    let r = c
        .get(format!("{base}/"))
        .header("x-tier", "GOLD")
        .header("cookie", "session=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "gold member\n");
    let r = c
        .get(format!("{base}/"))
        .header("x-tier", "GOLD")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "main",
        "without the cookie the rule does not hold"
    );

    // arg regex + host contains + scheme
    let r = c
        .get(format!("{base}/?lang=fr"))
        .header("host", "example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "lang fr\n");
    let r = c
        .get(format!("{base}/?lang=es"))
        .header("host", "example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "main");

    // access control denies loopback
    assert_eq!(
        c.get(format!("{base}/private"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    // negated CIDR: loopback is not in 10/8
    assert_eq!(
        c.get(format!("{base}/internal"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // `last` stops the rule after it; others run
    let r = c.get(format!("{base}/limited")).send().await.unwrap();
    assert_eq!(r.headers().get("x-not-last"), None);
    let r = c.get(format!("{base}/plain")).send().await.unwrap();
    assert_eq!(r.headers()["x-not-last"], "1");
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_rejects_above_its_rate() {
    let main = Origin::start("main").await;
    let api = Origin::start("api").await;
    let node = edge(
        RULES,
        &[
            ("MAIN", main.addr.to_string()),
            ("API", api.addr.to_string()),
        ],
    )
    .await;
    let base = base_url(&node);
    let c = client();
    // 2 r/s, burst 3, no delay: a burst of 20 gets 1 + 3 through, the rest 429.
    let mut ok = 0;
    let mut rejected = 0;
    for _ in 0..20 {
        match c
            .get(format!("{base}/limited"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
        {
            200 => ok += 1,
            429 => rejected += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert!((4..=5).contains(&ok), "ok={ok} rejected={rejected}");
    assert_eq!(ok + rejected, 20);
    // After the bucket drains, requests pass again.
    let passes = eventually(Duration::from_secs(3), || async {
        c.get(format!("{base}/limited"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    assert!(passes);
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_picks_the_certificate_by_sni_over_http1_and_http2() {
    let origin = Origin::start("origin").await;
    let (a_cert, a_key) = certificate(&["a.test"]);
    let (b_cert, b_key) = certificate(&["b.test", "*.b.test"]);
    let yaml = format!(
        r#"
upstreams: [{{name: web, peers: [{{address: "{origin}"}}]}}]
certificates:
  - {{name: a, cert_pem: {}, key_pem: {}}}
  - {{name: b, cert_pem: {}, key_pem: {}}}
applications:
  - {{name: a, domains: [a.test], listeners: [{{address: "127.0.0.2:0", tls: true}}], certificate: a, upstream: web}}
  - {{name: b, domains: [b.test, "*.b.test"], listeners: [{{address: "127.0.0.2:0", tls: true}}], certificate: b, upstream: web}}
"#,
        yaml_str(&a_cert),
        yaml_str(&a_key),
        yaml_str(&b_cert),
        yaml_str(&b_key),
        origin = origin.addr
    );
    let node = edge(&yaml, &[]).await;
    let addr = node.bound_addr("127.0.0.2:0".parse().unwrap()).unwrap();
    for (host, cert, http2) in [
        ("a.test", &a_cert, false),
        ("a.test", &a_cert, true),
        ("www.b.test", &b_cert, false),
        ("b.test", &b_cert, true),
    ] {
        // Each client trusts only the certificate it expects: a wrong SNI choice fails.
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
            .tls_built_in_root_certs(false)
            .resolve(host, addr);
        builder = if http2 {
            builder.http2_prior_knowledge()
        } else {
            builder.http1_only()
        };
        let c = builder.build().unwrap();
        let r = c
            .get(format!("https://{host}:{}/echo-headers", addr.port()))
            .send()
            .await
            .unwrap();
        let want = if http2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(r.version(), want);
        let body = r.text().await.unwrap();
        assert!(body.contains("x-forwarded-proto: https\n"), "{body}");
        assert!(
            body.contains(if http2 {
                "via: 2 outpost"
            } else {
                "via: 1.1 outpost"
            }),
            "{body}"
        );
    }
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_is_passed_through_both_ways() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start("origin").await;
    let node = edge_in_front_of(origin.addr).await;
    let addr = plain_addr(&node);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    s.write_all(b"ping over the tunnel").await.unwrap();
    let mut buf = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping over the tunnel");
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_loses_no_request() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let yaml = r#"
version: @V@
upstreams: [{name: web, peers: [{address: "@P@"}]}]
applications: [{name: site, is_default: true, listeners: [{address: "127.0.0.1:0"}], upstream: web}]
"#;
    let node = edge(yaml, &[("V", "1".into()), ("P", a.addr.to_string())]).await;
    let base = base_url(&node);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (base, stop, failures, done) =
            (base.clone(), stop.clone(), failures.clone(), done.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match c.get(format!("{base}/slow/5")).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.text().await;
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    for v in 2..12u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let peer = if v % 2 == 0 { b.addr } else { a.addr };
        let cfg = outpost_proto::parse_config(
            &fill(yaml, &[("V", v.to_string()), ("P", peer.to_string())]),
            outpost_proto::SourceFormat::Yaml,
        )
        .unwrap();
        node.apply(cfg).await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(node.version(), 11);
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert!(done.load(Ordering::SeqCst) > 50);
    assert!(a.hits() > 0 && b.hits() > 0);
    node.shutdown(Duration::from_secs(1)).await;
}
