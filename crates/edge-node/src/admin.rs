//! The admin listener: `/metrics` (Prometheus text), `/status` (JSON: config version, peers
//! and their health), `/healthz`. Runs on the control runtime, away from the workers.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::clock;
use crate::server::worker::Shared;

pub async fn serve(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "admin listener");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let shared = shared.clone();
                    async move { Ok::<_, std::convert::Infallible>(route(&shared, req.uri().path())) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn route(shared: &Shared, path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            shared.metrics.encode(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/status" => (StatusCode::OK, "application/json", status_json(shared)),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

fn status_json(shared: &Shared) -> String {
    let snap = shared.snapshot.load();
    let now = clock::now_ms();
    let mut upstreams = serde_json::Map::new();
    for (name, u) in &snap.upstreams {
        let peers: Vec<_> = u
            .peers
            .load()
            .all()
            .map(|p| {
                serde_json::json!({
                    "address": p.addr.to_string(),
                    "name": &*p.name,
                    "weight": p.weight,
                    "backup": p.backup,
                    "healthy": p.state.is_healthy(),
                    "available": p.state.is_available(now),
                    "active_requests": p.state.active(),
                })
            })
            .collect();
        upstreams.insert(name.to_string(), serde_json::Value::Array(peers));
    }
    serde_json::json!({ "version": snap.version, "upstreams": upstreams }).to_string()
}
