//! Starting and stopping a control-plane node: the store, Raft, the admin API listener and the
//! gRPC listener (Raft between nodes, config watches from edges and GSLB servers).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use outpost_proto::controlplane::v1::AddVoterRequest;
use outpost_proto::controlplane::v1::cluster_join_server::ClusterJoinServer;
use outpost_proto::controlplane::v1::config_watch_server::ConfigWatchServer;
use outpost_proto::controlplane::v1::raft_server::RaftServer;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::auth;
use crate::cluster::Cluster;
use crate::join::JoinService;
use crate::pki::identity::{IdentityError, TlsIdentity, create_private_dir};
use crate::pki::join::{JoinError, JoinTicket};
use crate::pki::{self, NodeRole, PkiError};
use crate::push::{ConfigWatchService, Watchers};
use crate::raft::log_store::LogStore;
use crate::raft::network::NetworkFactory;
use crate::raft::service::RaftService;
use crate::raft::state_machine::StateMachine;
use crate::raft::{Applied, ClusterNode, Command, NodeId};
use crate::store::{Store, StoreError};

/// Where the control plane keeps its data and listens.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Directory holding `control-plane.db` (created if missing).
    pub data_dir: PathBuf,
    /// The admin REST API.
    pub api_listen: SocketAddr,
    /// The gRPC listener: `ConfigWatch` for edge and GSLB nodes, `Raft` for peers.
    pub grpc_listen: SocketAddr,
    /// This node's Raft id, unique in the cluster.
    pub node_id: NodeId,
    pub init: ClusterInit,
    pub raft: RaftTuning,
    /// Names for this node's certificate besides its gRPC listen address (DNS names or IPs
    /// that peers and edges use to reach it).
    pub tls_sans: Vec<String>,
    /// For a [`ClusterInit::Join`] node: where to join and the join token. On its first start
    /// the node gets its certificate with it, then asks to be added as a voter (again on each
    /// start until it is a member). A node that is a member needs none.
    pub join: Option<JoinTicket>,
}

impl Settings {
    /// A single node that forms its own cluster on first start.
    pub fn single(data_dir: PathBuf, api_listen: SocketAddr, grpc_listen: SocketAddr) -> Settings {
        Settings {
            data_dir,
            api_listen,
            grpc_listen,
            node_id: 1,
            init: ClusterInit::Single,
            raft: RaftTuning::default(),
            tls_sans: Vec::new(),
            join: None,
        }
    }
}

/// What a node does on its first start, when its log is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterInit {
    /// Forms a one-voter cluster of itself, makes the cluster CA and creates the first admin
    /// token. Later voters join with a join token (or are added through the API).
    Single,
    /// Waits to be added: with [`Settings::join`] it asks for that itself; otherwise the leader
    /// adds it (`POST /api/v1/cluster/nodes`).
    Join,
}

/// Raft timings and log compaction.
#[derive(Debug, Clone, Copy)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot is built after this many entries since the last one, and the log before it
    /// is purged.
    pub snapshot_after_logs: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_after_logs: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("creating {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
    #[error("this node's TLS identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("the cluster CA: {0}")]
    Pki(#[from] PkiError),
    #[error("joining the cluster: {0}")]
    Join(#[from] JoinError),
    #[error("TLS on the gRPC listener: {0}")]
    Tls(String),
}

/// A running control plane.
pub struct ControlPlane {
    api_addr: SocketAddr,
    grpc_addr: SocketAddr,
    bootstrap_token: Option<String>,
    store: Arc<Store>,
    cluster: Arc<Cluster>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// How often a node checks that it is in touch with a leader that has a quorum.
const CONTACT_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl ControlPlane {
    /// Opens (or creates) the database, starts Raft and both listeners. On the first start of
    /// a [`ClusterInit::Single`] node it forms the cluster and creates the first admin token.
    pub async fn start(settings: Settings) -> Result<ControlPlane, StartError> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|source| StartError::DataDir {
            path: settings.data_dir.clone(),
            source,
        })?;
        let store = Arc::new(Store::open(&settings.data_dir.join("control-plane.db")).await?);
        let api_listener = bind(settings.api_listen).await?;
        let grpc_listener = bind(settings.grpc_listen).await?;
        let api_addr = local_addr(&api_listener, settings.api_listen)?;
        let grpc_addr = local_addr(&grpc_listener, settings.grpc_listen)?;
        let me = ClusterNode {
            grpc_addr: grpc_addr.to_string(),
            api_addr: api_addr.to_string(),
        };

        let local = Some(grpc_addr.ip()).filter(|ip| !ip.is_unspecified());
        let tls_dir = settings.data_dir.join("tls");
        let identity = node_identity(&settings, &store, &tls_dir, grpc_addr, local).await?;
        let writes = Arc::new(Mutex::new(()));
        let tuning = settings.raft;
        let config = openraft::Config {
            cluster_name: "outpost-control-plane".into(),
            heartbeat_interval: tuning.heartbeat_ms,
            election_timeout_min: tuning.election_timeout_min_ms,
            election_timeout_max: tuning.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(tuning.snapshot_after_logs),
            max_in_snapshot_log_to_keep: 0,
            install_snapshot_timeout: 2000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let raft = openraft::Raft::new(
            settings.node_id,
            Arc::new(config),
            NetworkFactory {
                local,
                tls: identity.client_tls(),
            },
            LogStore::new(store.pool.clone(), writes.clone()),
            StateMachine::new(store.clone(), writes),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        log_leader_changes(settings.node_id, raft.metrics());
        let cluster = Arc::new(Cluster::new(
            settings.node_id,
            raft,
            local,
            identity.client_tls(),
        ));

        let (stop, stop_rx) = watch::channel(false);
        let watchers = Arc::new(Watchers::default());
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let router = api::router(AppState {
            store: store.clone(),
            cluster: cluster.clone(),
            edits: Default::default(),
            watchers: watchers.clone(),
            metrics: metrics.clone(),
        });
        let mut api_stop = stop_rx.clone();
        let api_task = tokio::spawn(async move {
            let served = axum::serve(api_listener, router)
                .with_graceful_shutdown(async move {
                    let _ = api_stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin API server stopped");
            }
        });

        let service =
            ConfigWatchService::new(store.clone(), cluster.clone(), watchers, stop_rx.clone())
                .with_metrics(metrics);
        let raft_service = RaftService::new(cluster.clone());
        let join_service = JoinService::new(store.clone(), cluster.clone());
        let mut grpc_stop = stop_rx;
        let mut server = tonic::transport::Server::builder()
            .tls_config(identity.server_tls())
            .map_err(|e| StartError::Tls(e.to_string()))?;
        let grpc_task = tokio::spawn(async move {
            let served = server
                .add_service(ConfigWatchServer::new(service))
                .add_service(RaftServer::new(raft_service))
                .add_service(ClusterJoinServer::new(join_service))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(grpc_listener),
                    async move {
                        let _ = grpc_stop.wait_for(|s| *s).await;
                    },
                )
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "gRPC server stopped");
            }
        });

        let initialized = cluster
            .raft()
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let mut bootstrap_token = None;
        if settings.init == ClusterInit::Single && !initialized {
            cluster
                .raft()
                .initialize(BTreeMap::from([(settings.node_id, me.clone())]))
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
            bootstrap_token = bootstrap_admin_token(&cluster, &store).await?;
        }
        tracing::info!(
            node = settings.node_id, api = %api_addr, grpc = %grpc_addr, initialized,
            "control plane listening"
        );
        let mut cp = ControlPlane {
            api_addr,
            grpc_addr,
            bootstrap_token,
            store,
            cluster,
            stop,
            tasks: vec![api_task, grpc_task],
        };
        // Whether this node is in touch with a quorum, checked every second: watch streams end
        // on a node cut off, so that nodes move to one that gets new releases.
        let (contact_cluster, mut contact_stop) = (cp.cluster.clone(), cp.stop.subscribe());
        cp.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(CONTACT_CHECK);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = contact_stop.wait_for(|s| *s) => return,
                }
                if !contact_cluster.check_contact(CONTACT_CHECK).await {
                    tracing::debug!("not in touch with a leader that has a quorum");
                }
            }
        }));
        let joined = async {
            publish_pending_ca(&cp.cluster, &cp.store, &tls_dir).await?;
            if let (ClusterInit::Join, Some(ticket)) = (settings.init, &settings.join) {
                cp.join_as_voter(&identity, ticket, local).await?;
            }
            Ok(())
        };
        if let Err(e) = joined.await {
            cp.shutdown().await;
            return Err(e);
        }
        Ok(cp)
    }

    /// Asks the cluster at `ticket.url` to add this node as a voter, unless it is a member
    /// already (its log says so: a restart).
    async fn join_as_voter(
        &self,
        identity: &TlsIdentity,
        ticket: &JoinTicket,
        local: Option<IpAddr>,
    ) -> Result<(), StartError> {
        let id = self.node_id();
        if self.cluster.status().members.iter().any(|m| m.id == id) {
            return Ok(());
        }
        let request = AddVoterRequest {
            node_id: id,
            grpc_addr: self.grpc_addr.to_string(),
            api_addr: self.api_addr.to_string(),
        };
        pki::join::add_voter(identity, &ticket.url, request, local).await?;
        tracing::info!(node = id, via = %ticket.url, "joined the cluster as a voter");
        Ok(())
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The admin token created at this start, when the database had no token (first run).
    pub fn bootstrap_token(&self) -> Option<&str> {
        self.bootstrap_token.as_deref()
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Resolves when Raft stops on this node without [`ControlPlane::shutdown`]: a storage
    /// failure (a full disk, say) stops it for good, and the process should exit so that its
    /// supervisor restarts it once the cause is fixed. Until then this node answers 503.
    pub async fn raft_stopped(&self) -> String {
        let mut metrics = self.cluster.raft().metrics();
        loop {
            if metrics.borrow().state == openraft::ServerState::Shutdown {
                return "raft stopped (see the error logged before this)".into();
            }
            if metrics.changed().await.is_err() {
                return "raft stopped".into();
            }
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.cluster.id()
    }

    /// Stops Raft and accepting, ends every watch stream, waits for both servers and closes
    /// the store.
    pub async fn shutdown(self) {
        if let Err(e) = self.cluster.raft().shutdown().await {
            tracing::warn!(error = %e, "stopping raft");
        }
        self.stop.send_replace(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.store.close().await;
    }
}

fn local_addr(listener: &TcpListener, asked: SocketAddr) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        addr: asked,
        source,
    })
}

/// Creates the first admin token through the log, once this new one-node cluster has elected
/// itself; `None` if a token exists already.
async fn bootstrap_admin_token(
    cluster: &Cluster,
    store: &Store,
) -> Result<Option<String>, StartError> {
    cluster
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .current_leader(cluster.id(), "electing itself")
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    if store.has_tokens().await? {
        return Ok(None);
    }
    let token = auth::new_token();
    let applied = cluster
        .write(Command::BootstrapToken {
            sha256: auth::token_hash(&token),
            at_ms: crate::store::now_ms(),
        })
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    Ok(matches!(applied, Applied::Token(_)).then_some(token))
}

/// Where a bootstrapping node keeps the CA it made until the CA is in the replicated state: a
/// crash in between must not lose the key that signed this node's certificate.
const PENDING_CA: &str = "pending-ca.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct PendingCa {
    cert_pem: String,
    key_pem: String,
}

/// The names in a control-plane certificate: the gRPC listen address (loopback names when it
/// listens on every address) and the extra names asked for.
fn cert_sans(grpc: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = if grpc.ip().is_unspecified() {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    } else {
        vec![grpc.ip().to_string()]
    };
    for name in extra {
        if !sans.contains(name) {
            sans.push(name.clone());
        }
    }
    sans
}

/// This node's key and certificate: kept in `tls_dir` from an earlier start; or signed here
/// with the CA of the replicated state, or with a new CA when this node forms the cluster; or
/// got from the cluster with the join token.
async fn node_identity(
    settings: &Settings,
    store: &Store,
    tls_dir: &Path,
    grpc_addr: SocketAddr,
    local: Option<IpAddr>,
) -> Result<TlsIdentity, StartError> {
    if let Some(id) = TlsIdentity::load(tls_dir)? {
        if id.subject().map(|(role, _)| role) != Some(NodeRole::ControlPlane) {
            return Err(StartError::Tls(format!(
                "{}: the certificate there is not a control-plane certificate",
                tls_dir.display()
            )));
        }
        return Ok(id);
    }
    let name = format!("cp-{}", settings.node_id);
    let sans = cert_sans(grpc_addr, &settings.tls_sans);
    let now = crate::store::now_ms();
    let ca = match store.cluster_ca().await? {
        Some(ca) => ca,
        None if settings.init == ClusterInit::Single => {
            let ca = pki::new_ca(now)?;
            create_private_dir(tls_dir)?;
            let pending = serde_json::to_string(&PendingCa {
                cert_pem: ca.cert_pem.clone(),
                key_pem: ca.key_pem.clone(),
            })
            .map_err(|e| StartError::Tls(e.to_string()))?;
            write_private(&tls_dir.join(PENDING_CA), &pending)?;
            tracing::info!("made the cluster CA");
            ca
        }
        None => {
            let ticket = settings
                .join
                .as_ref()
                .ok_or_else(|| JoinError::NoIdentity {
                    dir: tls_dir.to_path_buf(),
                })?;
            let id = pki::join::join(ticket, NodeRole::ControlPlane, &name, &sans, local).await?;
            id.save(tls_dir)?;
            return Ok(id);
        }
    };
    let (key_pem, csr_pem) = pki::new_key_and_csr(&name)?;
    let cert_pem = pki::issue(&ca, &csr_pem, &name, NodeRole::ControlPlane, &sans, now)?;
    let id = TlsIdentity {
        key_pem,
        cert_pem,
        ca_pem: ca.cert_pem,
    };
    id.save(tls_dir)?;
    Ok(id)
}

fn write_private(path: &Path, text: &str) -> Result<(), StartError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

/// Writes the CA this node made into the replicated state, once this node leads its new
/// cluster, then forgets its local copy.
async fn publish_pending_ca(
    cluster: &Cluster,
    store: &Store,
    tls_dir: &Path,
) -> Result<(), StartError> {
    let path = tls_dir.join(PENDING_CA);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let pending: PendingCa = serde_json::from_str(&text)
        .map_err(|e| StartError::Tls(format!("{}: {e}", path.display())))?;
    if store.cluster_ca().await?.is_none() {
        cluster
            .raft()
            .wait(Some(Duration::from_secs(10)))
            .current_leader(cluster.id(), "electing itself")
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let applied = cluster
            .write(Command::SetClusterCa {
                cert_pem: pending.cert_pem,
                key_pem: pending.key_pem,
                at_ms: crate::store::now_ms(),
            })
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        tracing::info!(?applied, "cluster CA written to the replicated state");
    }
    std::fs::remove_file(&path).map_err(|source| IdentityError::Io { path, source })?;
    Ok(())
}

/// One log line per change of Raft leader as this node sees it (openraft's own lines about it
/// are at INFO among many others, which the binary's default filter leaves out).
fn log_leader_changes(
    node: u64,
    mut metrics: watch::Receiver<
        openraft::RaftMetrics<crate::raft::NodeId, crate::raft::ClusterNode>,
    >,
) {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let (leader, term) = {
                let m = metrics.borrow_and_update();
                (m.current_leader, m.current_term)
            };
            if leader != last {
                match leader {
                    Some(l) if l == node => {
                        tracing::info!(node, term, "this node is the Raft leader")
                    }
                    Some(l) => tracing::info!(node, term, leader = l, "Raft leader changed"),
                    None => tracing::info!(node, term, "no Raft leader known"),
                }
                last = leader;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}
