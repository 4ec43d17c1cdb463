//! Invalidation after unsafe requests (RFC 9111 §4.4).
//!
//! A non-error response to an unsafe method invalidates the target URI and the URIs in its
//! `Location` and `Content-Location`, the latter two only when they share the target's origin
//! (scheme, host, port), so that one site cannot purge another's content.

use http::header::{CONTENT_LOCATION, LOCATION};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, StatusCode, Uri};

/// The URIs whose stored responses must be invalidated after `method` got `status` for
/// `request_uri` (absolute: scheme, authority, path). Empty for safe methods (GET, HEAD,
/// OPTIONS, TRACE: RFC 9110 §9.2.1) and for responses that are not 2xx or 3xx.
pub fn invalidated_uris(
    method: &Method,
    status: StatusCode,
    request_uri: &Uri,
    resp_headers: &HeaderMap,
) -> Vec<Uri> {
    let safe = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE].contains(method);
    if safe || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let mut out = vec![request_uri.clone()];
    for name in [LOCATION, CONTENT_LOCATION] {
        let Some(value) = resp_headers.get(name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let uri = resolve(request_uri, value)
            .filter(|uri| same_origin(request_uri, uri) && !out.contains(uri));
        out.extend(uri);
    }
    out
}

fn same_origin(a: &Uri, b: &Uri) -> bool {
    let (Some(sa), Some(sb)) = (a.scheme_str(), b.scheme_str()) else {
        return false;
    };
    let (Some(ha), Some(hb)) = (a.host(), b.host()) else {
        return false;
    };
    sa.eq_ignore_ascii_case(sb) && ha.eq_ignore_ascii_case(hb) && port(a) == port(b)
}

fn port(u: &Uri) -> Option<u16> {
    u.port_u16().or(match u.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => Some(80),
        Some(s) if s.eq_ignore_ascii_case("https") => Some(443),
        _ => None,
    })
}

/// Resolves a URI reference against an absolute base (RFC 3986 §5.2), dropping any fragment.
fn resolve(base: &Uri, reference: &str) -> Option<Uri> {
    let reference = reference.trim();
    let reference = reference.split('#').next().unwrap_or_default();
    if has_scheme(reference) {
        return reference.parse().ok();
    }
    let scheme = base.scheme()?.clone();
    if let Some(rest) = reference.strip_prefix("//") {
        return format!("{scheme}://{rest}").parse().ok();
    }
    let authority = base.authority()?.clone();
    let (ref_path, ref_query) = match reference.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (reference, None),
    };
    let base_path = base.path();
    let (path, query) = if ref_path.is_empty() {
        (base_path.to_owned(), ref_query.or(base.query()))
    } else if ref_path.starts_with('/') {
        (remove_dot_segments(ref_path), ref_query)
    } else {
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        let merged = if dir.is_empty() {
            format!("/{ref_path}")
        } else {
            format!("{dir}{ref_path}")
        };
        (remove_dot_segments(&merged), ref_query)
    };
    build(scheme, authority, &path, query)
}

fn build(scheme: Scheme, authority: Authority, path: &str, query: Option<&str>) -> Option<Uri> {
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let pq: PathAndQuery = pq.parse().ok()?;
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(pq)
        .build()
        .ok()
}

fn has_scheme(s: &str) -> bool {
    let Some(colon) = s.find(':') else {
        return false;
    };
    let scheme = &s[..colon];
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." | ".." => {
                if *seg == ".." && out.len() > 1 {
                    out.pop();
                }
                if i == last {
                    out.push(""); // keep the trailing slash of "a/." and "a/.."
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn with(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn uris(method: &str, status: u16, resp: &[(&str, &str)]) -> Vec<String> {
        let base: Uri = "https://example.com/a/b/c?x=1".parse().unwrap();
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        invalidated_uris(
            &method,
            StatusCode::from_u16(status).unwrap(),
            &base,
            &with(resp),
        )
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    // §4.4: unsafe methods (including unknown ones) with non-error responses invalidate.
    #[test]
    fn unsafe_methods_invalidate_the_target_uri_rfc9111_4_4() {
        for m in ["POST", "PUT", "DELETE", "PATCH", "M-SEARCH"] {
            assert_eq!(uris(m, 200, &[]), ["https://example.com/a/b/c?x=1"], "{m}");
        }
        assert_eq!(uris("POST", 303, &[]).len(), 1);
        for m in ["GET", "HEAD", "OPTIONS", "TRACE"] {
            assert!(uris(m, 200, &[]).is_empty(), "{m}");
        }
        for s in [400, 404, 500, 503] {
            assert!(uris("POST", s, &[]).is_empty(), "{s}");
        }
    }

    // §4.4: Location and Content-Location, resolved against the target, same origin only.
    #[test]
    fn location_and_content_location_on_the_same_origin_rfc9111_4_4() {
        let got = uris(
            "POST",
            201,
            &[("location", "../x?y=2#frag"), ("content-location", "/abs")],
        );
        assert_eq!(
            got,
            [
                "https://example.com/a/b/c?x=1",
                "https://example.com/a/x?y=2",
                "https://example.com/abs"
            ]
        );
        let got = uris(
            "PUT",
            200,
            &[
                ("location", "https://EXAMPLE.com:443/z"),
                ("content-location", "d"),
            ],
        );
        assert_eq!(
            got[1..],
            ["https://EXAMPLE.com:443/z", "https://example.com/a/b/d"]
        );
        for other in [
            "https://evil.example/z",
            "http://example.com/z",
            "https://example.com:8443/z",
            "//evil.example/z",
        ] {
            assert_eq!(
                uris("POST", 200, &[("location", other)]).len(),
                1,
                "{other}"
            );
        }
    }

    // RFC 3986 §5.4: reference resolution examples.
    #[test]
    fn resolves_references_like_rfc3986_5_4() {
        let base: Uri = "http://a/b/c/d;p?q".parse().unwrap();
        for (r, want) in [
            ("g", "http://a/b/c/g"),
            ("./g", "http://a/b/c/g"),
            ("g/", "http://a/b/c/g/"),
            ("/g", "http://a/g"),
            ("?y", "http://a/b/c/d;p?y"),
            ("g?y", "http://a/b/c/g?y"),
            ("", "http://a/b/c/d;p?q"),
            (".", "http://a/b/c/"),
            ("..", "http://a/b/"),
            ("../g", "http://a/b/g"),
            ("../../g", "http://a/g"),
            ("../../../g", "http://a/g"),
            ("/./g", "http://a/g"),
            ("g/../h", "http://a/b/c/h"),
        ] {
            assert_eq!(resolve(&base, r).unwrap().to_string(), want, "{r:?}");
        }
    }
}
