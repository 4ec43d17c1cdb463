//! An edge node: its workers, its listeners, and applying configs to them atomically.
//!
//! Applying a config: validate it, compile it, bind any new listening sockets (a port in use
//! fails the apply and nothing changes), then swap the snapshot, hand new sockets to the
//! workers, close removed ones, and restart health checks and discovery for the new
//! upstreams. Requests in flight finish on the snapshot they started with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use outpost_proto::{ValidationErrors, pb, validate};
use tokio::sync::mpsc;

use crate::config::{CompileError, Snapshot};
use crate::metrics::Metrics;
use crate::proxy::access_log::AccessLog;
use crate::rules::RateLimiter;
use crate::server::listener::bind_reuseport;
use crate::server::tls::server_config;
use crate::server::worker::{self, Shared, WorkerCommand};
use crate::upstream::{PeerStates, discovery, health_check};

/// Settings of this node that are not part of the pushed config.
#[derive(Debug, Clone, Default)]
pub struct EdgeSettings {
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Where `/metrics`, `/status` and `/healthz` are served; `None` = nowhere.
    pub admin_listen: Option<SocketAddr>,
    /// `None`: no access log; `-`: standard output; else a file.
    pub access_log: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
// The messages carry their cause inline and no `source`, so that a report printing the whole
// chain does not say everything twice.
pub enum ApplyError {
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("cannot serve this config: {0}")]
    Compile(CompileError),
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot start: {0}")]
    Start(std::io::Error),
}

/// Each shared dict's name and capacity (0 = 1 MiB).
fn dict_sizes(config: &pb::Config) -> Vec<(String, usize)> {
    config
        .shared_dicts
        .iter()
        .map(|d| {
            let cap = if d.capacity_bytes == 0 {
                1 << 20
            } else {
                d.capacity_bytes
            };
            (d.name.clone(), cap as usize)
        })
        .collect()
}

impl From<ValidationErrors> for ApplyError {
    fn from(e: ValidationErrors) -> Self {
        ApplyError::Invalid(e)
    }
}

impl From<CompileError> for ApplyError {
    fn from(e: CompileError) -> Self {
        ApplyError::Compile(e)
    }
}

pub struct EdgeNode {
    shared: Arc<Shared>,
    workers: Vec<mpsc::UnboundedSender<WorkerCommand>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Configured listener address to the address bound.
    bound: Mutex<HashMap<SocketAddr, SocketAddr>>,
    apply_lock: tokio::sync::Mutex<()>,
    admin_addr: Option<SocketAddr>,
}

impl EdgeNode {
    /// Starts the workers and serves `config`. Must run inside a multi-threaded tokio runtime
    /// (the control runtime: health checks, discovery and the admin listener run there).
    pub async fn start(
        settings: EdgeSettings,
        config: pb::Config,
    ) -> Result<Arc<EdgeNode>, ApplyError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        validate(&config)?;
        let metrics = Metrics::default();
        let states = Arc::new(PeerStates::default());
        let caches = crate::config::CacheStorage::default();
        let first = Snapshot::compile(&config, &states, &metrics, &caches)?;
        let snapshot = Arc::new(ArcSwap::from_pointee(first));
        let shared = Arc::new(Shared {
            tls: server_config(snapshot.clone()),
            snapshot,
            limiter: RateLimiter::default(),
            metrics,
            access_log: AccessLog::open(settings.access_log.clone()).map_err(ApplyError::Start)?,
            states,
            caches,
            dicts: Arc::new(outpost_lua::SharedDicts::default()),
        });
        shared.dicts.configure(&dict_sizes(&config));
        let n = if settings.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            settings.workers
        };
        let mut workers = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for id in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            threads.push(worker::spawn(id, n, shared.clone(), rx).map_err(ApplyError::Start)?);
            workers.push(tx);
        }
        let admin_addr = match settings.admin_listen {
            Some(addr) => Some(
                crate::admin::serve(addr, shared.clone())
                    .await
                    .map_err(|error| ApplyError::Bind { addr, error })?,
            ),
            None => None,
        };
        let node = Arc::new(EdgeNode {
            shared,
            workers,
            threads: Mutex::new(threads),
            bound: Mutex::new(HashMap::new()),
            apply_lock: tokio::sync::Mutex::new(()),
            admin_addr,
        });
        // The compiled snapshot is already in place; this binds its listeners and starts its
        // background tasks.
        let current = node.shared.snapshot.load_full();
        if let Err(e) = node.activate(&current, None) {
            node.shutdown(Duration::ZERO).await;
            return Err(e);
        }
        Ok(node)
    }

    /// Validates, compiles and serves a new config; on any error the old one keeps serving.
    pub async fn apply(&self, config: pb::Config) -> Result<(), ApplyError> {
        let _one_at_a_time = self.apply_lock.lock().await;
        let result = self.apply_locked(config);
        self.shared.metrics.config_load(if result.is_ok() {
            "applied"
        } else {
            "rejected"
        });
        result
    }

    fn apply_locked(&self, config: pb::Config) -> Result<(), ApplyError> {
        validate(&config)?;
        let next = Arc::new(Snapshot::compile(
            &config,
            &self.shared.states,
            &self.shared.metrics,
            &self.shared.caches,
        )?);
        let previous = self.shared.snapshot.load_full();
        self.activate(&next, Some(&previous))?;
        self.shared.dicts.configure(&dict_sizes(&config));
        Ok(())
    }

    /// Binds what `next` adds, swaps it in, then retires what `previous` had.
    fn activate(
        &self,
        next: &Arc<Snapshot>,
        previous: Option<&Arc<Snapshot>>,
    ) -> Result<(), ApplyError> {
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        let mut new_sockets = Vec::new();
        for key in next.listeners.keys() {
            if bound.contains_key(key) {
                continue;
            }
            match bind_reuseport(*key, self.workers.len()) {
                Ok((addr, socks)) => new_sockets.push((*key, addr, socks)),
                Err(error) => return Err(ApplyError::Bind { addr: *key, error }),
            }
        }
        // Past this point nothing can fail.
        if previous.is_some() {
            self.shared.snapshot.store(next.clone());
            for tx in &self.workers {
                let _ = tx.send(WorkerCommand::ConfigChanged);
            }
        }
        for (key, addr, socks) in new_sockets {
            for (tx, listener) in self.workers.iter().zip(socks) {
                let _ = tx.send(WorkerCommand::Listen { key, listener });
            }
            bound.insert(key, addr);
            tracing::info!(listener = %key, bound = %addr, "listening");
        }
        let removed: Vec<SocketAddr> = bound
            .keys()
            .filter(|k| !next.listeners.contains_key(k))
            .copied()
            .collect();
        for key in removed {
            for tx in &self.workers {
                let _ = tx.send(WorkerCommand::Unlisten { key });
            }
            bound.remove(&key);
            tracing::info!(listener = %key, "stopped listening");
        }
        if let Some(prev) = previous {
            for u in prev.upstreams.values() {
                u.retired.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        for u in next.upstreams.values() {
            for p in u.peers.load().all() {
                u.metrics.set_peer_up(&p.name, p.addr, p.state.is_healthy());
            }
            health_check::spawn(u);
            discovery::spawn(u);
        }
        self.shared.metrics.config_version.set(next.version as i64);
        tracing::info!(version = next.version, "config applied");
        Ok(())
    }

    /// The address bound for a configured listener (which may say port 0).
    pub fn bound_addr(&self, configured: SocketAddr) -> Option<SocketAddr> {
        self.bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&configured)
            .copied()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn version(&self) -> u64 {
        self.shared.snapshot.load().version
    }

    pub fn metrics_text(&self) -> String {
        self.shared.metrics.encode()
    }

    /// Stops accepting, lets requests in flight finish within `grace`, stops the workers.
    pub async fn shutdown(&self, grace: Duration) {
        for tx in &self.workers {
            let _ = tx.send(WorkerCommand::Shutdown { grace });
        }
        for u in self.shared.snapshot.load().upstreams.values() {
            u.retired.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }

    /// Purges the HTTP cache: removes (or, `soft`, marks stale) what the selector matches.
    pub fn purge(&self, selector: &outpost_cache::PurgeSelector, soft: bool) -> usize {
        self.shared.snapshot.load().cache.purge(selector, soft)
    }

    /// The shutdown grace from the current config.
    pub fn shutdown_grace(&self) -> Duration {
        self.shared.snapshot.load().limits.shutdown_grace
    }
}
