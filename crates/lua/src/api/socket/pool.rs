//! The per-worker keep-alive pool behind `tcpsock:setkeepalive`.
//!
//! As in lua-nginx-module, entries are found by the pool name (`host:port` or `opts.pool`) at
//! `connect`, before anyone knows whether TLS will follow: lua-resty-http asks
//! `getreusedtimes()` right after `connect` and skips `sslhandshake` on a reused connection,
//! so a pooled TLS connection must come back from a plain `connect`. Each entry remembers how
//! its TLS was set up ([`TlsTag`]), and `sslhandshake` only accepts a pooled TLS connection
//! whose server name and verification match; any other goes back to the pool.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::stream::Conn;

/// How a pooled connection's TLS was established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsTag {
    /// The SNI / host-check name given to `sslhandshake`, if any.
    pub server_name: Option<String>,
    pub verified: bool,
}

impl TlsTag {
    /// Whether a connection set up as `self` may serve a handshake that asks for `want`: the
    /// same name, and verified if verification is asked for.
    pub fn serves(&self, want: &TlsTag) -> bool {
        self.server_name == want.server_name && (self.verified || !want.verified)
    }
}

pub struct Pooled {
    pub conn: Conn,
    pub tls: Option<TlsTag>,
    pub reused: u32,
    idle_until: Instant,
}

thread_local! {
    /// Idle connections of this worker, by pool name; the newest last.
    static POOL: RefCell<HashMap<String, Vec<Pooled>>> = RefCell::new(HashMap::new());
}

/// The newest live connection under `key` (expired ones are dropped on the way).
pub fn take(key: &str) -> Option<Pooled> {
    take_where(key, |_| true)
}

/// The newest live TLS connection under `key` that can serve `want`.
pub fn take_tls(key: &str, want: &TlsTag) -> Option<Pooled> {
    take_where(key, |p| p.tls.as_ref().is_some_and(|t| t.serves(want)))
}

fn take_where(key: &str, fits: impl Fn(&Pooled) -> bool) -> Option<Pooled> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.get_mut(key)?;
        let now = Instant::now();
        list.retain(|c| c.idle_until > now);
        let i = list.iter().rposition(fits)?;
        Some(list.remove(i))
    })
}

/// Keeps `conn` for `idle`, evicting the oldest entry when `key` already holds `size`.
pub fn put(key: &str, conn: Conn, tls: Option<TlsTag>, reused: u32, idle: Duration, size: usize) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.entry(key.to_string()).or_default();
        if list.len() >= size.max(1) {
            list.remove(0).conn.close_now();
        }
        list.push(Pooled {
            conn,
            tls,
            reused,
            idle_until: Instant::now() + idle,
        });
    });
}
