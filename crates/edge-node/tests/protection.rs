//! Protection and observability on real sockets: header and idle timeouts (slowloris), size
//! limits, graceful shutdown, the Prometheus metrics and the JSON access log.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use outpost_edge_node::EdgeSettings;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMITED: &str = r#"
server: {header_timeout_ms: 400, idle_timeout_ms: 400, max_header_bytes: 16384, max_body_bytes: 1000}
upstreams: [{name: web, peers: [{address: "@O@"}]}]
applications: [{name: site, is_default: true, listeners: [{address: "127.0.0.1:0"}], upstream: web}]
"#;

/// Reads one HTTP/1.1 response with a Content-Length body; `None` if the connection closed.
async fn read_response(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
    Some((status, body))
}

/// Waits (at most `limit`) for the peer to close: true on EOF or reset.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off_by_the_header_timeout() {
    let origin = Origin::start("origin").await;
    let node = edge(LIMITED, &[("O", origin.addr.to_string())]).await;
    let mut s = TcpStream::connect(plain_addr(&node)).await.unwrap();
    s.write_all(b"GET /status/200 HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    // One header line every 100 ms: always sending, never finishing the head. Bounded to
    // 100 lines (10 s); the 400 ms header timeout must end it long before.
    let mut cut_off = false;
    for i in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(format!("X-Drip-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            cut_off = true;
            break;
        }
        let mut probe = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_off = true;
                break;
            }
            // hyper may answer 408 before closing; the close follows.
            Ok(Ok(_)) => {
                cut_off = closed_within(&mut s, Duration::from_secs(5)).await;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(cut_off, "the edge kept a dripping request head open");
    assert_eq!(
        origin.hits(),
        0,
        "an incomplete head must never reach the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    let origin = Origin::start("origin").await;
    let node = edge(LIMITED, &[("O", origin.addr.to_string())]).await;
    let mut s = TcpStream::connect(plain_addr(&node)).await.unwrap();
    // A request that takes longer than the idle timeout keeps its connection.
    s.write_all(b"GET /slow/900 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = read_response(&mut s).await.expect("slow response arrives");
    assert_eq!((status, body.as_str()), (200, "origin"));
    // The connection stays usable right after the response...
    s.write_all(b"GET /status/200 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.map(|r| r.0), Some(200));
    // ...and is closed once idle past the 400 ms timeout.
    assert!(
        closed_within(&mut s, Duration::from_secs(10)).await,
        "idle connection not closed"
    );
}

/// A short header timeout and a long idle timeout, as nginx's 60 s/75 s defaults are apart.
const SHORT_HEADER_LONG_IDLE: &str = r#"
server: {header_timeout_ms: 300, idle_timeout_ms: 60000}
upstreams: [{name: web, peers: [{address: "@O@"}]}]
applications: [{name: site, is_default: true, listeners: [{address: "127.0.0.1:0"}], upstream: web}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_waits_the_idle_timeout_and_a_head_only_the_header_timeout() {
    let origin = Origin::start("origin").await;
    let node = edge(SHORT_HEADER_LONG_IDLE, &[("O", origin.addr.to_string())]).await;
    let mut s = TcpStream::connect(plain_addr(&node)).await.unwrap();
    s.write_all(b"GET /status/200 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.map(|r| r.0), Some(200));
    // Idle between requests for three header timeouts: the connection is still there
    // (nginx's keepalive_timeout, not its client_header_timeout).
    tokio::time::sleep(Duration::from_millis(900)).await;
    s.write_all(b"GET /status/200 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_response(&mut s).await.map(|r| r.0),
        Some(200),
        "an idle keep-alive connection was closed before its idle timeout"
    );
    // A head that starts and stalls is cut off by the header timeout: the wait is bounded
    // far below the 60 s idle timeout.
    s.write_all(b"GET /status/200 HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(10)).await,
        "a stalled head was not cut off by the header timeout"
    );
    assert_eq!(
        origin.hits(),
        2,
        "the stalled head never reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_bodies_are_refused() {
    let origin = Origin::start("origin").await;
    let node = edge(LIMITED, &[("O", origin.addr.to_string())]).await;
    let base = base_url(&node);
    let c = client();

    let big = "v".repeat(64 * 1024);
    let r = c
        .get(format!("{base}/status/200"))
        .header("x-big", big)
        .send()
        .await;
    // hyper answers 431 and closes; a client may also see the close first.
    if let Ok(r) = r {
        assert_eq!(r.status(), 431);
    }

    let r = c
        .post(format!("{base}/upload"))
        .body(vec![b'b'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "declared length over max_body_bytes");
    assert_eq!(
        origin.hits(),
        0,
        "a declared length over the limit never reaches the origin"
    );

    // A chunked body streams (no buffering), so it is counted as it goes and cut at the limit.
    let chunks = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'c'; 500]))),
    );
    let r = c
        .post(format!("{base}/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "streamed body over max_body_bytes");

    let r = c
        .post(format!("{base}/upload"))
        .body(vec![b'b'; 900])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "900",
        "a body under the limit passes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_requests_in_flight_and_stops_accepting() {
    let origin = Origin::start("origin").await;
    let node = edge_in_front_of(origin.addr).await;
    let addr: SocketAddr = plain_addr(&node);
    let base = base_url(&node);
    let c = client();
    let in_flight = {
        let c = c.clone();
        let url = format!("{base}/slow/800");
        tokio::spawn(async move {
            let r = c.get(url).send().await?;
            let connection = r.headers().get("connection").cloned();
            Ok::<_, reqwest::Error>((connection, r.text().await?))
        })
    };
    // Wait until the request has reached the origin, then shut down.
    assert!(eventually(Duration::from_secs(5), || async { origin.hits() == 1 }).await);
    let shutdown = {
        let node = node.clone();
        tokio::spawn(async move { node.shutdown(Duration::from_secs(10)).await })
    };
    let (connection, body) = in_flight
        .await
        .unwrap()
        .expect("the request in flight completes");
    assert_eq!(body, "origin");
    // The client learns that this connection ends, as nginx and hyper tell it.
    assert_eq!(
        connection.as_ref().map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    tokio::time::timeout(Duration::from_secs(15), shutdown)
        .await
        .expect("shutdown ends once nothing is in flight")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_an_idle_keep_alive_connection() {
    let origin = Origin::start("origin").await;
    let node = edge_in_front_of(origin.addr).await;
    let mut conn = TcpStream::connect(plain_addr(&node)).await.unwrap();
    conn.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The whole response, then the connection waits for the next request.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"origin") {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("the response comes")
            .unwrap();
        assert!(n > 0, "the connection stays open after the response");
        got.extend_from_slice(&buf[..n]);
    }
    let shutdown = {
        let node = node.clone();
        tokio::spawn(async move { node.shutdown(Duration::from_secs(30)).await })
    };
    // The idle connection is closed at once, not after its idle timeout or the grace.
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("the idle connection is closed on shutdown")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing more is sent: {:?}", &buf[..n]);
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown ends once the idle connection is closed")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_latency_bytes_upstream_errors_and_peer_health() {
    let origin = Origin::start("origin").await;
    let dead = free_addr();
    let yaml = r#"
upstreams:
  - name: web
    peers: [{address: "@O@"}]
    health_check: {path: /status/200, interval_ms: 100, timeout_ms: 100}
  - name: gone
    peers: [{address: "@D@"}]
    retries: 0
applications:
  - name: site
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: web
    rules:
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/gone]}]
        actions: [{upstream: gone}]
"#;
    let settings = EdgeSettings {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    let node = edge_with(
        settings,
        yaml,
        &[("O", origin.addr.to_string()), ("D", dead.to_string())],
    )
    .await;
    let base = base_url(&node);
    let c = client();
    for _ in 0..3 {
        assert_eq!(
            c.get(format!("{base}/bytes/100"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .len(),
            100
        );
    }
    assert_eq!(
        c.get(format!("{base}/status/404"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(format!("{base}/gone")).send().await.unwrap().status(),
        502
    );

    // A head the edge's HTTP/1.1 path leaves to hyper (which answers it 400, before any
    // request is counted).
    let answer = exchange_raw(plain_addr(&node), b"GET / HTTP/1.1\r\nbad header\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    let admin = node.admin_addr().expect("admin listener bound");
    // Health state appears once the first check has run; bounded to 250 polls (5 s).
    let mut text = String::new();
    for _ in 0..250 {
        text = c
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("outpost_edge_upstream_peer_up{") && text.contains(r#"status="5xx"} 1"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for expected in [
        r#"outpost_edge_requests_total{application="site",status="2xx"} 3"#,
        r#"outpost_edge_requests_total{application="site",status="4xx"} 1"#,
        r#"outpost_edge_requests_total{application="site",status="5xx"} 1"#,
        r#"outpost_edge_request_duration_seconds_count{application="site"} 5"#,
        r#"outpost_edge_upstream_errors_total{upstream="gone""#,
        r#"outpost_edge_upstream_response_duration_seconds_count{upstream="web"} 4"#,
        // Bodiless GETs over plain TCP: all on the edge's own client.
        r#"outpost_edge_upstream_requests_total{upstream="web",client="own"} 4"#,
        r#"outpost_edge_upstream_requests_total{upstream="web",client="hyper"} 0"#,
        "outpost_edge_open_connections",
        "outpost_edge_config_version",
        r#"outpost_edge_http1_handoffs_total{reason="malformed"} 1"#,
        r#"outpost_edge_http1_handoffs_total{reason="body"} 0"#,
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    let sent = text
        .lines()
        .find(|l| l.starts_with(r#"outpost_edge_sent_bytes_total{application="site"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("sent bytes counter");
    assert!(
        sent >= 300,
        "sent bytes {sent} below the 300 body bytes served"
    );
    let peer_up = text
        .lines()
        .find(|l| {
            l.starts_with("outpost_edge_upstream_peer_up{") && l.contains(&origin.addr.to_string())
        })
        .unwrap_or_else(|| panic!("no health gauge for the checked peer in:\n{text}"));
    assert!(peer_up.ends_with(" 1"), "{peer_up}");

    let status = c
        .get(format!("http://{admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_access_log_has_one_parsable_line_per_request() {
    let origin = Origin::start("origin").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let yaml = format!("server: {{access_log_format: ACCESS_LOG_FORMAT_JSON}}\n{ONE_UPSTREAM}");
    let settings = EdgeSettings {
        access_log: Some(path.clone()),
        ..Default::default()
    };
    let node = edge_with(settings, &yaml, &[("O", origin.addr.to_string())]).await;
    let base = base_url(&node);
    let c = client();
    let r = c
        .get(format!("{base}/bytes/42?x=1"))
        .header("user-agent", "probe/1.0")
        .header("x-request-id", "req-abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 42);
    c.get(format!("{base}/status/503")).send().await.unwrap();

    let mut lines = Vec::new();
    let logged = eventually(Duration::from_secs(5), || {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        let n = lines.len();
        async move { n >= 2 }
    })
    .await;
    assert!(logged, "access log lines: {lines:?}");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["request_method"], "GET");
    assert_eq!(first["request_uri"], "/bytes/42?x=1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["body_bytes_sent"], 42);
    assert_eq!(first["http_user_agent"], "probe/1.0");
    assert_eq!(first["request_id"], "req-abc");
    assert_eq!(first["application"], "site");
    assert_eq!(first["remote_addr"], "127.0.0.1");
    assert_eq!(first["upstream_addr"], origin.addr.to_string());
    assert_eq!(first["upstream_status"], 200);
    assert_eq!(first["complete"], true);
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["status"], 503);
    assert_eq!(second["upstream_status"], 503);
}
