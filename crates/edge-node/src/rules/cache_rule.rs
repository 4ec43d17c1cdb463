//! Cache rules, compiled: which requests are cached, the key they are cached under, and the
//! overrides of the origin's freshness (default TTL, enforce, browser TTL).

use std::time::Duration;

use outpost_proto::pb;
use pb::cache_key_part::Kind;

use super::condition::Condition;
use super::request_view::RequestView;

#[derive(Debug)]
pub struct CacheRule {
    conditions: Vec<Condition>,
    key: Vec<KeyPart>,
    /// Lifetime for responses without freshness information (only when set).
    pub default_ttl: Option<Duration>,
    /// Ignore the origin's cache headers and keep responses for `default_ttl`.
    pub enforce: bool,
    /// What clients are told (`Cache-Control: max-age`), whatever the origin said.
    pub browser_ttl: Option<u32>,
    /// Matching requests are never looked up nor stored.
    pub bypass: bool,
    /// A `stale-if-error` for responses without one (nginx's `proxy_cache_use_stale error
    /// timeout http_5xx`, ATS's `max_stale_age`).
    pub stale_if_error: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
enum KeyPart {
    Scheme,
    Host,
    Uri,
    AllArgsSorted,
    Arg(String),
    Header(String),
    Cookie(String),
}

impl CacheRule {
    pub fn compile(r: &pb::CacheRule) -> Result<CacheRule, (String, String)> {
        let conditions = r
            .conditions
            .iter()
            .enumerate()
            .map(|(i, c)| Condition::compile(c).map_err(|e| (format!("conditions[{i}]"), e)))
            .collect::<Result<_, _>>()?;
        let mut key = Vec::new();
        for (i, p) in r.key.iter().enumerate() {
            key.push(match Kind::try_from(p.kind) {
                Ok(Kind::Scheme) => KeyPart::Scheme,
                Ok(Kind::Host) => KeyPart::Host,
                Ok(Kind::Uri) => KeyPart::Uri,
                Ok(Kind::AllArgsSorted) => KeyPart::AllArgsSorted,
                Ok(Kind::Arg) => KeyPart::Arg(p.name.clone()),
                Ok(Kind::Header) => KeyPart::Header(p.name.to_ascii_lowercase()),
                Ok(Kind::Cookie) => KeyPart::Cookie(p.name.clone()),
                _ => return Err((format!("key[{i}].kind"), "unknown key part".into())),
            });
        }
        if key.is_empty() {
            key = vec![
                KeyPart::Scheme,
                KeyPart::Host,
                KeyPart::Uri,
                KeyPart::AllArgsSorted,
            ];
        }
        let ttl = (r.default_ttl_seconds > 0)
            .then(|| Duration::from_secs(u64::from(r.default_ttl_seconds)));
        if r.enforce && ttl.is_none() {
            return Err((
                "default_ttl_seconds".into(),
                "enforce needs a default TTL".into(),
            ));
        }
        Ok(CacheRule {
            conditions,
            key,
            default_ttl: ttl,
            enforce: r.enforce,
            browser_ttl: (r.browser_ttl_seconds > 0).then_some(r.browser_ttl_seconds),
            bypass: r.bypass,
            stale_if_error: (r.stale_if_error_seconds > 0)
                .then(|| Duration::from_secs(u64::from(r.stale_if_error_seconds))),
        })
    }

    pub fn matches(&self, r: &RequestView<'_>) -> bool {
        self.conditions.iter().all(|c| c.matches(r))
    }

    /// The key text: each part tagged with its kind, so that no two different requests can
    /// produce the same text by shifting a value from one part into the next.
    pub fn key(&self, r: &RequestView<'_>) -> String {
        let mut k = String::with_capacity(96);
        for part in &self.key {
            match part {
                KeyPart::Scheme => push(&mut k, "s", r.scheme),
                KeyPart::Host => push(&mut k, "h", r.host),
                KeyPart::Uri => push(&mut k, "u", r.path),
                KeyPart::AllArgsSorted => {
                    let mut args: Vec<&str> = r
                        .query
                        .unwrap_or("")
                        .split('&')
                        .filter(|a| !a.is_empty())
                        .collect();
                    args.sort_unstable();
                    push(&mut k, "a", &args.join("&"));
                }
                KeyPart::Arg(name) => push_named(&mut k, "a:", name, r.arg(name).unwrap_or("")),
                KeyPart::Header(name) => {
                    push_named(&mut k, "h:", name, r.header(name).as_deref().unwrap_or(""))
                }
                KeyPart::Cookie(name) => {
                    push_named(&mut k, "c:", name, r.cookie(name).unwrap_or(""))
                }
            }
        }
        k
    }
}

/// `tag=len:value;` — length-prefixed, so values can hold any byte. Built without `fmt`:
/// this runs on every cached request.
fn push(k: &mut String, tag: &str, value: &str) {
    k.push_str(tag);
    k.push('=');
    push_len(k, value.len());
    k.push(':');
    k.push_str(value);
    k.push(';');
}

fn push_named(k: &mut String, kind: &str, name: &str, value: &str) {
    k.push_str(kind);
    push(k, name, value);
}

fn push_len(k: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for d in &digits[i..] {
        k.push(*d as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method, Version};

    fn view<'a>(
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
        method: &'a Method,
    ) -> RequestView<'a> {
        RequestView {
            method,
            version: Version::HTTP_11,
            scheme: "https",
            host: "a.test",
            path,
            query,
            headers,
            client: "127.0.0.1:1".parse().unwrap(),
            local: "127.0.0.1:2".parse().unwrap(),
            request_id: Box::leak(Box::default()),
            declared: &[],
        }
    }

    fn rule(json: serde_json::Value) -> CacheRule {
        let r: pb::CacheRule = serde_json::from_value(json).unwrap();
        CacheRule::compile(&r).unwrap()
    }

    #[test]
    fn the_default_key_sorts_arguments_and_separates_parts() {
        let r = rule(serde_json::json!({}));
        let h = HeaderMap::new();
        let m = Method::GET;
        let a = r.key(&view("/x", Some("b=2&a=1"), &h, &m));
        let b = r.key(&view("/x", Some("a=1&b=2"), &h, &m));
        assert_eq!(a, b);
        assert_ne!(a, r.key(&view("/x", Some("a=1"), &h, &m)));
        assert_ne!(
            r.key(&view("/x;u=1", None, &h, &m)),
            r.key(&view("/x", Some("u=1"), &h, &m))
        );
    }

    #[test]
    fn chosen_parts_only() {
        let r = rule(serde_json::json!({"key": [
            {"kind": "KIND_URI"},
            {"kind": "KIND_ARG", "name": "v"},
            {"kind": "KIND_HEADER", "name": "X-Tenant"},
        ]}));
        let mut h = HeaderMap::new();
        let m = Method::GET;
        let base = r.key(&view("/x", Some("v=1&junk=9"), &h, &m));
        assert_eq!(base, r.key(&view("/x", Some("junk=1&v=1"), &h, &m)));
        h.insert("x-tenant", "t1".parse().unwrap());
        assert_ne!(base, r.key(&view("/x", Some("v=1"), &h, &m)));
    }

    #[test]
    fn parts_are_length_prefixed() {
        let mut k = String::new();
        push(&mut k, "u", "/a;b");
        push_named(&mut k, "a:", "v", "");
        push(&mut k, "x", &"y".repeat(123));
        assert_eq!(k, format!("u=4:/a;b;a:v=0:;x=123:{};", "y".repeat(123)));
    }

    #[test]
    fn enforce_without_a_ttl_is_refused() {
        let r: pb::CacheRule =
            serde_json::from_value(serde_json::json!({"enforce": true})).unwrap();
        assert!(CacheRule::compile(&r).is_err());
    }
}
