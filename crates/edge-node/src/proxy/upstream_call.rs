//! Sending a request to an upstream: pick a peer, reuse or open a connection, send, and move
//! to the next peer on the failures the upstream's `next_upstream` lists, within its tries.
//!
//! A request whose body has started streaming cannot be replayed, so it moves on only when
//! the peer never saw it (connect failures). A pooled connection the origin closed while idle
//! is retried once on a fresh connection to the same peer without blaming the peer.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::body::{ResponseBody, Reuse, UpstreamRequestBody};
use super::error::ProxyError;
use super::lua_balancer::{self, BalancerLua, MAX_LUA_TRIES};
use crate::clock;
use crate::server::worker::WorkerCtx;
use crate::upstream::Upstream;
use crate::upstream::balancer::{BalancerKind, Pick};
use crate::upstream::connector;
use crate::upstream::h1_body::{H1Body, H1Reuse};
use crate::upstream::h1_client::{self, ExchangeError, H1Conn};
use crate::upstream::peer::Peer;
use crate::upstream::pool::PoolKey;

/// The request head sent to each peer tried.
pub struct UpstreamHead {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

/// What the access log and metrics learn about the upstream exchange.
#[derive(Debug, Default, Clone)]
pub struct UpstreamInfo {
    pub addr: Option<SocketAddr>,
    pub status: Option<u16>,
    pub response_time: Option<Duration>,
    pub tries: u32,
}

pub struct Proxied {
    pub head: http::response::Parts,
    pub body: ResponseBody,
    /// The upstream side of a protocol switch (101).
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

fn idempotent(m: &Method) -> bool {
    !matches!(*m, Method::POST | Method::PATCH) && m.as_str() != "LOCK"
}

/// This try's timeouts: the upstream's, or what its `lua_balancer` set.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    read: Duration,
}

/// How a request's peers are chosen: its consistent-hash key and the upstream's Lua balancer.
#[derive(Clone, Copy)]
pub struct PeerChoice<'a> {
    pub hash: u64,
    pub lua: Option<&'a BalancerLua>,
}

pub async fn call(
    w: &Rc<WorkerCtx>,
    up: &Arc<Upstream>,
    head: UpstreamHead,
    body: UpstreamRequestBody,
    choice: PeerChoice<'_>,
    over_limit: &Rc<Cell<bool>>,
    info: &mut UpstreamInfo,
) -> Result<Proxied, ProxyError> {
    let PeerChoice { hash, lua } = choice;
    let peers = up.peers.load_full();
    let can_replay = body.is_end_stream();
    let may_move = idempotent(&head.method) || up.next_upstream.non_idempotent;
    // Tries planned; a Lua balancer may add to them (`set_more_tries`), up to `lua_limit`.
    let mut planned = up.tries.min(peers.len() as u32).max(1);
    let lua_limit = if up.tries > 1 {
        up.tries
    } else {
        MAX_LUA_TRIES
    };
    let mut body_slot = Some(body);
    let mut tried: Vec<Pick> = Vec::with_capacity(1);
    let mut tries = 0u32;
    let mut last_failure: Option<(&'static str, u16)> = None;
    let mut last_error = None;

    while tries < planned {
        let mut timeouts = Timeouts {
            connect: up.connect_timeout,
            read: up.read_timeout,
        };
        let mut chosen = None;
        if let Some(lua) = lua {
            let c = lua_balancer::choose(w, lua, planned, lua_limit, last_failure).await?;
            if c.peer.is_some() {
                planned += c.more_tries;
            }
            timeouts.connect = c.connect_timeout.unwrap_or(timeouts.connect);
            timeouts.read = c.read_timeout.unwrap_or(timeouts.read);
            if let (Some(limit), Some(b)) = (c.send_timeout, body_slot.as_mut()) {
                b.set_send_timeout(limit);
            }
            chosen = c.peer;
        }
        let script_peer;
        // Borrowed from the peer list: a copy is two reference counts every worker shares.
        let peer: &Peer = match chosen {
            // A peer of the script's own: no shared health state, as in nginx.
            Some(addr) => {
                script_peer = Peer {
                    addr,
                    name: Arc::from(addr.to_string()),
                    weight: 1,
                    backup: false,
                    state: Arc::default(),
                };
                &script_peer
            }
            None => {
                let Some(pick) =
                    peers.select(up.kind, hash, &tried, clock::now_ms(), rand::random())
                else {
                    break;
                };
                tried.push(pick);
                peers.get(pick)
            }
        };
        tries += 1;
        let active = peer.state.begin_request();
        info.addr = Some(peer.addr);
        info.tries = tries;
        let tls_name = up.tls.as_ref().map(|t| t.server_name(&peer.name));
        let key = PoolKey {
            addr: peer.addr,
            tls_name,
        };
        let started = Instant::now();
        let own = h1_client::fits(
            up.tls.is_some(),
            &head,
            body_slot.as_ref().is_none_or(|b| b.is_end_stream()),
        );
        let result = if own {
            up.metrics.sent_own.inc();
            send_own(w, &key, &head, timeouts).await
        } else {
            up.metrics.sent_hyper.inc();
            send(w, up, &key, &head, &mut body_slot, can_replay, timeouts)
                .await
                .map(|(response, sender)| Sent::Hyper(response, sender))
        };
        let last_try = tries >= planned;
        match result {
            Ok(sent) => {
                let status = sent.status().as_u16();
                let elapsed = started.elapsed();
                // `planned` already counts the tries a balancer added for this one.
                if up.next_upstream.on_status(status) && !last_try && can_replay && may_move {
                    peer.state.record_failure(clock::now_ms(), &up.passive);
                    up.metrics.error("status");
                    info.status = Some(status);
                    last_failure = Some(("failed", status));
                    continue;
                }
                peer.state.record_success();
                // Only peak-EWMA reads the average: other upstreams skip the shared write.
                if up.kind == BalancerKind::PeakEwma {
                    peer.state
                        .observe_latency(elapsed.as_micros() as f64, clock::now_ms());
                }
                up.metrics.duration.observe(elapsed.as_secs_f64());
                info.status = Some(status);
                info.response_time = Some(elapsed);
                let (head, mut body, upgrade) = match sent {
                    Sent::Own(head, framing, conn) => {
                        let reuse = framing.reusable.then(|| H1Reuse {
                            pool: w.pool.clone(),
                            key,
                            max_idle: up.keepalive,
                        });
                        let body = H1Body::new(conn, framing.body, reuse);
                        (head, ResponseBody::own(body, timeouts.read), None)
                    }
                    Sent::Hyper(mut response, sender) => {
                        let switching = status == 101;
                        let reuse = (!switching).then(|| Reuse {
                            pool: w.pool.clone(),
                            key,
                            sender,
                            max_idle: up.keepalive,
                        });
                        let upgrade = switching.then(|| hyper::upgrade::on(&mut response));
                        let (head, incoming) = response.into_parts();
                        let body = ResponseBody::upstream(incoming, timeouts.read, reuse);
                        (head, body, upgrade)
                    }
                };
                // The peer counts the request as active until its body is done.
                body.hold_peer(active);
                return Ok(Proxied {
                    head,
                    body,
                    upgrade,
                });
            }
            Err(e) => {
                if over_limit.get() {
                    return Err(ProxyError::BodyTooLarge);
                }
                tracing::warn!(upstream = %up.name, peer = %peer.addr, error = %e, "upstream attempt failed");
                up.metrics.error(e.kind());
                if e.blames_peer() {
                    peer.state.record_failure(clock::now_ms(), &up.passive);
                }
                let listed = if e.is_timeout() {
                    up.next_upstream.timeout
                } else {
                    up.next_upstream.error
                };
                let replayable = e.before_request_sent() || (can_replay && may_move);
                let body_intact = body_slot.is_some() || can_replay;
                last_failure = Some(("failed", e.status().as_u16()));
                last_error = Some(e);
                if !(listed && replayable && body_intact) {
                    break;
                }
            }
        }
    }
    Err(last_error.unwrap_or(ProxyError::NoLivePeers))
}

/// A response head from a peer, and what its body is read from.
// Made once per try and matched at once.
#[allow(clippy::large_enum_variant)]
enum Sent {
    Hyper(Response<Incoming>, SendRequest<UpstreamRequestBody>),
    Own(http::response::Parts, h1_client::Framing, H1Conn),
}

impl Sent {
    fn status(&self) -> http::StatusCode {
        match self {
            Sent::Hyper(r, _) => r.status(),
            Sent::Own(head, ..) => head.status,
        }
    }
}

/// One peer on the edge's own client: a pooled or new connection, the request, the response
/// head within the read timeout. A pooled connection the origin closed while it was idle is
/// replaced by a new one (the requests sent this way are GET and HEAD: safe to repeat).
async fn send_own(
    w: &Rc<WorkerCtx>,
    key: &PoolKey,
    head: &UpstreamHead,
    timeouts: Timeouts,
) -> Result<Sent, ProxyError> {
    let mut stale_budget = 2;
    loop {
        let pooled = if stale_budget > 0 {
            w.pool.checkout_h1(key)
        } else {
            None
        };
        let fresh = pooled.is_none();
        let mut conn = match pooled {
            Some(c) => c,
            None => h1_client::connect(key.addr, timeouts.connect).await?,
        };
        match tokio::time::timeout(timeouts.read, conn.exchange(head)).await {
            Err(_) => return Err(ProxyError::ReadTimeout),
            Ok(Ok(resp)) => return Ok(Sent::Own(resp.parts, resp.framing, conn)),
            Ok(Err(e)) => {
                let stale = !fresh
                    && matches!(
                        e,
                        ExchangeError::ClosedBeforeResponse | ExchangeError::Io(_)
                    );
                if stale && stale_budget > 0 {
                    stale_budget -= 1;
                    continue;
                }
                return Err(e.into());
            }
        }
    }
}

/// One peer: a pooled or new connection, the request, the response head within the read
/// timeout.
async fn send(
    w: &Rc<WorkerCtx>,
    up: &Upstream,
    key: &PoolKey,
    head: &UpstreamHead,
    body_slot: &mut Option<UpstreamRequestBody>,
    can_replay: bool,
    timeouts: Timeouts,
) -> Result<(Response<Incoming>, SendRequest<UpstreamRequestBody>), ProxyError> {
    // Bounded: at most this many pooled connections are tried before a fresh one.
    let mut stale_budget = 2;
    loop {
        let pooled = if stale_budget > 0 {
            w.pool.checkout(key)
        } else {
            None
        };
        let fresh = pooled.is_none();
        let mut sender = match pooled {
            Some(s) => s,
            None => {
                let tls = up.tls.as_ref().zip(key.tls_name.as_deref());
                connector::connect(key.addr, tls, timeouts.connect).await?
            }
        };
        if sender.ready().await.is_err() {
            if fresh {
                return Err(ProxyError::Protocol(
                    "connection closed before the request".into(),
                ));
            }
            stale_budget -= 1;
            continue;
        }
        let body = body_slot.take().unwrap_or(UpstreamRequestBody::Empty);
        let mut req = Request::new(body);
        *req.method_mut() = head.method.clone();
        *req.uri_mut() = head.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = head.headers.clone();
        match tokio::time::timeout(timeouts.read, sender.try_send_request(req)).await {
            Err(_) => return Err(ProxyError::ReadTimeout),
            Ok(Ok(resp)) => return Ok((resp, sender)),
            Ok(Err(mut e)) => {
                let unsent = e.take_message();
                let error = e.into_error();
                if let Some(req) = unsent {
                    *body_slot = Some(req.into_body());
                }
                let retry_same_peer =
                    !fresh && (body_slot.is_some() || can_replay) && stale_budget > 0;
                if retry_same_peer {
                    stale_budget -= 1;
                    continue;
                }
                return Err(ProxyError::Upstream(error));
            }
        }
    }
}
