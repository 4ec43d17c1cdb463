//! Whether a response may be stored by a shared cache (RFC 9111 §3, §3.5).

use http::header::{AUTHORIZATION, CONTENT_ENCODING, ETAG, LAST_MODIFIED};
use http::{HeaderMap, HeaderName, Method, StatusCode};

use super::directives::{ResponseDirectives, parse_request, parse_response};
use super::freshness::{StoreOptions, has_explicit_expiration, heuristically_cacheable};
use super::vary::{self, VaryFields};

/// A response that may be stored, once `strip_fields` are removed from it: the fields named by
/// `private="..."` (§5.2.2.7) and `no-cache="..."` (§5.2.2.4, §3.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Storable {
    pub strip_fields: Vec<HeaderName>,
}

/// Why a response is not stored. `Display` is the token for a `Cache-Status` `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotStorable {
    /// Only GET responses are stored.
    #[error("method")]
    Method,
    /// 1xx, 206 (we store complete responses only) or 304.
    #[error("status")]
    Status,
    /// The request said `no-store` (§5.2.1.5).
    #[error("request-no-store")]
    RequestNoStore,
    /// The response said `no-store` (§5.2.2.5).
    #[error("no-store")]
    NoStore,
    /// `private` without a field list: not for a shared cache (§5.2.2.7).
    #[error("private")]
    Private,
    /// The request had `Authorization` and the response did not allow sharing it (§3.5).
    #[error("authorization")]
    Authorization,
    /// `must-understand` on a status code we do not implement (§5.2.2.3).
    #[error("must-understand")]
    MustUnderstand,
    /// `Vary: *` never matches a later request (§4.1).
    #[error("vary-star")]
    VaryStar,
    /// Varies on `Accept-Encoding` with a content coding the secondary key does not tell
    /// apart (see [`vary::secondary_key`]).
    #[error("content-encoding")]
    ContentEncoding,
    /// Nothing says how long it stays fresh and it cannot usefully be revalidated.
    #[error("no-freshness")]
    NoFreshness,
}

impl NotStorable {
    pub fn as_str(&self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::Status => "status",
            NotStorable::RequestNoStore => "request-no-store",
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::MustUnderstand => "must-understand",
            NotStorable::VaryStar => "vary-star",
            NotStorable::ContentEncoding => "content-encoding",
            NotStorable::NoFreshness => "no-freshness",
        }
    }
}

/// Decides whether a response may be stored (§3):
///
/// - GET only (HEAD responses are not stored); final statuses except 206 and 304.
/// - Not `no-store` on the request or the response; `must-understand` with a status we
///   understand overrides the response's `no-store` (§5.2.2.3).
/// - Not `private`; `private="..."` and `no-cache="..."` fields are stripped.
/// - With `Authorization` on the request, only with `public`, `must-revalidate` or
///   `s-maxage` (§3.5).
/// - Something to go on: explicit expiration; heuristic freshness (cacheable status or
///   `public`, with `Last-Modified`); a cache rule's default TTL; or, for responses that are
///   always revalidated (`no-cache`, `must-revalidate`, `proxy-revalidate`, `public`), a
///   validator to revalidate with.
///
/// `opts.enforce_ttl` ignores the origin's response directives, but not the request's, the
/// method, the status or `Vary: *`.
pub fn storable(
    req_method: &Method,
    req_headers: &HeaderMap,
    status: StatusCode,
    resp_headers: &HeaderMap,
    opts: &StoreOptions,
) -> Result<Storable, NotStorable> {
    if req_method != Method::GET {
        return Err(NotStorable::Method);
    }
    let code = status.as_u16();
    if !(200..=599).contains(&code) || code == 206 || code == 304 {
        return Err(NotStorable::Status);
    }
    if parse_request(req_headers).no_store {
        return Err(NotStorable::RequestNoStore);
    }
    let fields = vary::vary_fields(resp_headers);
    if fields == VaryFields::Star {
        return Err(NotStorable::VaryStar);
    }
    if varies_on_unkeyed_coding(&fields, resp_headers) {
        return Err(NotStorable::ContentEncoding);
    }
    if opts.enforce_ttl.is_some() {
        return Ok(Storable::default());
    }

    let d = parse_response(resp_headers, opts.target);
    if d.must_understand {
        if !understood(status) {
            return Err(NotStorable::MustUnderstand);
        }
    } else if d.no_store {
        return Err(NotStorable::NoStore);
    }
    if d.private.is_all() {
        return Err(NotStorable::Private);
    }
    if req_headers.contains_key(AUTHORIZATION)
        && !(d.public || d.must_revalidate || d.s_maxage.is_some())
    {
        return Err(NotStorable::Authorization);
    }
    if !has_something_to_go_on(resp_headers, &d, status, opts) {
        return Err(NotStorable::NoFreshness);
    }
    Ok(Storable {
        strip_fields: d.uncacheable_fields(),
    })
}

fn has_something_to_go_on(
    resp_headers: &HeaderMap,
    d: &ResponseDirectives,
    status: StatusCode,
    opts: &StoreOptions,
) -> bool {
    if has_explicit_expiration(resp_headers, d) {
        return true;
    }
    let has_last_modified = resp_headers.contains_key(LAST_MODIFIED);
    let eligible = heuristically_cacheable(status) || d.public;
    if eligible && (has_last_modified || opts.default_ttl.is_some()) {
        return true;
    }
    let always_revalidated =
        d.no_cache.is_all() || d.must_revalidate || d.proxy_revalidate || d.public;
    always_revalidated && (has_last_modified || resp_headers.contains_key(ETAG))
}

/// The status codes whose caching requirements we implement (RFC 9110 §15), for
/// `must-understand`.
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

fn varies_on_unkeyed_coding(fields: &VaryFields, resp_headers: &HeaderMap) -> bool {
    let VaryFields::Fields(names) = fields else {
        return false;
    };
    if !names.contains(&http::header::ACCEPT_ENCODING) {
        return false;
    }
    resp_headers.get_all(CONTENT_ENCODING).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .map(|c| c.trim_ascii())
            .filter(|c| !c.is_empty())
            .any(|c| !vary::is_keyed_coding(c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::Duration;

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

    fn check(
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
    ) -> Result<Storable, NotStorable> {
        storable(
            &Method::GET,
            &with(req),
            StatusCode::from_u16(status).unwrap(),
            &with(resp),
            &StoreOptions::default(),
        )
    }

    const FRESH: (&str, &str) = ("cache-control", "max-age=60");

    // §3: only methods whose responses we understand as cacheable; we store GET.
    #[test]
    fn only_get_responses_are_stored_rfc9111_3() {
        for m in [Method::HEAD, Method::POST, Method::PUT] {
            let r = storable(
                &m,
                &HeaderMap::new(),
                StatusCode::OK,
                &with(&[FRESH]),
                &StoreOptions::default(),
            );
            assert_eq!(r, Err(NotStorable::Method), "{m}");
        }
        assert!(check(&[], 200, &[FRESH]).is_ok());
    }

    // §3: any final status with explicit freshness, except 206 (our choice) and 304.
    #[test]
    fn final_statuses_with_explicit_freshness_are_stored_rfc9111_3() {
        for ok in [200, 203, 204, 299, 302, 307, 400, 404, 499, 500, 503, 599] {
            assert!(check(&[], ok, &[FRESH]).is_ok(), "{ok}");
        }
        for no in [206, 304] {
            assert_eq!(check(&[], no, &[FRESH]), Err(NotStorable::Status), "{no}");
        }
    }

    // §5.2.2.5 and §5.2.1.5: no-store on either side, any case.
    #[test]
    fn no_store_on_request_or_response_is_not_stored_rfc9111_5_2_2_5() {
        let r = [
            ("cache-control", "max-age=10000, No-StOrE"),
            ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
        ];
        assert_eq!(check(&[], 200, &r), Err(NotStorable::NoStore));
        assert_eq!(
            check(&[("cache-control", "no-store")], 200, &[FRESH]),
            Err(NotStorable::RequestNoStore)
        );
    }

    // §5.2.2.3: must-understand overrides no-store for understood statuses only.
    #[test]
    fn must_understand_overrides_no_store_for_known_statuses_rfc9111_5_2_2_3() {
        let r = [("cache-control", "must-understand, no-store, max-age=60")];
        assert!(check(&[], 200, &r).is_ok());
        assert_eq!(check(&[], 299, &r), Err(NotStorable::MustUnderstand));
    }

    // §5.2.2.7: private is not for a shared cache; private="f" strips f.
    #[test]
    fn private_is_not_stored_but_private_fields_are_stripped_rfc9111_5_2_2_7() {
        assert_eq!(
            check(&[], 200, &[("cache-control", "private, max-age=3600")]),
            Err(NotStorable::Private)
        );
        let r = check(
            &[],
            200,
            &[(
                "cache-control",
                "private=\"set-cookie\", no-cache=\"x-a\", max-age=60",
            )],
        );
        let strip = r.unwrap().strip_fields;
        assert!(strip.contains(&HeaderName::from_static("set-cookie")));
        assert!(strip.contains(&HeaderName::from_static("x-a")));
    }

    // §3.5: Authorization needs public, must-revalidate or s-maxage.
    #[test]
    fn authorized_requests_need_explicit_permission_rfc9111_3_5() {
        let auth = [("authorization", "FOO")];
        let exp = ("expires", "Thu, 01 Jan 2099 00:00:00 GMT");
        assert_eq!(check(&auth, 200, &[exp]), Err(NotStorable::Authorization));
        assert_eq!(
            check(
                &auth,
                200,
                &[("cache-control", "max-age=3600, proxy-revalidate")]
            ),
            Err(NotStorable::Authorization)
        );
        for cc in [
            "max-age=3600, public",
            "max-age=3600, must-revalidate",
            "s-maxage=3600",
        ] {
            assert!(check(&auth, 200, &[("cache-control", cc)]).is_ok(), "{cc}");
        }
    }

    // §4.1: Vary: * never matches, so storing it is pointless.
    #[test]
    fn vary_star_is_not_stored_rfc9111_4_1() {
        assert_eq!(
            check(&[], 200, &[FRESH, ("vary", "Foo, *")]),
            Err(NotStorable::VaryStar)
        );
    }

    #[test]
    fn vary_accept_encoding_with_an_unkeyed_coding_is_not_stored() {
        let r = [
            FRESH,
            ("vary", "accept-encoding"),
            ("content-encoding", "deflate"),
        ];
        assert_eq!(check(&[], 200, &r), Err(NotStorable::ContentEncoding));
        let r = [
            FRESH,
            ("vary", "accept-encoding"),
            ("content-encoding", "br"),
        ];
        assert!(check(&[], 200, &r).is_ok());
    }

    // §3 / §4.2.2: without freshness, storable only with something to go on.
    #[test]
    fn responses_without_freshness_information_rfc9111_3() {
        let lm = ("last-modified", "Mon, 01 Jan 2001 00:00:00 GMT");
        assert_eq!(check(&[], 200, &[]), Err(NotStorable::NoFreshness));
        assert!(check(&[], 200, &[lm]).is_ok());
        assert_eq!(check(&[], 302, &[lm]), Err(NotStorable::NoFreshness));
        assert!(check(&[], 302, &[lm, ("cache-control", "public")]).is_ok());
        // no-cache with a validator: stored, always revalidated (§5.2.2.4).
        assert!(
            check(
                &[],
                200,
                &[("cache-control", "no-cache"), ("etag", "\"a\"")]
            )
            .is_ok()
        );
        assert_eq!(
            check(&[], 200, &[("cache-control", "no-cache")]),
            Err(NotStorable::NoFreshness)
        );
    }

    #[test]
    fn cache_rules_can_supply_or_enforce_a_ttl() {
        let default = StoreOptions {
            default_ttl: Some(Duration::from_secs(60)),
            ..StoreOptions::default()
        };
        let go = |opts: &StoreOptions, status: u16, resp: &[(&str, &str)]| {
            storable(
                &Method::GET,
                &HeaderMap::new(),
                StatusCode::from_u16(status).unwrap(),
                &with(resp),
                opts,
            )
        };
        assert!(go(&default, 200, &[]).is_ok());
        assert_eq!(go(&default, 500, &[]), Err(NotStorable::NoFreshness));
        assert_eq!(
            go(&default, 200, &[("cache-control", "no-store")]),
            Err(NotStorable::NoStore)
        );
        let enforce = StoreOptions {
            enforce_ttl: Some(Duration::from_secs(60)),
            ..StoreOptions::default()
        };
        assert!(go(&enforce, 200, &[("cache-control", "no-store, private")]).is_ok());
        assert_eq!(go(&enforce, 206, &[]), Err(NotStorable::Status));
    }

    // RFC 9213 §2.2: CDN-Cache-Control governs storage too.
    #[test]
    fn cdn_cache_control_governs_storage_rfc9213_2_2() {
        assert!(
            check(
                &[],
                200,
                &[
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "max-age=10000")
                ]
            )
            .is_ok()
        );
        let r = [
            ("cache-control", "max-age=10000"),
            ("cdn-cache-control", "no-store"),
        ];
        assert_eq!(check(&[], 200, &r), Err(NotStorable::NoStore));
        let r = [
            ("cache-control", "max-age=10000"),
            ("cdn-cache-control", "private"),
        ];
        assert_eq!(check(&[], 200, &r), Err(NotStorable::Private));
        assert_eq!(
            NotStorable::NoFreshness.to_string(),
            NotStorable::NoFreshness.as_str()
        );
    }
}
