//! The response a Lua phase produced, assembled as nginx would: status from `ngx.exit` or
//! `ngx.status`, the default `text/plain` content type, nginx-style error pages.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};

use crate::request::RequestState;
use crate::vm::Outcome;

pub struct LuaResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// nginx's built-in error page, with our name where nginx puts its version.
pub fn error_page(status: u16) -> Bytes {
    let title = format!("{status} {}", reason(status));
    Bytes::from(format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>outpost</center>\r\n</body>\r\n</html>\r\n"
    ))
}

/// A status-only answer (an `ngx.exit(403)` in access, a Lua error): the error page for
/// 4xx/5xx, an empty body otherwise.
pub fn status_response(status: u16, extra: &HeaderMap) -> LuaResponse {
    let mut headers = extra.clone();
    let body = if status >= 400 {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        error_page(status)
    } else {
        Bytes::new()
    };
    LuaResponse {
        status,
        headers,
        body,
    }
}

/// nginx's built-in type map (`ngx_http_core_default_types`), used without `mime.types`;
/// anything else is `default_type`'s built-in `text/plain`.
fn default_type(uri: &str) -> &'static str {
    // Bytes, not the str pattern API: this runs for every Lua response.
    let b = uri.as_bytes();
    let file = b
        .iter()
        .rposition(|&c| c == b'/')
        .map_or(b, |i| &b[i + 1..]);
    let Some(dot) = file.iter().rposition(|&c| c == b'.') else {
        return "text/plain";
    };
    let ext = &file[dot + 1..];
    [
        ("html", "text/html"),
        ("gif", "image/gif"),
        ("jpg", "image/jpeg"),
    ]
    .into_iter()
    .find(|(e, _)| ext.eq_ignore_ascii_case(e.as_bytes()))
    .map_or("text/plain", |(_, t)| t)
}

/// Output up to this size is copied into the response rather than moved.
const COPIED_OUTPUT: usize = 4096;

/// The response of a content phase (or of a rewrite/access phase that produced output).
/// The response's headers are the state's; `spare`, an empty map, takes their place, so a
/// caller that keeps maps for reuse hands the state one with room.
pub fn content_response(r: &mut RequestState, outcome: Outcome, spare: HeaderMap) -> LuaResponse {
    let exit = match outcome {
        Outcome::Exit(code) => Some(code),
        Outcome::Continue => None,
    };
    // ngx.exit(status >= 300) before any output: nginx's special response for that status.
    if let Some(code) = exit
        && code >= 300
        && !r.headers_sent
    {
        let mut resp = status_response(code as u16, &r.resp_headers);
        if (300..400).contains(&code) {
            resp.body = if resp.headers.contains_key(header::LOCATION) {
                error_page(code as u16)
            } else {
                Bytes::new()
            };
            resp.headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        }
        return resp;
    }
    let status = match exit {
        Some(code) if (200..300).contains(&code) && !r.headers_sent => code as u16,
        _ => r.status.filter(|s| *s != 0).unwrap_or(200),
    };
    let mut headers = std::mem::replace(&mut r.resp_headers, spare);
    if status == 204 || status == 304 {
        headers.remove(header::CONTENT_TYPE);
    } else if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(default_type(&r.uri)),
        );
    }
    // A HEAD gets the head only: what the script printed is dropped, as nginx drops it. A
    // short output is copied, so that the state (reused for the worker's next request, see
    // `request_reuse.rs`) keeps its buffer; a `Bytes` made from the buffer itself would also
    // allocate, for its shared count, unless the buffer were full to its capacity.
    let body = if r.method == http::Method::HEAD {
        Bytes::new()
    } else if r.output.len() <= COPIED_OUTPUT {
        Bytes::copy_from_slice(&r.output)
    } else {
        Bytes::from(std::mem::take(&mut r.output))
    };
    r.output.clear();
    LuaResponse {
        status,
        headers,
        body,
    }
}

/// The head of a content phase's response streamed from its first `ngx.flush`: as
/// [`content_response`] makes it, without a body. A 101 (a protocol switch) gets no
/// `Content-Type`.
pub fn streamed_head(r: &mut RequestState) -> (u16, HeaderMap) {
    let status = r.status.filter(|s| *s != 0).unwrap_or(200);
    let mut headers = std::mem::take(&mut r.resp_headers);
    if matches!(status, 101 | 204 | 304) {
        headers.remove(header::CONTENT_TYPE);
    } else if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(default_type(&r.uri)),
        );
    }
    (status, headers)
}

#[cfg(test)]
mod tests {
    use super::default_type;

    #[test]
    fn default_types_as_nginx_has_them_built_in() {
        assert_eq!(default_type("/a/b.HTML"), "text/html");
        assert_eq!(default_type("/x.jpg"), "image/jpeg");
        assert_eq!(default_type("/a.tar.gif"), "image/gif");
        assert_eq!(default_type("/dir.gif/file"), "text/plain");
        assert_eq!(default_type("/index.htm"), "text/plain");
        assert_eq!(default_type("/"), "text/plain");
        assert_eq!(default_type("no-slash.html"), "text/html");
    }
}
