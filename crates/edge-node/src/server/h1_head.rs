//! The two decisions of the edge's own HTTP/1.1 path (`http1.rs`), as pure functions: which
//! request heads it serves itself ([`parse_request`]), and how a response's head is written
//! and its body framed ([`encode_response_head`]). Both follow hyper's server (1.12,
//! `proto/h1/role.rs`), which stays the reference: a head this path does not take is handed to
//! hyper whole, so every unusual request still gets hyper's answer.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

/// hyper's limit on the number of request header fields (`DEFAULT_MAX_HEADERS`).
pub const MAX_HEADERS: usize = 100;

/// A request head read whole from the front of the buffer.
#[derive(Debug)]
pub struct Head {
    /// Its length in the buffer, final empty line included.
    pub len: usize,
    pub method: Method,
    target: Range<usize>,
    /// The client asked to close after this request (`Connection: close`).
    pub close: bool,
}

/// What the front of the buffer holds.
#[derive(Debug)]
pub enum Parsed {
    /// A head this path serves: HTTP/1.1, no body, no upgrade, no `Expect`.
    Head(Head),
    /// Not a whole head yet.
    Partial,
    /// A head (or bytes) for hyper, which answers it as it always has.
    Handoff(Handoff),
}

/// Why a connection goes to hyper (a label of `outpost_edge_http1_handoffs_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// `Content-Length` or `Transfer-Encoding`: a request body.
    Body,
    /// `Upgrade` (WebSocket and the like), `CONNECT`, or `Expect`.
    Upgrade,
    /// HTTP/1.0, or HTTP/2's preface (h2c).
    Version,
    /// More header fields than hyper takes, or a head larger than the limit.
    TooLarge,
    /// Not a valid request head.
    Malformed,
}

impl Handoff {
    pub fn as_str(self) -> &'static str {
        match self {
            Handoff::Body => "body",
            Handoff::Upgrade => "upgrade",
            Handoff::Version => "version",
            Handoff::TooLarge => "too_large",
            Handoff::Malformed => "malformed",
        }
    }
}

/// Where a head's fields are in the buffer: name, value. The connection keeps one and lends
/// it to each head, so a request allocates none.
pub type Fields = Vec<(Range<usize>, Range<usize>)>;

/// Reads the request head at the front of `buf`; its fields go in `fields`.
pub fn parse_request(buf: &[u8], fields: &mut Fields) -> Parsed {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut storage) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::Version) => return Parsed::Handoff(Handoff::Version),
        Err(httparse::Error::TooManyHeaders) => return Parsed::Handoff(Handoff::TooLarge),
        Err(_) => return Parsed::Handoff(Handoff::Malformed),
    };
    if req.version != Some(1) {
        return Parsed::Handoff(Handoff::Version);
    }
    let Some(method) = req
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
    else {
        return Parsed::Handoff(Handoff::Malformed);
    };
    if method == Method::CONNECT {
        return Parsed::Handoff(Handoff::Upgrade);
    }
    let base = buf.as_ptr() as usize;
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let Some(target) = req.path.map(|p| range(p.as_bytes())) else {
        return Parsed::Handoff(Handoff::Malformed);
    };
    let mut close = false;
    fields.clear();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            return Parsed::Handoff(Handoff::Body);
        }
        if name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"expect") {
            return Parsed::Handoff(Handoff::Upgrade);
        }
        if name.eq_ignore_ascii_case(b"connection") && has_token(h.value, b"close") {
            close = true;
        }
        fields.push((range(name), range(h.value)));
    }
    Parsed::Head(Head {
        len,
        method,
        target,
        close,
    })
}

impl Head {
    /// The request's parts, sharing `head` (the head's bytes, frozen); `None` when a target or
    /// a field does not make a valid `http` value, for hyper to answer.
    pub fn into_parts(self, head: &Bytes, fields: &Fields) -> Option<http::request::Parts> {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = self.method;
        parts.version = Version::HTTP_11;
        parts.uri = Uri::from_maybe_shared(head.slice(self.target)).ok()?;
        // Room for the fields the edge adds before proxying (X-Forwarded-*, Via, the
        // request id): the map does not grow and rehash on the way.
        let mut headers = crate::header_pool::take(fields.len() + 6);
        for (name, value) in fields {
            let name = super::field_name::field_name(&head[name.clone()]).ok()?;
            let value = HeaderValue::from_maybe_shared(head.slice(value.clone())).ok()?;
            headers.append(name, value);
        }
        parts.headers = headers;
        Some(parts)
    }
}

/// Whether a comma-separated field value lists `token` (case-insensitive).
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// How a response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: no body is sent, and the body is not read).
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 response of unknown length).
    Close,
}

/// The body's length as the response knows it before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body at all (its stream has ended).
    Empty,
    Known(u64),
    Unknown,
}

/// What [`encode_response_head`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    pub framing: Framing,
    /// The connection ends after this response.
    pub last: bool,
    /// The response may carry a body: not one to HEAD, nor a 1xx, 204 or 304 (whose body is
    /// dropped unread, as hyper drops it).
    pub body: bool,
}

/// Writes the response head into `dst` as hyper's server does: its status line, the fields in
/// the map's order (names lowercase), `Content-Length` or `Transfer-Encoding: chunked` from
/// the body's length where the fields do not say, `Connection: close` when the connection
/// ends after it (`closing`: the client asked, or the edge is shutting down), and `Date`
/// (`date`: the cached value).
#[allow(clippy::too_many_arguments)] // The parts of one response, as hyper's `Encode` has them.
pub fn encode_response_head(
    dst: &mut Vec<u8>,
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    body: BodyLength,
    head_request: bool,
    closing: bool,
    date: &[u8],
) -> Encoded {
    // A 101 ends HTTP on this connection; hyper answers the other 1xx it cannot send with a 500,
    // and closes.
    let mut last = status.is_informational() || closing;
    let mut said_close = false;
    // Room for the usual head at once: the line, the fields, and what is added.
    dst.reserve(96 + headers.len() * 40);
    let (status, headers, body) = if status.is_informational() && status != 101 {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            &HeaderMap::new(),
            BodyLength::Empty,
        )
    } else {
        (status, headers, body)
    };
    if version == Version::HTTP_11 && status == StatusCode::OK {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(match version {
            Version::HTTP_10 => b"HTTP/1.0 ",
            _ => b"HTTP/1.1 ",
        });
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    let can_have_length = !status.is_informational()
        && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let can_have_body = can_have_length && !head_request;
    // HTTP/1.0 has no chunked coding: a body of unknown length ends with the connection.
    let can_chunk = can_have_body && version != Version::HTTP_10;
    let mut framing = None;
    let (mut wrote_date, mut chunked_named) = (false, false);
    for (name, value) in headers {
        match *name {
            header::CONTENT_LENGTH => {
                if framing.is_some() {
                    continue;
                }
                match body {
                    BodyLength::Known(n) => framing = Some(Framing::Length(n)),
                    BodyLength::Unknown => match parse_length(value.as_bytes()) {
                        Some(n) => framing = Some(Framing::Length(n)),
                        // hyper refuses to send it; a length the body cannot honour is dropped.
                        None => continue,
                    },
                    // No body: the field stays only on a HEAD response.
                    BodyLength::Empty if head_request => framing = Some(Framing::Length(0)),
                    BodyLength::Empty => continue,
                }
            }
            header::TRANSFER_ENCODING => {
                if !can_chunk || matches!(framing, Some(Framing::Length(_))) {
                    continue;
                }
                framing = Some(Framing::Chunked);
                chunked_named = has_token(value.as_bytes(), b"chunked");
            }
            header::CONNECTION if has_token(value.as_bytes(), b"close") => {
                (last, said_close) = (true, true)
            }
            header::DATE => wrote_date = true,
            _ => {}
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    if closing && !said_close && version == Version::HTTP_11 {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    if framing == Some(Framing::Chunked) && !chunked_named {
        // `chunked` must be the last coding, and it is the one this path applies.
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    let framing = match framing {
        Some(f) => f,
        None => match body {
            BodyLength::Unknown if can_chunk => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            BodyLength::Unknown if can_have_body => Framing::Close,
            BodyLength::Unknown => Framing::Length(0),
            BodyLength::Empty | BodyLength::Known(0) => {
                if can_have_length && !head_request {
                    dst.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            BodyLength::Known(n) if can_have_length => {
                dst.extend_from_slice(b"content-length: ");
                dst.extend_from_slice(itoa(n, &mut [0; 20]));
                dst.extend_from_slice(b"\r\n");
                Framing::Length(n)
            }
            BodyLength::Known(_) => Framing::Length(0),
        },
    };
    if !wrote_date {
        dst.extend_from_slice(b"date: ");
        dst.extend_from_slice(date);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    let framing = if can_have_body {
        framing
    } else {
        Framing::Length(0)
    };
    if framing == Framing::Close {
        last = true;
    }
    Encoded {
        framing,
        last,
        body: can_have_body,
    }
}

/// A `Content-Length` value: digits only, as hyper reads it.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// `n` in decimal, written at the end of `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// A chunk's size line, in hex, as chunked coding writes it.
pub fn chunk_size_line(n: usize) -> Vec<u8> {
    format!("{n:x}\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    fn parse(raw: &[u8]) -> Parsed {
        parse_request(raw, &mut Fields::new())
    }

    fn head(raw: &str) -> Head {
        match parse(raw.as_bytes()) {
            Parsed::Head(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bodiless_http11_request_is_served_here_with_its_fields_in_order() {
        let raw = "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\nGET /next";
        let mut fields = Fields::new();
        let Parsed::Head(h) = parse_request(raw.as_bytes(), &mut fields) else {
            panic!("a head")
        };
        assert_eq!(h.len, raw.find("GET /next").unwrap());
        assert!(!h.close);
        let parts = h.into_parts(&Bytes::from(raw), &fields).unwrap();
        assert_eq!(parts.method, Method::GET);
        assert_eq!(parts.uri, "/a?b=1");
        let xa: Vec<_> = parts.headers.get_all("x-a").iter().collect();
        assert_eq!(xa, ["1", "2"]);
        assert_eq!(parts.headers["host"], "x");
    }

    #[test]
    fn bodies_upgrades_expect_connect_and_http10_go_to_hyper() {
        use Handoff::*;
        for (raw, why) in [
            ("POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx", Body),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Body,
            ),
            (
                "GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                Upgrade,
            ),
            ("PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", Upgrade),
            ("CONNECT a:443 HTTP/1.1\r\n\r\n", Upgrade),
            ("GET / HTTP/1.0\r\n\r\n", Version),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Version),
            ("GET / HTTP/1.1\r\nbad header\r\n\r\n", Malformed),
            ("GET\x01 / HTTP/1.1\r\n\r\n", Malformed),
        ] {
            match parse(raw.as_bytes()) {
                Parsed::Handoff(got) => assert_eq!(got, why, "{raw:?}"),
                other => panic!("{raw:?}: {other:?}"),
            }
        }
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        ));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "a: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(parse(many.as_bytes()), Parsed::Handoff(TooLarge)));
    }

    #[test]
    fn every_reason_is_a_label_of_the_metric() {
        use Handoff::*;
        for why in [Body, Upgrade, Version, TooLarge, Malformed] {
            assert!(
                crate::metrics::HTTP1_HANDOFF_REASONS.contains(&why.as_str()),
                "{why:?}"
            );
        }
    }

    #[test]
    fn connection_close_is_a_token_of_the_field() {
        assert!(head("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n").close);
        assert!(!head("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n").close);
    }

    fn encode(
        status: u16,
        headers: &[(&str, &str)],
        body: BodyLength,
        head_request: bool,
    ) -> (String, Encoded) {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut dst = Vec::new();
        let status = StatusCode::from_u16(status).unwrap();
        let e = encode_response_head(
            &mut dst,
            status,
            Version::HTTP_11,
            &map,
            body,
            head_request,
            false,
            b"D",
        );
        (String::from_utf8(dst).unwrap(), e)
    }

    #[test]
    fn a_known_length_becomes_content_length_and_date_is_added() {
        let (h, e) = encode(200, &[("server", "o")], BodyLength::Known(5), false);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\nserver: o\r\ncontent-length: 5\r\ndate: D\r\n\r\n"
        );
        assert_eq!(
            (e.framing, e.last, e.body),
            (Framing::Length(5), false, true)
        );
        let (h, _) = encode(404, &[("date", "X")], BodyLength::Empty, false);
        assert_eq!(
            h,
            "HTTP/1.1 404 Not Found\r\ndate: X\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn an_unknown_length_is_chunked_unless_a_content_length_says() {
        let (h, e) = encode(200, &[], BodyLength::Unknown, false);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ndate: D\r\n\r\n"
        );
        assert_eq!(e.framing, Framing::Chunked);
        let (h, e) = encode(200, &[("content-length", "7")], BodyLength::Unknown, false);
        assert_eq!(h, "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ndate: D\r\n\r\n");
        assert_eq!(e.framing, Framing::Length(7));
        let (h, e) = encode(
            200,
            &[("transfer-encoding", "gzip")],
            BodyLength::Unknown,
            false,
        );
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\ndate: D\r\n\r\n"
        );
        assert_eq!(e.framing, Framing::Chunked);
    }

    #[test]
    fn head_204_and_304_responses_send_no_body() {
        let (h, e) = encode(200, &[("content-length", "9")], BodyLength::Empty, true);
        assert_eq!(h, "HTTP/1.1 200 OK\r\ncontent-length: 9\r\ndate: D\r\n\r\n");
        assert_eq!((e.framing, e.body), (Framing::Length(0), false));
        let (h, e) = encode(200, &[], BodyLength::Known(9), true);
        assert_eq!(h, "HTTP/1.1 200 OK\r\ncontent-length: 9\r\ndate: D\r\n\r\n");
        assert_eq!(e.framing, Framing::Length(0));
        let (h, e) = encode(304, &[("etag", "\"a\"")], BodyLength::Empty, false);
        assert_eq!(
            h,
            "HTTP/1.1 304 Not Modified\r\netag: \"a\"\r\ndate: D\r\n\r\n"
        );
        assert_eq!(e.framing, Framing::Length(0));
        let (h, _) = encode(204, &[], BodyLength::Unknown, false);
        assert_eq!(h, "HTTP/1.1 204 No Content\r\ndate: D\r\n\r\n");
    }

    #[test]
    fn connection_close_and_101_end_the_connection() {
        let (_, e) = encode(200, &[("connection", "close")], BodyLength::Empty, false);
        assert!(e.last);
        let (h, e) = encode(101, &[("upgrade", "websocket")], BodyLength::Empty, false);
        assert!(h.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(e.last);
        let (h, e) = encode(103, &[("link", "x")], BodyLength::Empty, false);
        assert!(h.starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
        assert!(!h.contains("link"));
        assert!(e.last);
        let (h, _) = encode(599, &[], BodyLength::Empty, false);
        assert!(h.starts_with("HTTP/1.1 599 <none>\r\n"));
    }

    #[test]
    fn an_http10_response_of_unknown_length_ends_with_the_connection() {
        let mut dst = Vec::new();
        let e = encode_response_head(
            &mut dst,
            StatusCode::OK,
            Version::HTTP_10,
            &HeaderMap::new(),
            BodyLength::Unknown,
            false,
            false,
            b"D",
        );
        assert_eq!(dst, b"HTTP/1.0 200 OK\r\ndate: D\r\n\r\n");
        assert_eq!((e.framing, e.last, e.body), (Framing::Close, true, true));
    }

    #[test]
    fn a_connection_that_ends_says_so_once() {
        let mut dst = Vec::new();
        let map = HeaderMap::new();
        let e = encode_response_head(
            &mut dst,
            StatusCode::OK,
            Version::HTTP_11,
            &map,
            BodyLength::Empty,
            false,
            true,
            b"D",
        );
        assert_eq!(
            dst,
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\ndate: D\r\n\r\n"
        );
        assert!(e.last);
        let mut said = HeaderMap::new();
        said.insert(header::CONNECTION, HeaderValue::from_static("close"));
        dst.clear();
        encode_response_head(
            &mut dst,
            StatusCode::OK,
            Version::HTTP_11,
            &said,
            BodyLength::Empty,
            false,
            true,
            b"D",
        );
        assert_eq!(String::from_utf8(dst).unwrap().matches("close").count(), 1);
    }

    #[test]
    fn numbers_are_written_in_decimal_and_hex() {
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(
            itoa(u64::MAX, &mut [0; 20]),
            u64::MAX.to_string().as_bytes()
        );
        assert_eq!(chunk_size_line(255), b"ff\r\n");
    }
}
