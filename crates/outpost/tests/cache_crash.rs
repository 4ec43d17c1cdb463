//! The disk cache under SIGKILL: a real `outpost edge` process is killed while it writes
//! objects to its disk tier, then restarted on the same directory with the origin gone. Every
//! object it serves must be whole and correct; none may be torn.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::TokioIo;

const OBJECT: usize = 2 << 20;
const CHUNK: usize = 64 * 1024;

/// Byte `i` of object `n`: every object's content is distinct and checkable.
fn byte(n: usize, i: usize) -> u8 {
    ((n * 31 + i) % 251) as u8
}

/// An origin streaming `/o/N` in 64 KiB chunks, `pause` apart, cacheable for 10 minutes.
async fn origin(pause: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let n: usize = req
                            .uri()
                            .path()
                            .trim_start_matches("/o/")
                            .parse()
                            .unwrap_or(0);
                        let chunks = futures_util::stream::unfold(0usize, move |off| async move {
                            if off >= OBJECT {
                                return None;
                            }
                            tokio::time::sleep(pause).await;
                            let data: Vec<u8> = (off..off + CHUNK).map(|i| byte(n, i)).collect();
                            Some((
                                Ok::<_, Infallible>(Frame::data(Bytes::from(data))),
                                off + CHUNK,
                            ))
                        });
                        let mut r = http::Response::new(StreamBody::new(chunks));
                        r.headers_mut()
                            .insert("cache-control", "max-age=600".parse().unwrap());
                        r.headers_mut().insert("content-length", OBJECT.into());
                        Ok::<_, Infallible>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Edge(Child);

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_edge(config: &std::path::Path) -> Edge {
    Edge(
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["edge", "--workers", "2", "--access-log", "off", "--admin"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("outpost binary runs"),
    )
}

async fn wait_ready(c: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if c.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("edge did not come up at {url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_during_cache_writes_never_leaves_a_torn_object_served() {
    let origin_addr = origin(Duration::from_millis(20)).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("edge.yaml");
    let write_config = |origin: SocketAddr| {
        std::fs::write(
            &config,
            format!(
                r#"
server: {{cache: {{disk_path: {:?}, max_memory_object_bytes: 65536}}}}
upstreams: [{{name: o, peers: [{{address: "{origin}"}}], read_timeout_ms: 60000}}]
applications:
  - name: a
    is_default: true
    listeners: [{{address: "127.0.0.1:{port}"}}]
    upstream: o
    cache_rules: [{{}}]
"#,
                dir.path().join("cache").display().to_string()
            ),
        )
        .unwrap()
    };
    write_config(origin_addr);
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    let edge = start_edge(&config);
    wait_ready(&c, &format!("{base}/healthz-probe")).await;
    // Object 0 is stored whole before the crash.
    let whole = c
        .get(format!("{base}/o/0"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(whole.len(), OBJECT);
    // Then 8 objects stream in (about 0.6 s each) and the edge is killed mid-write.
    let fetches: Vec<_> = (1..=8)
        .map(|n| {
            let (c, url) = (c.clone(), format!("{base}/o/{n}"));
            tokio::spawn(async move { c.get(url).send().await?.bytes().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    unsafe { libc::kill(edge.0.id() as i32, libc::SIGKILL) };
    for f in fetches {
        let _ = f.await;
    }
    drop(edge);

    // Restart on the same cache directory with no origin at all.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    write_config(dead);
    let _edge = start_edge(&config);
    wait_ready(&c, &format!("{base}/healthz-probe")).await;
    let mut served = 0;
    for n in 0..=8 {
        let r = c.get(format!("{base}/o/{n}")).send().await.unwrap();
        if r.status() == 200 {
            let body = r.bytes().await.unwrap();
            assert_eq!(body.len(), OBJECT, "object {n} served torn");
            assert!(
                body.iter().enumerate().all(|(i, b)| *b == byte(n, i)),
                "object {n} served with wrong bytes"
            );
            served += 1;
        } else {
            assert_eq!(r.status(), 502, "object {n}: not cached, origin gone");
        }
    }
    assert!(
        served >= 1,
        "the object stored before the crash survives it"
    );
}
