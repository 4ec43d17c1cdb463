//! Outpost's GSLB: an authoritative DNS server that answers with healthy edge nodes near the
//! client, and changes its answers by itself within a probe interval of a node failing.
//!
//! A tour of the crate:
//! - [`model`]: the validated, compiled config (zones, nodes, regions, record plans).
//! - [`zone`]: static zone data and the authoritative lookup rules (NXDOMAIN vs NODATA, CNAME,
//!   referrals, minimal ANY).
//! - [`geo`]: regions, great-circle distances, the CIDR → region table with ECS scopes.
//! - [`select`]: the answer for a GSLB record, a pure function of plan, health, client and a
//!   random number. Dense unit tests live here.
//! - [`health`]: the rise/fall state machine, the lock-free health table and the probers.
//! - [`handler`]: the hickory-server `RequestHandler` that ties them together per query.
//! - [`metrics`], [`admin`]: Prometheus metrics and the `/metrics` listener.
//!
//! [`Gslb::start`] runs it all in-process (the `outpost gslb` command and the tests use it).

pub mod admin;
pub mod answer_cache;
pub mod geo;
pub mod geoip;
pub mod handler;
pub mod health;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod select;
pub mod udp;
pub mod zone;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::Server;
use outpost_proto::controlplane::v1::RegisteredNode;
use outpost_proto::gslb::v1::GslbConfig;
use outpost_proto::validate::ValidationErrors;
use tokio::net::TcpListener;

use crate::handler::Handler;
use crate::health::{HealthTable, Probers};
use crate::metrics::Metrics;
use crate::model::Model;

/// How long a TCP client may stay idle between queries.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// One config and its health, as every query sees it.
pub struct Snapshot {
    pub model: Arc<Model>,
    pub health: Arc<HealthTable>,
    /// Unique per snapshot: answers computed from another snapshot are not reused.
    pub serial: u64,
}

/// Serials of snapshots, process-wide.
static NEXT_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_serial() -> u64 {
    NEXT_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[derive(Debug, Clone)]
pub struct GslbSettings {
    /// UDP and TCP, same address and port (port 0: any free port, the same for both).
    pub listen: SocketAddr,
    /// `/metrics` and `/healthz`; `None`: no admin listener.
    pub admin_listen: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ValidationErrors),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running GSLB server.
pub struct Gslb {
    state: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    probers: Mutex<Probers>,
    geoip_cache: geoip::GeoIpCache,
    server: tokio::sync::Mutex<Server<Handler>>,
    udp: Mutex<Option<udp::UdpWorkers>>,
    dns_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
}

impl Gslb {
    /// Validates the config, binds the listeners and starts answering and probing.
    pub async fn start(settings: GslbSettings, config: GslbConfig) -> Result<Gslb, StartError> {
        let geoip_cache = geoip::GeoIpCache::default();
        let model = Arc::new(Model::build_cached(&config, &geoip_cache)?);
        let metrics = Arc::new(Metrics::default());
        let health = Arc::new(HealthTable::new(&model, None));
        let probers = health::spawn_probers(model.clone(), health.clone(), metrics.clone());
        let state = Arc::new(ArcSwap::from_pointee(Snapshot {
            model,
            health,
            serial: next_serial(),
        }));

        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (udp_sockets, tcp) = bind_pair(settings.listen, 1).await?;
        let dns_addr = tcp.local_addr().map_err(|source| StartError::Bind {
            addr: settings.listen,
            source,
        })?;
        let handler = || Handler {
            state: state.clone(),
            metrics: metrics.clone(),
        };
        let udp = udp::UdpWorkers::spawn(&udp_sockets, threads, Arc::new(handler())).map_err(
            |source| StartError::Bind {
                addr: dns_addr,
                source,
            },
        )?;
        let mut server = Server::new(handler());
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, 64 * 1024);

        let (admin_addr, admin_task) = match settings.admin_listen {
            None => (None, None),
            Some(addr) => {
                let l = admin::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?;
                let bound = l.local_addr().ok();
                (bound, Some(admin::serve(l, metrics.clone())))
            }
        };
        tracing::info!(%dns_addr, ?admin_addr, "GSLB listening");
        Ok(Gslb {
            state,
            metrics,
            probers: Mutex::new(probers),
            geoip_cache,
            server: tokio::sync::Mutex::new(server),
            udp: Mutex::new(Some(udp)),
            dns_addr,
            admin_addr,
            admin_task,
        })
    }

    /// Replaces the config. A bad config changes nothing and comes back with every error.
    /// Nodes kept by name keep their health; probers restart on the new settings.
    pub fn apply(&self, config: GslbConfig) -> Result<(), ValidationErrors> {
        self.swap(Model::build_cached(&config, &self.geoip_cache)?);
        Ok(())
    }

    /// Replaces the config with one from the control plane and the edge nodes of its registry.
    pub fn apply_with_registry(
        &self,
        config: &GslbConfig,
        registry: &[RegisteredNode],
    ) -> Result<(), ValidationErrors> {
        self.swap(Model::build_with_registry(
            config,
            registry,
            &self.geoip_cache,
        )?);
        Ok(())
    }

    fn swap(&self, model: Model) {
        let model = Arc::new(model);
        let old = self.state.load();
        let health = Arc::new(HealthTable::new(&model, Some((&old.model, &old.health))));
        let probers = health::spawn_probers(model.clone(), health.clone(), self.metrics.clone());
        self.state.store(Arc::new(Snapshot {
            model,
            health,
            serial: next_serial(),
        }));
        // Dropping the old probers stops them.
        *self.probers.lock().unwrap_or_else(|e| e.into_inner()) = probers;
    }

    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_addr
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn version(&self) -> u64 {
        self.state.load().model.version
    }

    /// The Prometheus text exposition of this server's metrics.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }

    /// Stops answering, probing and serving metrics.
    pub async fn shutdown(self) {
        self.stop_udp();
        if let Err(e) = self.server.lock().await.shutdown_gracefully().await {
            tracing::debug!(error = %e, "DNS server shutdown");
        }
        if let Some(t) = &self.admin_task {
            t.abort();
        }
    }
}

impl Gslb {
    fn stop_udp(&self) {
        let workers = self.udp.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = workers {
            w.stop();
        }
    }
}

impl Drop for Gslb {
    fn drop(&mut self) {
        self.stop_udp();
    }
}

/// Binds `sockets` UDP sockets and a TCP listener on the same port. With port 0 the kernel
/// picks the UDP port; the TCP bind may find it taken by someone else, so a few tries are made.
async fn bind_pair(
    addr: SocketAddr,
    sockets: usize,
) -> Result<(Vec<std::net::UdpSocket>, TcpListener), StartError> {
    let err = |source| StartError::Bind { addr, source };
    let mut last = None;
    for _ in 0..if addr.port() == 0 { 8 } else { 1 } {
        let udp = udp::bind(addr, sockets).map_err(err)?;
        let port_addr = udp[0].local_addr().map_err(err)?;
        match TcpListener::bind(port_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(err(last.unwrap_or_else(|| std::io::Error::other("no port"))))
}
