//! A small origin server for `outpost dev` and examples: `/` (an HTML page), `/api/time`
//! (JSON), `/echo` (the request as JSON), `/health`.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Serves until the runtime stops; returns the bound address.
pub async fn serve(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(
                            |req| async move { Ok::<_, std::convert::Infallible>(answer(req)) },
                        ),
                    )
                    .await;
            });
        }
    });
    Ok(bound)
}

fn answer(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (content_type, body) = match req.uri().path() {
        "/health" => ("text/plain", "ok\n".to_string()),
        "/api/time" => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            ("application/json", format!("{{\"unix_time\":{now}}}\n"))
        }
        "/echo" => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned())))
                .collect();
            let v = serde_json::json!({ "method": req.method().as_str(), "uri": req.uri().to_string(), "headers": headers });
            ("application/json", format!("{v}\n"))
        }
        _ => ("text/html; charset=utf-8", "<!doctype html><title>Outpost demo</title><h1>Hello from the Outpost demo origin</h1>\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=60"),
    );
    resp
}
