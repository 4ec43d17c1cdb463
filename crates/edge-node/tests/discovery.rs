//! DNS discovery against a real DNS server over UDP.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use support::*;

/// An authoritative server that answers every A query with the current addresses, TTL 0.
async fn dns_server(addrs: Arc<Mutex<Vec<Ipv4Addr>>>) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
            reply.metadata.authoritative = true;
            reply.metadata.recursion_desired = query.metadata.recursion_desired;
            for q in &query.queries {
                reply.add_query(q.clone());
                for ip in addrs.lock().unwrap().iter() {
                    reply.add_answer(Record::from_rdata(q.name().clone(), 0, RData::A(A(*ip))));
                }
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, from).await;
            }
        }
    });
    local
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_discovery_picks_up_a_changed_record() {
    let a = Origin::start("a").await;
    let b = Origin::start_on(
        "b",
        SocketAddr::new("127.0.0.2".parse().unwrap(), a.addr.port()),
    )
    .await;
    let records = Arc::new(Mutex::new(vec![Ipv4Addr::new(127, 0, 0, 1)]));
    let dns = dns_server(records.clone()).await;
    let node = edge(
        r#"
upstreams:
  - name: svc
    discovery: {name: web.service.consul, record_type: DNS_RECORD_TYPE_A, port: @PORT@, interval_seconds: 1, resolver: "@DNS@"}
applications:
  - {name: site, is_default: true, listeners: [{address: "127.0.0.1:0"}], upstream: svc}
"#,
        &[("PORT", a.addr.port().to_string()), ("DNS", dns.to_string())],
    )
    .await;
    let base = format!(
        "http://{}",
        node.bound_addr("127.0.0.1:0".parse().unwrap()).unwrap()
    );
    let c = client();
    let body = |c: reqwest::Client, base: String| async move {
        match c.get(format!("{base}/")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    };
    assert!(
        eventually(Duration::from_secs(5), || body(c.clone(), base.clone())
            .then_eq("a"))
        .await
    );
    *records.lock().unwrap() = vec![Ipv4Addr::new(127, 0, 0, 2)];
    assert!(
        eventually(Duration::from_secs(5), || body(c.clone(), base.clone())
            .then_eq("b"))
        .await
    );
    // Once switched, the old peer gets nothing more.
    let hits_a = a.hits();
    for _ in 0..20 {
        assert_eq!(body(c.clone(), base.clone()).await, "b");
    }
    assert_eq!(a.hits(), hits_a);
    assert!(b.hits() >= 20);
    node.shutdown(Duration::from_secs(1)).await;
}

trait ThenEq: std::future::Future<Output = String> + Sized {
    async fn then_eq(self, want: &str) -> bool {
        self.await == want
    }
}

impl<F: std::future::Future<Output = String>> ThenEq for F {}
