//! The edge's own HTTP/1.1 upstream client (bodiless GET and HEAD over plain TCP) against raw
//! origins that answer byte for byte: interim responses, chunked bodies with trailers, bodies
//! that end with the connection, broken heads, and pooled connections the origin closed.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An origin that hands each accepted connection to `serve` and counts connections.
async fn counting_origin<F, Fut>(serve: F) -> (std::net::SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let connections = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s));
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn interim_responses_are_skipped_and_a_chunked_body_arrives_whole() {
    let origin = canned_origin(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
          HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Origin: raw\r\n\r\n\
          5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    .await;
    let edge = edge_in_front_of(origin).await;
    let (status, headers, body) = get(&client(), &format!("{}/c", base_url(&edge))).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-origin"], "raw");
    assert_eq!(body, "hello world");
}

#[tokio::test]
async fn a_body_that_ends_with_the_connection_is_read_to_its_end() {
    let origin = canned_origin(b"HTTP/1.0 200 OK\r\nX-Origin: raw\r\n\r\nuntil the end").await;
    let edge = edge_in_front_of(origin).await;
    let (status, _, body) = get(&client(), &format!("{}/c", base_url(&edge))).await;
    assert_eq!((status, body.as_str()), (200, "until the end"));
}

#[tokio::test]
async fn a_broken_response_head_is_a_502() {
    for response in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\nx"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
        b"HTTP/1.1 2000 Odd\r\n\r\n",
        b"not http at all\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
    ] {
        let origin = canned_origin(response).await;
        let edge = edge_in_front_of(origin).await;
        let (status, _, _) = get(&client(), &format!("{}/b", base_url(&edge))).await;
        assert_eq!(status, 502, "{:?}", String::from_utf8_lossy(response));
    }
}

#[tokio::test]
async fn a_body_cut_short_ends_the_clients_response_early() {
    let origin = canned_origin(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this").await;
    let edge = edge_in_front_of(origin).await;
    let r = client()
        .get(format!("{}/short", base_url(&edge)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text().await.is_err(),
        "the client must see the body end early"
    );
}

#[tokio::test]
async fn head_gets_the_length_and_no_body_and_the_connection_is_reused() {
    // Answers every request on a connection.
    let (origin, connections) = counting_origin(|mut s| async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                buf.drain(..end + 4);
                let body = if head.starts_with("HEAD") {
                    ""
                } else {
                    "0123456789"
                };
                let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{body}");
                if s.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let edge = edge_in_front_of(origin).await;
    let c = client();
    let url = format!("{}/h", base_url(&edge));
    for _ in 0..3 {
        let r = c.head(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], "10");
        assert_eq!(r.bytes().await.unwrap().len(), 0);
        let (status, _, body) = get(&c, &url).await;
        assert_eq!((status, body.as_str()), (200, "0123456789"));
    }
    // Six requests over one client connection (one edge worker): one upstream connection,
    // or two if the other worker took a request.
    assert!(connections.load(Ordering::SeqCst) <= 2, "{connections:?}");
}

#[tokio::test]
async fn a_pooled_connection_the_origin_closed_is_replaced_without_an_error() {
    // Answers one request per connection with a keep-alive response, then closes the
    // connection a little later, as an origin whose keep-alive timeout ran out.
    let (origin, connections) = counting_origin(|mut s| async move {
        if read_request_head(&mut s).await.is_some() {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let edge = edge_in_front_of(origin).await;
    let c = client();
    let url = format!("{}/k", base_url(&edge));
    for i in 0..4 {
        let (status, _, body) = get(&c, &url).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "request {i}");
        // Past the origin's close: the edge's pooled connection is dead.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 4);
}
