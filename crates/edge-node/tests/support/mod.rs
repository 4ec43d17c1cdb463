//! Real servers for the edge's integration tests: origins on 127.0.0.1:0 that can be killed,
//! certificates from rcgen, an edge started from YAML, a tiny authoritative DNS server.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use outpost_edge_node::{EdgeNode, EdgeSettings};
use outpost_proto::{SourceFormat, parse_config};

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// An origin that answers with its name. Paths: `/status/N`, `/slow/MS`, `/bytes/N`
/// (streamed), `/upload` (counts the request body), `/echo-headers`, `/upgrade` (101, then
/// echoes bytes), anything else: 200 with the name.
pub struct Origin {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Origin {
    pub async fn start(name: &str) -> Origin {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(name: &str, addr: SocketAddr) -> Origin {
        Self::start_with(name, addr, Duration::ZERO).await
    }

    /// An origin that waits `delay` before every answer.
    pub async fn start_slow(name: &str, delay: Duration) -> Origin {
        Self::start_with(name, "127.0.0.1:0".parse().unwrap(), delay).await
    }

    async fn start_with(name: &str, addr: SocketAddr, delay: Duration) -> Origin {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (n, h, t) = (name.to_string(), hits.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (n, h) = (n.clone(), h.clone());
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (n, h) = (n.clone(), h.clone());
                        async move {
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            Ok::<_, Infallible>(answer(&n, &h, req).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
                t.lock().unwrap().push(conn.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        Origin {
            name: name.to_string(),
            addr,
            hits,
            tasks,
        }
    }

    /// Stops listening and drops every open connection, as a crashed process would.
    pub fn kill(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn answer(name: &str, hits: &AtomicUsize, mut req: Request<Incoming>) -> Response<Body> {
    hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (first, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let resp = |status: u16, body: Body| {
        let mut r = Response::new(body);
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        r.headers_mut().insert("x-origin", name.parse().unwrap());
        r
    };
    match first {
        "status" => resp(arg.parse().unwrap_or(500), full(name.to_string())),
        "slow" => {
            tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(100))).await;
            resp(200, full(name.to_string()))
        }
        "bytes" => {
            let total: usize = arg.parse().unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let n = total / chunk.len();
            let rest = total % chunk.len();
            let stream = futures_util::stream::iter(
                (0..n)
                    .map(move |_| chunk.clone())
                    .chain((rest > 0).then(|| Bytes::from(vec![b'x'; rest]))),
            )
            .map(|b| Ok::<_, Infallible>(Frame::data(b)));
            resp(200, BodyExt::boxed(StreamBody::new(stream)))
        }
        "upload" => {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(f) = body.frame().await {
                match f {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => return resp(400, full("broken body")),
                }
            }
            resp(200, full(n.to_string()))
        }
        // `/c/NAME?cc=..&etag=..&lm=..&vary=..&tags=..&status=..&delay=..&size=..&cookie=1`:
        // a cacheable object whose headers the query sets; answers 304 to a matching
        // If-None-Match. The body names the origin and counts its hits on this path.
        "c" => {
            let q: Vec<(String, String)> = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.replace("%20", " ").replace("%22", "\"")))
                .collect();
            let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            if let Some(ms) = get("delay").and_then(|d| d.parse().ok()) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let etag = get("etag").map(|e| format!("\"{e}\""));
            let inm = req
                .headers()
                .get("if-none-match")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let status: u16 = get("status").and_then(|s| s.parse().ok()).unwrap_or(200);
            let not_modified = etag.is_some() && inm == etag;
            let body = match get("size").and_then(|s| s.parse::<usize>().ok()) {
                Some(n) => full(vec![b'z'; n]),
                None => full(format!("{name} {path} hit {}", hits.load(Ordering::SeqCst))),
            };
            let mut r = resp(
                if not_modified { 304 } else { status },
                if not_modified {
                    full(Bytes::new())
                } else {
                    body
                },
            );
            let h = r.headers_mut();
            let mut set = |k: &'static str, v: Option<String>| {
                if let Some(v) = v.and_then(|v| http::HeaderValue::from_str(&v).ok()) {
                    h.insert(k, v);
                }
            };
            set("cache-control", get("cc"));
            set("cdn-cache-control", get("cdncc"));
            set("etag", etag);
            set("last-modified", get("lm"));
            set("vary", get("vary"));
            set("surrogate-key", get("tags"));
            set("set-cookie", get("cookie").map(|_| "s=1".to_string()));
            set("content-encoding", get("ce"));
            set("age", get("age"));
            r
        }
        "echo-headers" => {
            let mut lines = format!("{} {}\n", req.method(), req.uri());
            for (k, v) in req.headers() {
                lines.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            resp(200, full(lines))
        }
        "upgrade" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = resp(101, full(Bytes::new()));
            r.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            r.headers_mut().insert("upgrade", "echo".parse().unwrap());
            r
        }
        _ => resp(200, full(name.to_string())),
    }
}

/// Starts an edge with two workers from YAML; `@NAME@` placeholders are replaced first.
/// A raw origin that reads each request head and answers it with `response`, bytes as given
/// (for responses a well-behaved server would not send: cut short, or failing).
#[allow(dead_code)] // Not every test file uses one.
pub async fn canned_origin(response: &'static [u8]) -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_request_head(&mut s).await.is_some() {
                    let _ = s.write_all(response).await;
                }
            });
        }
    });
    addr
}

/// Reads up to the end of a request head (and whatever came with it); `None` when the peer
/// closed or failed first.
#[allow(dead_code)]
pub async fn read_request_head(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// An origin that sends the first chunk of a chunked body (`first\n`), then holds the rest
/// until `release`; `closed` says whether the edge closed the connection while it held.
#[allow(dead_code)] // Not every test file uses it.
pub struct HeldOrigin {
    pub addr: SocketAddr,
    pub release: tokio::sync::oneshot::Sender<()>,
    pub closed: tokio::sync::oneshot::Receiver<bool>,
}

#[allow(dead_code)]
pub async fn held_origin() -> HeldOrigin {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the edge closed before sending its request");
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
            .await
            .unwrap();
        tokio::select! {
            _ = released => {
                let _ = s.write_all(b"7\r\nsecond\n\r\n0\r\n\r\n").await;
                // Keep the connection until the edge is done with it.
                let _ = s.read(&mut buf).await;
            }
            read = s.read(&mut buf) => {
                let _ = closed_tx.send(matches!(read, Ok(0) | Err(_)));
            }
        }
    });
    HeldOrigin {
        addr,
        release,
        closed,
    }
}

/// Writes `request` as it is (several requests, the last asking to close, or one the edge
/// closes after) and reads all the edge sends until it closes.
#[allow(dead_code)] // Not every test file uses it.
pub async fn exchange_raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the edge answers and closes")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn edge(yaml: &str, vars: &[(&str, String)]) -> Arc<EdgeNode> {
    edge_with(EdgeSettings::default(), yaml, vars).await
}

/// [`edge`] with explicit settings (admin listener, access log); two workers.
pub async fn edge_with(
    settings: EdgeSettings,
    yaml: &str,
    vars: &[(&str, String)],
) -> Arc<EdgeNode> {
    let cfg = parse_config(&fill(yaml, vars), SourceFormat::Yaml).expect("test config parses");
    EdgeNode::start(
        EdgeSettings {
            workers: 2,
            ..settings
        },
        cfg,
    )
    .await
    .expect("edge starts")
}

/// One upstream (`@O@`) behind one default application on `127.0.0.1:0`.
pub const ONE_UPSTREAM: &str = r#"
upstreams: [{name: web, peers: [{address: "@O@"}]}]
applications: [{name: site, is_default: true, listeners: [{address: "127.0.0.1:0"}], upstream: web}]
"#;

/// An edge whose only application proxies everything to `origin`.
pub async fn edge_in_front_of(origin: SocketAddr) -> Arc<EdgeNode> {
    edge(ONE_UPSTREAM, &[("O", origin.to_string())]).await
}

/// The address bound for the `127.0.0.1:0` listener every test config uses.
pub fn plain_addr(node: &EdgeNode) -> SocketAddr {
    node.bound_addr("127.0.0.1:0".parse().unwrap())
        .expect("the edge listens on 127.0.0.1:0")
}

/// `http://` + [`plain_addr`].
pub fn base_url(node: &EdgeNode) -> String {
    format!("http://{}", plain_addr(node))
}

pub fn fill(yaml: &str, vars: &[(&str, String)]) -> String {
    let mut s = yaml.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("@{k}@"), v);
    }
    s
}

/// A GET through `c`: status, headers and body.
pub async fn get(c: &reqwest::Client, url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A self-signed certificate for `names`, as (cert PEM, key PEM).
pub fn certificate(names: &[&str]) -> (String, String) {
    let c =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

/// YAML-escapes a PEM block as a double-quoted scalar.
pub fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A free port on 127.0.0.1 (bound then released) for listeners that must be known before
/// the config is written.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
