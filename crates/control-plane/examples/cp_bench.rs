//! Control-plane benchmark on loopback, three real nodes in this process (Raft over gRPC, one
//! SQLite file each):
//!
//! 1. committed writes per second: raw log commands proposed on the leader by 64 concurrent
//!    callers, and admin API edits (`PUT` of an object) by 16 concurrent HTTP clients spread
//!    over the three nodes;
//! 2. propagation: N real gRPC `Watch` clients (N = 1, 10, 100) spread over the three nodes;
//!    per round, an object is edited and released through the API, and the time from the
//!    release's acknowledgement to each watcher receiving that version is recorded. The config
//!    holds 200 applications, so that the size of a full release and of a one-object delta
//!    can be compared.
//!
//! `cargo run --release -p outpost-control-plane --example cp_bench [rounds]`

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use outpost_control_plane::pki::identity::TlsIdentity;
use outpost_control_plane::pki::join::JoinTicket;
use outpost_control_plane::raft::Command;
use outpost_control_plane::store::{NodeHello, NodeKind};
use outpost_control_plane::{ClusterInit, ControlPlane, RaftTuning, Settings};
use outpost_proto::controlplane::v1 as cp;
use outpost_proto::controlplane::v1::config_watch_client::ConfigWatchClient;
use tokio::sync::mpsc;

const WRITE_SECONDS: u64 = 5;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(50);
    let root = tempfile::tempdir()?;
    let nodes = start_cluster(root.path()).await?;
    let token = nodes[0].bootstrap_token().unwrap_or_default().to_string();
    let http = reqwest::Client::new();
    let leader = wait_leader(&nodes).await;

    // 1a. Raw commits: commands proposed on the leader.
    let done = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(WRITE_SECONDS);
    let mut tasks = Vec::new();
    for w in 0..64 {
        let cluster = nodes[leader].cluster().clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop_at {
                let hello = NodeHello {
                    id: format!("bench-{w}"),
                    kind: NodeKind::Edge,
                    region: "r".into(),
                    labels: vec![],
                    addresses: vec![],
                };
                if cluster
                    .write(Command::NodeSeen { hello, at_ms: 0 })
                    .await
                    .is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let raw = done.load(Ordering::Relaxed) as f64 / WRITE_SECONDS as f64;
    println!("raw log commits, 64 proposers on the leader: {raw:.0}/s");

    // 1b. Admin API edits through every node.
    let done = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(WRITE_SECONDS);
    let mut tasks = Vec::new();
    for w in 0..16 {
        let url = format!(
            "http://{}/api/v1/config/shared_dicts/w{w}",
            nodes[w % 3].api_addr()
        );
        let (http, token, done) = (http.clone(), token.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop_at {
                n += 1;
                let body = format!(r#"{{"capacityBytes": {}}}"#, 8192 * (1 + n % 4));
                let ok = http
                    .put(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let api = done.load(Ordering::Relaxed) as f64 / WRITE_SECONDS as f64;
    println!("admin API edits, 16 clients over 3 nodes: {api:.0}/s");

    // 2. Propagation to watchers. A config of some size, and a first release, so that every
    // watch opens with one and then gets deltas.
    let upstream = http
        .put(format!(
            "http://{}/api/v1/config/upstreams/api",
            nodes[0].api_addr()
        ))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"peers":[{"address":"127.0.0.1:8080"}]}"#)
        .send()
        .await?;
    anyhow::ensure!(
        upstream.status().is_success(),
        "upstream: {}",
        upstream.status()
    );
    for i in 0..200 {
        let body = format!(
            r#"{{"domains": ["app{i}.example", "www.app{i}.example", "static.app{i}.example"],
                "upstream": "api", "listeners": [{{"address": "127.0.0.1:8080"}}],
                "variables": [{{"name": "tenant", "defaultValue": "tenant-{i}"}}]}}"#
        );
        let r = http
            .put(format!(
                "http://{}/api/v1/config/applications/app{i}",
                nodes[0].api_addr()
            ))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "app{i}: {}", r.text().await?);
    }
    let first = http
        .post(format!("http://{}/api/v1/releases", nodes[0].api_addr()))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"note":"base"}"#)
        .send()
        .await?;
    anyhow::ensure!(
        first.status().is_success(),
        "first release: {}",
        first.status()
    );
    let identity = TlsIdentity::load(&root.path().join("cp1/tls"))?
        .ok_or_else(|| anyhow::anyhow!("node 1 has no TLS identity"))?;
    for watchers in [1usize, 10, 100] {
        let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant, usize)>();
        let mut streams = Vec::new();
        let mut full_bytes = 0;
        for w in 0..watchers {
            let addr = nodes[w % 3].grpc_addr();
            // Node 1's own control-plane certificate may watch as any node.
            let channel = identity
                .endpoint(&format!("https://{addr}"))?
                .connect()
                .await?;
            let mut client = ConfigWatchClient::new(channel);
            let req = cp::WatchRequest {
                node_id: format!("watch-{watchers}-{w}"),
                kind: cp::NodeKind::Edge as i32,
                region: "r".into(),
                labels: Default::default(),
                have_version: 0,
                addresses: vec![],
                ..Default::default()
            };
            let mut stream = client.watch(req).await?.into_inner();
            // The first message is the latest release, in full; later ones are what we measure.
            if let Some(first) = stream.message().await? {
                full_bytes = prost::Message::encoded_len(&first);
            }
            let tx = tx.clone();
            streams.push(tokio::spawn(async move {
                while let Ok(Some(event)) = stream.message().await {
                    let bytes = prost::Message::encoded_len(&event);
                    let version = match event.event {
                        Some(cp::watch_event::Event::Release(r)) => r.version,
                        Some(cp::watch_event::Event::Delta(d)) => d.version,
                        _ => continue,
                    };
                    if tx.send((version, Instant::now(), bytes)).is_err() {
                        break;
                    }
                }
            }));
        }
        let mut latencies = Vec::new();
        let mut message_bytes = 0;
        for round in 0..rounds {
            let node = nodes[round % 3].api_addr();
            let edit = http
                .put(format!("http://{node}/api/v1/config/shared_dicts/p"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(format!(r#"{{"capacityBytes": {}}}"#, 8192 * (2 + round)))
                .send()
                .await?;
            anyhow::ensure!(edit.status().is_success(), "edit: {}", edit.status());
            let reply = http
                .post(format!("http://{node}/api/v1/releases"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(r#"{"note":"bench"}"#)
                .send()
                .await?;
            let acked = Instant::now();
            let v: serde_json::Value = reply.json().await?;
            let version = v["version"].as_u64().unwrap_or(0);
            let mut got = 0;
            let deadline = acked + Duration::from_secs(10);
            while got < watchers {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, rx.recv()).await {
                    Ok(Some((ver, at, bytes))) if ver == version => {
                        got += 1;
                        message_bytes = bytes;
                        latencies.push(at.saturating_duration_since(acked));
                    }
                    Ok(Some(_)) => {}
                    _ => anyhow::bail!("round {round}: only {got} of {watchers} got v{version}"),
                }
            }
        }
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
        println!(
            "propagation to {watchers:>3} watchers, {rounds} releases: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {message_bytes} bytes per one-object release (the full release: {full_bytes} bytes)",
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            pct(1.0).as_secs_f64() * 1e3,
        );
        for s in streams {
            s.abort();
        }
    }
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}

async fn start_cluster(root: &std::path::Path) -> anyhow::Result<Vec<ControlPlane>> {
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let mut nodes: Vec<ControlPlane> = Vec::new();
    for id in 1..=3u64 {
        // Nodes 2 and 3 join with a join token made through node 1's API.
        let join = match nodes.first() {
            None => None,
            Some(first) => {
                let r = reqwest::Client::new()
                    .post(format!("http://{}/api/v1/join-tokens", first.api_addr()))
                    .bearer_auth(first.bootstrap_token().unwrap_or_default())
                    .header("content-type", "application/json")
                    .body(r#"{"role":"control-plane"}"#)
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "join token: {}", r.status());
                let v: serde_json::Value = r.json().await?;
                Some(JoinTicket {
                    url: format!("https://{}", first.grpc_addr()),
                    token: v["token"].as_str().unwrap_or_default().to_string(),
                })
            }
        };
        let cp = ControlPlane::start(Settings {
            data_dir: root.join(format!("cp{id}")),
            api_listen: any,
            grpc_listen: any,
            node_id: id,
            init: if id == 1 {
                ClusterInit::Single
            } else {
                ClusterInit::Join
            },
            raft: RaftTuning::default(),
            tls_sans: Vec::new(),
            join,
        })
        .await?;
        nodes.push(cp);
    }
    Ok(nodes)
}

async fn wait_leader(nodes: &[ControlPlane]) -> usize {
    for _ in 0..200 {
        if let Some(l) = nodes[0].cluster().status().leader {
            return l as usize - 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    0
}
