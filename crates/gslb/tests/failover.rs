//! Failover with default probe settings: three edge HTTP listeners, one killed and restored
//! several times; the time until answers drop it and take it back is measured and printed.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// An edge stand-in: answers every HTTP request with 200 until aborted, which closes the
/// listening socket (connections are then refused).
fn edge(listener: tokio::net::TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    })
}

async fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    // The port was ours a moment ago; retry briefly in case the kernel is still releasing it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("rebind {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot rebind {addr}: {e}"),
        }
    }
}

/// Polls the GSLB name every 5 ms until `done(answer)` holds; returns how long that took.
async fn until(
    dns: SocketAddr,
    since: Instant,
    done: impl Fn(&[String]) -> bool,
) -> Option<Duration> {
    let deadline = since + Duration::from_secs(5);
    while Instant::now() < deadline {
        let r = udp(dns, &query("edge.cdn.example.com.", RecordType::A)).await;
        if done(&addresses(&r)) {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_edge_leaves_the_answers_within_a_second_and_comes_back_when_restored() {
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let mut listeners = Vec::new();
    for ip in ips {
        listeners.push(bind(format!("{ip}:0").parse().unwrap()).await);
    }
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut edges: Vec<JoinHandle<()>> = listeners.into_iter().map(edge).collect();

    // Default probe settings: every 250 ms, 200 ms timeout, fall 2, rise 2.
    let nodes: String = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "  - {{name: e{i}, address: {}, health: {{kind: PROBE_KIND_HTTP, port: {}, http_path: /healthz}}}}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    let g = start(&format!(
        r#"
zones: [{{name: cdn.example.com, soa: {{rname: h.example.com}}, ns: [ns1.example.net]}}]
nodes:
{nodes}
records: [{{zone: cdn.example.com, name: edge, policy: POLICY_ALL_HEALTHY}}]
"#
    ))
    .await;
    let dns = g.dns_addr();
    assert!(
        until(dns, Instant::now(), |a| a.len() == 3).await.is_some(),
        "all three edges answered at first"
    );

    let victim = 1;
    let dead_ip = ips[victim].to_string();
    let (mut down, mut up) = (Vec::new(), Vec::new());
    for round in 0..5 {
        // Let a random part of a probe interval pass, so kills land at different phases.
        tokio::time::sleep(Duration::from_millis(50 + 37 * round)).await;
        edges[victim].abort();
        let _ = (&mut edges[victim]).await;
        let killed = Instant::now();
        let gone = until(dns, killed, |a| !a.contains(&dead_ip) && a.len() == 2)
            .await
            .expect("the dead edge left the answers within 5 s");
        down.push(gone);

        edges[victim] = edge(bind(addrs[victim]).await);
        let restored = Instant::now();
        let back = until(dns, restored, |a| a.contains(&dead_ip))
            .await
            .expect("the restored edge came back within 5 s");
        up.push(back);
        eprintln!("round {round}: removed after {gone:?}, back after {back:?}");
    }
    let (max_down, max_up) = (*down.iter().max().unwrap(), *up.iter().max().unwrap());
    println!(
        "failover (default probes 250 ms / 200 ms / fall 2 / rise 2, {} rounds): \
         removal median {:?} max {:?}; return median {:?} max {:?}",
        down.len(),
        median(&mut down),
        max_down,
        median(&mut up),
        max_up
    );
    let metrics = g.metrics_text();
    assert!(
        metrics.contains(r#"gslb_answer_changes_total{record="edge.cdn.example.com"} 10"#),
        "{metrics}"
    );
    for e in edges {
        e.abort();
    }
    g.shutdown().await;
}
