//! Validation: the conditional requests the cache sends (RFC 9111 §4.3.1), freshening a
//! stored response with a 304 (§4.3.4), and answering clients' conditional requests from a
//! stored response (§4.3.2, RFC 9110 §13).

use std::time::SystemTime;

use http::header::{
    AGE, CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_LOCATION,
    CONTENT_RANGE, DATE, ETAG, EXPIRES, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    IF_UNMODIFIED_SINCE, LAST_MODIFIED, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::directives::CDN_CACHE_CONTROL;
use super::http_date;

/// An entity tag (RFC 9110 §8.8.3). `opaque` is the tag as sent, quotes included, so that an
/// unquoted (invalid) tag can only ever equal the very same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntityTag<'a> {
    pub weak: bool,
    pub opaque: &'a [u8],
}

impl<'a> EntityTag<'a> {
    pub(crate) fn parse(v: &'a [u8]) -> Option<EntityTag<'a>> {
        let v = v.trim_ascii();
        let (weak, opaque) = match v.strip_prefix(b"W/") {
            Some(rest) => (true, rest),
            None => (false, v),
        };
        (!opaque.is_empty()).then_some(EntityTag { weak, opaque })
    }

    /// Strong comparison (§8.8.3.2): both strong and identical.
    pub(crate) fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison (§8.8.3.2): identical opaque tags.
    pub(crate) fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }
}

/// An `If-Match`/`If-None-Match` value: `*` or a list of entity tags.
enum TagList<'a> {
    Any,
    Tags(Vec<EntityTag<'a>>),
}

fn tag_list<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<TagList<'a>> {
    let mut tags = Vec::new();
    let mut present = false;
    for line in headers.get_all(name) {
        present = true;
        for member in split_list(line.as_bytes()) {
            if member == b"*" {
                return Some(TagList::Any);
            }
            tags.extend(EntityTag::parse(member));
        }
    }
    present.then_some(TagList::Tags(tags))
}

/// Splits a list on commas outside quoted-strings; members are trimmed, empties dropped.
fn split_list(s: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut start, mut in_quotes) = (0, false);
    for (i, &c) in s.iter().enumerate() {
        match c {
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => {
                out.push(s[start..i].trim_ascii());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim_ascii());
    out.retain(|m| !m.is_empty());
    out
}

/// The stored response's entity tag, if it has a readable one.
pub(crate) fn stored_etag(stored: &HeaderMap) -> Option<EntityTag<'_>> {
    stored
        .get(ETAG)
        .and_then(|v| EntityTag::parse(v.as_bytes()))
}

/// Preconditions for revalidating a stored response (§4.3.1): `If-None-Match` with its
/// `ETag` and `If-Modified-Since` with its `Last-Modified`, both when it has both
/// (RFC 9110 §13.1.3). An unquoted `ETag` is sent quoted, as the grammar requires.
pub fn revalidation_headers(stored_resp_headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(etag) = stored_resp_headers.get(ETAG) {
        let v = etag.as_bytes().trim_ascii();
        let quoted = v.ends_with(b"\"") && (v.starts_with(b"\"") || v.starts_with(b"W/\""));
        let value = if quoted || v.contains(&b'"') {
            HeaderValue::from_bytes(v).ok()
        } else {
            let mut q = Vec::with_capacity(v.len() + 2);
            q.push(b'"');
            q.extend_from_slice(v);
            q.push(b'"');
            HeaderValue::from_bytes(&q).ok()
        };
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            out.insert(IF_NONE_MATCH, value);
        }
    }
    let last_modified = stored_resp_headers.get(LAST_MODIFIED);
    if let Some(lm) = last_modified.filter(|v| http_date::parse(v.as_bytes()).is_some()) {
        out.insert(IF_MODIFIED_SINCE, lm.clone());
    }
    out
}

/// Fields a 304 does not update (§3.2): framing and hop-by-hop fields, the proxy's own
/// fields (§3.1), and `Content-Encoding`/`Content-Range`, which describe the stored body we
/// keep rather than anything a 304 can change.
fn not_updated(name: &HeaderName) -> bool {
    [
        CONTENT_LENGTH,
        CONTENT_ENCODING,
        CONTENT_RANGE,
        TRANSFER_ENCODING,
        CONNECTION,
        TE,
        TRAILER,
        UPGRADE,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
        || name.as_str() == "proxy-authentication-info"
}

/// Freshens `stored_headers` with a 304 received at `received_at` (§4.3.4). Returns `false`,
/// changing nothing, when the 304 does not select the stored response:
/// - with an `ETag`, it must equal the stored one (strong comparison for a strong tag, weak
///   for a weak one);
/// - else with a `Last-Modified`, it must equal the stored one;
/// - with neither, it is taken as answering our own conditional request (the RFC wants the
///   stored response to lack validators too; origins often omit them, and nginx and ATS
///   accept such 304s).
///
/// Selected: every field of the 304 replaces the stored one, except those in §3.2's
/// exceptions. `Age` and `Date` describe the new exchange: a stored `Age` the 304 lacks is
/// removed, and a missing `Date` becomes `received_at` (RFC 9110 §6.6.1). The caller then
/// sets the stored `request_time`/`response_time` to those of the 304's exchange.
pub fn merge_not_modified(
    stored_headers: &mut HeaderMap,
    not_modified_headers: &HeaderMap,
    received_at: SystemTime,
) -> bool {
    if !selects(stored_headers, not_modified_headers) {
        return false;
    }
    for name in not_modified_headers.keys() {
        if not_updated(name) {
            continue;
        }
        stored_headers.remove(name);
        for v in not_modified_headers.get_all(name) {
            stored_headers.append(name.clone(), v.clone());
        }
    }
    if !not_modified_headers.contains_key(AGE) {
        stored_headers.remove(AGE);
    }
    if !not_modified_headers.contains_key(DATE) {
        match http_date::format(received_at) {
            Some(d) => stored_headers.insert(DATE, d),
            None => stored_headers.remove(DATE),
        };
    }
    true
}

fn selects(stored: &HeaderMap, nm: &HeaderMap) -> bool {
    if let Some(new) = nm.get(ETAG) {
        let (Some(new), Some(old)) = (EntityTag::parse(new.as_bytes()), stored_etag(stored)) else {
            return false;
        };
        return if new.weak {
            new.weak_eq(&old)
        } else {
            new.strong_eq(&old)
        };
    }
    if let Some(new) = nm.get(LAST_MODIFIED) {
        let new = http_date::parse(new.as_bytes());
        let old = http_date::header(stored, &LAST_MODIFIED);
        return new.is_some() && new == old;
    }
    true
}

/// Evaluates a client's preconditions against the stored response it would be served
/// (RFC 9110 §13.2.2). `Some(304)` or `Some(412)` answers the request; `None` means send the
/// stored response in full.
///
/// Order: `If-Match` (strong comparison), else `If-Unmodified-Since`, failing with 412;
/// then `If-None-Match` (weak comparison) with 304 for GET/HEAD, else `If-Modified-Since`
/// (GET/HEAD only, against `Last-Modified` or, lacking it, `Date` as RFC 9111 §4.3.2 says).
/// RFC 9111 §4.3.2 calls `If-Match`/`If-Unmodified-Since` "not applicable to a cache"; we
/// evaluate them anyway against the response we would serve, as nginx does, so that a client
/// never gets a 200 its precondition should have refused. Preconditions are ignored unless
/// the stored status is 2xx (RFC 9110 §13.2.1).
pub fn evaluate_client_conditional(
    req_method: &Method,
    req_headers: &HeaderMap,
    stored_status: StatusCode,
    stored_headers: &HeaderMap,
) -> Option<StatusCode> {
    if !stored_status.is_success() {
        return None;
    }
    // Most requests carry no precondition: then the stored validators are not parsed.
    if ![
        &IF_MATCH,
        &IF_NONE_MATCH,
        &IF_MODIFIED_SINCE,
        &IF_UNMODIFIED_SINCE,
    ]
    .iter()
    .any(|name| req_headers.contains_key(*name))
    {
        return None;
    }
    let etag = stored_etag(stored_headers);
    let last_modified = http_date::header(stored_headers, &LAST_MODIFIED);
    let get_or_head = *req_method == Method::GET || *req_method == Method::HEAD;

    let failed = match tag_list(req_headers, &IF_MATCH) {
        Some(TagList::Any) => false,
        Some(TagList::Tags(tags)) => !etag.is_some_and(|e| tags.iter().any(|t| t.strong_eq(&e))),
        None => matches!(
            (single_date(req_headers, &IF_UNMODIFIED_SINCE), last_modified),
            (Some(since), Some(lm)) if lm > since
        ),
    };
    if failed {
        return Some(StatusCode::PRECONDITION_FAILED);
    }

    if let Some(list) = tag_list(req_headers, &IF_NONE_MATCH) {
        let matched = match list {
            TagList::Any => true,
            TagList::Tags(tags) => etag.is_some_and(|e| tags.iter().any(|t| t.weak_eq(&e))),
        };
        return matched.then_some(if get_or_head {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::PRECONDITION_FAILED
        });
    }

    let modified = last_modified.or_else(|| http_date::header(stored_headers, &DATE));
    let not_modified = matches!(
        (single_date(req_headers, &IF_MODIFIED_SINCE), modified),
        (Some(since), Some(modified)) if modified <= since
    );
    (get_or_head && not_modified).then_some(StatusCode::NOT_MODIFIED)
}

/// A date precondition: ignored when repeated or not an HTTP-date (RFC 9110 §13.1.3).
fn single_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    http_date::parse(first.as_bytes())
}

/// The stored fields a 304 to a client carries (RFC 9110 §15.4.5): `Cache-Control`,
/// `Content-Location`, `Date`, `ETag`, `Expires`, `Vary`, plus `CDN-Cache-Control` for a
/// downstream CDN and `Last-Modified` when there is no `ETag` (it guides cache updates).
pub fn not_modified_headers(stored_headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let mut names = vec![
        CACHE_CONTROL,
        CDN_CACHE_CONTROL.clone(),
        CONTENT_LOCATION,
        DATE,
        ETAG,
        EXPIRES,
        VARY,
    ];
    if !stored_headers.contains_key(ETAG) {
        names.push(LAST_MODIFIED);
    }
    for name in names {
        for v in stored_headers.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const T: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

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

    fn eval(method: Method, req: &[(&str, &str)], stored: &[(&str, &str)]) -> Option<u16> {
        evaluate_client_conditional(&method, &with(req), StatusCode::OK, &with(stored))
            .map(|s| s.as_u16())
    }

    // RFC 9110 §8.8.3.2: the comparison table.
    #[test]
    fn strong_and_weak_comparison_rfc9110_8_8_3_2() {
        let t = |s: &'static str| EntityTag::parse(s.as_bytes()).unwrap();
        assert!(!t("W/\"1\"").strong_eq(&t("W/\"1\"")));
        assert!(t("W/\"1\"").weak_eq(&t("W/\"1\"")));
        assert!(!t("W/\"1\"").weak_eq(&t("W/\"2\"")));
        assert!(!t("W/\"1\"").strong_eq(&t("\"1\"")));
        assert!(t("W/\"1\"").weak_eq(&t("\"1\"")));
        assert!(t("\"1\"").strong_eq(&t("\"1\"")));
    }

    // RFC 9111 §4.3.1: validators from the stored response.
    #[test]
    fn revalidation_sends_etag_and_last_modified_rfc9111_4_3_1() {
        let lm = date(T - 3000);
        let h = revalidation_headers(&with(&[("etag", "W/\"abc\""), ("last-modified", &lm)]));
        assert_eq!(h[IF_NONE_MATCH], "W/\"abc\"");
        assert_eq!(h[IF_MODIFIED_SINCE], lm.as_str());
        assert_eq!(
            revalidation_headers(&with(&[("etag", "abcdef")]))[IF_NONE_MATCH],
            "\"abcdef\""
        );
        assert!(revalidation_headers(&with(&[("last-modified", "junk")])).is_empty());
    }

    // RFC 9111 §4.3.2 / RFC 9110 §13.1.2: If-None-Match uses weak comparison, any member.
    #[test]
    fn if_none_match_answers_304_on_weak_match_rfc9110_13_1_2() {
        let stored = [("etag", "\"abcdef\"")];
        assert_eq!(
            eval(Method::GET, &[("if-none-match", "\"abcdef\"")], &stored),
            Some(304)
        );
        assert_eq!(
            eval(
                Method::GET,
                &[("if-none-match", "\"1\", W/\"abcdef\", \"2\"")],
                &stored
            ),
            Some(304)
        );
        assert_eq!(
            eval(
                Method::HEAD,
                &[("if-none-match", "\"1\""), ("if-none-match", "\"abcdef\"")],
                &stored
            ),
            Some(304)
        );
        assert_eq!(
            eval(Method::GET, &[("if-none-match", "\"other\"")], &stored),
            None
        );
        assert_eq!(
            eval(Method::GET, &[("if-none-match", "*")], &stored),
            Some(304)
        );
        assert_eq!(
            eval(
                Method::GET,
                &[("if-none-match", "W/\"a,b\"")],
                &[("etag", "\"a,b\"")]
            ),
            Some(304)
        );
        assert_eq!(eval(Method::GET, &[("if-none-match", "\"x\"")], &[]), None);
    }

    // RFC 9110 §13.2.2: If-None-Match takes precedence over If-Modified-Since.
    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since_rfc9110_13_2_2() {
        let lm = date(T - 5000);
        let stored = [("etag", "\"abcdef\""), ("last-modified", lm.as_str())];
        let later = date(T - 1);
        assert_eq!(
            eval(
                Method::GET,
                &[("if-none-match", "\"nope\""), ("if-modified-since", &later)],
                &stored
            ),
            None
        );
        assert_eq!(
            eval(
                Method::GET,
                &[
                    ("if-none-match", "\"abcdef\""),
                    ("if-modified-since", &date(T - 9000))
                ],
                &stored
            ),
            Some(304)
        );
    }

    // RFC 9110 §13.1.3 / RFC 9111 §4.3.2: If-Modified-Since against Last-Modified, or Date.
    #[test]
    fn if_modified_since_against_last_modified_or_date_rfc9111_4_3_2() {
        let lm = date(T - 3000);
        let stored = [("last-modified", lm.as_str()), ("date", &date(T))];
        assert_eq!(
            eval(Method::GET, &[("if-modified-since", &lm)], &stored),
            Some(304)
        );
        assert_eq!(
            eval(
                Method::GET,
                &[("if-modified-since", &date(T - 2000))],
                &stored
            ),
            Some(304)
        );
        assert_eq!(
            eval(
                Method::GET,
                &[("if-modified-since", &date(T - 4000))],
                &stored
            ),
            None
        );
        let rfc850 = "Tuesday, 14-Nov-23 21:23:20 GMT"; // T - 3000
        assert_eq!(
            eval(Method::GET, &[("if-modified-since", rfc850)], &stored),
            Some(304)
        );
        let now = date(T);
        let date_only = [("date", now.as_str())];
        assert_eq!(
            eval(
                Method::GET,
                &[("if-modified-since", &date(T + 1))],
                &date_only
            ),
            Some(304)
        );
        assert_eq!(
            eval(
                Method::GET,
                &[("if-modified-since", &date(T - 1))],
                &date_only
            ),
            None
        );
        assert_eq!(
            eval(Method::POST, &[("if-modified-since", &lm)], &stored),
            None
        );
        assert_eq!(
            eval(Method::GET, &[("if-modified-since", "yesterday")], &stored),
            None
        );
    }

    // RFC 9110 §13.1.1 / §13.1.4: If-Match (strong) and If-Unmodified-Since give 412.
    #[test]
    fn if_match_and_if_unmodified_since_fail_with_412_rfc9110_13_2_2() {
        let lm = date(T - 3000);
        let stored = [("etag", "\"a\""), ("last-modified", lm.as_str())];
        assert_eq!(eval(Method::GET, &[("if-match", "\"a\"")], &stored), None);
        assert_eq!(
            eval(Method::GET, &[("if-match", "W/\"a\"")], &stored),
            Some(412)
        );
        assert_eq!(eval(Method::GET, &[("if-match", "*")], &stored), None);
        assert_eq!(
            eval(
                Method::GET,
                &[("if-unmodified-since", &date(T - 4000))],
                &stored
            ),
            Some(412)
        );
        assert_eq!(
            eval(
                Method::GET,
                &[("if-unmodified-since", &date(T - 100))],
                &stored
            ),
            None
        );
        // Not for a non-2xx stored response (§13.2.1).
        let s = evaluate_client_conditional(
            &Method::GET,
            &with(&[("if-match", "\"zz\"")]),
            StatusCode::NOT_FOUND,
            &with(&stored),
        );
        assert_eq!(s, None);
    }

    // RFC 9111 §4.3.4 / §3.2: a selecting 304 updates every field but the excepted ones.
    #[test]
    fn a_304_updates_stored_fields_except_content_length_rfc9111_4_3_4() {
        let mut stored = with(&[
            ("etag", "\"e1\""),
            ("cache-control", "max-age=1"),
            ("content-type", "text/plain"),
            ("content-length", "10"),
            ("set-cookie", "a=b"),
            ("x-kept", "1"),
            ("age", "50"),
            ("date", &date(T - 100)),
        ]);
        let nm = with(&[
            ("etag", "\"e1\""),
            ("cache-control", "max-age=3600"),
            ("content-type", "text/plain;charset=utf-8"),
            ("content-length", "0"),
            ("set-cookie", "a=c"),
        ]);
        assert!(merge_not_modified(&mut stored, &nm, at(T)));
        assert_eq!(stored[CACHE_CONTROL], "max-age=3600");
        assert_eq!(stored["content-type"], "text/plain;charset=utf-8");
        assert_eq!(stored["set-cookie"], "a=c");
        assert_eq!(stored[CONTENT_LENGTH], "10");
        assert_eq!(stored["x-kept"], "1");
        assert!(!stored.contains_key(AGE));
        assert_eq!(stored[DATE], date(T).as_str());
    }

    // RFC 9111 §4.3.4: a 304 whose validator does not match selects nothing.
    #[test]
    fn a_304_with_another_validator_updates_nothing_rfc9111_4_3_4() {
        let original = with(&[("etag", "\"e1\""), ("x", "1")]);
        let mut stored = original.clone();
        assert!(!merge_not_modified(
            &mut stored,
            &with(&[("etag", "\"e2\""), ("x", "2")]),
            at(T)
        ));
        assert_eq!(stored, original);
        let mut weak = with(&[("etag", "W/\"e1\"")]);
        assert!(!merge_not_modified(
            &mut weak.clone(),
            &with(&[("etag", "\"e1\"")]),
            at(T)
        ));
        assert!(merge_not_modified(
            &mut weak,
            &with(&[("etag", "W/\"e1\"")]),
            at(T)
        ));
        let lm = date(T - 10);
        let mut by_date = with(&[("last-modified", &lm)]);
        assert!(!merge_not_modified(
            &mut by_date,
            &with(&[("last-modified", &date(T - 5))]),
            at(T)
        ));
        assert!(merge_not_modified(
            &mut by_date,
            &with(&[("last-modified", &lm), ("x", "3")]),
            at(T)
        ));
        assert_eq!(by_date["x"], "3");
    }

    // RFC 9110 §15.4.5: the fields a 304 carries.
    #[test]
    fn not_modified_carries_the_listed_fields_rfc9110_15_4_5() {
        let stored = with(&[
            ("etag", "\"a\""),
            ("cache-control", "max-age=60"),
            ("vary", "accept-encoding"),
            ("content-type", "text/html"),
            ("content-length", "123"),
            ("last-modified", &date(T)),
        ]);
        let h = not_modified_headers(&stored);
        assert_eq!(h[ETAG], "\"a\"");
        assert_eq!(h[VARY], "accept-encoding");
        assert!(h.contains_key(CACHE_CONTROL));
        assert!(!h.contains_key("content-type") && !h.contains_key(CONTENT_LENGTH));
        assert!(!h.contains_key(LAST_MODIFIED));
        let h = not_modified_headers(&with(&[("last-modified", &date(T))]));
        assert!(h.contains_key(LAST_MODIFIED));
    }
}
