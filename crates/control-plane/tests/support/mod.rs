//! A control plane on real loopback sockets with its SQLite file in a temp dir.
#![allow(dead_code)]

pub mod cluster;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use outpost_control_plane::pki::NodeRole;
use outpost_control_plane::pki::identity::TlsIdentity;
use outpost_control_plane::pki::join::{self, JoinTicket};
use outpost_control_plane::{ClusterInit, ControlPlane, RaftTuning, Settings};
use outpost_proto::controlplane::v1::config_watch_client::ConfigWatchClient;
use serde_json::Value;
use tonic::transport::Channel;

/// Raft timings for tests on loopback: quick elections, snapshots after `snapshot_after_logs`.
pub fn fast_raft(snapshot_after_logs: u64) -> RaftTuning {
    RaftTuning {
        heartbeat_ms: 50,
        election_timeout_min_ms: 200,
        election_timeout_max_ms: 400,
        snapshot_after_logs,
    }
}

/// One control-plane node of a test cluster, on the addresses given (port 0 picks one); a
/// joining node gets its certificate and membership with `join`.
pub async fn start_node(
    dir: &Path,
    node_id: u64,
    init: ClusterInit,
    api: SocketAddr,
    grpc: SocketAddr,
    raft: RaftTuning,
    join: Option<JoinTicket>,
) -> ControlPlane {
    // A node restarted on its old ports may find one taken for a moment (by its own listener
    // still closing, or by another test's connection on a busy machine): retry, bounded.
    for _ in 0..50 {
        let started = ControlPlane::start(Settings {
            data_dir: dir.to_path_buf(),
            api_listen: api,
            grpc_listen: grpc,
            node_id,
            init,
            raft,
            tls_sans: Vec::new(),
            join: join.clone(),
        })
        .await;
        match started {
            Ok(cp) => return cp,
            Err(outpost_control_plane::StartError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("control-plane node starts: {e}"),
        }
    }
    panic!("control-plane node starts: its ports stayed taken for 5 s")
}

/// The gRPC URL of a node.
pub fn grpc_url(cp: &ControlPlane) -> String {
    format!("https://{}", cp.grpc_addr())
}

/// A join token for `role`, made through the admin API with an admin token.
pub async fn join_token(api: &Api, role: &str, ttl_seconds: u64) -> String {
    let body = serde_json::json!({ "role": role, "ttlSeconds": ttl_seconds });
    let reply = api.post("/api/v1/join-tokens", &body.to_string()).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.json()["token"].as_str().unwrap().to_string()
}

/// An edge's identity, got as an edge gets it: a join token, then `ClusterJoin`.
pub async fn edge_identity(cp: &ControlPlane, admin_token: &str, node_id: &str) -> TlsIdentity {
    let token = join_token(&Api::new(cp, admin_token), "edge", 600).await;
    let ticket = JoinTicket {
        url: grpc_url(cp),
        token,
    };
    join::join(&ticket, NodeRole::Edge, node_id, &[], None)
        .await
        .expect("the edge joins")
}

/// A `ConfigWatch` client over mutual TLS with an edge certificate for `node_id`.
pub async fn watch_client(
    cp: &ControlPlane,
    admin_token: &str,
    node_id: &str,
) -> ConfigWatchClient<Channel> {
    let id = edge_identity(cp, admin_token, node_id).await;
    let channel = id
        .endpoint(&grpc_url(cp))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects over mTLS");
    ConfigWatchClient::new(channel)
}

/// One client watching as several nodes: a control-plane certificate may speak for any node
/// (an edge's only for itself).
pub async fn any_node_client(cp: &ControlPlane) -> ConfigWatchClient<Channel> {
    let token = cp.bootstrap_token().unwrap();
    let join = join_token(&Api::new(cp, token), "control-plane", 600).await;
    let ticket = JoinTicket {
        url: grpc_url(cp),
        token: join,
    };
    let id = join::join(&ticket, NodeRole::ControlPlane, "test-watcher", &[], None)
        .await
        .expect("joins");
    ConfigWatchClient::new(id.endpoint(&grpc_url(cp)).unwrap().connect().await.unwrap())
}

pub async fn start(dir: &Path) -> ControlPlane {
    ControlPlane::start(Settings::single(
        dir.to_path_buf(),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    ))
    .await
    .expect("control plane starts")
}

/// An HTTP client for the admin API with one token.
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

pub struct Reply {
    pub status: u16,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

impl Api {
    pub fn new(cp: &ControlPlane, token: &str) -> Api {
        Api::from(cp, token, None)
    }

    /// A client whose connections come from `local` when given.
    pub fn from(cp: &ControlPlane, token: &str, local: Option<IpAddr>) -> Api {
        Api {
            base: format!("http://{}", cp.api_addr()),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .local_address(local)
                .build()
                .unwrap(),
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.try_call(method, path, body)
            .await
            .expect("request sent")
    }

    /// As `call`, but a request that gets no reply (the node is down) is `None`.
    pub async fn try_call(&self, method: &str, path: &str, body: Option<&str>) -> Option<Reply> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.ok()?;
        Some(Reply {
            status: resp.status().as_u16(),
            text: resp.text().await.ok()?,
        })
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }
    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.call("POST", path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: &str) -> Reply {
        self.call("PUT", path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, None).await
    }
}

pub const UPSTREAM_API: &str = r#"{"name":"api","peers":[{"address":"127.0.0.1:8080"}]}"#;
pub const APP_WWW: &str = r#"{"name":"www","domains":["www.example.com"],
    "listeners":[{"address":"127.0.0.1:8443"}],"upstream":"api"}"#;
