//! Keep-alive connections to peers, one pool per worker: no locks, no sharing (as nginx's
//! per-worker `keepalive`). A connection returns here when its response body has been read
//! to the end.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

use super::h1_client::H1Conn;
use crate::proxy::body::UpstreamRequestBody;

/// Connections to the same address with different TLS names are different.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: SocketAddr,
    pub tls_name: Option<std::sync::Arc<str>>,
}

/// Idle connections older than this are dropped rather than reused (an origin's own keep-alive
/// timeout is commonly 60 s or more; reusing a connection it is closing costs a retry).
const MAX_IDLE: Duration = Duration::from_secs(50);

/// An idle connection and since when it has been idle.
type Idle = (SendRequest<UpstreamRequestBody>, Instant);

#[derive(Default)]
pub struct ConnPool {
    idle: RefCell<crate::config::FastMap<PoolKey, Vec<Idle>>>,
    /// Connections of the edge's own HTTP/1.1 client (`h1_client.rs`), kept apart: each
    /// client reuses only its own.
    own: RefCell<crate::config::FastMap<PoolKey, Vec<(H1Conn, Instant)>>>,
}

impl ConnPool {
    /// A live idle connection, most recently used first.
    pub fn checkout(&self, key: &PoolKey) -> Option<SendRequest<UpstreamRequestBody>> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key)?;
        while let Some((sender, since)) = list.pop() {
            if !sender.is_closed() && since.elapsed() < MAX_IDLE {
                return Some(sender);
            }
        }
        None
    }

    /// A live idle connection of the edge's own client, most recently used first.
    pub fn checkout_h1(&self, key: &PoolKey) -> Option<H1Conn> {
        let mut own = self.own.borrow_mut();
        let list = own.get_mut(key)?;
        while let Some((mut conn, since)) = list.pop() {
            if since.elapsed() < MAX_IDLE && conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    pub fn checkin_h1(&self, key: PoolKey, conn: H1Conn, max_idle: usize) {
        if max_idle == 0 {
            return;
        }
        let mut own = self.own.borrow_mut();
        let list = own.entry(key).or_default();
        if list.len() >= max_idle {
            list.remove(0);
        }
        list.push((conn, Instant::now()));
    }

    pub fn checkin(&self, key: PoolKey, sender: SendRequest<UpstreamRequestBody>, max_idle: usize) {
        if sender.is_closed() || max_idle == 0 {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(key).or_default();
        if list.len() >= max_idle {
            // Drop the oldest: it is the likeliest to be closed by the origin.
            list.remove(0);
        }
        list.push((sender, Instant::now()));
    }
}
