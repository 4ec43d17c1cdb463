//! HTTP/1.1 served by the edge itself, for the requests that make up nearly all of a CDN's
//! traffic: bodiless requests over keep-alive. A request costs a parse (httparse), the
//! pipeline, and one write of head and body together, with no dispatcher in between; that
//! is where nginx's lead over a hyper server came from (`docs/benchmarks.md`).
//!
//! Anything else (a request body, an upgrade, `Expect`, `CONNECT`, HTTP/1.0, HTTP/2's
//! preface, a head that does not parse or is too large) hands the connection, with the bytes
//! read so far, to hyper for the rest of its life (`worker::serve_http`), so unusual requests
//! get hyper's handling and malformed ones hyper's answers. The decisions are in `h1_head.rs`.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use http::Response;
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::conn_watch::{self, HeadWatch, Watch};
use super::h1_head::{self, BodyLength, Framing, Handoff, Parsed};
use super::http_date;
use super::worker::{ConnInfo, WorkerCtx, serve_http};
use crate::config::Limits;
use crate::proxy::body::{RequestBody, ResponseBody};
use crate::proxy::handler;

/// What a read asks the kernel for at most; a head larger than this takes more reads.
const READ_SIZE: usize = 8192;
/// Body bytes gathered before they are written, when the body gives them faster.
const WRITE_BATCH: usize = 64 * 1024;
/// Pieces per `writev`.
const MAX_SLICES: usize = 32;

/// Serves a connection until it closes, or hands it to hyper.
pub async fn serve<IO>(ctx: Rc<WorkerCtx>, info: Rc<ConnInfo>, io: IO, limits: Limits)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut io = HeadWatch::new(io, info.watch.clone());
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut out = Output::default();
    let mut fields = h1_head::Fields::new();
    // As hyper's `max_buf_size` in `serve_http`: a head must fit in it.
    let max_head = limits.max_header_bytes.max(8192);
    let mut shutdown = ctx.shutdown.clone();
    let mut draining = *shutdown.borrow();
    // One wait for the whole connection: a fresh one per request would join and leave the
    // channel's waiter list (a lock each way) on every request.
    let stop = shutdown.changed();
    tokio::pin!(stop);
    let mut stop_armed = false;
    let (header, idle) = (limits.header_timeout, limits.idle_timeout);
    // The connection's one timer, as in `serve_http`: re-armed only when it fires.
    let mut watchdog = conn_watch::Watchdog::new(header.min(idle));
    loop {
        let head = match h1_head::parse_request(&buf, &mut fields) {
            Parsed::Head(head) => head,
            Parsed::Partial if buf.len() < max_head => {
                if draining && buf.is_empty() {
                    return;
                }
                if buf.capacity() - buf.len() < READ_SIZE / 4 {
                    buf.reserve(READ_SIZE);
                }
                tokio::select! {
                    biased;
                    read = io.read_buf(&mut buf) => match read {
                        // A head cut off by the client's close gets no answer, as with hyper.
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    _ = shutdown_signal(stop.as_mut(), &mut stop_armed, &ctx.draining), if !draining => draining = true,
                    _ = watchdog.fired(), if !draining => {
                        let (in_flight, started) = (info.watch.in_flight(), info.watch.head_started());
                        let last = info.last_active();
                        match conn_watch::decide(Instant::now(), in_flight, started, last, header, idle) {
                            Watch::Close => {
                                tracing::debug!(client = %info.client, "request head not received in time");
                                return;
                            }
                            Watch::Drain => draining = true,
                            Watch::Wait(at) => watchdog.reset(at),
                        }
                    }
                }
                continue;
            }
            Parsed::Partial => {
                return handoff(ctx, info, io, buf.freeze(), limits, Handoff::TooLarge).await;
            }
            Parsed::Handoff(why) => {
                return handoff(ctx, info, io, buf.freeze(), limits, why).await;
            }
        };
        let (close, head_request) = (head.close, head.method == http::Method::HEAD);
        let raw = buf.split_to(head.len).freeze();
        let Some(parts) = head.into_parts(&raw, &fields) else {
            let mut all = BytesMut::from(&raw[..]);
            all.extend_from_slice(&buf);
            return handoff(ctx, info, io, all.freeze(), limits, Handoff::Malformed).await;
        };
        // For a script that asks for it; the next request's head replaces it.
        info.raw_head.set(Some(raw));
        let respond = handler::handle_head(
            ctx.clone(),
            info.clone(),
            parts,
            RequestBody::Internal(None),
        );
        tokio::pin!(respond);
        // While the response is being made, a client that goes away ends it (hyper closes a
        // connection whose client half-closed, and drops the request in flight); pipelined
        // bytes wait in the buffer.
        let resp = std::future::poll_fn(|cx| {
            if let Poll::Ready(resp) = respond.as_mut().poll(cx) {
                return Poll::Ready(Some(resp));
            }
            match poll_client_gone(&mut io, &mut buf, max_head, cx) {
                true => Poll::Ready(None),
                false => Poll::Pending,
            }
        })
        .await;
        let Some(resp) = resp else {
            tracing::debug!(client = %info.client, "client closed the connection before the response");
            return;
        };
        draining |= ctx.draining.get();
        let closing = close || draining;
        let client = ClientReads {
            buf: &mut buf,
            max: max_head,
        };
        let finished = info.response_made.take();
        let written = write_response(
            &mut io,
            &mut out,
            resp,
            head_request,
            closing,
            client,
            finished,
        );
        let keep_alive = match written.await {
            Ok(keep_alive) => keep_alive,
            Err(e) => {
                tracing::debug!(client = %info.client, error = %e, "writing the response failed");
                return;
            }
        };
        if !keep_alive || close || draining {
            let _ = io.shutdown().await;
            return;
        }
    }
}

/// `stop` (the worker's shutdown signal), polled once: that registers the connection's
/// waker with it, and polling it again on every wait would only register the same waker
/// again, taking the channel's lock each time. After that, the worker's draining flag says
/// whether the signal came: the worker sets it before it signals.
fn shutdown_signal<'a, F: Future>(
    mut stop: Pin<&'a mut F>,
    armed: &'a mut bool,
    draining: &'a std::cell::Cell<bool>,
) -> impl Future<Output = ()> + 'a {
    std::future::poll_fn(move |cx| {
        if *armed && !draining.get() {
            return Poll::Pending;
        }
        *armed = true;
        stop.as_mut().poll(cx).map(|_| ())
    })
}

/// While a response is being made, or waits for more of its body: reads what the client
/// sends meanwhile (pipelined requests, kept in `buf` up to `max` bytes) and says whether the
/// client has gone (the end of its stream, or an error).
fn poll_client_gone<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    max: usize,
    cx: &mut std::task::Context<'_>,
) -> bool {
    while buf.len() < max {
        if buf.capacity() - buf.len() < READ_SIZE / 4 {
            buf.reserve(READ_SIZE);
        }
        let mut read = std::pin::pin!(io.read_buf(buf));
        match read.as_mut().poll(cx) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return true,
            Poll::Ready(Ok(_)) => continue,
            Poll::Pending => return false,
        }
    }
    false
}

/// The connection's read side while a response is written.
struct ClientReads<'a> {
    buf: &'a mut BytesMut,
    max: usize,
}

/// The next step of a response body.
enum Next<F> {
    /// Nothing more is ready yet: write what is queued.
    Flush,
    Frame(Option<F>),
    /// The client went away while the body waited (a stalled stream).
    ClientGone,
}

/// The rest of the connection goes to hyper, starting with `read` (bytes not yet served).
async fn handoff<IO>(
    ctx: Rc<WorkerCtx>,
    info: Rc<ConnInfo>,
    mut io: HeadWatch<IO>,
    read: Bytes,
    limits: Limits,
    why: Handoff,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    ctx.shared.metrics.http1_handoff(why.as_str());
    // hyper keeps no raw head: none is left from a request served here.
    info.raw_head.take();
    io.rewind(read);
    // Boxed: hyper's connection state is large, and most connections never get here.
    Box::pin(serve_http(ctx, info, io, limits, true)).await
}

/// The bytes of a response not yet written: the head, then body pieces.
#[derive(Default)]
struct Output {
    head: Vec<u8>,
    /// How much of `head` is written.
    head_sent: usize,
    pieces: Vec<Bytes>,
    /// Bytes in `pieces`.
    queued: usize,
}

impl Output {
    fn is_empty(&self) -> bool {
        self.head_sent == self.head.len() && self.pieces.is_empty()
    }

    fn push(&mut self, piece: Bytes) {
        self.queued += piece.len();
        self.pieces.push(piece);
    }

    /// Writes everything queued: one `writev` when the stream takes it all.
    async fn write<IO: AsyncWrite + Unpin>(&mut self, io: &mut IO) -> io::Result<()> {
        if !io.is_write_vectored() {
            // TLS: one record for the lot rather than one per piece.
            let mut all = Vec::with_capacity(self.head.len() - self.head_sent + self.queued);
            all.extend_from_slice(&self.head[self.head_sent..]);
            for p in self.pieces.drain(..) {
                all.extend_from_slice(&p);
            }
            self.head_sent = self.head.len();
            self.queued = 0;
            return io.write_all(&all).await;
        }
        let mut first = 0;
        while self.head_sent < self.head.len() || first < self.pieces.len() {
            // The slices are made in the poll, on its stack: held across an await, they would
            // be half a kilobyte of the connection's future, written on every response.
            let mut written = std::future::poll_fn(|cx| {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut n = 0;
                if self.head_sent < self.head.len() {
                    slices[0] = IoSlice::new(&self.head[self.head_sent..]);
                    n = 1;
                }
                for p in &self.pieces[first..] {
                    if n == MAX_SLICES {
                        break;
                    }
                    slices[n] = IoSlice::new(p);
                    n += 1;
                }
                Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n])
            })
            .await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_head = written.min(self.head.len() - self.head_sent);
            self.head_sent += from_head;
            written -= from_head;
            while written > 0 {
                let p = &mut self.pieces[first];
                let take = written.min(p.len());
                p.advance(take);
                written -= take;
                if p.is_empty() {
                    first += 1;
                }
            }
        }
        self.pieces.clear();
        self.queued = 0;
        Ok(())
    }
}

/// Writes the response; `Ok(true)` when the connection can take another request.
async fn write_response<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    out: &mut Output,
    resp: Response<ResponseBody>,
    head_request: bool,
    closing: bool,
    client: ClientReads<'_>,
    finished: Option<std::time::Instant>,
) -> io::Result<bool> {
    let (parts, mut body) = resp.into_parts();
    let length = if body.is_end_stream() {
        BodyLength::Empty
    } else {
        match body.size_hint().exact() {
            Some(n) => BodyLength::Known(n),
            None => BodyLength::Unknown,
        }
    };
    out.head.clear();
    out.head_sent = 0;
    // The clock read that ended the response's making serves for its Date.
    let now = crate::clock::wall_at(finished.unwrap_or_else(std::time::Instant::now));
    let encoded = http_date::with(now, |date| {
        h1_head::encode_response_head(
            &mut out.head,
            parts.status,
            parts.version,
            &parts.headers,
            length,
            head_request,
            closing,
            date,
        )
    });
    crate::header_pool::give(parts.headers);
    if !encoded.body || length == BodyLength::Empty {
        drop(body);
        out.write(io).await?;
        io.flush().await?;
        return Ok(!encoded.last);
    }
    let mut remaining = match encoded.framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let mut complete = true;
    loop {
        // Whatever the body has ready goes out in one write; a body that must wait for more
        // (a proxied one) has what came so far written first. A body that waits with nothing
        // to write (an idle stream from the origin) ends when its client goes, as hyper ends
        // it, so the upstream connection is not held for nobody.
        let next = std::future::poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Next::Frame(frame)),
            Poll::Pending if !out.is_empty() => Poll::Ready(Next::Flush),
            Poll::Pending if poll_client_gone(io, client.buf, client.max, cx) => {
                Poll::Ready(Next::ClientGone)
            }
            Poll::Pending => Poll::Pending,
        })
        .await;
        let data = match next {
            Next::Flush => {
                out.write(io).await?;
                io.flush().await?;
                continue;
            }
            Next::ClientGone => {
                tracing::debug!("client closed the connection while the body waited");
                return Ok(false);
            }
            Next::Frame(None) => break,
            Next::Frame(Some(Err(e))) => {
                // The client sees the body cut short: no last chunk, or fewer bytes than said.
                tracing::debug!(error = %e, "response body failed");
                out.write(io).await?;
                return Ok(false);
            }
            Next::Frame(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                // Trailers are not sent on this path (hyper sends only those declared).
                _ => continue,
            },
        };
        match encoded.framing {
            Framing::Length(_) => {
                if data.len() as u64 > remaining {
                    // More than the head said: what fits goes, and the connection ends.
                    out.push(data.slice(..remaining as usize));
                    remaining = 0;
                    complete = false;
                    break;
                }
                remaining -= data.len() as u64;
                out.push(data);
            }
            Framing::Chunked => {
                out.push(Bytes::from(h1_head::chunk_size_line(data.len())));
                out.push(data);
                out.push(Bytes::from_static(b"\r\n"));
            }
            Framing::Close => out.push(data),
        }
        if out.queued >= WRITE_BATCH || out.pieces.len() >= MAX_SLICES {
            out.write(io).await?;
        }
    }
    if encoded.framing == Framing::Chunked && complete {
        out.push(Bytes::from_static(b"0\r\n\r\n"));
    }
    out.write(io).await?;
    io.flush().await?;
    let short = matches!(encoded.framing, Framing::Length(_)) && remaining != 0;
    Ok(complete && !short && !encoded.last)
}
