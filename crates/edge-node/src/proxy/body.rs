//! The bodies the proxy streams: the client's request body on its way to a peer (with the size
//! limit and the send timeout), and the response body on its way to the client (with the read
//! timeout, the return of the upstream connection to the pool, and the accounting that feeds
//! the access log and metrics). Nothing is buffered whole.

use std::cell::Cell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use crate::metrics::ShardedCounter;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tokio::time::{Instant, Sleep};

use super::body_filter::BodyFilter;
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
    #[error("upstream body: {0}")]
    Upstream(std::io::Error),
    #[error("body_filter: {0}")]
    Lua(String),
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

/// The body a request arrived with: the client's, streaming, or a Lua subrequest's, whole in
/// memory (`None`: no body).
pub enum RequestBody {
    Client(Incoming),
    /// The client's, of which a script read these pieces and gave them back: they go first.
    Resumed(VecDeque<Bytes>, Incoming),
    Internal(Option<Bytes>),
}

impl RequestBody {
    pub fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(b) => b.is_end_stream(),
            RequestBody::Resumed(read, b) => read.is_empty() && b.is_end_stream(),
            RequestBody::Internal(b) => b.as_ref().is_none_or(Bytes::is_empty),
        }
    }
}

/// The request body sent to a peer.
pub enum UpstreamRequestBody {
    Empty,
    Stream(Box<StreamedRequest>),
    /// A subrequest's body, sent in one frame.
    Full(Option<Bytes>),
}

pub struct StreamedRequest {
    /// Read before (by a script), sent first.
    read: VecDeque<Bytes>,
    inner: Incoming,
    limit: u64,
    seen: u64,
    over_limit: Rc<Cell<bool>>,
    received: ShardedCounter,
    idle: IdleTimer,
}

impl UpstreamRequestBody {
    pub fn stream(
        read: VecDeque<Bytes>,
        inner: Incoming,
        limit: u64,
        over_limit: Rc<Cell<bool>>,
        received: ShardedCounter,
        send_timeout: Duration,
    ) -> Self {
        UpstreamRequestBody::Stream(Box::new(StreamedRequest {
            read,
            inner,
            limit,
            seen: 0,
            over_limit,
            received,
            idle: IdleTimer::new(send_timeout),
        }))
    }
}

impl UpstreamRequestBody {
    /// The longest wait between request body chunks, for the next try (`set_timeouts`).
    pub fn set_send_timeout(&mut self, limit: Duration) {
        if let UpstreamRequestBody::Stream(s) = self {
            s.idle = IdleTimer::new(limit);
        }
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
            UpstreamRequestBody::Full(b) => {
                return Poll::Ready(b.take().map(|b| Ok(Frame::data(b))));
            }
            UpstreamRequestBody::Stream(s) => s,
        };
        let polled = match s.read.pop_front() {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            None => Pin::new(&mut s.inner).poll_frame(cx),
        };
        match polled {
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
            UpstreamRequestBody::Full(b) => b.is_none(),
            UpstreamRequestBody::Stream(s) => s.read.is_empty() && s.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamRequestBody::Empty => SizeHint::with_exact(0),
            UpstreamRequestBody::Full(b) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            UpstreamRequestBody::Stream(s) => {
                let read: u64 = s.read.iter().map(|b| b.len() as u64).sum();
                let inner = s.inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + read);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + read);
                }
                hint
            }
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

/// The response body sent to the client. Its state is boxed: the response moves through the
/// pipeline a dozen times per request, and a pointer moves in registers where 232 bytes took
/// a `memcpy` each time.
pub struct ResponseBody(Box<BodyState>);

impl std::ops::Deref for ResponseBody {
    type Target = BodyState;

    fn deref(&self) -> &BodyState {
        &self.0
    }
}

impl std::ops::DerefMut for ResponseBody {
    fn deref_mut(&mut self) -> &mut BodyState {
        &mut self.0
    }
}

/// What a [`ResponseBody`] holds.
pub struct BodyState {
    inner: Inner,
    /// Keeps the peer's in-flight count until the body is done.
    peer_guard: Option<crate::upstream::peer::ActiveGuard>,
    sent: u64,
    complete: bool,
    /// Run in order when the body is done or dropped: most responses have one (the log
    /// phase), kept inline, so only a second one (Lua's log phase) allocates the list.
    finish: Option<OnFinish>,
    finish_more: Vec<OnFinish>,
    /// A storable response being filled into the cache as it streams to the client.
    tee: Option<Box<Tee>>,
    /// Lua body_filter, between the cache's copy and the client.
    filter: Option<Box<BodyFilter>>,
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

/// A body made elsewhere (a streamed Lua content phase).
pub type DynBody = Pin<Box<dyn Body<Data = Bytes, Error = BodyError>>>;

enum Inner {
    Full(Option<Bytes>),
    Dynamic(DynBody),
    Cached(outpost_cache::CachedBody),
    Upstream {
        body: Incoming,
        idle: IdleTimer,
        reuse: Option<Reuse>,
    },
    /// From the edge's own upstream client; it returns its connection itself.
    Own {
        body: Box<crate::upstream::h1_body::H1Body>,
        idle: IdleTimer,
    },
}

impl ResponseBody {
    fn with_inner(inner: Inner) -> Self {
        ResponseBody(Box::new(BodyState {
            inner,
            peer_guard: None,
            sent: 0,
            complete: false,
            finish: None,
            finish_more: Vec::new(),
            tee: None,
            filter: None,
        }))
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b: Bytes = bytes.into();
        Self::with_inner(Inner::Full((!b.is_empty()).then_some(b)))
    }

    pub fn dynamic(body: DynBody) -> Self {
        Self::with_inner(Inner::Dynamic(body))
    }

    pub fn cached(body: outpost_cache::CachedBody) -> Self {
        Self::with_inner(Inner::Cached(body))
    }

    /// Copies this (upstream) body into the cache while it streams.
    pub fn tee_into(&mut self, tee: Tee) {
        if self.inner_at_end() {
            tee.finish();
        } else {
            self.tee = Some(Box::new(tee));
        }
    }

    pub fn upstream(body: Incoming, read_timeout: Duration, reuse: Option<Reuse>) -> Self {
        let mut r = Self::with_inner(Inner::Upstream {
            body,
            idle: IdleTimer::new(read_timeout),
            reuse,
        });
        r.0.release_if_done();
        r
    }

    pub fn own(body: crate::upstream::h1_body::H1Body, read_timeout: Duration) -> Self {
        Self::with_inner(Inner::Own {
            body: Box::new(body),
            idle: IdleTimer::new(read_timeout),
        })
    }

    pub fn hold_peer(&mut self, guard: crate::upstream::peer::ActiveGuard) {
        self.peer_guard = Some(guard);
    }

    /// Adds `f` to what runs when the body is done or dropped (after those added before).
    pub fn on_finish(&mut self, f: OnFinish) {
        if self.finish.is_none() {
            self.finish = Some(f);
        } else {
            self.finish_more.push(f);
        }
    }

    /// Runs Lua body_filter over every chunk from here on (the cache's copy is taken before).
    pub fn filter_with(&mut self, filter: BodyFilter) {
        self.filter = Some(Box::new(filter));
    }
}

impl BodyState {
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

    /// The body as it came (upstream, cache or full), copied into the cache if it is filling.
    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self;
        let polled = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Dynamic(b) => b.as_mut().poll_frame(cx),
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
            Inner::Own { body, idle } => match body.poll_data(cx) {
                Poll::Pending => {
                    if idle.expired(cx) {
                        // Dropped with the body: a connection in an unknown state.
                        return Poll::Ready(Some(Err(BodyError::Timeout(idle.limit))));
                    }
                    Poll::Pending
                }
                Poll::Ready(r) => {
                    idle.progress();
                    Poll::Ready(r.map(|x| x.map(Frame::data).map_err(BodyError::Upstream)))
                }
            },
        };
        let out = ready!(polled);
        match &out {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref()
                    && let Some(t) = &mut this.tee
                {
                    t.push(d);
                }
            }
            None => this.complete = true,
            // A broken body is never stored: dropping the tee fails the fill.
            Some(Err(_)) => this.tee = None,
        }
        if (out.is_none() || this.inner_at_end())
            && let Some(t) = this.tee.take()
        {
            t.finish();
        }
        Poll::Ready(out)
    }

    fn inner_at_end(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Dynamic(b) => b.is_end_stream(),
            Inner::Cached(c) => c.is_end_stream(),
            Inner::Upstream { body, .. } => body.is_end_stream(),
            Inner::Own { body, .. } => body.is_end_stream(),
        }
    }

    /// The body through the Lua filter: each inner chunk is one call, the end of the inner
    /// body one more (`ngx.arg[2]`); empty outputs are not sent as frames.
    fn poll_filtered(
        &mut self,
        f: &mut BodyFilter,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            if f.is_running() {
                match ready!(f.poll_run(cx)) {
                    // The inner body has nothing more: the last call runs before this chunk is
                    // sent, since hyper stops at a Content-Length's last byte and would never
                    // ask for the end.
                    Ok(data) if !f.is_closing() && self.inner_at_end() => {
                        f.held = Some(data);
                        f.start(Bytes::new(), true);
                        continue;
                    }
                    Ok(data) => {
                        let data = match f.held.take() {
                            Some(first) if !first.is_empty() => {
                                let mut both = bytes::BytesMut::from(&first[..]);
                                both.extend_from_slice(&data);
                                both.freeze()
                            }
                            _ => data,
                        };
                        if data.is_empty() {
                            continue;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Err(e) => {
                        // As nginx: the response is cut where it is.
                        self.tee = None;
                        return Poll::Ready(Some(Err(BodyError::Lua(e))));
                    }
                }
            }
            if f.has_ended() {
                self.complete = true;
                self.finish_inner_in_background();
                return Poll::Ready(None);
            }
            match ready!(self.poll_inner(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => f.start(data, false),
                    // Trailers pass as they are.
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => f.start(Bytes::new(), true),
            }
        }
    }

    /// A script ended the body early while the cache is still filling from the origin: the
    /// rest of the origin's body is read into the cache in the background, as nginx's upstream
    /// module keeps reading after the filters are done.
    fn finish_inner_in_background(&mut self) {
        if self.tee.is_none() || self.inner_at_end() {
            return;
        }
        let rest = ResponseBody(Box::new(BodyState {
            inner: std::mem::replace(&mut self.inner, Inner::Full(None)),
            peer_guard: self.peer_guard.take(),
            sent: 0,
            complete: false,
            finish: None,
            finish_more: Vec::new(),
            tee: self.tee.take(),
            filter: None,
        }));
        tokio::task::spawn_local(async move {
            use http_body_util::BodyExt;
            let mut rest = rest;
            while let Some(frame) = rest.frame().await {
                if frame.is_err() {
                    break;
                }
            }
        });
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this: &mut BodyState = &mut self.get_mut().0;
        let out = match this.filter.take() {
            None => this.poll_inner(cx),
            Some(mut f) => {
                let out = this.poll_filtered(&mut f, cx);
                this.filter = Some(f);
                out
            }
        };
        if let Poll::Ready(Some(Ok(frame))) = &out
            && let Some(d) = frame.data_ref()
        {
            this.sent += d.len() as u64;
        }
        out
    }

    fn is_end_stream(&self) -> bool {
        self.at_end()
    }

    fn size_hint(&self) -> SizeHint {
        if self.filter.is_some() {
            // A script may change the length. (An origin's Content-Length header is kept, as
            // nginx keeps it: a script that changes the length clears it in header_filter.)
            return SizeHint::default();
        }
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Cached(c) => match c.len() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            Inner::Upstream { body, .. } => body.size_hint(),
            Inner::Own { body, .. } => body.size_hint(),
            Inner::Dynamic(b) => b.size_hint(),
        }
    }
}

impl BodyState {
    fn at_end(&self) -> bool {
        match &self.filter {
            // The last call may still add to an empty body.
            Some(f) => f.has_ended(),
            None => self.inner_at_end(),
        }
    }
}

impl Drop for BodyState {
    fn drop(&mut self) {
        let done = self.complete || self.at_end();
        self.release_if_done();
        if let Some(f) = self.finish.take() {
            f(self.sent, done);
        }
        for f in std::mem::take(&mut self.finish_more) {
            f(self.sent, done);
        }
    }
}
