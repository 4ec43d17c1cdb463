//! What a Lua script sees of the request it runs for, and the worker-local pointer to it.
//!
//! The `ngx` table is one global per VM (scripts keep `local ngx = ngx` in modules), so its
//! functions find their request through [`current`]: the worker sets it around every poll of a
//! request's coroutine, which also covers coroutines the script creates itself.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::Phase;

/// The request state the `ngx` API reads and writes.
pub struct RequestState {
    pub phase: Phase,
    /// After any `ngx.req.set_method` (nginx's `$request_method`).
    pub method: Method,
    /// The method the client sent, for `$request`.
    pub original_method: Method,
    /// The path, after any rewrite (nginx's `$uri`): decoded and normalised for a client's
    /// request once the host calls [`RequestState::decode_uri`], as given for a subrequest.
    pub uri: String,
    /// The query string without `?` (nginx's `$args`).
    pub args: Option<String>,
    /// A script changed `uri` or `args` (`ngx.req.set_uri`, `set_uri_args`, `ngx.var.args`):
    /// the upstream gets [`RequestState::upstream_target`] instead of the client's target.
    pub uri_changed: bool,
    /// The original request target (`$request_uri`).
    pub request_uri: String,
    pub http_version: f64,
    pub headers: HeaderMap,
    /// `ngx.req.set_header`/`clear_header` ran: `headers` differs from what the client sent.
    pub headers_changed: bool,
    /// The request head as the client sent it (HTTP/1.1, when the edge's HTTP layer kept it):
    /// `ngx.req.raw_header` and `get_headers(_, true)` give the client's own bytes and case.
    pub raw_head: Option<Bytes>,
    pub scheme: &'static str,
    /// Lower-case host without port.
    pub host: String,
    /// `$server_name`: the application's first domain, as nginx gives the server block's
    /// first `server_name` (empty when it has none).
    /// `None` reads as empty (a stand-in request's).
    pub server_name: Option<std::sync::Arc<str>>,
    pub client: SocketAddr,
    /// `client`'s address as text (`$remote_addr`) when the host has it made already (once
    /// per connection); otherwise it is formatted when read.
    pub client_text: Option<http::HeaderValue>,
    pub server: SocketAddr,
    pub request_id: LazyId,
    /// When the host saw the request begin: `ngx.req.start_time` and `$request_time` derive
    /// from it when read, so a request that reads neither reads no wall clock.
    pub start_time: Instant,
    pub body: Option<Bytes>,
    /// `ngx.req.set_body_data` ran: in rewrite and access, `body` replaces what goes upstream.
    pub body_replaced: bool,
    /// The TLS connection the request came on (`require "ngx.ssl"`); `None` over plain TCP.
    pub tls: Option<crate::api::ssl::TlsInfo>,
    /// In the ssl_cert phase: the certificate the script chose for the handshake.
    pub cert_choice: Option<crate::api::ssl::CertChoice>,
    /// Whose globals table the request's Lua runs with: its application's name, or `None`
    /// for the VM's `_G` itself (init_worker, timers started there, tests).
    pub globals: Option<std::sync::Arc<str>>,
    /// Variables the application declares, writable (nginx's `set`).
    pub declared: HashMap<String, String>,
    /// The response: status, headers and what `ngx.say`/`ngx.print` produced.
    pub status: Option<u16>,
    pub resp_headers: HeaderMap,
    pub output: Vec<u8>,
    pub headers_sent: bool,
    /// After `ngx.eof()`: further output is dropped.
    pub eof: bool,
    /// `ngx.req.read_body()` was called: the body is readable.
    pub body_read: bool,
    /// The client's body, unread: what `ngx.req.read_body()` and `ngx.req.socket()` read,
    /// and what the host takes back when no script wanted it.
    pub client_body: Option<crate::client_body::ClientBody>,
    /// `ngx.req.socket()` took the body: it cannot be read or taken again.
    pub body_claimed: bool,
    /// The client's connection after a 101 response, for `ngx.req.socket(true)`: set by the
    /// host for an HTTP/1.1 request that asked to switch protocols.
    pub upgrade: Option<crate::client_body::Upgrade>,
    /// That connection once `ngx.req.socket(true)` has it; the host closes it when the
    /// script ends.
    pub downstream: Option<crate::client_body::SharedDownstream>,
    /// The host streams this content phase's output: `ngx.flush` sends the head and what was
    /// printed so far, and the script goes on. Otherwise the output is sent when it ends.
    pub streamable: bool,
    /// `ngx.flush` asked the host to send the output so far; cleared once it did.
    pub flush_requested: bool,
    /// Set by `ngx.exit`, `ngx.redirect`: the phase ends.
    pub exit: Option<i64>,
    /// `ngx.exec(uri, args)`: the phase ends and the host redirects the request internally to
    /// this path and query.
    pub exec: Option<(String, Option<String>)>,
    /// Reached by an internal redirect (`ngx.exec`): `ngx.req.is_internal()` is true.
    pub redirected: bool,
    /// The request's `ngx.ctx` table, shared by its phases.
    pub ctx: Option<mlua::RegistryKey>,
    /// srcache-style control from Lua (`require "outpost.cache"`): the key to use instead of
    /// the cache rule's, and whether to skip the lookup or the store.
    pub cache_key: Option<String>,
    pub cache_skip_lookup: bool,
    pub cache_skip_store: bool,
    /// `ngx.arg` in body_filter: the chunk and whether it is the last one.
    pub body_chunk: Option<(Bytes, bool)>,
    /// `require "ngx.balancer"`'s state once the request goes to an upstream; `None` before
    /// (its functions then answer "no upstream found", as OpenResty's do).
    pub balancer: Option<BalancerState>,
    /// What the request's Lua has spent of its execution budget, all phases together (and
    /// its subrequests', which share it).
    pub budget: Rc<crate::limits::Budget>,
    /// Runs `ngx.location.capture`'s subrequests; `None` where the host has no pipeline.
    pub subrequests: Option<std::rc::Weak<dyn crate::subrequest::SubrequestRunner>>,
    /// 0 for a main request, 1 for its subrequests, 2 for theirs...
    pub subrequest_depth: u32,
}

/// `$request_id`: the host's id for the request, shared with it. The host makes one (or
/// takes the client's) only when something first reads it, here or there.
#[derive(Clone)]
pub struct LazyId {
    pub cell: Rc<std::cell::OnceCell<http::HeaderValue>>,
    pub make: fn() -> http::HeaderValue,
}

impl LazyId {
    pub fn value(&self) -> &http::HeaderValue {
        self.cell.get_or_init(self.make)
    }
}

/// An id that reads as empty (requests of tests and stand-ins).
impl Default for LazyId {
    fn default() -> Self {
        LazyId {
            cell: Rc::default(),
            make: || http::HeaderValue::from_static(""),
        }
    }
}

/// What the balancer phase reads and writes for one try at an upstream peer.
#[derive(Debug, Clone, Default)]
pub struct BalancerState {
    /// `set_current_peer`: where this try goes. Unset: the upstream's own peers.
    pub peer: Option<SocketAddr>,
    /// `set_more_tries`: tries added after this one, if it fails.
    pub more_tries: u32,
    /// Tries planned so far, this one included (nginx's `total_tries + peer.tries - 1`).
    pub planned: u32,
    /// The most tries the upstream allows (`proxy_next_upstream_tries`).
    pub limit: u32,
    /// How the previous try ended (`"failed"` or `"next"`, and the status it gave); `None`
    /// on the first try.
    pub last_failure: Option<(&'static str, u16)>,
    /// `set_timeouts`, for this try; `None` keeps the upstream's own.
    pub connect_timeout: Option<Duration>,
    pub send_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
}

impl BalancerState {
    /// Ready for the next try's balancer run: what the previous run chose is forgotten.
    pub fn begin_try(&mut self, planned: u32, last_failure: Option<(&'static str, u16)>) {
        self.peer = None;
        self.more_tries = 0;
        self.planned = planned;
        self.last_failure = last_failure;
        self.connect_timeout = None;
        self.send_timeout = None;
        self.read_timeout = None;
    }
}

impl RequestState {
    pub fn new(method: Method, uri: String, args: Option<String>, headers: HeaderMap) -> Self {
        Self::started_at(
            Instant::now(),
            method,
            uri,
            args,
            headers,
            LazyId::default(),
        )
    }

    /// As [`RequestState::new`], for a request the host saw begin at `start_time`
    /// (`ngx.req.start_time`), with the host's id for it.
    pub fn started_at(
        start_time: Instant,
        method: Method,
        uri: String,
        args: Option<String>,
        headers: HeaderMap,
        request_id: LazyId,
    ) -> Self {
        let request_uri = match &args {
            Some(a) => format!("{uri}?{a}"),
            None => uri.clone(),
        };
        RequestState {
            phase: Phase::Content,
            original_method: method.clone(),
            method,
            uri,
            args,
            uri_changed: false,
            request_uri,
            http_version: 1.1,
            headers,
            headers_changed: false,
            raw_head: None,
            scheme: "http",
            host: String::new(),
            server_name: None,
            client: SocketAddr::from(([127, 0, 0, 1], 0)),
            client_text: None,
            server: SocketAddr::from(([127, 0, 0, 1], 0)),
            request_id,
            start_time,
            body: None,
            body_replaced: false,
            tls: None,
            cert_choice: None,
            globals: None,
            declared: HashMap::new(),
            status: None,
            resp_headers: HeaderMap::new(),
            output: Vec::new(),
            headers_sent: false,
            eof: false,
            body_read: false,
            client_body: None,
            body_claimed: false,
            upgrade: None,
            downstream: None,
            streamable: false,
            flush_requested: false,
            exit: None,
            exec: None,
            redirected: false,
            ctx: None,
            cache_key: None,
            cache_skip_lookup: false,
            cache_skip_store: false,
            body_chunk: None,
            balancer: None,
            budget: Rc::default(),
            subrequests: None,
            subrequest_depth: 0,
        }
    }
}

impl RequestState {
    /// Makes `uri` nginx's `$uri` for a client's request: percent-decoded and normalised. A
    /// path nginx would refuse (or not UTF-8) stays as sent.
    pub fn decode_uri(&mut self) {
        if crate::uri::is_normal(&self.uri) {
            return;
        }
        if let Some(u) = crate::uri::normalise(&self.uri) {
            self.uri = u;
        }
    }

    /// Whether the connection stays open after this request, as nginx decides it
    /// (`r->keepalive`): a `Connection` header with `close`, else one with `keep-alive`,
    /// else any version after HTTP/1.0.
    pub fn keepalive(&self) -> bool {
        let has = |token: &str| {
            self.headers
                .get_all(http::header::CONNECTION)
                .iter()
                .any(|v| {
                    v.to_str()
                        .is_ok_and(|v| v.to_ascii_lowercase().contains(token))
                })
        };
        if has("close") {
            false
        } else if has("keep-alive") {
            true
        } else {
            self.http_version > 1.0
        }
    }

    /// What goes upstream after a script changed the URI, as nginx's proxy builds it:
    /// `$uri` escaped again, then `?$args`.
    pub fn upstream_target(&self) -> String {
        let path = crate::uri::escape(&self.uri);
        match &self.args {
            Some(a) => format!("{path}?{a}"),
            None => path,
        }
    }
}

pub type SharedRequest = Rc<RefCell<RequestState>>;

thread_local! {
    static CURRENT: RefCell<Option<SharedRequest>> = const { RefCell::new(None) };
}

/// The request whose Lua code is running on this worker now.
pub fn current() -> Option<SharedRequest> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `f` with the current request, or fails as OpenResty does outside a request (and in
/// `init_worker`, whose request is a stand-in with nothing to read).
pub fn with<R>(f: impl FnOnce(&mut RequestState) -> mlua::Result<R>) -> mlua::Result<R> {
    let r = current().ok_or_else(|| mlua::Error::runtime("no request found"))?;
    let mut guard = r
        .try_borrow_mut()
        .map_err(|_| mlua::Error::runtime("request state busy"))?;
    if guard.phase == Phase::InitWorker {
        return Err(mlua::Error::runtime("API disabled in the current context"));
    }
    f(&mut guard)
}

/// As [`with`], for fast paths: `None` where `with` fails (no request, its state borrowed,
/// `init_worker`), and they hand the call to the full API, which raises the error.
pub fn with_request<R>(f: impl FnOnce(&mut RequestState) -> R) -> Option<R> {
    CURRENT.with(|c| {
        let c = c.borrow();
        let mut r = c.as_ref()?.try_borrow_mut().ok()?;
        (r.phase != Phase::InitWorker).then(|| f(&mut r))
    })
}

/// Runs `f` on the current request in one of `phases`; `None` without one (or while its state
/// is borrowed). For fast paths that hand anything else to the full API, which raises the
/// error.
pub fn with_in<R>(phases: &[Phase], f: impl FnOnce(&mut RequestState) -> R) -> Option<R> {
    with_request(|r| phases.contains(&r.phase).then(|| f(r))).flatten()
}

/// The phase running now: the current request's, or `timer` outside any request.
pub fn phase_now() -> Phase {
    current()
        .and_then(|r| r.try_borrow().ok().map(|r| r.phase))
        .unwrap_or(Phase::Timer)
}

/// Fails with OpenResty's "API disabled in the context of ..." unless the running phase is
/// one of `allowed`.
pub fn allow_in(allowed: &[Phase]) -> mlua::Result<()> {
    let p = phase_now();
    if allowed.contains(&p) {
        Ok(())
    } else {
        Err(p.disabled())
    }
}

/// For APIs that wait (sleep, cosockets, light threads): only where OpenResty can yield.
pub fn allow_yield() -> mlua::Result<()> {
    let p = phase_now();
    if p.yieldable() {
        Ok(())
    } else {
        Err(p.disabled())
    }
}

/// A request's Lua future: it is the current request whenever it is polled, and the time each
/// poll takes is charged to its budget.
pub struct WithRequest<F> {
    pub request: SharedRequest,
    pub inner: Pin<Box<F>>,
}

impl<F: Future> Future for WithRequest<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let previous = CURRENT.with(|c| c.replace(Some(this.request.clone())));
        let budget = this.request.try_borrow().ok().map(|r| r.budget.clone());
        let out = match budget {
            Some(b) => crate::limits::metered(&b, || this.inner.as_mut().poll(cx)),
            None => this.inner.as_mut().poll(cx),
        };
        CURRENT.with(|c| *c.borrow_mut() = previous);
        out
    }
}

/// Raised by `ngx.exit` and friends to end the phase; caught by the runner.
#[derive(Debug, Clone, Copy)]
pub struct ExitSignal(pub i64);

impl std::fmt::Display for ExitSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ngx.exit({})", self.0)
    }
}

impl std::error::Error for ExitSignal {}
