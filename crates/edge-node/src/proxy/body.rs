//! The bodies the proxy streams: the client's request body on its way to a peer (with the size
//! limit and the send timeout), and the response body on its way to the client (with the read
//! timeout, the return of the upstream connection to the pool, and the accounting that feeds
//! the access log and metrics). Nothing is buffered whole.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep};

use crate::upstream::pool::{ConnPool, PoolKey};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds {0} bytes")]
    TooLarge(u64),
    #[error("no body data for {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error("cached body: {0}")]
    Cache(std::io::Error),
}

/// Re-arms an idle timer only when a poll would wait: a body that is always ready never
/// allocates one.
struct IdleTimer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    fn new(limit: Duration) -> Self {
        IdleTimer { limit, sleep: None }
    }

    fn progress(&mut self) {
        if let Some(s) = &mut self.sleep {
            s.as_mut().reset(Instant::now() + self.limit);
        }
    }

    /// Called when the inner body is pending: `true` when the limit has passed.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.limit;
        let s = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        s.as_mut().poll(cx).is_ready()
    }
}

/// The request body sent to a peer.
pub enum UpstreamRequestBody {
    Empty,
    Stream(Box<StreamedRequest>),
}

pub struct StreamedRequest {
    inner: Incoming,
    limit: u64,
    seen: u64,
    over_limit: Rc<Cell<bool>>,
    received: Counter,
    idle: IdleTimer,
}

impl UpstreamRequestBody {
    pub fn stream(
        inner: Incoming,
        limit: u64,
        over_limit: Rc<Cell<bool>>,
        received: Counter,
        send_timeout: Duration,
    ) -> Self {
        UpstreamRequestBody::Stream(Box::new(StreamedRequest {
            inner,
            limit,
            seen: 0,
            over_limit,
            received,
            idle: IdleTimer::new(send_timeout),
        }))
    }
}

impl Body for UpstreamRequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let s = match self.get_mut() {
            UpstreamRequestBody::Empty => return Poll::Ready(None),
            UpstreamRequestBody::Stream(s) => s,
        };
        match Pin::new(&mut s.inner).poll_frame(cx) {
            Poll::Pending => {
                if s.idle.expired(cx) {
                    return Poll::Ready(Some(Err(BodyError::Timeout(s.idle.limit))));
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                s.idle.progress();
                if let Some(data) = frame.data_ref() {
                    s.seen += data.len() as u64;
                    s.received.inc_by(data.len() as u64);
                    if s.seen > s.limit {
                        s.over_limit.set(true);
                        return Poll::Ready(Some(Err(BodyError::TooLarge(s.limit))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamRequestBody::Empty => true,
            UpstreamRequestBody::Stream(s) => s.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamRequestBody::Empty => SizeHint::with_exact(0),
            UpstreamRequestBody::Stream(s) => s.inner.size_hint(),
        }
    }
}

/// Gives an upstream connection back to the worker's pool once its response is read.
pub struct Reuse {
    pub pool: Rc<ConnPool>,
    pub key: PoolKey,
    pub sender: SendRequest<UpstreamRequestBody>,
    pub max_idle: usize,
}

impl Reuse {
    fn give_back(self) {
        self.pool.checkin(self.key, self.sender, self.max_idle);
    }
}

/// Called once when the response is done (or abandoned), with the body bytes sent.
pub type OnFinish = Box<dyn FnOnce(u64, bool)>;

/// The response body sent to the client.
pub struct ResponseBody {
    inner: Inner,
    /// Keeps the peer's in-flight count until the body is done.
    peer_guard: Option<crate::upstream::peer::ActiveGuard>,
    sent: u64,
    complete: bool,
    finish: Option<OnFinish>,
    /// A storable response being filled into the cache as it streams to the client.
    tee: Option<Box<Tee>>,
}

/// The leader's copy of a body into the cache: chunks go in as they go out; at the end the
/// object is committed with its real length.
pub struct Tee {
    pub handle: outpost_cache::FillHandle,
    pub meta: outpost_cache::ObjectMeta,
    pub received: u64,
}

impl Tee {
    fn push(&mut self, chunk: &Bytes) {
        self.received += chunk.len() as u64;
        self.handle.push(chunk);
    }

    fn finish(self) {
        let Tee {
            handle,
            mut meta,
            received,
        } = self;
        meta.body_len = received;
        handle.finish(std::sync::Arc::new(meta));
    }
}

enum Inner {
    Full(Option<Bytes>),
    Cached(outpost_cache::CachedBody),
    Upstream {
        body: Incoming,
        idle: IdleTimer,
        reuse: Option<Reuse>,
    },
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b: Bytes = bytes.into();
        ResponseBody {
            inner: Inner::Full((!b.is_empty()).then_some(b)),
            peer_guard: None,
            sent: 0,
            complete: false,
            finish: None,
            tee: None,
        }
    }

    pub fn cached(body: outpost_cache::CachedBody) -> Self {
        ResponseBody {
            inner: Inner::Cached(body),
            peer_guard: None,
            sent: 0,
            complete: false,
            finish: None,
            tee: None,
        }
    }

    /// Copies this (upstream) body into the cache while it streams.
    pub fn tee_into(&mut self, tee: Tee) {
        if self.is_end_stream() {
            tee.finish();
        } else {
            self.tee = Some(Box::new(tee));
        }
    }

    pub fn upstream(body: Incoming, read_timeout: Duration, reuse: Option<Reuse>) -> Self {
        let mut r = ResponseBody {
            inner: Inner::Upstream {
                body,
                idle: IdleTimer::new(read_timeout),
                reuse,
            },
            peer_guard: None,
            sent: 0,
            complete: false,
            finish: None,
            tee: None,
        };
        r.release_if_done();
        r
    }

    pub fn hold_peer(&mut self, guard: crate::upstream::peer::ActiveGuard) {
        self.peer_guard = Some(guard);
    }

    pub fn on_finish(&mut self, f: OnFinish) {
        self.finish = Some(f);
    }

    /// An upstream body already at its end (HEAD, 204, 304, empty) frees the connection now:
    /// hyper may never poll it.
    fn release_if_done(&mut self) {
        if let Inner::Upstream { body, reuse, .. } = &mut self.inner
            && body.is_end_stream()
            && let Some(r) = reuse.take()
        {
            r.give_back();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Cached(c) => c
                .poll_chunk(cx)
                .map(|o| o.map(|r| r.map(Frame::data).map_err(BodyError::Cache))),
            Inner::Upstream { body, idle, reuse } => match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => {
                    if idle.expired(cx) {
                        // The connection is in an unknown state: never reuse it.
                        reuse.take();
                        return Poll::Ready(Some(Err(BodyError::Timeout(idle.limit))));
                    }
                    Poll::Pending
                }
                Poll::Ready(r) => {
                    idle.progress();
                    if (r.is_none() || body.is_end_stream())
                        && let Some(reuse) = reuse.take()
                    {
                        reuse.give_back();
                    }
                    Poll::Ready(r.map(|x| x.map_err(BodyError::from)))
                }
            },
        };
        let out = ready!(polled);
        match &out {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    this.sent += d.len() as u64;
                    if let Some(t) = &mut this.tee {
                        t.push(d);
                    }
                }
            }
            None => this.complete = true,
            // A broken body is never stored: dropping the tee fails the fill.
            Some(Err(_)) => this.tee = None,
        }
        if (out.is_none() || this.is_end_stream())
            && let Some(t) = this.tee.take()
        {
            t.finish();
        }
        Poll::Ready(out)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Cached(c) => c.is_end_stream(),
            Inner::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Cached(c) => match c.len() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            Inner::Upstream { body, .. } => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let done = self.complete || self.is_end_stream();
        self.release_if_done();
        if let Some(f) = self.finish.take() {
            f(self.sent, done);
        }
    }
}
