//! Workers, as nginx has them: each a thread with a single-threaded tokio runtime, its own
//! listening sockets and its own upstream connection pool, so the request path takes no
//! locks. State shared by all workers (config snapshot, peer health, rate limits, metrics)
//! sits behind `Arc`s in [`Shared`].

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::conn_watch::{self, HeadState, HeadWatch, Watch};
use crate::config::{Limits, Snapshot};
use crate::metrics::Metrics;
use crate::proxy::access_log::AccessLog;
use crate::proxy::handler;
use crate::rules::RateLimiter;
use crate::upstream::PeerStates;
use crate::upstream::pool::ConnPool;

/// What every worker shares.
pub struct Shared {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub limiter: RateLimiter,
    pub metrics: Metrics,
    pub access_log: AccessLog,
    pub states: Arc<PeerStates>,
    pub tls: Arc<rustls::ServerConfig>,
    /// `ngx.shared.DICT`s, shared by every worker's Lua VM.
    pub dicts: Arc<outpost_lua::SharedDicts>,
    /// The HTTP cache, kept across reloads that leave its settings alone.
    pub caches: crate::config::CacheStorage,
}

/// One worker's own state.
pub struct WorkerCtx {
    pub shared: Arc<Shared>,
    pub pool: Rc<ConnPool>,
    pub id: usize,
    connections: Cell<usize>,
    pub(super) shutdown: watch::Receiver<bool>,
    /// The worker is shutting down: a response being written now is the connection's last
    /// and says so (`Connection: close`), as hyper's graceful shutdown has it. The same fact
    /// as `shutdown`, read per response without touching the channel all workers share.
    pub(super) draining: Cell<bool>,
    workers: usize,
    /// This worker's Lua VM and the module generation it was built for.
    lua: std::cell::RefCell<Option<(u64, Rc<outpost_lua::LuaVm>)>>,
    /// The snapshot as this worker last saw it (see [`WorkerCtx::snapshot`]).
    snapshot_seen: std::cell::RefCell<SeenSnapshot>,
    /// This worker's handles on the applications of that snapshot (see [`WorkerCtx::app`]),
    /// by address.
    apps_seen: std::cell::RefCell<crate::config::FastMap<usize, AppHandle>>,
}

/// An application, held by one worker: its count is that worker's alone.
// The `Rc` around the `Arc` is the point, as in `SeenSnapshot`.
#[allow(clippy::redundant_allocation)]
pub type AppHandle = Rc<Arc<crate::config::Application>>;

/// The shared snapshot's pointer as last loaded, and a worker-owned handle on it.
// The `Rc` around the `Arc` is the point: its count is this worker's alone.
#[allow(clippy::redundant_allocation)]
struct SeenSnapshot {
    cache: arc_swap::Cache<Arc<ArcSwap<Snapshot>>, Arc<Snapshot>>,
    handle: Rc<Arc<Snapshot>>,
}

impl WorkerCtx {
    /// The config snapshot in force, for a request to hold. A load from the `ArcSwap` and
    /// a clone of its `Arc` are locked instructions on counts every worker shares; this is a
    /// plain read of the shared pointer and, unless it changed, a count only this worker
    /// keeps.
    pub fn snapshot(&self) -> Rc<Arc<Snapshot>> {
        let mut seen = self.snapshot_seen.borrow_mut();
        let SeenSnapshot { cache, handle } = &mut *seen;
        let current = cache.load();
        if !Arc::ptr_eq(current, handle) {
            *handle = Rc::new(current.clone());
            // The old snapshot's applications go with it.
            self.apps_seen.borrow_mut().clear();
        }
        handle.clone()
    }

    /// A handle on `app`, one of the snapshot's applications, for what outlives a
    /// request's pipeline (the log callback, a streamed content phase). A clone of the
    /// `Arc` is a locked count every worker writes; this is a map lookup and a count of
    /// this worker's own.
    pub fn app(&self, app: &Arc<crate::config::Application>) -> AppHandle {
        let mut seen = self.apps_seen.borrow_mut();
        seen.entry(Arc::as_ptr(app) as usize)
            .or_insert_with(|| Rc::new(app.clone()))
            .clone()
    }

    /// The worker's Lua VM, built on first use and rebuilt when the config's Lua (modules,
    /// `lua_init_worker`, `lua_runtime`) changes (a reload then starts from fresh module state,
    /// as an nginx reload does), or when the VM asks to be replaced after hitting its memory
    /// limit or a script's `ngx.process.signal_graceful_exit()`. Requests keep the VM they
    /// started on (`LuaRequest`), so a replaced VM finishes them and goes with the last one.
    pub fn lua_vm(
        &self,
        snapshot: &crate::config::Snapshot,
    ) -> Result<Rc<outpost_lua::LuaVm>, outpost_lua::LuaError> {
        // Why the VM in use is replaced: `Some(true)` a script's graceful exit, `Some(false)`
        // its memory.
        let mut recycle = None;
        if let Some((generation, vm)) = &*self.lua.borrow()
            && *generation == snapshot.lua_generation
        {
            if !vm.needs_recycle() {
                return Ok(vm.clone());
            }
            recycle = Some(vm.exiting());
        }
        let vm = Rc::new(outpost_lua::LuaVm::with_limits(
            self.id,
            self.workers,
            self.shared.dicts.clone(),
            &snapshot.lua_modules,
            snapshot.lua_limits.clone(),
        )?);
        vm.set_cache_access(Rc::new(crate::proxy::lua_cache::LuaCache {
            snapshot: self.shared.snapshot.clone(),
        }));
        match recycle {
            Some(true) => tracing::info!(target: "lua", worker = self.id,
                "Lua VM replaced after ngx.process.signal_graceful_exit()"),
            Some(false) => {
                // The error line was the request's that hit the limit; this says what followed.
                tracing::info!(target: "lua", worker = self.id,
                    "Lua VM replaced after hitting its memory limit");
                self.shared.metrics.lua.vm_recycles.inc();
            }
            None => {}
        }
        *self.lua.borrow_mut() = Some((snapshot.lua_generation, vm.clone()));
        if let Some(chunk) = &snapshot.init_worker {
            self.init_worker(&vm, chunk.clone());
        }
        Ok(vm)
    }

    /// Runs `lua_init_worker` in a new VM before anything else uses it. Its code cannot wait
    /// (sleep and cosockets are disabled there, as in OpenResty), so it ends in the first poll;
    /// should it not, the rest runs as a task of the worker.
    fn init_worker(&self, vm: &Rc<outpost_lua::LuaVm>, chunk: Arc<crate::rules::LuaChunk>) {
        let (vm, worker, metrics) = (vm.clone(), self.id, self.shared.metrics.lua.clone());
        let mut run = Box::pin(async move {
            match vm.init_worker(&chunk.name, &chunk.code).await {
                Ok(()) => {}
                // Logged by the Lua crate already.
                Err(outpost_lua::LuaError::Limit(why)) => metrics.stopped(&why),
                // As nginx: logged, and the worker serves anyway.
                Err(e) => {
                    tracing::error!(target: "lua", worker, error = %e, "init_worker_by_lua error")
                }
            }
        });
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if run.as_mut().poll(&mut cx).is_pending() {
            tokio::task::spawn_local(run);
        }
    }

    /// After a config change: a worker whose config has `lua_init_worker` starts its new VM
    /// now (as nginx's new workers run it before serving), not on its next Lua request.
    pub fn config_changed(&self) {
        let snapshot = self.shared.snapshot.load_full();
        if snapshot.init_worker.is_some()
            && let Err(e) = self.lua_vm(&snapshot)
        {
            tracing::error!(worker = self.id, error = %e, "cannot start the Lua VM");
        }
    }
}

/// One client connection.
pub struct ConnInfo {
    pub client: SocketAddr,
    pub local: SocketAddr,
    /// The configured listener address it arrived on (the key of the listener's router).
    pub listener: SocketAddr,
    pub scheme: &'static str,
    /// The TLS connection's SNI name and version; `None` over plain TCP.
    pub tls: Option<outpost_lua::TlsInfo>,
    pub access_log: AccessLog,
    last_active: Cell<Instant>,
    /// Requests in flight and the head being received, for the watchdog (`conn_watch`).
    pub(super) watch: Arc<HeadState>,
    /// The head of the request being served, as the client sent it, when the edge's own
    /// HTTP/1.1 path read it (`ngx.req.raw_header`); taken by the request's Lua state.
    pub raw_head: Cell<Option<bytes::Bytes>>,
    /// When the pipeline finished making the response about to be written (its clock read
    /// for the duration metric), so the HTTP/1.1 writer need not read the clock again.
    pub response_made: Cell<Option<std::time::Instant>>,
    /// The client's address as text, for `X-Forwarded-For`: made once per connection, when a
    /// request first goes upstream.
    client_ip_text: std::cell::OnceCell<http::HeaderValue>,
}

/// A request in flight on a connection; the idle timer only runs when there is none.
pub struct InFlight(Rc<ConnInfo>);

impl InFlight {
    pub fn conn(&self) -> &ConnInfo {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.watch.end_request();
        self.0.last_active.set(Instant::now());
    }
}

impl ConnInfo {
    /// When the last request on the connection ended (or the connection began).
    pub fn last_active(&self) -> Instant {
        self.last_active.get()
    }

    /// When the head of the request about to begin started to arrive (for HTTP/1.1), as
    /// nginx starts a request's clock at its first bytes.
    pub fn head_started(&self) -> Option<std::time::Instant> {
        self.watch.head_started().map(Instant::into_std)
    }

    /// The client's IP address as a field value (`X-Forwarded-For`).
    pub fn client_ip_value(&self) -> &http::HeaderValue {
        self.client_ip_text.get_or_init(|| {
            let text = self.client.ip().to_string();
            http::HeaderValue::from_str(&text).unwrap_or(http::HeaderValue::from_static("-"))
        })
    }

    pub fn begin_request(self: &Rc<Self>) -> InFlight {
        self.watch.begin_request();
        InFlight(self.clone())
    }
}

pub enum WorkerCommand {
    Listen {
        key: SocketAddr,
        listener: std::net::TcpListener,
    },
    Unlisten {
        key: SocketAddr,
    },
    Shutdown {
        grace: Duration,
    },
    /// A new snapshot is in place.
    ConfigChanged,
}

#[derive(Clone, Copy)]
struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

pub fn spawn(
    id: usize,
    workers: usize,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<WorkerCommand>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("edge-worker-{id}")).spawn(move || {
        // Held for the thread's life: its metric shards are its own while it runs.
        let _shard = crate::metrics::claim_worker_shard();
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(worker = id, error = %e, "cannot start worker runtime");
                return;
            }
        };
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let (stop_tx, stop_rx) = watch::channel(false);
            let seen = SeenSnapshot {
                handle: Rc::new(shared.snapshot.load_full()),
                cache: arc_swap::Cache::new(shared.snapshot.clone()),
            };
            let ctx = Rc::new(WorkerCtx {
                shared,
                pool: Rc::new(ConnPool::default()),
                id,
                connections: Cell::new(0),
                draining: Cell::new(false),
                shutdown: stop_rx,
                workers,
                lua: std::cell::RefCell::new(None),
                snapshot_seen: std::cell::RefCell::new(seen),
                apps_seen: Default::default(),
            });
            ctx.config_changed();
            let mut accepting: HashMap<SocketAddr, oneshot::Sender<()>> = HashMap::new();
            while let Some(cmd) = commands.recv().await {
                match cmd {
                    WorkerCommand::ConfigChanged => ctx.config_changed(),
                    WorkerCommand::Listen { key, listener } => {
                        let (tx, rx) = oneshot::channel();
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(l) => {
                                tokio::task::spawn_local(accept_loop(ctx.clone(), key, l, rx));
                                accepting.insert(key, tx);
                            }
                            Err(e) => tracing::error!(worker = id, %key, error = %e, "cannot use listener"),
                        }
                    }
                    WorkerCommand::Unlisten { key } => {
                        accepting.remove(&key);
                    }
                    WorkerCommand::Shutdown { grace } => {
                        accepting.clear();
                        ctx.draining.set(true);
                        let _ = stop_tx.send(true);
                        let deadline = Instant::now() + grace;
                        while ctx.connections.get() > 0 && Instant::now() < deadline {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        if ctx.connections.get() > 0 {
                            tracing::warn!(worker = id, open = ctx.connections.get(), "shutdown grace ran out; closing connections");
                        }
                        break;
                    }
                }
            }
        });
    })
}

async fn accept_loop(
    ctx: Rc<WorkerCtx>,
    key: SocketAddr,
    listener: tokio::net::TcpListener,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    tokio::task::spawn_local(serve_connection(ctx.clone(), stream, client, key));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(worker = ctx.id, %key, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Counts a connection for the worker and the metrics until dropped.
struct ConnGuard(Rc<WorkerCtx>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connections.set(self.0.connections.get() - 1);
        self.0.shared.metrics.open_connections.dec();
    }
}

async fn serve_connection(
    ctx: Rc<WorkerCtx>,
    stream: TcpStream,
    client: SocketAddr,
    key: SocketAddr,
) {
    ctx.connections.set(ctx.connections.get() + 1);
    ctx.shared.metrics.open_connections.inc();
    let _guard = ConnGuard(ctx.clone());
    let (tls, limits) = {
        let snap = ctx.shared.snapshot.load();
        (snap.listeners.get(&key).is_some_and(|l| l.tls), snap.limits)
    };
    // Linux copies TCP_NODELAY from the listening socket (set in `listener.rs`) to every
    // accepted one; elsewhere it is set here. A listener bound to one address and port is the
    // connection's local address: no `getsockname` per connection, as nginx does not make one.
    #[cfg(not(target_os = "linux"))]
    let _ = stream.set_nodelay(true);
    let local = if key.ip().is_unspecified() || key.port() == 0 {
        stream.local_addr().unwrap_or(key)
    } else {
        key
    };
    let accepted = Instant::now();
    let info = |tls: Option<outpost_lua::TlsInfo>| {
        // A TLS connection's first request starts after its handshake.
        let now = if tls.is_some() {
            Instant::now()
        } else {
            accepted
        };
        Rc::new(ConnInfo {
            client,
            local,
            listener: key,
            scheme: if tls.is_some() { "https" } else { "http" },
            tls,
            access_log: ctx.shared.access_log.clone(),
            last_active: Cell::new(now),
            watch: Arc::new(HeadState::new(now)),
            raw_head: Cell::new(None),
            response_made: Cell::new(None),
            client_ip_text: std::cell::OnceCell::new(),
        })
    };
    if !tls {
        return super::http1::serve(ctx.clone(), info(None), stream, limits).await;
    }
    let handshake = tls_handshake(&ctx, stream, key, client, local);
    match tokio::time::timeout(limits.header_timeout, handshake).await {
        Ok(Ok((s, hello))) => {
            // HTTP/2 has no request heads to time this way: its frames keep coming on an idle
            // connection (PING, SETTINGS), and its idle timeout is the one that counts.
            let h1 = s.get_ref().1.alpn_protocol() != Some(b"h2".as_slice());
            let version = match s.get_ref().1.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => 0x0304,
                _ => 0x0303,
            };
            let tls = outpost_lua::TlsInfo {
                server_name: hello.server_name,
                version,
            };
            let info = info(Some(tls));
            if h1 {
                super::http1::serve(ctx.clone(), info, s, limits).await
            } else {
                let s = HeadWatch::new(s, info.watch.clone());
                serve_http(ctx.clone(), info, s, limits, false).await
            }
        }
        Ok(Err(e)) => tracing::debug!(%client, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
    }
}

/// The TLS handshake: the client's hello first, so an application's `lua_ssl_certificate`
/// can choose the certificate (`proxy/lua_ssl.rs`), then the rest with the chosen config.
async fn tls_handshake(
    ctx: &Rc<WorkerCtx>,
    stream: TcpStream,
    listener: SocketAddr,
    client: SocketAddr,
    local: SocketAddr,
) -> Result<
    (
        tokio_rustls::server::TlsStream<TcpStream>,
        outpost_lua::TlsInfo,
    ),
    BoxError,
> {
    let acceptor =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = acceptor.await?;
    let hello = crate::proxy::lua_ssl::hello_info(&start.client_hello());
    let snapshot = ctx.shared.snapshot.load_full();
    let default = &ctx.shared.tls;
    let config =
        crate::proxy::lua_ssl::choose(ctx, &snapshot, listener, client, local, &hello, default)
            .await?
            .unwrap_or_else(|| default.clone());
    Ok((start.into_stream(config).await?, hello))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(super) async fn serve_http<IO>(
    ctx: Rc<WorkerCtx>,
    info: Rc<ConnInfo>,
    io: HeadWatch<IO>,
    limits: Limits,
    times_heads: bool,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(LocalExec);
    builder
        .http1()
        .timer(TokioTimer::new())
        // The connection's watchdog enforces it: no timer per request.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32);
    let service = {
        let (ctx, info) = (ctx.clone(), info.clone());
        service_fn(move |req| handler::handle(ctx.clone(), info.clone(), req))
    };
    if !times_heads {
        info.watch.untimed();
    }
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut shutdown = ctx.shutdown.clone();
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    let (header, idle) = (limits.header_timeout, limits.idle_timeout);
    // One timer for the connection's life, re-armed only when it fires: a fresh `sleep` per
    // loop turn would insert and remove a timer entry on every wake-up of the connection.
    let mut watchdog = conn_watch::Watchdog::new(header.min(idle));
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(client = %info.client, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = watchdog.fired(), if !draining => {
                let now = Instant::now();
                let (in_flight, started) = (info.watch.in_flight(), info.watch.head_started());
                match conn_watch::decide(now, in_flight, started, info.last_active.get(), header, idle) {
                    Watch::Close => {
                        tracing::debug!(client = %info.client, "request head not received in time");
                        return;
                    }
                    Watch::Drain => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    Watch::Wait(at) => watchdog.reset(at),
                }
            }
        }
    }
}
