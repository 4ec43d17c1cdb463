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
    /// When the own client's idle connections were last swept (`checkin_h1`).
    swept: std::cell::Cell<Option<Instant>>,
}

/// How often the own client's idle connections are checked for origins that closed them.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

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
        let now = Instant::now();
        let mut own = self.own.borrow_mut();
        // Now and then, idle connections their origin closed (or that aged out) are closed
        // here too, so that none waits in CLOSE_WAIT for a request that may never come
        // (hyper's connection tasks see such a close by themselves).
        if self
            .swept
            .get()
            .is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY)
        {
            self.swept.set(Some(now));
            for list in own.values_mut() {
                list.retain_mut(|(c, since)| {
                    now.duration_since(*since) < MAX_IDLE && c.still_open()
                });
            }
            own.retain(|_, list| !list.is_empty());
        }
        let list = own.entry(key).or_default();
        if list.len() >= max_idle {
            list.remove(0);
        }
        list.push((conn, now));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_own(pool: &ConnPool) -> usize {
        pool.own.borrow().values().map(Vec::len).sum()
    }

    #[tokio::test]
    async fn idle_connections_their_origin_closed_are_swept_and_not_reused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key = PoolKey {
            addr,
            tls_name: None,
        };
        let limit = Duration::from_secs(5);
        let pool = ConnPool::default();
        let first = crate::upstream::h1_client::connect(addr, limit)
            .await
            .unwrap();
        let (first_server, _) = listener.accept().await.unwrap();
        pool.checkin_h1(key.clone(), first, 8);
        assert_eq!(idle_own(&pool), 1);
        // The origin closes the idle connection.
        drop(first_server);
        tokio::time::sleep(SWEEP_EVERY + Duration::from_millis(200)).await;
        let second = crate::upstream::h1_client::connect(addr, limit)
            .await
            .unwrap();
        let (_second_server, _) = listener.accept().await.unwrap();
        pool.checkin_h1(key.clone(), second, 8);
        assert_eq!(
            idle_own(&pool),
            1,
            "the closed one is swept, the open one kept"
        );
        assert!(pool.checkout_h1(&key).is_some(), "the open one is reused");
        assert!(pool.checkout_h1(&key).is_none());
    }
}
