//! A response body read off the edge's own upstream connection (`h1_client.rs`): by length,
//! in chunks, or until the origin closes. Chunks are handed on as they arrive, sharing the
//! read buffer's memory. The connection goes back to the worker's pool once the body has been
//! read to its end with nothing after it; a body dropped before its end drops the connection.

use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::SizeHint;

use super::h1_client::{BodyFraming, H1Conn};
use super::pool::{ConnPool, PoolKey};

/// Trailer lines longer than this end the body with an error.
const MAX_TRAILER_LINE: usize = 16 * 1024;
const READ_SIZE: usize = 16 * 1024;

/// Where the connection goes when the body is done.
pub struct H1Reuse {
    pub pool: Rc<ConnPool>,
    pub key: PoolKey,
    pub max_idle: usize,
}

pub struct H1Body {
    conn: Option<H1Conn>,
    state: State,
    reuse: Option<H1Reuse>,
}

enum State {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

impl H1Body {
    /// The body of a response framed as `framing`; `reuse` is `None` when the connection
    /// cannot carry another request.
    pub fn new(conn: H1Conn, framing: BodyFraming, reuse: Option<H1Reuse>) -> H1Body {
        let state = match framing {
            BodyFraming::Empty => State::Done,
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::Chunked(Chunked::default()),
            BodyFraming::Close => State::Close,
        };
        let mut body = H1Body {
            conn: Some(conn),
            state,
            reuse,
        };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        body
    }

    pub fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// The body has been read to its end: the connection goes back to the pool if it can
    /// carry another request and nothing followed the body.
    fn finish(&mut self) {
        self.state = State::Done;
        let conn = self.conn.take();
        if let (Some(conn), Some(r)) = (conn, self.reuse.take())
            && conn.buf.is_empty()
        {
            r.pool.checkin_h1(r.key, conn, r.max_idle);
        }
    }

    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let buf = &mut conn.buf;
            match &mut self.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) if !buf.is_empty() => {
                    let take = (*left).min(buf.len() as u64) as usize;
                    let data = buf.split_to(take).freeze();
                    *left -= take as u64;
                    if *left == 0 {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                State::Chunked(c) => match c.decode(buf) {
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(Decoded::End) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                },
                State::Close if !buf.is_empty() => {
                    return Poll::Ready(Some(Ok(buf.split().freeze())));
                }
                State::Length(_) | State::Close => {}
            }
            if conn.buf.capacity() - conn.buf.len() < READ_SIZE / 4 {
                conn.buf.reserve(READ_SIZE);
            }
            let n = match ready!(poll_read(conn, cx)) {
                Ok(n) => n,
                Err(e) => return Poll::Ready(Some(Err(e))),
            };
            if n == 0 {
                if matches!(self.state, State::Close) {
                    self.state = State::Done;
                    self.conn = None;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream closed the connection in the body",
                ))));
            }
        }
    }
}

/// Reads what the socket has into the connection's buffer.
fn poll_read(conn: &mut H1Conn, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    loop {
        ready!(conn.io.poll_read_ready(cx))?;
        match conn.io.try_read_buf(&mut conn.buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}

/// The chunked transfer coding's decoder (RFC 9112 section 7.1): sizes, data, the CRLF after
/// each chunk's data, and trailer fields (read and dropped, as nginx drops them).
#[derive(Debug, Default)]
struct Chunked {
    phase: Phase,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    Data(Bytes),
    End,
    NeedMore,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("invalid chunked body: {what}"),
    )
}

impl Chunked {
    /// Consumes what `buf` holds up to the next piece of data or the end.
    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Decoded> {
        loop {
            match self.phase {
                Phase::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.phase = if size == 0 {
                            Phase::Trailers
                        } else {
                            Phase::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                    Err(_) => return Err(invalid("chunk size")),
                },
                Phase::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = left.min(buf.len() as u64) as usize;
                    let data = buf.split_to(take).freeze();
                    self.phase = match left - take as u64 {
                        0 => Phase::DataEnd,
                        n => Phase::Data(n),
                    };
                    return Ok(Decoded::Data(data));
                }
                Phase::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(invalid("no CRLF after the chunk data"));
                    }
                    buf.advance(2);
                    self.phase = Phase::Size;
                }
                Phase::Trailers => {
                    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_TRAILER_LINE {
                            return Err(invalid("trailer line too long"));
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    buf.advance(end + 2);
                    if end == 0 {
                        return Ok(Decoded::End);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `step` bytes; returns the data and whether the end came.
    fn run(wire: &[u8], step: usize) -> io::Result<(Vec<u8>, bool, usize)> {
        let mut c = Chunked::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match c.decode(&mut buf)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::End => return Ok((out, true, buf.len())),
                    Decoded::NeedMore => break,
                }
            }
        }
        Ok((out, false, buf.len()))
    }

    #[test]
    fn chunks_decode_however_the_bytes_arrive() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, end, left) = run(wire, step).unwrap();
            assert_eq!(data, b"hello, world", "step {step}");
            assert!(end, "step {step}");
            assert_eq!(left, 0);
        }
    }

    #[test]
    fn what_follows_the_last_chunk_stays_in_the_buffer() {
        let (data, end, left) = run(b"1\r\na\r\n0\r\n\r\nHTTP/1.1", 100).unwrap();
        assert_eq!((data.as_slice(), end, left), (&b"a"[..], true, 8));
    }

    #[test]
    fn broken_codings_are_errors() {
        for wire in [&b"zz\r\n"[..], b"3\r\nabcXY", b"ffffffffffffffffffff\r\n"] {
            assert!(
                run(wire, 100).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }
}
