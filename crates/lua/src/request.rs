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
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::Phase;

/// The request state the `ngx` API reads and writes.
pub struct RequestState {
    pub phase: Phase,
    pub method: Method,
    /// The path, after any rewrite (nginx's `$uri`).
    pub uri: String,
    /// The query string without `?` (nginx's `$args`).
    pub args: Option<String>,
    /// The original request target (`$request_uri`).
    pub request_uri: String,
    pub http_version: f64,
    pub headers: HeaderMap,
    pub scheme: &'static str,
    /// Lower-case host without port.
    pub host: String,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub request_id: String,
    pub start_time: SystemTime,
    pub body: Option<Bytes>,
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
    /// Set by `ngx.exit`, `ngx.redirect`: the phase ends.
    pub exit: Option<i64>,
    /// The request's `ngx.ctx` table, shared by its phases.
    pub ctx: Option<mlua::RegistryKey>,
    /// srcache-style control from Lua (`require "outpost.cache"`): the key to use instead of
    /// the cache rule's, and whether to skip the lookup or the store.
    pub cache_key: Option<String>,
    pub cache_skip_lookup: bool,
    pub cache_skip_store: bool,
    /// `ngx.arg` in body_filter: the chunk and whether it is the last one.
    pub body_chunk: Option<(Bytes, bool)>,
}

impl RequestState {
    pub fn new(method: Method, uri: String, args: Option<String>, headers: HeaderMap) -> Self {
        let request_uri = match &args {
            Some(a) => format!("{uri}?{a}"),
            None => uri.clone(),
        };
        RequestState {
            phase: Phase::Content,
            method,
            uri,
            args,
            request_uri,
            http_version: 1.1,
            headers,
            scheme: "http",
            host: String::new(),
            client: SocketAddr::from(([127, 0, 0, 1], 0)),
            server: SocketAddr::from(([127, 0, 0, 1], 0)),
            request_id: String::new(),
            start_time: SystemTime::now(),
            body: None,
            declared: HashMap::new(),
            status: None,
            resp_headers: HeaderMap::new(),
            output: Vec::new(),
            headers_sent: false,
            eof: false,
            body_read: false,
            exit: None,
            ctx: None,
            cache_key: None,
            cache_skip_lookup: false,
            cache_skip_store: false,
            body_chunk: None,
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

/// Runs `f` with the current request, or fails as OpenResty does outside a request.
pub fn with<R>(f: impl FnOnce(&mut RequestState) -> mlua::Result<R>) -> mlua::Result<R> {
    let r = current().ok_or_else(|| mlua::Error::runtime("no request found"))?;
    let mut guard = r
        .try_borrow_mut()
        .map_err(|_| mlua::Error::runtime("request state busy"))?;
    f(&mut guard)
}

/// A request's Lua future: it is the current request whenever it is polled.
pub struct WithRequest<F> {
    pub request: SharedRequest,
    pub inner: Pin<Box<F>>,
}

impl<F: Future> Future for WithRequest<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let previous = CURRENT.with(|c| c.replace(Some(self.request.clone())));
        let out = self.inner.as_mut().poll(cx);
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
