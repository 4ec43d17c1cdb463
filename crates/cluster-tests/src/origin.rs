//! An origin server inside the test process: every request gets `200` with the origin's name as
//! the body and in an `x-origin` header, so a client of an edge can tell which origin the edge
//! proxied to. It counts the requests it answered.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

pub struct Origin {
    name: String,
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl Origin {
    /// Listens on `ip`, on a port the kernel picks.
    pub async fn start(ip: IpAddr, name: &str) -> Origin {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .unwrap_or_else(|e| panic!("origin {name} cannot listen on {ip}: {e}"));
        let addr = listener.local_addr().expect("bound address");
        let served = Arc::new(AtomicU64::new(0));
        let body = Bytes::from(name.to_string());
        let header = name.to_string();
        let count = served.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (body, header, count) = (body.clone(), header.clone(), count.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        count.fetch_add(1, Ordering::Relaxed);
                        let resp = Response::builder()
                            .header("x-origin", header.as_str())
                            .header("content-type", "text/plain")
                            .body(Full::new(body.clone()))
                            .expect("a valid response");
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin {
            name: name.to_string(),
            addr,
            served,
            accept,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
