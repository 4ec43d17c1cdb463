//! The edge's own HTTP/1.1 path (`server/http1.rs`) on real sockets: keep-alive and
//! pipelining, HEAD, chunked responses, `Connection: close`, and the hand-over to hyper of a
//! connection whose request it does not serve itself (a body, a malformed head), mid-stream.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const SITE: &str = r#"
server: {max_header_bytes: 16384}
upstreams: [{name: web, peers: [{address: "@O@"}]}]
applications:
  - name: site
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: web
    rules:
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/lua]}]
        actions: [{lua: {content: {inline: "ngx.say('one') ngx.flush() ngx.say('two')"}}}]
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/raw]}]
        actions: [{lua: {content: {inline: "ngx.print(ngx.req.raw_header()) local h = ngx.req.get_headers(0, true) ngx.print(tostring(h['X-MiXed']), ' ', tostring(h['x-mixed']))"}}}]
"#;

async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    exchange_raw(addr, request).await
}

/// The status codes of the responses in `wire`, in order.
fn statuses(wire: &str) -> Vec<u16> {
    wire.match_indices("HTTP/1.1 ")
        .map(|(i, _)| wire[i + 9..i + 12].parse().unwrap())
        .collect()
}

async fn site() -> (Origin, std::sync::Arc<outpost_edge_node::EdgeNode>) {
    let origin = Origin::start("o").await;
    let node = edge(SITE, &[("O", origin.addr.to_string())]).await;
    (origin, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (_o, node) = site().await;
    let wire = exchange(
        plain_addr(&node),
        b"GET /status/201 HTTP/1.1\r\nHost: a\r\n\r\nGET /status/404 HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /status/202 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&wire), [201, 404, 202], "{wire}");
    assert_eq!(wire.matches("\r\ndate: ").count(), 3, "{wire}");
    // Only the last says the connection ends, as hyper says it.
    assert_eq!(
        wire.matches("\r\nconnection: close\r\n").count(),
        1,
        "{wire}"
    );
    assert!(
        wire.rfind("connection: close") > wire.rfind("HTTP/1.1 202"),
        "{wire}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_gets_the_length_and_no_body_and_the_connection_goes_on() {
    let (_o, node) = site().await;
    let wire = exchange(
        plain_addr(&node),
        b"HEAD /status/200 HTTP/1.1\r\nHost: a\r\n\r\nGET /status/200 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (first, second) = wire.split_at(wire.rfind("HTTP/1.1 ").unwrap());
    assert!(first.contains("content-length: 1\r\n"), "{first}");
    assert!(
        first.ends_with("\r\n\r\n"),
        "no body after a HEAD response: {first}"
    );
    assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{second}");
    assert!(second.ends_with("\r\n\r\no"), "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_unknown_length_is_chunked() {
    let (_o, node) = site().await;
    let wire = exchange(
        plain_addr(&node),
        b"GET /lua HTTP/1.1\r\nHost: a\r\n\r\nGET /lua HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&wire), [200, 200], "{wire}");
    assert_eq!(
        wire.matches("transfer-encoding: chunked\r\n").count(),
        2,
        "{wire}"
    );
    assert_eq!(
        wire.matches("\r\n\r\n4\r\none\n\r\n4\r\ntwo\n\r\n0\r\n\r\n")
            .count(),
        2,
        "{wire}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_hands_the_connection_to_hyper_mid_stream() {
    let (_o, node) = site().await;
    let wire = exchange(
        plain_addr(&node),
        b"GET /status/203 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          GET /status/204 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&wire), [203, 200, 204], "{wire}");
    assert!(
        wire.contains("\r\n\r\n5"),
        "the origin counted 5 body bytes: {wire}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_heads_get_hypers_answers() {
    let (_o, node) = site().await;
    let addr = plain_addr(&node);
    let wire = exchange(
        addr,
        b"GET /status/200 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nbad header\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&wire), [200, 400], "{wire}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    let wire = exchange(addr, big.as_bytes()).await;
    assert_eq!(statuses(&wire), [431], "{wire}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_request_does_not_hold_the_edge() {
    let (_o, node) = site().await;
    let addr = plain_addr(&node);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow/2000 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    let wire = exchange(
        addr,
        b"GET /status/200 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&wire), [200], "{wire}");
    let c = client();
    let (status, headers, body) = get(&c, &format!("{}/status/200", base_url(&node))).await;
    assert_eq!((status, body.as_str()), (200, "o"));
    assert!(headers.contains_key("date"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_reads_the_head_as_the_client_sent_it() {
    let (_o, node) = site().await;
    let head = "GET /raw?a=1 HTTP/1.1\r\nHost: a\r\nX-MiXed:   v1\r\nConnection: close\r\n\r\n";
    let wire = exchange(plain_addr(&node), head.as_bytes()).await;
    let body = &wire[wire.find("\r\n\r\n").unwrap() + 4..];
    // As Debian's nginx answers: the bytes as sent, and the names in the client's case.
    assert_eq!(body, format!("{head}v1 nil"), "{wire}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_ends_upstream_when_its_client_goes() {
    use tokio::io::AsyncReadExt;
    let held = held_origin().await;
    let node = edge_in_front_of(held.addr).await;
    let mut client = TcpStream::connect(plain_addr(&node)).await.unwrap();
    client
        .write_all(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("first") {
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut chunk))
            .await
            .expect("the first piece arrives")
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    drop(client);
    let closed = tokio::time::timeout(Duration::from_secs(10), held.closed)
        .await
        .expect("the origin reports")
        .unwrap();
    assert!(
        closed,
        "the edge kept the upstream connection of a client that left"
    );
}
