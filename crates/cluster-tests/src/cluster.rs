//! [`Cluster`]: every process and origin of one scenario, a temp dir for their data and logs,
//! and the network they live on. Roles add their own methods in `control_plane.rs`,
//! `edge.rs` and `gslb.rs`.
//!
//! Dropping the cluster kills (SIGKILL) and reaps every process. When the drop happens during
//! a panic, the end of every process's log is printed and the temp dir is kept (its path is
//! printed), so a failed scenario shows what each node said.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::api::AdminApi;
use crate::control_plane::ControlPlaneNode;
use crate::edge::EdgeNode;
use crate::gslb::GslbServer;
use crate::netns::Lab;
use crate::network::{Network, ports};
use crate::origin::Origin;
use crate::process::{NodeProcess, tail};

/// Lines of each log printed when a scenario fails.
const LOG_LINES_ON_FAILURE: usize = 80;

pub struct Cluster {
    // Fields drop in this order: processes first, then origins, then the namespaces they ran
    // in, then the temp dir.
    pub(crate) cps: Vec<ControlPlaneNode>,
    pub(crate) edges: Vec<EdgeNode>,
    pub(crate) gslbs: Vec<GslbServer>,
    pub(crate) origins: Vec<Origin>,
    pub(crate) net: Network,
    pub(crate) api: Option<AdminApi>,
    /// Where every application listens (the same for every edge: one release, one config).
    site: Option<SocketAddr>,
    test_ip: Option<IpAddr>,
    dir: Option<TempDir>,
}

impl Cluster {
    /// An empty cluster on loopback (`127.0.0.x` per node).
    pub fn new() -> Cluster {
        Cluster::on(Network::loopback())
    }

    /// An empty cluster in network namespaces (see [`crate::netns`]).
    pub fn in_namespaces(lab: Lab) -> Cluster {
        Cluster::on(Network::Namespaces(lab))
    }

    pub(crate) fn on(net: Network) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("outpost-cluster-")
            .tempdir()
            .expect("a temp dir");
        Cluster {
            cps: Vec::new(),
            edges: Vec::new(),
            gslbs: Vec::new(),
            origins: Vec::new(),
            net,
            api: None,
            site: None,
            test_ip: None,
            dir: Some(dir),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the temp dir").path()
    }

    pub(crate) fn log_path(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}.log"))
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    /// The admin API client, holding the first admin token.
    pub fn api(&self) -> &AdminApi {
        self.api
            .as_ref()
            .expect("no control plane started yet: no token")
    }

    /// The listener address every application of the scenarios uses. On loopback, one
    /// address shared by every edge; in namespaces, `0.0.0.0:8080` on each edge's own host.
    pub fn site_listen(&mut self) -> SocketAddr {
        if let Some(s) = self.site {
            return s;
        }
        let s = if self.net.is_loopback() {
            let host = self.net.host("site", "");
            SocketAddr::new(host.ip, self.net.tcp_port(&host, ports::SITE))
        } else {
            SocketAddr::from(([0, 0, 0, 0], ports::SITE))
        };
        self.site = Some(s);
        s
    }

    /// [`Cluster::site_listen`], once chosen.
    pub fn site(&self) -> SocketAddr {
        self.site
            .expect("no application listens yet: make one with site_listen()")
    }

    /// A listener address on which something else already listens on every edge's host:
    /// an application using it cannot be applied. Returns the address and the socket that
    /// holds it (keep it alive). On loopback the socket is bound without `SO_REUSEPORT`, so the
    /// edges' `SO_REUSEPORT` bind fails.
    pub fn taken_listen(&mut self) -> (SocketAddr, std::net::TcpListener) {
        assert!(
            self.net.is_loopback(),
            "taken_listen is for loopback; in namespaces, occupy a port on one edge's host"
        );
        let host = self.net.host("taken", "");
        let l = std::net::TcpListener::bind(SocketAddr::new(host.ip, 0)).expect("a listener");
        (l.local_addr().expect("bound"), l)
    }

    /// A socket listening on `port` (all addresses) on edge `i`'s host only, in namespaces:
    /// a release with a listener on that port cannot be applied by that edge alone. Keep the
    /// socket alive as long as the port must stay taken.
    pub fn occupy_on_edge(&self, i: usize, port: u16) -> std::net::TcpListener {
        let host = &self.edges[i].host;
        assert!(
            host.netns.is_some(),
            "occupy_on_edge is for namespaces; on loopback use taken_listen"
        );
        crate::netns::listen_in(host, SocketAddr::from(([0, 0, 0, 0], port)))
            .unwrap_or_else(|e| panic!("taking port {port} on {}: {e}", host.name))
    }

    /// Starts an origin answering with its `name` (see [`Origin`]); returns its address.
    pub async fn start_origin(&mut self, name: &str) -> SocketAddr {
        let ip = match self.test_ip {
            Some(ip) => ip,
            None => {
                let ip = self.net.test_ip();
                self.test_ip = Some(ip);
                ip
            }
        };
        let o = Origin::start(ip, name).await;
        let addr = o.addr();
        self.origins.push(o);
        addr
    }

    pub fn origin(&self, name: &str) -> &Origin {
        self.origins
            .iter()
            .find(|o| o.name() == name)
            .unwrap_or_else(|| panic!("no origin {name}"))
    }

    fn processes(&self) -> impl Iterator<Item = &NodeProcess> {
        self.cps
            .iter()
            .map(|n| &n.proc)
            .chain(self.edges.iter().map(|e| &e.proc))
            .chain(self.gslbs.iter().map(|g| &g.proc))
    }

    /// Prints the end of every process's log.
    pub fn print_logs(&self, lines: usize) {
        for p in self.processes() {
            eprintln!(
                "----- {} ({}), last {lines} lines -----\n{}",
                p.name(),
                p.log_path().display(),
                tail(&p.log_text(), lines)
            );
        }
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        self.print_logs(LOG_LINES_ON_FAILURE);
        if let Some(dir) = self.dir.take() {
            let kept = dir.keep();
            eprintln!("cluster-tests: logs and data kept in {}", kept.display());
        }
    }
}
