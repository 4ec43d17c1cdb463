//! Starting and stopping a control-plane node: the store, Raft, the admin API listener and the
//! gRPC listener (Raft between nodes, config watches from edges and GSLB servers).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use outpost_proto::controlplane::v1::config_watch_server::ConfigWatchServer;
use outpost_proto::controlplane::v1::raft_server::RaftServer;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::auth;
use crate::cluster::Cluster;
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
        }
    }
}

/// What a node does on its first start, when its log is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterInit {
    /// Forms a one-voter cluster of itself and creates the first admin token. Later voters are
    /// added through the API.
    Single,
    /// Waits to be added by the leader (`POST /api/v1/cluster/nodes`).
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
            NetworkFactory { local },
            LogStore::new(store.pool.clone(), writes.clone()),
            StateMachine::new(store.clone(), writes),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let cluster = Arc::new(Cluster::new(settings.node_id, raft, local));

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
        let mut grpc_stop = stop_rx;
        let grpc_task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(ConfigWatchServer::new(service))
                .add_service(RaftServer::new(raft_service))
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
        Ok(ControlPlane {
            api_addr,
            grpc_addr,
            bootstrap_token,
            store,
            cluster,
            stop,
            tasks: vec![api_task, grpc_task],
        })
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
