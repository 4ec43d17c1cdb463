//! GSLB servers: `outpost gslb --config FILE`, authoritative for a test zone whose name
//! `edge.ZONE` is answered with every healthy edge (`POLICY_ALL_HEALTHY`). Each GSLB server
//! probes each edge itself, over HTTP on the edge's admin `/healthz`; it does not talk to the
//! control plane (it reads a file).
//!
//! [`Cluster::start_gslb_geo`] adds regions at real coordinates, a table of client networks
//! and a `near.ZONE` record answered by the client's region (`POLICY_GEO`);
//! [`Cluster::wait_gslb_answer`] asks as a client in a given subnet (EDNS Client Subnet) or
//! from a given address ([`dns::Asker`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::binary::outpost_binary;
use crate::cluster::Cluster;
use crate::config::{GslbNode, GslbRegion, gslb_config, gslb_geo_config};
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
        let config = gslb_config(zone, &self.gslb_nodes());
        self.start_gslb_with(zone, config).await
    }

    /// [`Cluster::start_gslb`] with the regions at the given coordinates, the client table
    /// `geo_cidrs` (`(cidr, region)`) and a `near.ZONE` record answered by region
    /// (`POLICY_GEO`, see [`crate::config::gslb_geo_config`]).
    pub async fn start_gslb_geo(
        &mut self,
        zone: &str,
        regions: &[GslbRegion],
        geo_cidrs: &[(String, &str)],
    ) -> usize {
        let config = gslb_geo_config(zone, &self.gslb_nodes(), regions, geo_cidrs);
        self.start_gslb_with(zone, config).await
    }

    /// Every edge started so far, as a GSLB node probed on its admin `/healthz`.
    fn gslb_nodes(&self) -> Vec<GslbNode> {
        self.edges
            .iter()
            .map(|e| GslbNode {
                name: e.name.clone(),
                address: e.host.ip,
                region: e.region.clone(),
                health_port: e.admin.port(),
            })
            .collect()
    }

    async fn start_gslb_with(&mut self, zone: &str, config_json: serde_json::Value) -> usize {
        let name = format!("gslb{}", self.gslbs.len() + 1);
        let host = self.net.host(&name, "");
        let dns_addr = SocketAddr::new(host.ip, self.net.dns_port(&host));
        let admin = SocketAddr::new(host.ip, self.net.tcp_port(&host, ports::GSLB_ADMIN));
        let config = self.dir().join(format!("{name}.json"));
        std::fs::write(&config, config_json.to_string()).expect("GSLB config");
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

    /// The addresses GSLB server `i` answers for `NAME.ZONE` when asked as `asker`, sorted.
    pub async fn gslb_answer(
        &self,
        i: usize,
        name: &str,
        asker: dns::Asker,
    ) -> Result<Vec<IpAddr>, String> {
        let g = &self.gslbs[i];
        dns::addresses_as(g.dns, &format!("{name}.{}.", g.zone), asker).await
    }

    /// Waits until GSLB server `i` answers `NAME.ZONE`, asked as `asker`, with exactly the
    /// edges `want` (indices). Returns how long that took (for printing, not for asserting).
    pub async fn wait_gslb_answer(
        &self,
        i: usize,
        name: &str,
        asker: dns::Asker,
        want: &[usize],
        limit: Duration,
    ) -> Duration {
        let mut expected: Vec<IpAddr> = want.iter().map(|e| self.edges[*e].host.ip).collect();
        expected.sort();
        let what = format!(
            "{} answers {name} with {expected:?} to {asker:?}",
            self.gslbs[i].name
        );
        let started = std::time::Instant::now();
        let this = self;
        let expected = &expected;
        wait_until(&what, limit, move || async move {
            let got = this.gslb_answer(i, name, asker).await.ok()?;
            (got == *expected).then_some(())
        })
        .await;
        started.elapsed()
    }
}
