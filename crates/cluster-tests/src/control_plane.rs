//! Control-plane nodes: `outpost control-plane` processes forming one Raft cluster.
//!
//! Node 1 starts alone (`--node-id 1`), forms the cluster and prints the first admin token on
//! stderr once; the harness reads it from the log. Every further node starts with
//! `--node-id N --join https://NODE-1-GRPC` and a join token (made through node 1's API) in
//! `OUTPOST_JOIN_TOKEN`: it gets its certificate, then asks node 1 to add it, which waits until
//! it has caught up and makes it a voter. A restarted node is started with exactly the same
//! arguments and data dir: it has its certificate and is a member already, so it just rejoins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::api::AdminApi;
use crate::binary::outpost_binary;
use crate::cluster::Cluster;
use crate::network::{Host, ports};
use crate::process::{Launch, NodeProcess};
use crate::wait::{poll_until, wait_until};

/// How long a node may take to start, join, or rejoin and catch up.
pub const JOIN_LIMIT: Duration = Duration::from_secs(40);

/// How long the live nodes may take to agree on a leader.
pub const ELECTION_LIMIT: Duration = Duration::from_secs(20);

/// Grace given to a node stopped with SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

const TOKEN_LINE: &str = "first admin token (shown once, keep it): ";

pub struct ControlPlaneNode {
    pub id: u64,
    pub host: Host,
    pub api: SocketAddr,
    pub grpc: SocketAddr,
    pub data: PathBuf,
    pub(crate) proc: NodeProcess,
}

impl ControlPlaneNode {
    /// `http://ip:port` of its admin API.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// `https://ip:port` of its gRPC listener (Raft, config watches and joins; TLS).
    pub fn grpc_url(&self) -> String {
        format!("https://{}", self.grpc)
    }

    pub fn is_running(&self) -> bool {
        self.proc.pid().is_some()
    }
}

impl Cluster {
    /// Starts `n` control-plane nodes (ids 1..=n) and waits until all are voters that agree on
    /// a leader. Returns the leader's id.
    pub async fn start_control_plane(&mut self, n: u64) -> u64 {
        let regions = vec![""; n as usize];
        self.start_control_plane_in(&regions).await
    }

    /// As [`Cluster::start_control_plane`], one node per region given (regions matter in
    /// namespaces, where links between regions can be delayed).
    pub async fn start_control_plane_in(&mut self, regions: &[&str]) -> u64 {
        assert!(self.cps.is_empty(), "the control plane is started once");
        let n = regions.len() as u64;
        assert!(n >= 1);
        self.spawn_cp(1, regions[0], None);
        let token = self.read_token(1).await;
        let api = AdminApi::new(&token);
        self.api = Some(api.clone());
        let first = self.cp(1).api_url();
        let first_grpc = self.cp(1).grpc_url();
        wait_until("node 1 leads its one-node cluster", JOIN_LIMIT, || {
            let (api, base) = (api.clone(), first.clone());
            async move { (api.cluster_status(&base).await?["leader"] == 1).then_some(()) }
        })
        .await;
        // Joins one at a time: each is a membership change of its own.
        for id in 2..=n {
            let region = regions[id as usize - 1];
            let join_token = api.join_token(&first, "control-plane").await;
            self.spawn_cp(id, region, Some((first_grpc.clone(), join_token)));
            self.wait_log(id, "joined the cluster", JOIN_LIMIT).await;
        }
        let all: Vec<u64> = (1..=n).collect();
        self.wait_leader(&all, None).await
    }

    fn spawn_cp(&mut self, id: u64, region: &str, join: Option<(String, String)>) {
        let name = format!("cp{id}");
        let host = self.net.host(&name, region);
        let api = SocketAddr::new(host.ip, self.net.tcp_port(&host, ports::CP_API));
        let grpc = SocketAddr::new(host.ip, self.net.tcp_port(&host, ports::CP_GRPC));
        let data = self.dir().join(&name);
        let mut args = vec![
            "control-plane".to_string(),
            "--node-id".into(),
            id.to_string(),
            "--data".into(),
            data.display().to_string(),
            "--listen".into(),
            api.to_string(),
            "--grpc-listen".into(),
            grpc.to_string(),
        ];
        let mut env = Vec::new();
        if let Some((url, token)) = join {
            args.extend(["--join".into(), url]);
            env.push(("OUTPOST_JOIN_TOKEN".to_string(), token));
        }
        let launch = Launch {
            program: outpost_binary().to_path_buf(),
            args,
            env,
            netns: host.netns.clone(),
        };
        let proc = NodeProcess::start(&name, launch, self.log_path(&name));
        self.cps.push(ControlPlaneNode {
            id,
            host,
            api,
            grpc,
            data,
            proc,
        });
    }

    async fn read_token(&mut self, id: u64) -> String {
        let line = self.wait_log(id, TOKEN_LINE, JOIN_LIMIT).await;
        let at = line.find(TOKEN_LINE).expect("the line found") + TOKEN_LINE.len();
        line[at..]
            .split_whitespace()
            .next()
            .expect("a token after the prefix")
            .to_string()
    }

    /// Waits until node `id`'s log has a line containing `needle`; returns that line. Panics
    /// (with the log) if the process exits first.
    async fn wait_log(&mut self, id: u64, needle: &str, limit: Duration) -> String {
        let what = format!("cp{id} logs {needle:?}");
        let i = self.cp_index(id);
        wait_until(&what, limit, || {
            let node = &mut self.cps[i];
            node.proc.assert_running();
            let text = node.proc.log_text();
            let line = text
                .lines()
                .rev()
                .find(|l| l.contains(needle))
                .map(str::to_string);
            async move { line }
        })
        .await
    }

    fn cp_index(&self, id: u64) -> usize {
        self.cps
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no control-plane node {id}"))
    }

    pub fn cp(&self, id: u64) -> &ControlPlaneNode {
        &self.cps[self.cp_index(id)]
    }

    pub fn cp_ids(&self) -> Vec<u64> {
        self.cps.iter().map(|n| n.id).collect()
    }

    /// Ids of the control-plane nodes whose process runs.
    pub fn live_cps(&self) -> Vec<u64> {
        self.cps
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    /// API URLs of the running control-plane nodes, in id order.
    pub fn live_cp_urls(&self) -> Vec<String> {
        self.cps
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.api_url())
            .collect()
    }

    /// Some running node's API URL (the lowest id).
    pub fn any_cp_url(&self) -> String {
        self.live_cp_urls()
            .into_iter()
            .next()
            .expect("no control-plane node runs")
    }

    /// `GET /api/v1/cluster` on node `id` (None if it does not answer 200).
    pub async fn cluster_status(&self, id: u64) -> Option<Value> {
        self.api().cluster_status(&self.cp(id).api_url()).await
    }

    /// Waits until every node in `ids` names the same leader, a member of `ids` and not
    /// `not`. Returns it.
    pub async fn wait_leader(&self, ids: &[u64], not: Option<u64>) -> u64 {
        let urls: Vec<String> = ids.iter().map(|id| self.cp(*id).api_url()).collect();
        let api = self.api().clone();
        let ids = ids.to_vec();
        let what = format!("nodes {ids:?} agree on a leader other than {not:?}");
        wait_until(&what, ELECTION_LIMIT, || {
            let (api, urls, ids) = (api.clone(), urls.clone(), ids.clone());
            async move {
                let mut leader = None;
                for url in &urls {
                    let l = api.cluster_status(url).await?["leader"].as_u64()?;
                    if leader.is_some_and(|x| x != l) {
                        return None;
                    }
                    leader = Some(l);
                }
                leader.filter(|l| ids.contains(l) && Some(*l) != not)
            }
        })
        .await
    }

    /// The current leader as the running nodes agree on it.
    pub async fn leader(&self) -> u64 {
        self.wait_leader(&self.live_cps(), None).await
    }

    /// SIGKILL node `id` (its data dir stays).
    pub fn kill_cp(&mut self, id: u64) {
        let i = self.cp_index(id);
        self.cps[i].proc.kill();
    }

    /// SIGTERM node `id` and wait for it to exit (killed after [`STOP_GRACE`]). True if it
    /// exited by itself with success.
    pub async fn stop_cp(&mut self, id: u64) -> bool {
        let i = self.cp_index(id);
        let status = self.cps[i].proc.terminate(STOP_GRACE).await;
        status.is_some_and(|s| s.success())
    }

    /// Starts node `id` again with the same arguments and data dir, and waits until it has
    /// rejoined: it answers, names a leader, is a voter, and answers a linearizable read
    /// (which needs the leader's commit index applied locally).
    pub async fn restart_cp(&mut self, id: u64) {
        let i = self.cp_index(id);
        self.cps[i].proc.restart();
        self.wait_rejoined(id).await;
    }

    /// Waits until node `id` is a voter that knows the leader and serves linearizable reads.
    pub async fn wait_rejoined(&mut self, id: u64) {
        let i = self.cp_index(id);
        let url = self.cps[i].api_url();
        let api = self.api().clone();
        let what = format!("cp{id} rejoins");
        wait_until(&what, JOIN_LIMIT, || {
            self.cps[i].proc.assert_running();
            let (api, url) = (api.clone(), url.clone());
            async move {
                let s = api.cluster_status(&url).await?;
                s["leader"].as_u64()?;
                let voter = s["voters"].as_array()?.iter().any(|v| *v == id);
                let read = api.get(&url, "/config").await.ok()?;
                (voter && read.ok()).then_some(())
            }
        })
        .await;
    }

    /// Polls every running node until none answers (used after killing them all).
    pub async fn wait_cps_down(&self) -> bool {
        let urls: Vec<String> = self.cps.iter().map(|n| n.api_url()).collect();
        let api = self.api().clone();
        poll_until(Duration::from_secs(10), || {
            let (api, urls) = (api.clone(), urls.clone());
            async move {
                for u in &urls {
                    if api.get(u, "/cluster").await.is_ok() {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await
        .is_some()
    }
}
