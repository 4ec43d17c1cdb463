//! The byte stream under a TCP cosocket: plain TCP, TLS over it after `sslhandshake`, or a
//! unix domain socket (`connect("unix:/path")`); for `ngx.req.socket`, the request's body or
//! the client's own connection. One type for all, so `send`/`receive`/
//! `receiveuntil` and the pool do not care which.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

use crate::client_body::{BodyReader, SharedDownstream};

pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
    /// The request's body (`ngx.req.socket()`): read only.
    Body(Box<BodyReader>),
    /// The client's connection after a 101 (`ngx.req.socket(true)`).
    Downstream(SharedDownstream),
}

impl Conn {
    /// Decrypted bytes that rustls holds and nobody has read: such a connection is not clean
    /// enough to pool. A broken TLS state counts as unread data too.
    pub fn has_unread_plaintext(&mut self) -> bool {
        match self {
            Conn::Plain(_) | Conn::Unix(_) | Conn::Body(_) | Conn::Downstream(_) => false,
            Conn::Tls(t) => t
                .get_mut()
                .1
                .process_new_packets()
                .map(|state| state.plaintext_bytes_to_read() > 0)
                .unwrap_or(true),
        }
    }

    /// Closes without waiting, as nginx's `close` does: a TLS connection queues its
    /// `close_notify` and writes it if the socket takes it now (a few bytes: it nearly always
    /// does), so the peer sees a clean end rather than a truncation.
    pub fn close_now(self) {
        if let Conn::Tls(mut t) = self {
            let (tcp, tls) = t.get_mut();
            tls.send_close_notify();
            let mut w = TryWriter(tcp);
            while tls.wants_write() {
                if tls.write_tls(&mut w).is_err() {
                    break;
                }
            }
        }
    }
}

/// `std::io::Write` over a tokio socket that never waits (`WouldBlock` ends the write).
struct TryWriter<'a>(&'a TcpStream);

impl io::Write for TryWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Body(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Downstream(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Body(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Downstream(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
            Conn::Body(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Downstream(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Body(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Downstream(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
