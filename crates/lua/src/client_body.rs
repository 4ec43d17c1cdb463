//! The client's request body as a request's Lua sees it, and the client's connection after a
//! protocol switch.
//!
//! The host lends the body to the request's state unread. A script reads it whole with
//! `ngx.req.read_body()` or piece by piece through `ngx.req.socket()`; a body no script reads
//! goes back to the host untouched, so it can still stream to the upstream. What a script read
//! and did not keep (a body too large for memory, read in part) goes back as a prefix the host
//! sends first.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bodies up to this size are kept in memory by `ngx.req.read_body()` (nginx keeps those up to
/// `client_body_buffer_size`; larger ones go to a file, and `get_body_data` returns nil).
pub const MAX_BODY_IN_MEMORY: usize = 1 << 20;

/// Where the host's body comes from: its pieces in order, then the end.
pub trait BodySource {
    /// The next piece; `None` at the end of the body.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>>;
    /// The source, for the host to take back.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

/// The client's body, not yet (or not wholly) read.
pub struct ClientBody {
    /// Read from `source` and not consumed, in order: these come before the rest.
    pub prefix: VecDeque<Bytes>,
    pub source: Box<dyn BodySource>,
    /// The body as the client framed it had a length (`Content-Length`), not chunks.
    pub length: Option<u64>,
}

impl ClientBody {
    pub fn new(source: Box<dyn BodySource>, length: Option<u64>) -> Self {
        ClientBody {
            prefix: VecDeque::new(),
            source,
            length,
        }
    }

    pub fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
        match self.prefix.pop_front() {
            Some(b) => Poll::Ready(Some(Ok(b))),
            None => self.source.poll_piece(cx),
        }
    }

    pub async fn next_piece(&mut self) -> Option<Result<Bytes, String>> {
        std::future::poll_fn(|cx| self.poll_piece(cx)).await
    }
}

/// The body as a byte stream, for `ngx.req.socket()`'s reads. Writing to it is an error (that
/// socket has no `send`).
pub struct BodyReader {
    body: ClientBody,
    piece: Bytes,
}

impl BodyReader {
    pub fn new(body: ClientBody) -> Self {
        BodyReader {
            body,
            piece: Bytes::new(),
        }
    }
}

impl AsyncRead for BodyReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.piece.is_empty() {
            match std::task::ready!(this.body.poll_piece(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Ok(b)) => this.piece = b,
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
        let n = this.piece.len().min(buf.remaining());
        buf.put_slice(&this.piece.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for BodyReader {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The client's connection once the edge answered 101 (a protocol switch), as
/// `ngx.req.socket(true)` reads and writes it.
pub trait DownstreamIo: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> DownstreamIo for T {}

/// Resolves to the client's connection once the 101 response has gone out.
pub type Upgrade = Pin<Box<dyn Future<Output = Result<Box<dyn DownstreamIo>, String>>>>;

/// The client's connection after a 101, held by the raw socket and by the request: when the
/// request ends, the host closes it, whoever still holds the socket (nginx closes the
/// connection when the handler returns).
#[derive(Clone)]
pub struct SharedDownstream(Rc<RefCell<Option<Box<dyn DownstreamIo>>>>);

impl SharedDownstream {
    pub fn new(io: Box<dyn DownstreamIo>) -> Self {
        SharedDownstream(Rc::new(RefCell::new(Some(io))))
    }

    pub fn close(&self) {
        self.0.borrow_mut().take();
    }
}

impl AsyncRead for SharedDownstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.0.borrow_mut().as_mut() {
            Some(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for SharedDownstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.borrow_mut().as_mut() {
            Some(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.borrow_mut().as_mut() {
            Some(io) => Pin::new(io.as_mut()).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.borrow_mut().as_mut() {
            Some(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}
