//! Starting and stopping the control plane: the store, the admin API listener and the gRPC
//! listener, each on its own socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use outpost_proto::controlplane::v1::config_watch_server::ConfigWatchServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::push::{ConfigWatchService, Watchers};
use crate::store::{Store, StoreError};

/// Where the control plane keeps its data and listens.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Directory holding `control-plane.db` (created if missing).
    pub data_dir: PathBuf,
    /// The admin REST API.
    pub api_listen: SocketAddr,
    /// The gRPC `ConfigWatch` service nodes connect to.
    pub grpc_listen: SocketAddr,
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
}

/// A running control plane.
pub struct ControlPlane {
    api_addr: SocketAddr,
    grpc_addr: SocketAddr,
    bootstrap_token: Option<String>,
    store: Arc<Store>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

impl ControlPlane {
    /// Opens (or creates) the database, creates the first admin token when there is none, and
    /// starts serving. Returns once both listeners are bound.
    pub async fn start(settings: Settings) -> Result<ControlPlane, StartError> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|source| StartError::DataDir {
            path: settings.data_dir.clone(),
            source,
        })?;
        let store = Arc::new(Store::open(&settings.data_dir.join("control-plane.db")).await?);
        let bootstrap_token = store.bootstrap_admin_token().await?;
        let api_listener = bind(settings.api_listen).await?;
        let grpc_listener = bind(settings.grpc_listen).await?;
        let api_addr = local_addr(&api_listener, settings.api_listen)?;
        let grpc_addr = local_addr(&grpc_listener, settings.grpc_listen)?;

        let (stop, stop_rx) = watch::channel(false);
        let watchers = Arc::new(Watchers::default());
        let router = api::router(AppState {
            store: store.clone(),
            watchers: watchers.clone(),
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

        let service = ConfigWatchService::new(store.clone(), watchers, stop_rx.clone());
        let mut grpc_stop = stop_rx;
        let grpc_task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(ConfigWatchServer::new(service))
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
        tracing::info!(api = %api_addr, grpc = %grpc_addr, "control plane listening");
        Ok(ControlPlane {
            api_addr,
            grpc_addr,
            bootstrap_token,
            store,
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

    /// Stops accepting, ends every watch stream, waits for both servers and closes the store.
    pub async fn shutdown(self) {
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
