//! The admin API over HTTP: one request at a time, JSON in and out, and every answer that is
//! not a success turned into one [`ApiError`] that names the status and the API's own words.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Where the admin API listens when neither `--server` nor `OUTPOST_SERVER` says: the default
/// of `outpost control-plane --listen` and of `outpost dev`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:9400";

/// The longest stretch of a non-JSON error body quoted in a message.
const MAX_QUOTED: usize = 300;

pub struct Client {
    http: reqwest::Client,
    /// `http://host:port`, without a trailing slash or `/api/v1`.
    base: String,
    token: Option<String>,
    /// Config and release calls go to this partition (the API's default when `None`).
    partition: Option<String>,
}

/// Paths whose endpoints take `?partition=`.
const PARTITIONED: [&str; 3] = ["/api/v1/config", "/api/v1/changes", "/api/v1/releases"];

/// A reply that was not a success, as the API explained it.
#[derive(Debug)]
pub struct ApiError {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    /// The API's `error` text, or the start of the body when it is not the API's JSON.
    pub message: String,
    /// The API's per-field errors (a 422 for an invalid config): `(path, message)`.
    pub fields: Vec<(String, String)>,
    /// Whether the request carried a token at all (a 401 without one needs a different hint).
    pub had_token: bool,
}

impl std::error::Error for ApiError {}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.method, self.path, self.status)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        } else if self.status == StatusCode::NOT_FOUND {
            // The API's own 404s say what is missing; a bare one means the route is unknown.
            write!(
                f,
                ": no such route on this server (is it an Outpost control plane, and as new as this client?)"
            )?;
        }
        if self.status == StatusCode::UNAUTHORIZED && !self.had_token {
            write!(f, " (no token given: use --token or set OUTPOST_TOKEN)")?;
        }
        // One line per field error, so each path can be read (and grepped) on its own.
        for (path, message) in &self.fields {
            write!(f, "\n  {path}: {message}")?;
        }
        Ok(())
    }
}

impl Client {
    pub fn new(server: &str, token: Option<String>, timeout: Duration) -> anyhow::Result<Client> {
        let base = normalize_server(server)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("outpost-ctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            http,
            base,
            token: token.filter(|t| !t.trim().is_empty()),
            partition: None,
        })
    }

    /// Config, changes and release calls go to `partition`.
    pub fn with_partition(mut self, partition: Option<String>) -> Client {
        self.partition = partition.filter(|p| !p.is_empty());
        self
    }

    /// `path` with the partition added, for the endpoints that take one.
    fn scoped(&self, path: &str) -> String {
        match &self.partition {
            Some(p) if PARTITIONED.iter().any(|pre| path.starts_with(pre)) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{path}{sep}partition={p}")
            }
            _ => path.to_string(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::GET, path, None).await
    }

    /// `body` is JSON text, sent as it is (so the API's line and column point into it).
    pub async fn put(&self, path: &str, body: String) -> anyhow::Result<Value> {
        self.send(Method::PUT, path, Some(body)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(Method::POST, path, Some(body.to_string())).await
    }

    /// Sends one request to `path` (under the server's base, e.g. `/api/v1/nodes`). A success
    /// gives the reply's JSON (`null` for an empty body); anything else is an [`ApiError`].
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.base, self.scoped(path));
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.trim());
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let reply = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the control plane at {}: {} (set --server or OUTPOST_SERVER)",
                self.base,
                error_chain(&e)
            )
        })?;
        let status = reply.status();
        let bytes = reply.bytes().await.map_err(|e| {
            anyhow::anyhow!("{method} {path}: reading the reply: {}", error_chain(&e))
        })?;
        if !status.is_success() {
            let (message, fields) = explain(&bytes);
            return Err(ApiError {
                method,
                path: path.to_string(),
                status,
                message,
                fields,
                had_token: self.token.is_some(),
            }
            .into());
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{method} {path}: {status} but the reply is not JSON ({e}): {}",
                quote(&bytes)
            )
        })
    }
}

/// `host:port`, `http://host:port/`, or the `http://host:port/api/v1` that `outpost
/// control-plane` prints, all to `http://host:port`.
pub fn normalize_server(server: &str) -> anyhow::Result<String> {
    let s = server.trim().trim_end_matches('/');
    anyhow::ensure!(!s.is_empty(), "--server is empty");
    if s.starts_with("https://") {
        anyhow::bail!(
            "{s}: the admin API serves plain HTTP for now (no TLS yet); use an http:// URL"
        );
    }
    let s = if s.starts_with("http://") {
        s.to_string()
    } else if s.contains("://") {
        anyhow::bail!("{s}: the server URL must start with http://");
    } else {
        format!("http://{s}")
    };
    let s = s
        .strip_suffix("/api/v1")
        .unwrap_or(&s)
        .trim_end_matches('/');
    let url = reqwest::Url::parse(s).with_context(|| format!("--server {server:?}"))?;
    anyhow::ensure!(
        url.host_str().is_some(),
        "--server {server:?}: no host in the URL"
    );
    Ok(s.to_string())
}

/// The API's error body: `{"error": "..."}` or `{"errors": [{"path", "message"}]}` (422); any
/// other body is quoted, shortened, on one line.
pub fn explain(body: &[u8]) -> (String, Vec<(String, String)>) {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return (quote(body), Vec::new());
    };
    let mut fields = Vec::new();
    if let Some(errors) = json.get("errors").and_then(Value::as_array) {
        for e in errors {
            let path = e.get("path").and_then(Value::as_str).unwrap_or("");
            let message = match e.get("message") {
                Some(Value::String(m)) => m.clone(),
                Some(other) => other.to_string(),
                None => e.to_string(),
            };
            fields.push((path.to_string(), message));
        }
    }
    let message = match json.get("error") {
        Some(Value::String(m)) => one_line(m),
        Some(other) => other.to_string(),
        None if !fields.is_empty() => "invalid configuration".to_string(),
        None => quote(body),
    };
    (message, fields)
}

fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = one_line(text.trim());
    match line.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An error and its causes on one line: reqwest's own message alone says only "error sending
/// request".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_normalized_to_scheme_host_and_port() {
        for given in [
            "127.0.0.1:9400",
            "http://127.0.0.1:9400",
            "http://127.0.0.1:9400/",
            "http://127.0.0.1:9400/api/v1",
            " http://127.0.0.1:9400/api/v1/ ",
        ] {
            assert_eq!(normalize_server(given).unwrap(), "http://127.0.0.1:9400");
        }
        assert_eq!(
            normalize_server("cp.internal").unwrap(),
            "http://cp.internal"
        );
    }

    #[test]
    fn https_and_other_schemes_are_refused_with_a_reason() {
        let e = normalize_server("https://cp:9400").unwrap_err().to_string();
        assert!(e.contains("plain HTTP"), "{e}");
        assert!(normalize_server("ftp://cp").is_err());
        assert!(normalize_server("").is_err());
    }

    #[test]
    fn the_apis_error_text_is_kept() {
        let (m, f) = explain(br#"{"error":"missing or unknown bearer token"}"#);
        assert_eq!(m, "missing or unknown bearer token");
        assert!(f.is_empty());
    }

    #[test]
    fn field_errors_keep_their_paths() {
        let (m, f) = explain(
            br#"{"errors":[{"path":"applications[0].upstream","message":"unknown upstream \"x\""}]}"#,
        );
        assert_eq!(m, "invalid configuration");
        assert_eq!(
            f,
            vec![(
                "applications[0].upstream".to_string(),
                "unknown upstream \"x\"".to_string()
            )]
        );
    }

    #[test]
    fn a_body_that_is_not_the_apis_json_is_quoted_short_and_on_one_line() {
        let (m, _) = explain(b"<html>\n<h1>Bad Gateway</h1>\n</html>\n");
        assert_eq!(m, "<html> <h1>Bad Gateway</h1> </html>");
        let long = "x".repeat(1000);
        let (m, _) = explain(long.as_bytes());
        assert_eq!(m.chars().count(), MAX_QUOTED + 1);
        let (m, _) = explain(&[0xff, 0xfe, b'a']);
        assert!(m.ends_with('a'));
    }

    #[test]
    fn an_error_names_method_path_status_and_text_and_lists_fields() {
        let e = ApiError {
            method: Method::PUT,
            path: "/api/v1/config".into(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "invalid configuration".into(),
            fields: vec![("upstreams[0].name".into(), "must not be empty".into())],
            had_token: true,
        };
        assert_eq!(
            e.to_string(),
            "PUT /api/v1/config: 422 Unprocessable Entity: invalid configuration\n  upstreams[0].name: must not be empty"
        );
        let e = ApiError {
            method: Method::GET,
            path: "/api/v1/nodes".into(),
            status: StatusCode::UNAUTHORIZED,
            message: "missing or unknown bearer token".into(),
            fields: Vec::new(),
            had_token: false,
        };
        assert!(e.to_string().contains("OUTPOST_TOKEN"), "{e}");
    }
}
