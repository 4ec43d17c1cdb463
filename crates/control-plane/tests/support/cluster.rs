//! A control-plane cluster for tests: node 1 forms it, the others join through the API; nodes
//! stop and restart on the same addresses and data. Every wait is bounded.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use outpost_control_plane::{ClusterInit, ControlPlane, RaftTuning};

use outpost_control_plane::pki::join::JoinTicket;

use super::{Api, grpc_url, join_token, start_node};

pub struct Member {
    dir: PathBuf,
    api: SocketAddr,
    grpc: SocketAddr,
    cp: Option<ControlPlane>,
}

pub struct Cluster {
    _root: tempfile::TempDir,
    token: String,
    members: Vec<Member>,
    raft: RaftTuning,
    client_ip: Option<IpAddr>,
}

impl Cluster {
    /// Node 1 forms the cluster; nodes 2..=n join it with a join token, as voters. All on
    /// 127.0.0.1.
    pub async fn start(n: u64, raft: RaftTuning) -> Cluster {
        let ips = vec![IpAddr::from([127, 0, 0, 1]); n as usize];
        Cluster::start_on(&ips, raft, None).await
    }

    /// As `start`, node `i` listening on `ips[i - 1]`; the test's own requests to the API come
    /// from `client_ip` when given.
    pub async fn start_on(ips: &[IpAddr], raft: RaftTuning, client_ip: Option<IpAddr>) -> Cluster {
        let n = ips.len() as u64;
        let root = tempfile::tempdir().unwrap();
        let mut members: Vec<Member> = Vec::new();
        let mut token = String::new();
        for id in 1..=n {
            let any = SocketAddr::new(ips[id as usize - 1], 0);
            let dir = root.path().join(format!("cp{id}"));
            let init = if id == 1 {
                ClusterInit::Single
            } else {
                ClusterInit::Join
            };
            let ticket = match members.first() {
                None => None,
                Some(first) => {
                    let first = first.cp.as_ref().unwrap();
                    let api = Api::from(first, &token, client_ip);
                    Some(JoinTicket {
                        url: grpc_url(first),
                        token: join_token(&api, "control-plane", 600).await,
                    })
                }
            };
            let cp = start_node(&dir, id, init, any, any, raft, ticket).await;
            if id == 1 {
                token = cp
                    .bootstrap_token()
                    .expect("first node makes a token")
                    .into();
            }
            members.push(Member {
                dir,
                api: cp.api_addr(),
                grpc: cp.grpc_addr(),
                cp: Some(cp),
            });
        }
        Cluster {
            _root: root,
            token,
            members,
            raft,
            client_ip,
        }
    }

    pub fn api(&self, id: u64) -> Api {
        Api::from(self.node(id), &self.token, self.client_ip)
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn node(&self, id: u64) -> &ControlPlane {
        self.members[id as usize - 1]
            .cp
            .as_ref()
            .expect("node is running")
    }

    /// Node `id`'s data directory (its TLS identity is in `tls/`).
    pub fn dir(&self, id: u64) -> &std::path::Path {
        &self.members[id as usize - 1].dir
    }

    pub fn running(&self) -> impl Iterator<Item = &ControlPlane> {
        self.members.iter().filter_map(|m| m.cp.as_ref())
    }

    /// The leader all running nodes agree on, waiting up to 10 s for one.
    pub async fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leaders: Vec<Option<u64>> = self
                .running()
                .map(|cp| cp.cluster().status().leader)
                .collect();
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && self.members[*l as usize - 1].cp.is_some()
            {
                return *l;
            }
            assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(&mut self, id: u64) {
        let cp = self.members[id as usize - 1].cp.take().expect("running");
        cp.shutdown().await;
    }

    /// Restarts a stopped node on its old addresses and data directory.
    pub async fn restart(&mut self, id: u64) {
        let m = &self.members[id as usize - 1];
        let cp = start_node(
            &m.dir,
            id,
            ClusterInit::Join,
            m.api,
            m.grpc,
            self.raft,
            None,
        )
        .await;
        self.members[id as usize - 1].cp = Some(cp);
    }

    /// Waits until node `id` has applied at least what the leader has.
    pub async fn caught_up(&self, id: u64) {
        let leader = self.leader().await;
        let target = self.node(leader).cluster().status().last_applied_index;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.node(id).cluster().status().last_applied_index < target {
            assert!(Instant::now() < deadline, "node {id} did not catch up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn shutdown(mut self) {
        for id in 1..=self.members.len() as u64 {
            if self.members[id as usize - 1].cp.is_some() {
                self.stop(id).await;
            }
        }
    }
}
