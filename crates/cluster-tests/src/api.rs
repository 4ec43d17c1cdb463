//! A client of the control plane's admin REST API (`/api/v1`), holding one token. Every call
//! names the node it goes to, so a scenario decides where each request lands: the cluster
//! forwards writes to the leader itself.

use std::time::Duration;

use serde_json::Value;

/// How long one API call may take. Writes wait up to 3 s for a leader before answering 503,
/// and a membership change waits for the new member to catch up.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct AdminApi {
    http: reqwest::Client,
    token: String,
}

/// An answer: the status and the body as text.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub text: String,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON (Null if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

/// A request that got no HTTP answer at all (refused, reset, timed out).
#[derive(Debug)]
pub struct NoAnswer(pub String);

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AdminApi {
    pub fn new(token: &str) -> AdminApi {
        AdminApi {
            http: http_client(CALL_TIMEOUT),
            token: token.to_string(),
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// `method path` on the node whose API is at `base` (`http://ip:port`).
    pub async fn call(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, NoAnswer> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| NoAnswer(format!("bad method {method}: {e}")))?;
        let mut req = self
            .http
            .request(method.clone(), format!("{base}/api/v1{path}"))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| NoAnswer(format!("{method} {base}{path}: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| NoAnswer(format!("{method} {base}{path}: reading the body: {e}")))?;
        Ok(Reply { status, text })
    }

    pub async fn get(&self, base: &str, path: &str) -> Result<Reply, NoAnswer> {
        self.call(base, "GET", path, None).await
    }

    pub async fn put(&self, base: &str, path: &str, body: &Value) -> Result<Reply, NoAnswer> {
        self.call(base, "PUT", path, Some(body)).await
    }

    pub async fn post(&self, base: &str, path: &str, body: &Value) -> Result<Reply, NoAnswer> {
        self.call(base, "POST", path, Some(body)).await
    }

    pub async fn delete(&self, base: &str, path: &str) -> Result<Reply, NoAnswer> {
        self.call(base, "DELETE", path, None).await
    }

    /// `GET /api/v1/cluster` on one node: its view of the cluster (state, leader, term, ...).
    pub async fn cluster_status(&self, base: &str) -> Option<Value> {
        let r = self.get(base, "/cluster").await.ok()?;
        r.ok().then(|| r.json())
    }

    /// Creates or replaces one object of the working config; panics unless it is stored.
    pub async fn put_object(&self, base: &str, kind: &str, name: &str, body: &Value) {
        let path = format!("/config/{kind}/{name}");
        match self.put(base, &path, body).await {
            Ok(r) if r.ok() => {}
            Ok(r) => panic!("PUT {path}: {} {}", r.status, r.text),
            Err(e) => panic!("PUT {path}: {e}"),
        }
    }

    /// Releases the working config; panics unless a release is made. Returns its version.
    pub async fn release(&self, base: &str, note: &str) -> u64 {
        let body = serde_json::json!({ "note": note });
        match self.post(base, "/releases", &body).await {
            Ok(r) if r.ok() => r.json()["version"]
                .as_u64()
                .unwrap_or_else(|| panic!("release without a version: {}", r.text)),
            Ok(r) => panic!("POST /releases: {} {}", r.status, r.text),
            Err(e) => panic!("POST /releases: {e}"),
        }
    }

    /// Makes a join token for `role` (`control-plane`, `edge`, `gslb`); panics unless made.
    pub async fn join_token(&self, base: &str, role: &str) -> String {
        let body = serde_json::json!({ "role": role, "ttlSeconds": 3600 });
        match self.post(base, "/join-tokens", &body).await {
            Ok(r) if r.ok() => r.json()["token"]
                .as_str()
                .unwrap_or_else(|| panic!("join token without a token: {}", r.text))
                .to_string(),
            Ok(r) => panic!("POST /join-tokens: {} {}", r.status, r.text),
            Err(e) => panic!("POST /join-tokens: {e}"),
        }
    }

    /// `GET /api/v1/nodes`: the edge and GSLB nodes as the control plane last heard them.
    pub async fn nodes(&self, base: &str) -> Option<Vec<Value>> {
        let r = self.get(base, "/nodes").await.ok()?;
        if !r.ok() {
            return None;
        }
        r.json()["nodes"].as_array().cloned()
    }
}

/// A plain-HTTP client that ignores proxy settings from the environment.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client")
}
