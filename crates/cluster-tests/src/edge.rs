//! Edge nodes fed by the control plane:
//! `outpost edge --control-plane URLS --node-id NAME --region R --state-dir DIR`.
//!
//! The control-plane URLs are gRPC listeners, passed joined with commas: the edge tries them in
//! the order given, going on to the next when a watch fails.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::api::http_client;
use crate::binary::outpost_binary;
use crate::cluster::Cluster;
use crate::config::EDGE_PID_HEADER;
use crate::network::{Host, ports};
use crate::process::{Launch, NodeProcess};
use crate::wait::{poll_until, wait_until};

/// How long an edge may take to start serving its admin listener.
pub const START_LIMIT: Duration = Duration::from_secs(30);

/// How long a release or a report may take to go round (control plane, edge, control plane).
pub const PROPAGATION_LIMIT: Duration = Duration::from_secs(30);

/// On loopback, the most fresh connections made to the shared site address while looking for
/// an answer from one given edge. With two edges each connection lands on the wanted one with
/// probability 1/2, so 64 misses in a row do not happen.
pub const ATTEMPTS_PER_EDGE: usize = 64;

pub struct EdgeNode {
    pub name: String,
    pub region: String,
    pub host: Host,
    /// Admin listener: `/healthz`, `/status` (the applied config version), `/metrics`.
    pub admin: SocketAddr,
    pub state_dir: PathBuf,
    pub(crate) proc: NodeProcess,
}

/// One answer from an edge's site.
#[derive(Debug, Clone)]
pub struct EdgeReply {
    pub status: u16,
    pub body: String,
    /// The edge process that answered (the `x-edge-pid` header).
    pub pid: Option<u32>,
}

impl EdgeNode {
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }
}

impl Cluster {
    /// Starts an edge called `name` in `region`, watching the control-plane nodes `cps` (by
    /// id, tried in this order).
    /// Waits until its admin listener answers. Returns its index.
    pub async fn start_edge(&mut self, name: &str, region: &str, cps: &[u64]) -> usize {
        let urls: Vec<String> = cps.iter().map(|id| self.cp(*id).grpc_url()).collect();
        // A join token gets the edge its certificate on its first start (a restart reuses it).
        let first_api = self.cp(cps[0]).api_url();
        let join_token = self.api().join_token(&first_api, "edge").await;
        let host = self.net.host(name, region);
        let admin = SocketAddr::new(host.ip, self.net.tcp_port(&host, ports::EDGE_ADMIN));
        let state_dir = self.dir().join(name);
        let args = vec![
            "edge".to_string(),
            "--control-plane".into(),
            urls.join(","),
            "--node-id".into(),
            name.into(),
            "--region".into(),
            region.into(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--admin".into(),
            admin.to_string(),
            "--workers".into(),
            "1".into(),
            "--access-log".into(),
            "off".into(),
        ];
        let launch = Launch {
            program: outpost_binary().to_path_buf(),
            args,
            env: vec![("OUTPOST_JOIN_TOKEN".to_string(), join_token)],
            netns: host.netns.clone(),
        };
        let proc = NodeProcess::start(name, launch, self.log_path(name));
        self.edges.push(EdgeNode {
            name: name.to_string(),
            region: region.to_string(),
            host,
            admin,
            state_dir,
            proc,
        });
        let i = self.edges.len() - 1;
        self.wait_edge_up(i).await;
        i
    }

    pub fn edge(&self, i: usize) -> &EdgeNode {
        &self.edges[i]
    }

    pub fn edges(&self) -> &[EdgeNode] {
        &self.edges
    }

    async fn wait_edge_up(&mut self, i: usize) {
        let url = format!("http://{}/healthz", self.edges[i].admin);
        let http = http_client(Duration::from_secs(2));
        let what = format!("edge {} answers /healthz", self.edges[i].name);
        wait_until(&what, START_LIMIT, || {
            self.edges[i].proc.assert_running();
            let (http, url) = (http.clone(), url.clone());
            async move {
                let r = http.get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
    }

    /// SIGKILL edge `i` (its state dir stays).
    pub fn kill_edge(&mut self, i: usize) {
        self.edges[i].proc.kill();
    }

    /// Starts edge `i` again with the same arguments and state dir; waits until it is up.
    pub async fn restart_edge(&mut self, i: usize) {
        self.edges[i].proc.restart();
        self.wait_edge_up(i).await;
    }

    /// Waits until every running control-plane node lists every edge in `edges` (indices)
    /// with `appliedVersion` = `version` in `GET /api/v1/nodes` (an edge reports after it has
    /// applied, so this can come a moment after the edge serves the version). Returns the
    /// node entries as the lowest-id node lists them.
    pub async fn wait_api_shows_applied(&self, edges: &[usize], version: u64) -> Vec<Value> {
        let names: Vec<String> = edges.iter().map(|e| self.edges[*e].name.clone()).collect();
        let mut first = None;
        for url in self.live_cp_urls() {
            let what = format!("{url} shows {names:?} on version {version}");
            let (api, names) = (self.api(), &names);
            let url = &url;
            let listed = wait_until(&what, PROPAGATION_LIMIT, move || async move {
                let nodes = api.nodes(url).await?;
                let listed: Vec<Value> = names
                    .iter()
                    .filter_map(|n| nodes.iter().find(|x| x["id"] == n.as_str()).cloned())
                    .collect();
                let all = listed.len() == names.len()
                    && listed.iter().all(|n| n["appliedVersion"] == version);
                all.then_some(listed)
            })
            .await;
            first.get_or_insert(listed);
        }
        first.unwrap_or_default()
    }

    /// The config version edge `i` serves, from its admin `/status`.
    pub async fn edge_version(&self, i: usize) -> Option<u64> {
        let url = format!("http://{}/status", self.edges[i].admin);
        let r = http_client(Duration::from_secs(2))
            .get(&url)
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
        v["version"].as_u64()
    }

    /// How a client reaches edge `i`'s site (the applications' listener): owned, so a task
    /// of its own can keep sending requests while the scenario breaks things. Err if edge `i`
    /// is not running.
    pub fn edge_target(&self, i: usize) -> Result<EdgeTarget, String> {
        let site = self.site();
        let edge = &self.edges[i];
        let pid = edge
            .pid()
            .ok_or_else(|| format!("{} is not running", edge.name))?;
        Ok(if edge.host.netns.is_some() {
            EdgeTarget {
                name: edge.name.clone(),
                base: format!("http://{}:{}", edge.host.ip, site.port()),
                pid: None,
            }
        } else {
            EdgeTarget {
                name: edge.name.clone(),
                base: format!("http://{site}"),
                pid: Some(pid),
            }
        })
    }

    /// `GET path` answered by edge `i` (see [`EdgeTarget::get`]).
    pub async fn edge_get(&self, i: usize, path: &str) -> Result<EdgeReply, String> {
        self.edge_target(i)?.get(path).await
    }

    /// Waits until edge `i`'s site answers `200 body`; panics with the last answer if not.
    pub async fn wait_edge_serves(&self, i: usize, path: &str, body: &str, limit: Duration) {
        let last = &std::sync::Mutex::new(String::new());
        let this = self;
        let served = poll_until(limit, move || async move {
            match this.edge_get(i, path).await {
                Ok(r) if r.status == 200 && r.body == body => Some(()),
                Ok(r) => {
                    *last.lock().unwrap() = format!("{} {:?}", r.status, r.body);
                    None
                }
                Err(e) => {
                    *last.lock().unwrap() = e;
                    None
                }
            }
        })
        .await;
        if served.is_none() {
            panic!(
                "{} did not serve {body:?} on {path} within {limit:?}; last answer: {}",
                self.edges[i].name,
                last.lock().unwrap()
            );
        }
    }
}

/// How a client reaches one edge's site.
#[derive(Debug, Clone)]
pub struct EdgeTarget {
    pub name: String,
    /// `http://ip:port` of the site.
    pub base: String,
    /// On loopback, the edge process to wait for among the ones sharing `base`.
    pub pid: Option<u32>,
}

impl EdgeTarget {
    /// `GET path`, answered by this edge. In namespaces the request goes to the edge's own
    /// address. On loopback, where every edge listens on the same address, fresh connections
    /// are made until this edge's process answers (at most [`ATTEMPTS_PER_EDGE`]). Err if no
    /// answer came, or none from this edge.
    pub async fn get(&self, path: &str) -> Result<EdgeReply, String> {
        // No connection reuse: every request is a new connection, placed anew by the kernel.
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!("{}{path}", self.base);
        let attempts = if self.pid.is_some() {
            ATTEMPTS_PER_EDGE
        } else {
            1
        };
        let mut seen = Vec::new();
        for _ in 0..attempts {
            let r = http
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = r.status().as_u16();
            let pid = r
                .headers()
                .get(EDGE_PID_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let body = r.text().await.map_err(|e| format!("GET {url}: {e}"))?;
            if self.pid.is_none() || pid == self.pid {
                return Ok(EdgeReply { status, body, pid });
            }
            seen.push(pid);
        }
        Err(format!(
            "{} (pid {:?}) never answered on {url}; answers came from {seen:?}",
            self.name, self.pid
        ))
    }
}
