//! The edge's own HTTP/1.1 client for the common upstream request: plain TCP, no request
//! body, no protocol switch (`fits`). The request is written and its response read on the
//! request's own task. hyper's client runs each connection as a task of its own and hands
//! requests, responses and body chunks over channels: task switches and allocations on every
//! request, which made proxying cost several times what serving does. Anything else goes
//! through hyper (`connector.rs`).
//!
//! The decisions (which requests fit, how a response's body is framed, whether the
//! connection can be reused) are pure functions below; `H1Conn` is the I/O around them.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::error::ProxyError;
use crate::proxy::upstream_call::UpstreamHead;
use crate::server::h1_head::has_token;

/// A response head larger than this is refused (502), as nginx refuses one larger than its
/// `proxy_buffer_size` ("upstream sent too big header").
pub const MAX_HEAD: usize = 64 * 1024;
/// Fields per response head, as hyper's client allows.
const MAX_FIELDS: usize = 100;
const READ_SIZE: usize = 16 * 1024;

/// Whether a request goes on the edge's own path: plain TCP, GET or HEAD without a body, and
/// nothing that asks for more than one exchange (an upgrade, `Expect`).
pub fn fits(tls: bool, head: &UpstreamHead, body_empty: bool) -> bool {
    !tls && body_empty
        && matches!(head.method, Method::GET | Method::HEAD)
        && [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
            header::EXPECT,
        ]
        .iter()
        .all(|h| !head.headers.contains_key(h))
}

/// How a response body is delimited on the wire (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: a response to HEAD, a 204 or a 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the origin closes the connection.
    Close,
}

/// What a response head says about its body and its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub body: BodyFraming,
    /// The connection can carry another request once the body is read.
    pub reusable: bool,
}

/// Why a response head is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("invalid Content-Length in the response")]
    BadLength,
    #[error("unexpected 101 response (no upgrade was asked)")]
    UnaskedSwitch,
}

/// The body framing and reuse of a response, from its request method, status, version and
/// fields. Pure: `H1Conn::exchange` and the tests call it.
pub fn framing(
    head_request: bool,
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
) -> Result<Framing, HeadError> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(HeadError::UnaskedSwitch);
    }
    let connection = |token: &[u8]| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v.as_bytes(), token))
    };
    let mut reusable = match version {
        Version::HTTP_11 => !connection(b"close"),
        _ => connection(b"keep-alive") && !connection(b"close"),
    };
    let no_body =
        head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let body = if no_body {
        BodyFraming::Empty
    } else if let Some(te) = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        // Chunked when it is the last coding; any other ends with the connection.
        let last = te.as_bytes().rsplit(|&b| b == b',').next().unwrap_or(b"");
        if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            BodyFraming::Chunked
        } else {
            BodyFraming::Close
        }
    } else {
        match content_length(headers)? {
            Some(0) => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
            None => BodyFraming::Close,
        }
    };
    if body == BodyFraming::Close {
        reusable = false;
    }
    // Both fields: the length is not to be trusted, nor what follows the body (RFC 9112 6.3).
    if headers.contains_key(header::TRANSFER_ENCODING)
        && headers.contains_key(header::CONTENT_LENGTH)
    {
        reusable = false;
    }
    Ok(Framing { body, reusable })
}

/// The one length every `Content-Length` field agrees on (a list of equal values counts as
/// one, RFC 9110 8.6), `None` without the field.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, HeadError> {
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) || part.len() > 19 {
                return Err(HeadError::BadLength);
            }
            let n: u64 = std::str::from_utf8(part)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(HeadError::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::BadLength);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Writes the request head: its line, then the fields in the map's order (names lowercase,
/// as hyper writes them), then the blank line.
pub fn encode_request(dst: &mut Vec<u8>, head: &UpstreamHead) {
    dst.extend_from_slice(head.method.as_str().as_bytes());
    dst.push(b' ');
    let target = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
    dst.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &head.headers {
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

/// A response head read off the connection.
pub struct ResponseHead {
    pub parts: http::response::Parts,
    pub framing: Framing,
}

/// Reading a response head failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The connection ended before any byte of a response: on a pooled connection, the
    /// origin closed it while it was idle.
    #[error("connection closed before the response")]
    ClosedBeforeResponse,
    #[error("connection closed in the response head")]
    ClosedInHead,
    #[error("invalid response head: {0}")]
    Parse(httparse::Error),
    #[error("response head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error(transparent)]
    Head(#[from] HeadError),
}

impl From<ExchangeError> for ProxyError {
    fn from(e: ExchangeError) -> ProxyError {
        ProxyError::Response(e.to_string())
    }
}

/// One connection to a peer, with what has been read from it and not yet consumed.
pub struct H1Conn {
    pub(crate) io: TcpStream,
    pub(crate) buf: BytesMut,
    /// The request head being written (kept for the next request on the connection).
    out: Vec<u8>,
    /// Where each field of the response head being parsed is (name and value start and
    /// end), kept for the next response.
    spans: Vec<[usize; 4]>,
}

/// Opens a plain TCP connection within `limit`.
pub async fn connect(addr: SocketAddr, limit: Duration) -> Result<H1Conn, ProxyError> {
    let io = tokio::time::timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| ProxyError::ConnectTimeout)?
        .map_err(ProxyError::Connect)?;
    let _ = io.set_nodelay(true);
    Ok(H1Conn {
        io,
        buf: BytesMut::with_capacity(READ_SIZE),
        out: Vec::with_capacity(512),
        spans: Vec::new(),
    })
}

impl H1Conn {
    /// Whether an idle connection can take a request: nothing arrived on it while it waited
    /// (no end of stream, no stray bytes). tokio answers from the readiness epoll reported,
    /// so a quiet connection costs no system call.
    pub fn still_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends the request head and reads the response head (interim 1xx responses skipped).
    pub async fn exchange(&mut self, head: &UpstreamHead) -> Result<ResponseHead, ExchangeError> {
        self.out.clear();
        encode_request(&mut self.out, head);
        self.io.write_all(&self.out).await?;
        let head_request = head.method == Method::HEAD;
        let mut received = false;
        loop {
            if !self.buf.is_empty()
                && let Some(parsed) = self.parse_head(head_request)?
            {
                return Ok(parsed);
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(ExchangeError::TooLarge);
            }
            if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
                self.buf.reserve(READ_SIZE);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(match received || !self.buf.is_empty() {
                    true => ExchangeError::ClosedInHead,
                    false => ExchangeError::ClosedBeforeResponse,
                });
            }
            received = true;
        }
    }

    /// A whole final response head from the buffer, consumed; `None` when more is needed.
    fn parse_head(&mut self, head_request: bool) -> Result<Option<ResponseHead>, ExchangeError> {
        loop {
            // Uninitialised: filling 100 empty fields on every parse cost more than the parse.
            let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_FIELDS];
            let mut resp = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut resp,
                &self.buf,
                &mut fields,
            );
            let len = match parsed {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(ExchangeError::Parse(e)),
            };
            let code = resp.code.unwrap_or(0);
            let status = StatusCode::from_u16(code)
                .map_err(|_| ExchangeError::Parse(httparse::Error::Status))?;
            if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                // 100, 102, 103: interim, the final response follows.
                let _ = self.buf.split_to(len);
                continue;
            }
            let version = match resp.version {
                Some(0) => Version::HTTP_10,
                _ => Version::HTTP_11,
            };
            // Where each field's name and value are in the head, so that the values can share
            // its bytes (no copy of each).
            let base = self.buf.as_ptr() as usize;
            self.spans.clear();
            for f in resp.headers.iter() {
                let name = f.name.as_ptr() as usize - base;
                let value = f.value.as_ptr() as usize - base;
                self.spans
                    .push([name, name + f.name.len(), value, value + f.value.len()]);
            }
            let raw: Bytes = self.buf.split_to(len).freeze();
            // Room for `Via` and a rule's fields without growing the map.
            let mut headers = crate::header_pool::take(self.spans.len() + 4);
            for &[n0, n1, v0, v1] in &self.spans {
                let name = crate::server::field_name::field_name(&raw[n0..n1])
                    .map_err(|_| ExchangeError::Parse(httparse::Error::HeaderName))?;
                // SAFETY: these are the bytes httparse just accepted as this field's value
                // (`raw` is the head it parsed), and httparse accepts exactly the bytes a
                // `HeaderValue` may hold: tab, visible ASCII and obs-text, no other control
                // byte (`httparse_values_are_header_values` checks every byte). Checking them
                // again was about 400 instructions for a 10-field head.
                let value = unsafe { HeaderValue::from_maybe_shared_unchecked(raw.slice(v0..v1)) };
                headers.append(name, value);
            }
            let framing = framing(head_request, status, version, &headers)?;
            let (mut parts, ()) = http::Response::new(()).into_parts();
            parts.status = status;
            parts.version = version;
            parts.headers = headers;
            return Ok(Some(ResponseHead { parts, framing }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `parse_head`'s unchecked `HeaderValue` relies on: a value byte httparse accepts
    /// in a response field (as `parse_head` configures it) is one `HeaderValue` accepts, at
    /// every position of the value, alone or among others (httparse's SIMD paths take long
    /// values).
    #[test]
    fn httparse_values_are_header_values() {
        let mut accepted = 0;
        for b in 0..=255u8 {
            for value in [vec![b], [b"a".as_slice(), &[b], b"a"].concat(), vec![b; 40]] {
                let mut head = b"HTTP/1.1 200 OK\r\nX-Field: ".to_vec();
                head.extend_from_slice(&value);
                head.extend_from_slice(b"\r\n\r\n");
                let mut fields = [httparse::EMPTY_HEADER; 4];
                let mut resp = httparse::Response::new(&mut fields);
                let parsed = httparse::ParserConfig::default().parse_response(&mut resp, &head);
                if let Ok(httparse::Status::Complete(_)) = parsed {
                    let got = resp.headers[0].value;
                    assert!(
                        HeaderValue::from_bytes(got).is_ok(),
                        "httparse accepts {got:?} (byte {b:#04x}), HeaderValue does not"
                    );
                    accepted += 1;
                }
            }
        }
        // Tab, the visible bytes and obs-text (over 220 bytes), in each of the three forms:
        // the check above ran on them, not on a parser that refused everything.
        assert!(accepted > 3 * 220, "{accepted}");
    }
    use http::HeaderName;

    fn fields(list: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn frame(head: bool, status: u16, v: Version, list: &[(&str, &str)]) -> Framing {
        framing(
            head,
            StatusCode::from_u16(status).unwrap(),
            v,
            &fields(list),
        )
        .unwrap()
    }

    #[test]
    fn bodies_are_framed_as_rfc_9112_says() {
        let v11 = Version::HTTP_11;
        type Case<'a> = (bool, u16, &'a [(&'a str, &'a str)], BodyFraming, bool);
        let cases: &[Case] = &[
            (
                false,
                200,
                &[("content-length", "12")],
                BodyFraming::Length(12),
                true,
            ),
            (
                false,
                200,
                &[("content-length", "0")],
                BodyFraming::Empty,
                true,
            ),
            (
                false,
                200,
                &[("content-length", "5, 5")],
                BodyFraming::Length(5),
                true,
            ),
            (
                false,
                200,
                &[("transfer-encoding", "chunked")],
                BodyFraming::Chunked,
                true,
            ),
            (
                false,
                200,
                &[("transfer-encoding", "gzip, chunked")],
                BodyFraming::Chunked,
                true,
            ),
            (
                false,
                200,
                &[("transfer-encoding", "gzip")],
                BodyFraming::Close,
                false,
            ),
            (false, 200, &[], BodyFraming::Close, false),
            (
                true,
                200,
                &[("content-length", "12")],
                BodyFraming::Empty,
                true,
            ),
            (false, 204, &[], BodyFraming::Empty, true),
            (
                false,
                304,
                &[("content-length", "12")],
                BodyFraming::Empty,
                true,
            ),
            (
                false,
                200,
                &[("content-length", "3"), ("connection", "close")],
                BodyFraming::Length(3),
                false,
            ),
            (
                false,
                200,
                &[("content-length", "3"), ("transfer-encoding", "chunked")],
                BodyFraming::Chunked,
                false,
            ),
        ];
        for (head, status, list, body, reusable) in cases {
            let f = frame(*head, *status, v11, list);
            assert_eq!(
                f,
                Framing {
                    body: *body,
                    reusable: *reusable
                },
                "{status} {list:?}"
            );
        }
    }

    #[test]
    fn an_http10_connection_is_reused_only_when_it_says_keep_alive() {
        let v10 = Version::HTTP_10;
        assert!(!frame(false, 200, v10, &[("content-length", "1")]).reusable);
        assert!(
            frame(
                false,
                200,
                v10,
                &[("content-length", "1"), ("connection", "Keep-Alive")]
            )
            .reusable
        );
    }

    #[test]
    fn bad_lengths_and_unasked_switches_are_refused() {
        for bad in ["-1", "1x", "", "1, 2", "99999999999999999999"] {
            let r = framing(
                false,
                StatusCode::OK,
                Version::HTTP_11,
                &fields(&[("content-length", bad)]),
            );
            assert_eq!(r, Err(HeadError::BadLength), "{bad:?}");
        }
        let r = framing(
            false,
            StatusCode::SWITCHING_PROTOCOLS,
            Version::HTTP_11,
            &HeaderMap::new(),
        );
        assert_eq!(r, Err(HeadError::UnaskedSwitch));
    }

    #[test]
    fn only_bodiless_get_and_head_without_upgrade_fit() {
        let head = |m: Method, list: &[(&str, &str)]| UpstreamHead {
            method: m,
            uri: "/a?b=1".parse().unwrap(),
            headers: fields(list),
        };
        assert!(fits(false, &head(Method::GET, &[("host", "x")]), true));
        assert!(fits(false, &head(Method::HEAD, &[]), true));
        assert!(!fits(true, &head(Method::GET, &[]), true), "TLS");
        assert!(!fits(false, &head(Method::GET, &[]), false), "a body");
        assert!(!fits(false, &head(Method::POST, &[]), true));
        assert!(!fits(
            false,
            &head(Method::GET, &[("upgrade", "websocket")]),
            true
        ));
        assert!(!fits(
            false,
            &head(Method::GET, &[("expect", "100-continue")]),
            true
        ));
        assert!(!fits(
            false,
            &head(Method::GET, &[("content-length", "0")]),
            true
        ));
    }

    #[test]
    fn the_request_head_is_written_with_its_fields_in_order() {
        let head = UpstreamHead {
            method: Method::GET,
            uri: "/p?q=1".parse().unwrap(),
            headers: fields(&[("host", "example.com"), ("x-a", "1"), ("x-a", "2")]),
        };
        let mut out = Vec::new();
        encode_request(&mut out, &head);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nhost: example.com\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
    }
}
