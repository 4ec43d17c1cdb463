//! Serving byte ranges of a stored complete response (RFC 9110 §14, §13.1.5).
//!
//! One range only: a request for several ranges gets the whole response (200), which §14.2
//! allows ("a server MAY ignore the Range header field") and which spares us
//! multipart/byteranges. Overlapping or many-range requests are also a known abuse vector.

use std::time::Duration;

use http::header::{DATE, IF_RANGE, LAST_MODIFIED, RANGE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::http_date;
use super::validation::{EntityTag, stored_etag};

/// How to answer a request from a stored response of `full_len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeDecision {
    /// 200 with the whole body.
    Full,
    /// 206 with bytes `start..=end` and this `Content-Range`.
    Partial {
        start: u64,
        end: u64,
        content_range: HeaderValue,
    },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable { content_range: HeaderValue },
}

impl RangeDecision {
    pub fn status(&self) -> StatusCode {
        match self {
            RangeDecision::Full => StatusCode::OK,
            RangeDecision::Partial { .. } => StatusCode::PARTIAL_CONTENT,
            RangeDecision::Unsatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        }
    }
}

enum Spec {
    /// `first-last` or `first-` (last = None).
    From(u64, Option<u64>),
    /// `-suffix`.
    Suffix(u64),
}

/// Decides between 200, 206 and 416 for a GET (Range is ignored for other methods, §14.2).
/// A `Range` that is invalid, repeated, for another unit, or whose `If-Range` does not match
/// (§13.1.5) gives the full response.
pub fn range_for(
    req_method: &Method,
    req_headers: &HeaderMap,
    full_len: u64,
    stored_headers: &HeaderMap,
) -> RangeDecision {
    if *req_method != Method::GET {
        return RangeDecision::Full;
    }
    let mut lines = req_headers.get_all(RANGE).iter();
    let (Some(range), None) = (lines.next(), lines.next()) else {
        return RangeDecision::Full;
    };
    let if_range = req_headers.get(IF_RANGE);
    if if_range.is_some_and(|v| !if_range_matches(v.as_bytes(), stored_headers)) {
        return RangeDecision::Full;
    }
    let Some(specs) = parse_range(range.as_bytes()) else {
        return RangeDecision::Full;
    };
    let [spec] = specs.as_slice() else {
        return RangeDecision::Full;
    };
    let unsatisfiable = || RangeDecision::Unsatisfiable {
        content_range: header_value(format!("bytes */{full_len}")),
    };
    let (start, end) = match *spec {
        Spec::From(first, _) if first >= full_len => return unsatisfiable(),
        Spec::From(first, last) => (first, last.unwrap_or(u64::MAX).min(full_len - 1)),
        Spec::Suffix(0) => return unsatisfiable(),
        // A suffix of an empty representation is the whole (empty) representation.
        Spec::Suffix(_) if full_len == 0 => return RangeDecision::Full,
        Spec::Suffix(n) => (full_len.saturating_sub(n), full_len - 1),
    };
    RangeDecision::Partial {
        start,
        end,
        content_range: header_value(format!("bytes {start}-{end}/{full_len}")),
    }
}

fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
}

/// `bytes=` followed by a list of range specs (§14.1.2); `None` when anything is invalid.
fn parse_range(v: &[u8]) -> Option<Vec<Spec>> {
    let eq = v.iter().position(|&b| b == b'=')?;
    if !v[..eq].trim_ascii().eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let mut specs = Vec::new();
    for member in v[eq + 1..].split(|&b| b == b',') {
        let member = member.trim_ascii();
        if member.is_empty() {
            continue;
        }
        let dash = member.iter().position(|&b| b == b'-')?;
        let (first, last) = (&member[..dash], &member[dash + 1..]);
        let spec = match (first.is_empty(), last.is_empty()) {
            (true, true) => return None,
            (true, false) => Spec::Suffix(digits(last)?),
            (false, true) => Spec::From(digits(first)?, None),
            (false, false) => {
                let (f, l) = (digits(first)?, digits(last)?);
                if l < f {
                    return None;
                }
                Spec::From(f, Some(l))
            }
        };
        specs.push(spec);
    }
    (!specs.is_empty()).then_some(specs)
}

/// `1*DIGIT`, saturating: a position beyond any length behaves as "past the end".
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |acc, &d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// §13.1.5: an entity tag must strongly match the stored `ETag`; a date must equal the stored
/// `Last-Modified`, which must be strong: for a cache that means `Date` at least 60 seconds
/// after it (RFC 9110 §8.8.2.2).
fn if_range_matches(v: &[u8], stored: &HeaderMap) -> bool {
    let v = v.trim_ascii();
    if v.starts_with(b"\"") || v.starts_with(b"W/") {
        let (Some(tag), Some(stored)) = (EntityTag::parse(v), stored_etag(stored)) else {
            return false;
        };
        return tag.strong_eq(&stored);
    }
    let (Some(since), Some(lm), Some(date)) = (
        http_date::parse(v),
        http_date::header(stored, &LAST_MODIFIED),
        http_date::header(stored, &DATE),
    ) else {
        return false;
    };
    since == lm
        && date
            .duration_since(lm)
            .is_ok_and(|d| d >= Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;
    use std::time::UNIX_EPOCH;

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

    fn range(r: &str, len: u64) -> RangeDecision {
        range_for(&Method::GET, &with(&[("range", r)]), len, &HeaderMap::new())
    }

    fn partial(start: u64, end: u64, cr: &str) -> RangeDecision {
        RangeDecision::Partial {
            start,
            end,
            content_range: HeaderValue::from_str(cr).unwrap(),
        }
    }

    // RFC 9110 §14.1.2: first-last, first-, and -suffix.
    #[test]
    fn single_ranges_are_served_as_206_rfc9110_14_1_2() {
        assert_eq!(range("bytes=0-1", 11), partial(0, 1, "bytes 0-1/11"));
        assert_eq!(range("bytes=1-", 11), partial(1, 10, "bytes 1-10/11"));
        assert_eq!(range("bytes=-1", 11), partial(10, 10, "bytes 10-10/11"));
        assert_eq!(range("BYTES = 5-500", 11), partial(5, 10, "bytes 5-10/11"));
        assert_eq!(range("bytes=-50", 11), partial(0, 10, "bytes 0-10/11"));
        assert_eq!(range("bytes=0-1", 11).status(), StatusCode::PARTIAL_CONTENT);
    }

    // RFC 9110 §14.1.1 / §15.5.17: unsatisfiable ranges are 416 with `bytes */len`.
    #[test]
    fn unsatisfiable_ranges_are_416_rfc9110_15_5_17() {
        let u = RangeDecision::Unsatisfiable {
            content_range: HeaderValue::from_static("bytes */11"),
        };
        assert_eq!(range("bytes=11-", 11), u);
        assert_eq!(range("bytes=99999999999999999999999-", 11), u);
        assert_eq!(range("bytes=-0", 11), u);
        assert_eq!(
            range("bytes=11-20", 11).status(),
            StatusCode::RANGE_NOT_SATISFIABLE
        );
    }

    // RFC 9110 §14.2: invalid, foreign-unit and multi-range requests get the full 200.
    #[test]
    fn invalid_or_multiple_ranges_get_the_full_response_rfc9110_14_2() {
        for r in [
            "bytes=5-2",
            "bytes=a-b",
            "bytes=-",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes",
        ] {
            assert_eq!(range(r, 11), RangeDecision::Full, "{r}");
        }
        let head = range_for(
            &Method::HEAD,
            &with(&[("range", "bytes=0-1")]),
            11,
            &HeaderMap::new(),
        );
        assert_eq!(head, RangeDecision::Full);
        assert_eq!(range("bytes=-5", 0), RangeDecision::Full);
    }

    // RFC 9110 §13.1.5: If-Range needs a strong ETag match or a strong Last-Modified match.
    #[test]
    fn if_range_serves_the_range_only_when_it_matches_rfc9110_13_1_5() {
        let t = |s: u64| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(s));
        let lm = t(1_700_000_000);
        let stored = with(&[
            ("etag", "\"v1\""),
            ("last-modified", &lm),
            ("date", &t(1_700_000_100)),
        ]);
        let ask = |if_range: &str| {
            let req = with(&[("range", "bytes=0-1"), ("if-range", if_range)]);
            range_for(&Method::GET, &req, 11, &stored).status().as_u16()
        };
        assert_eq!(ask("\"v1\""), 206);
        assert_eq!(ask("\"v2\""), 200);
        assert_eq!(ask("W/\"v1\""), 200);
        assert_eq!(ask(&lm), 206);
        assert_eq!(ask(&t(1_700_000_001)), 200);
        // Last-Modified within 60 s of Date is weak: no range.
        let weak = with(&[("last-modified", &lm), ("date", &t(1_700_000_030))]);
        let req = with(&[("range", "bytes=0-1"), ("if-range", &lm)]);
        assert_eq!(
            range_for(&Method::GET, &req, 11, &weak),
            RangeDecision::Full
        );
    }
}
