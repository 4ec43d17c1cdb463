//! The `Cache-Status` response field (RFC 9211): one list member describing what this cache
//! did, serialised as a Structured Field item with parameters.

use super::structured;

/// Why the request went to the next hop (RFC 9211 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// The cache was configured not to handle this request.
    Bypass,
    /// The request method's semantics require forwarding.
    Method,
    /// Nothing was stored for the URI.
    UriMiss,
    /// Something was stored for the URI, but not for this request's `Vary` selection.
    VaryMiss,
    /// The cache did not find a usable response (more detail unavailable).
    Miss,
    /// The request's semantics required forwarding (e.g. `no-cache`).
    Request,
    /// The stored response was stale and had to be revalidated.
    Stale,
    /// Only part of the response was stored.
    Partial,
}

impl Fwd {
    pub fn as_str(&self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Miss => "miss",
            Fwd::Request => "request",
            Fwd::Stale => "stale",
            Fwd::Partial => "partial",
        }
    }
}

/// What the cache did for one response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheStatus {
    /// Served from the cache without going forward.
    pub hit: bool,
    pub fwd: Option<Fwd>,
    /// The status the next hop answered with.
    pub fwd_status: Option<u16>,
    /// Remaining freshness in seconds; negative when served stale.
    pub ttl: Option<i64>,
    /// The response was stored.
    pub stored: bool,
    /// The request was collapsed into another one going forward.
    pub collapsed: bool,
    /// The cache key, for debugging.
    pub key: Option<String>,
    /// Free-form detail, e.g. a [`NotStorable`](super::storable::NotStorable) reason.
    pub detail: Option<String>,
}

/// sf-integer limit (RFC 8941 §3.3.1).
const SF_INTEGER_MAX: i64 = 999_999_999_999_999;

impl CacheStatus {
    /// A hit with `ttl` seconds of freshness left.
    pub fn hit(ttl: i64) -> Self {
        CacheStatus {
            hit: true,
            ttl: Some(ttl),
            ..CacheStatus::default()
        }
    }

    /// A request forwarded for `fwd`.
    pub fn forward(fwd: Fwd) -> Self {
        CacheStatus {
            fwd: Some(fwd),
            ..CacheStatus::default()
        }
    }

    /// This cache's list member, e.g. `outpost; fwd=stale; fwd-status=304; ttl=60`. The name
    /// is a token when it can be one, else a string (§2).
    pub fn header_value(&self, cache_name: &str) -> String {
        use std::fmt::Write as _;
        // Sized for the common members: a hit's value fits without growing.
        let mut out = String::with_capacity(48);
        if structured::is_token(cache_name) {
            out.push_str(cache_name);
        } else {
            structured::write_string(&mut out, cache_name);
        }
        if self.hit {
            out.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            out.push_str("; fwd=");
            out.push_str(fwd.as_str());
        }
        if let Some(status) = self.fwd_status {
            let _ = write!(out, "; fwd-status={status}");
        }
        if let Some(ttl) = self.ttl {
            let ttl = ttl.clamp(-SF_INTEGER_MAX, SF_INTEGER_MAX);
            let _ = write!(out, "; ttl={ttl}");
        }
        if self.stored {
            out.push_str("; stored");
        }
        if self.collapsed {
            out.push_str("; collapsed");
        }
        if let Some(key) = &self.key {
            out.push_str("; key=");
            structured::write_string(&mut out, key);
        }
        if let Some(detail) = &self.detail {
            out.push_str("; detail=");
            if structured::is_token(detail) {
                out.push_str(detail);
            } else {
                structured::write_string(&mut out, detail);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::storable::NotStorable;

    // RFC 9211 §2.1 / §2.4: a hit with its remaining freshness.
    #[test]
    fn formats_a_hit_with_ttl_rfc9211_2_1() {
        assert_eq!(
            CacheStatus::hit(376).header_value("outpost"),
            "outpost; hit; ttl=376"
        );
    }

    // RFC 9211 §2.2 / §2.5: a stored miss, and a revalidation.
    #[test]
    fn formats_forwarded_requests_rfc9211_2_2() {
        let miss = CacheStatus {
            stored: true,
            ..CacheStatus::forward(Fwd::Miss)
        };
        assert_eq!(miss.header_value("outpost"), "outpost; fwd=miss; stored");
        let stale = CacheStatus {
            fwd_status: Some(304),
            ttl: Some(60),
            ..CacheStatus::forward(Fwd::Stale)
        };
        assert_eq!(
            stale.header_value("outpost"),
            "outpost; fwd=stale; fwd-status=304; ttl=60"
        );
        assert_eq!(
            CacheStatus::forward(Fwd::VaryMiss).header_value("o"),
            "o; fwd=vary-miss"
        );
        assert_eq!(
            CacheStatus::forward(Fwd::UriMiss).header_value("o"),
            "o; fwd=uri-miss"
        );
    }

    // RFC 9211 §2.7 / §2.8 and RFC 8941 §3.3: key is a string; detail a token or a string;
    // the cache name a string when it is not a token.
    #[test]
    fn quotes_strings_and_uses_tokens_where_possible_rfc9211_2_8() {
        let s = CacheStatus {
            collapsed: true,
            key: Some("GET https://a/\"q\"".into()),
            detail: Some(NotStorable::NoStore.as_str().into()),
            ttl: Some(-5),
            ..CacheStatus::forward(Fwd::Request)
        };
        assert_eq!(
            s.header_value("Edge Cache"),
            r#""Edge Cache"; fwd=request; ttl=-5; collapsed; key="GET https://a/\"q\""; detail=no-store"#
        );
        let d = CacheStatus {
            detail: Some("two words".into()),
            ..CacheStatus::default()
        };
        assert_eq!(d.header_value("outpost"), "outpost; detail=\"two words\"");
    }
}
