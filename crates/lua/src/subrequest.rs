//! Subrequests for `ngx.location.capture` and `capture_multi`: what the Lua API asks of its
//! host, and the checks it makes before asking.
//!
//! The crate knows nothing of the edge's pipeline, so a request that may issue subrequests
//! carries a [`SubrequestRunner`] in its [`RequestState`](crate::RequestState): the edge
//! runs the [`Subrequest`] through its own phases and answers with a [`Captured`] response.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::limits::Budget;

/// How deep subrequests may nest: nginx starts a main request with
/// `NGX_HTTP_MAX_SUBREQUESTS + 1` (51) and each level takes one, so a request 51 levels down
/// fails with `subrequests cycle`.
pub const MAX_DEPTH: u32 = 51;

/// One subrequest, as `ngx.location.capture`'s arguments and options made it.
pub struct Subrequest {
    pub method: Method,
    /// The path as given (still percent-encoded), starting with `/`.
    pub path: String,
    /// The query string without `?`: the URI's own, then the `args` option's.
    pub args: Option<String>,
    /// The parent's request headers, with `Content-Length` set for `body`.
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    /// How deep this subrequest is: 1 under a main request.
    pub depth: u32,
    /// The main request's budget: subrequests spend it too.
    pub budget: Rc<Budget>,
    /// The `ctx` option: the subrequest's `ngx.ctx` (a table in the same VM).
    pub ctx: Option<mlua::RegistryKey>,
    /// The declared variables to start from (`copy_all_vars`, `share_all_vars`); `None`:
    /// the application's defaults.
    pub declared: Option<HashMap<String, String>>,
    /// The `vars` option, set over those.
    pub vars: Vec<(String, String)>,
}

/// A subrequest's whole response.
pub struct Captured {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body ended early (the upstream connection broke, a filter failed).
    pub truncated: bool,
    /// The subrequest's declared variables when it ended (for `share_all_vars`).
    pub declared: HashMap<String, String>,
}

pub type CaptureFuture = Pin<Box<dyn Future<Output = Captured>>>;

/// Runs subrequests through the host's pipeline, on the same worker.
pub trait SubrequestRunner {
    /// Starts `sub` at once (so that several run concurrently) and resolves with its
    /// response. Dropping the future abandons the subrequest.
    fn capture(&self, sub: Subrequest) -> CaptureFuture;
}

/// nginx's `ngx_http_parse_unsafe_uri`: `None` for a URI that must not be used (empty,
/// starting with `?`, a `..` segment, a NUL byte, raw or percent-encoded). Otherwise the path
/// and the query string (without `?`, `Some("")` for a bare `?`).
pub fn split_safe_uri(uri: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    if uri.is_empty() || uri[0] == b'?' {
        return None;
    }
    let (path, query) = match uri.iter().position(|&b| b == b'?') {
        Some(q) => (&uri[..q], Some(&uri[q + 1..])),
        None => (uri, None),
    };
    let unsafe_path = |p: &[u8]| {
        p.contains(&0)
            || p.split(|&b| b == b'/')
                .enumerate()
                // A leading `..` is unsafe even without a slash before it.
                .any(|(i, seg)| seg == b".." && (i > 0 || p.starts_with(b"..")))
    };
    if unsafe_path(path) {
        return None;
    }
    if path.contains(&b'%') && unsafe_path(&percent_decode(path)) {
        return None;
    }
    Some((path, query))
}

fn percent_decode(b: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The method an `ngx.HTTP_*` method constant stands for (nginx's method bits), as
/// `ngx_http_lua_adjust_subrequest` knows them.
pub fn method_of(bits: i64) -> Option<Method> {
    Some(match bits {
        2 => Method::GET,
        4 => Method::HEAD,
        8 => Method::POST,
        16 => Method::PUT,
        32 => Method::DELETE,
        64 => Method::from_bytes(b"MKCOL").ok()?,
        128 => Method::from_bytes(b"COPY").ok()?,
        256 => Method::from_bytes(b"MOVE").ok()?,
        512 => Method::OPTIONS,
        1024 => Method::from_bytes(b"PROPFIND").ok()?,
        2048 => Method::from_bytes(b"PROPPATCH").ok()?,
        4096 => Method::from_bytes(b"LOCK").ok()?,
        8192 => Method::from_bytes(b"UNLOCK").ok()?,
        16384 => Method::PATCH,
        32768 => Method::TRACE,
        _ => return None,
    })
}

/// A header name as nginx's modules usually write it (`content-type` to `Content-Type`): the
/// edge keeps names in lower case, and scripts index `res.header` by the usual spelling.
pub fn display_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut up = true;
    for c in name.chars() {
        out.push(if up { c.to_ascii_uppercase() } else { c });
        up = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_uris_are_the_ones_nginx_refuses() {
        // Each checked against Debian's nginx 1.22 + lua-nginx-module 0.10.23.
        for bad in [
            "",
            "?x",
            "..",
            "../x",
            "/a/..",
            "/../echo",
            "/%2e%2e/x",
            "/a/%2E%2E",
            "/a%00b",
        ] {
            assert_eq!(split_safe_uri(bad.as_bytes()), None, "{bad:?}");
        }
        for (ok, path, query) in [
            ("/a/./b", "/a/./b", None),
            ("/a//b", "/a//b", None),
            ("/echo?", "/echo", Some("")),
            ("/echo?a=1&b=..", "/echo", Some("a=1&b=..")),
            ("/ech%6f", "/ech%6f", None),
            ("/a..b/c", "/a..b/c", None),
            ("http://example.com/x", "http://example.com/x", None),
        ] {
            let (p, q) = split_safe_uri(ok.as_bytes()).expect(ok);
            assert_eq!(p, path.as_bytes(), "{ok:?}");
            assert_eq!(q, query.map(str::as_bytes), "{ok:?}");
        }
    }

    #[test]
    fn method_bits_are_nginx_s() {
        assert_eq!(method_of(2), Some(Method::GET));
        assert_eq!(method_of(8), Some(Method::POST));
        assert_eq!(method_of(16384), Some(Method::PATCH));
        assert_eq!(method_of(12345), None);
        assert_eq!(method_of(0), None);
    }

    #[test]
    fn header_names_get_the_usual_capitals() {
        assert_eq!(display_name("content-type"), "Content-Type");
        assert_eq!(display_name("x-multi"), "X-Multi");
        assert_eq!(display_name("etag"), "Etag");
    }
}
