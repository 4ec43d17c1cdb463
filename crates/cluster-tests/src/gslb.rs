//! GSLB servers: `outpost gslb --config FILE`, authoritative for a test zone whose name
//! `edge.ZONE` is answered with every healthy edge (`POLICY_ALL_HEALTHY`). Each GSLB server
//! probes each edge itself, over HTTP on the edge's admin `/healthz`; it does not talk to the
//! control plane (it reads a file).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::binary::outpost_binary;
use crate::cluster::Cluster;
use crate::config::{GslbNode, gslb_config};
use crate::dns;
use crate::network::{Host, ports};
use crate::process::{Launch, NodeProcess};
use crate::wait::wait_until;

/// How long a GSLB server may take to answer its first query.
pub const START_LIMIT: Duration = Duration::from_secs(30);

pub struct GslbServer {
    pub name: String,
    pub zone: String,
    pub host: Host,
    pub dns: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub(crate) proc: NodeProcess,
}

impl Cluster {
    /// Starts a GSLB server for `zone`, with every edge started so far as a node. Waits until
    /// it answers the zone's SOA. Returns its index.
    pub async fn start_gslb(&mut self, zone: &str) -> usize {
        let name = format!("gslb{}", self.gslbs.len() + 1);
        let host = self.net.host(&name, "");
        let dns_addr = SocketAddr::new(host.ip, self.net.dns_port(&host));
        let admin = SocketAddr::new(host.ip, self.net.tcp_port(&host, ports::GSLB_ADMIN));
        let nodes: Vec<GslbNode> = self
            .edges
            .iter()
            .map(|e| GslbNode {
                name: e.name.clone(),
                address: e.host.ip,
                region: e.region.clone(),
                health_port: e.admin.port(),
            })
            .collect();
        let config = self.dir().join(format!("{name}.json"));
        std::fs::write(&config, gslb_config(zone, &nodes).to_string()).expect("GSLB config");
        let launch = Launch {
            program: outpost_binary().to_path_buf(),
            args: vec![
                "gslb".into(),
                "--config".into(),
                config.display().to_string(),
                "--listen".into(),
                dns_addr.to_string(),
                "--admin".into(),
                admin.to_string(),
            ],
            env: Vec::new(),
            netns: host.netns.clone(),
        };
        let proc = NodeProcess::start(&name, launch, self.log_path(&name));
        self.gslbs.push(GslbServer {
            name: name.clone(),
            zone: zone.to_string(),
            host,
            dns: dns_addr,
            admin,
            config,
            proc,
        });
        let i = self.gslbs.len() - 1;
        let soa = format!("{zone}.");
        wait_until(&format!("{name} answers for {zone}"), START_LIMIT, || {
            self.gslbs[i].proc.assert_running();
            let soa = soa.clone();
            async move {
                dns::query(dns_addr, &soa, hickory_proto::rr::RecordType::SOA)
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await;
        i
    }

    pub fn gslb(&self, i: usize) -> &GslbServer {
        &self.gslbs[i]
    }

    /// The addresses GSLB server `i` answers for `edge.ZONE`, sorted.
    pub async fn gslb_edges(&self, i: usize) -> Result<Vec<IpAddr>, String> {
        let g = &self.gslbs[i];
        dns::addresses(g.dns, &format!("edge.{}.", g.zone)).await
    }

    /// Waits until GSLB server `i` answers `edge.ZONE` with exactly the edges `want` (indices).
    pub async fn wait_gslb_answers(&self, i: usize, want: &[usize], limit: Duration) {
        let mut expected: Vec<IpAddr> = want.iter().map(|e| self.edges[*e].host.ip).collect();
        expected.sort();
        let what = format!("{} answers {expected:?}", self.gslbs[i].name);
        let this = self;
        let expected = &expected;
        wait_until(&what, limit, move || async move {
            let got = this.gslb_edges(i).await.ok()?;
            (got == *expected).then_some(())
        })
        .await;
    }
}
