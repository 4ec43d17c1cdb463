//! Header rewriting between client and peer: hop-by-hop fields removed (RFC 9110 §7.6.1),
//! `X-Forwarded-For`/`-Proto`/`-Host`, `Via` and `X-Request-Id` set, page-rule header actions
//! applied.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::rules::HeaderOp;
use crate::rules::request_id::X_REQUEST_ID;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

const HOP_BY_HOP: [&HeaderName; 8] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::PROXY_AUTHENTICATE,
];

/// Which of [`HOP_BY_HOP`] (bits 0-7) and `Proxy-Authorization` (bit 8) `name` is.
fn hop_by_hop_bit(name: &HeaderName) -> u16 {
    // Their lengths first: nearly every field is none of them, and a length rules it out.
    if !matches!(name.as_str().len(), 2 | 7 | 10 | 16..=19) {
        return 0;
    }
    match HOP_BY_HOP.iter().position(|h| *h == name) {
        Some(i) => 1 << i,
        None if name == header::PROXY_AUTHORIZATION => 1 << 8,
        None => 0,
    }
}

/// Removes hop-by-hop fields, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first: most requests and responses carry none of them or only
    // `Connection`, and comparing names is cheaper than looking each one up.
    let present = headers.keys().fold(0u16, |m, n| m | hop_by_hop_bit(n));
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // The fields `Connection` names go too; its own tokens (`close`, `keep-alive`) name
        // no field or one removed below. A copy of the values: the map changes meanwhile.
        let all = headers.get_all(header::CONNECTION);
        let first = all.iter().next().cloned();
        // Only a second `Connection` field makes a list (an empty Vec does not allocate).
        let rest: Vec<HeaderValue> = all.iter().skip(1).cloned().collect();
        for v in first.iter().chain(&rest) {
            for token in v.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") || token.eq_ignore_ascii_case(b"keep-alive")
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token) {
                    headers.remove(name);
                }
            }
        }
    }
    for (i, h) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*h);
        }
    }
    if present & (1 << 8) != 0 {
        // Meant for us, not for the origin (we do not authenticate proxies).
        headers.remove(header::PROXY_AUTHORIZATION);
    }
}

/// What the forwarding headers say about the client.
pub struct Forwarded<'a> {
    /// The client's IP address as text (made once per connection).
    pub client_ip: &'a HeaderValue,
    pub scheme: &'static str,
    /// The Host the client asked for (with port), for `Host` on HTTP/2 and `X-Forwarded-Host`.
    pub host: &'a HeaderValue,
    pub request_id: &'a HeaderValue,
    pub via: &'static str,
    /// The client's `Upgrade` value, when it asked to switch protocols.
    pub upgrade: Option<HeaderValue>,
}

pub fn request_headers(headers: &mut HeaderMap, f: &Forwarded<'_>, ops: &[HeaderOp]) {
    strip_hop_by_hop(headers);
    // The values are shared, not formatted again: the host is the client's own field, the
    // address is formatted once per connection.
    if !f.host.is_empty() && !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, f.host.clone());
    }
    let xff = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + f.client_ip.len());
            v.extend_from_slice(prev);
            v.extend_from_slice(b", ");
            v.extend_from_slice(f.client_ip.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        None => Some(f.client_ip.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(f.scheme),
    );
    if !f.host.is_empty() {
        headers.insert(X_FORWARDED_HOST.clone(), f.host.clone());
    }
    append_via(headers, f.via);
    headers.insert(X_REQUEST_ID.clone(), f.request_id.clone());
    if let Some(up) = &f.upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up.clone());
    }
    apply(headers, ops);
}

/// Response fields: hop-by-hop removed (kept on a 101, which needs them), `Via` added, rule
/// actions applied.
pub fn response_headers(headers: &mut HeaderMap, switching: bool, ops: &[HeaderOp]) {
    if !switching {
        strip_hop_by_hop(headers);
    }
    append_via(headers, "1.1 outpost");
    apply(headers, ops);
}

pub fn apply(headers: &mut HeaderMap, ops: &[HeaderOp]) {
    for op in ops {
        match &op.value {
            Some(v) => {
                headers.insert(op.name.clone(), v.clone());
            }
            None => {
                headers.remove(&op.name);
            }
        }
    }
}

fn append_via(headers: &mut HeaderMap, via: &'static str) {
    match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            if let Ok(v) = HeaderValue::from_str(&format!("{prev}, {via}")) {
                headers.insert(header::VIA, v);
            }
        }
        None => {
            headers.insert(header::VIA, HeaderValue::from_static(via));
        }
    }
}

/// The client asked to switch protocols (HTTP/1.1 `Connection: upgrade` + `Upgrade`).
pub fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_go_and_forwarding_fields_come() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        h.insert("x-keep", "yes".parse().unwrap());
        let rid = HeaderValue::from_static("abc");
        let (ip, host) = (
            HeaderValue::from_static("192.0.2.1"),
            HeaderValue::from_static("example.com"),
        );
        let f = Forwarded {
            client_ip: &ip,
            scheme: "https",
            host: &host,
            request_id: &rid,
            via: "2 outpost",
            upgrade: None,
        };
        request_headers(&mut h, &f, &[]);
        for gone in ["connection", "x-secret", "keep-alive", "te"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["host"], "example.com");
        assert_eq!(h["via"], "2 outpost");
        assert_eq!(h["x-request-id"], "abc");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn an_upgrade_request_keeps_its_upgrade() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        assert_eq!(requested_upgrade(&h).unwrap(), "websocket");
    }
}
