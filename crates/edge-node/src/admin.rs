//! The admin listener: `/metrics` (Prometheus text), `/status` (JSON: config version, peers
//! and their health, cache size), `/healthz`, and `POST /cache/purge`. Runs on the control
//! runtime, away from the workers.

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
                    async move {
                        if req.uri().path() == "/cache/purge" {
                            return Ok::<_, std::convert::Infallible>(purge(&shared, req).await);
                        }
                        Ok(route(&shared, req.uri().path()))
                    }
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
        "/metrics" => {
            refresh_cache_size(shared);
            (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                shared.metrics.encode(),
            )
        }
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

fn refresh_cache_size(shared: &Shared) {
    use outpost_cache::Tier;
    let snap = shared.snapshot.load();
    let m = snap.cache.memory();
    shared.metrics.set_cache_size("memory", m.size(), m.len());
    if let Some(d) = snap.cache.disk() {
        shared.metrics.set_cache_size("disk", d.size(), d.len());
    }
}

/// Largest purge request body accepted.
const MAX_PURGE_BODY: usize = 64 * 1024;

/// `POST /cache/purge` with `{"url": ...}`, `{"prefix": ...}`, `{"tag": ...}` or
/// `{"all": true}`, and `"soft": true` to mark stale instead of removing.
async fn purge(
    shared: &Shared,
    req: http::Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    if req.method() != http::Method::POST {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"use POST"}"#.into(),
        );
    }
    let limited = http_body_util::Limited::new(req.into_body(), MAX_PURGE_BODY);
    let body = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                r#"{"error":"body too large"}"#.into(),
            );
        }
    };
    match crate::purge::parse_request(&body) {
        Ok((selector, soft)) => {
            let n = shared.snapshot.load().cache.purge(&selector, soft);
            tracing::info!(?selector, soft, purged = n, "cache purge");
            json(
                StatusCode::OK,
                serde_json::json!({ "purged": n }).to_string(),
            )
        }
        Err(e) => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": e }).to_string(),
        ),
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
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
    use outpost_cache::Tier;
    let memory = snap.cache.memory();
    let mut cache = serde_json::json!({
        "memory": { "bytes": memory.size(), "objects": memory.len() },
    });
    if let Some(d) = snap.cache.disk() {
        cache["disk"] = serde_json::json!({
            "path": d.0.root().display().to_string(),
            "bytes": d.size(),
            "objects": d.len(),
        });
    }
    serde_json::json!({ "version": snap.version, "upstreams": upstreams, "cache": cache })
        .to_string()
}
