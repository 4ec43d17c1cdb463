//! Freshness lifetime (RFC 9111 §4.2.1), heuristic freshness (§4.2.2), and the cache-rule
//! options that can stand in for the origin's freshness information.

use std::time::{Duration, SystemTime};

use http::header::{DATE, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};

use super::directives::{ResponseDirectives, Source, Target};
use super::http_date;

/// ATS's default cap on heuristic freshness (`proxy.config.http.cache.heuristic_max_lifetime`).
pub const DEFAULT_HEURISTIC_MAX: Duration = Duration::from_secs(86_400);

/// Cache-rule settings that shape storage and freshness decisions. `Default` is plain
/// RFC 9111 behaviour for a CDN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Which field governs the response: `Cache-Control` alone, or the CDN target list.
    pub target: Target,
    /// Lifetime for responses without explicit freshness (no `s-maxage`, `max-age` or
    /// `Expires`) whose status is heuristically cacheable or which are `public`. It takes the
    /// place of heuristic freshness: a rule the operator wrote beats a guess.
    pub default_ttl: Option<Duration>,
    /// Lifetime that replaces the origin's: its response directives are ignored entirely.
    pub enforce_ttl: Option<Duration>,
    /// Cap on heuristic freshness.
    pub heuristic_max: Duration,
    /// How long past expiry a stale response may be served when the origin fails, without a
    /// `stale-if-error` directive (the "out-of-band contract" of RFC 9111 §4.2.4, like ATS's
    /// `max_stale_age`). `None`: only `stale-if-error` allows it.
    pub stale_if_error_default: Option<Duration>,
    /// Treat request `Cache-Control: no-cache` as absent. RFC 9111 §5.2.1.4 makes it a
    /// preference; ATS ignores it by default (`ignore_client_no_cache`) to stop reload storms.
    pub ignore_request_no_cache: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            target: Target::Cdn,
            default_ttl: None,
            enforce_ttl: None,
            heuristic_max: DEFAULT_HEURISTIC_MAX,
            stale_if_error_default: None,
            ignore_request_no_cache: false,
        }
    }
}

/// Status codes that are heuristically cacheable (RFC 9110 §15.1). 206 is left out because we
/// store only complete responses.
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether the response states its expiry itself: `s-maxage`, `max-age`, or (when
/// `Cache-Control` governs) an `Expires` field, even an invalid one (§5.3: invalid means
/// already expired).
pub fn has_explicit_expiration(resp_headers: &HeaderMap, directives: &ResponseDirectives) -> bool {
    directives.s_maxage.is_some()
        || directives.max_age.is_some()
        || (directives.source == Source::CacheControl && resp_headers.contains_key(EXPIRES))
}

/// The freshness lifetime (§4.2.1), first match wins:
/// `enforce_ttl`; `s-maxage` (we are shared); `max-age`; `Expires` − `Date` (invalid `Expires`
/// is already expired; a missing or invalid `Date` is `response_time`); `default_ttl`; the
/// heuristic. `None` when there is no freshness information at all.
///
/// The heuristic (§4.2.2) is 10% of `Date` − `Last-Modified`, capped at
/// `opts.heuristic_max`, and only for heuristically cacheable statuses or `public` responses.
pub fn freshness_lifetime(
    resp_headers: &HeaderMap,
    directives: &ResponseDirectives,
    status: StatusCode,
    response_time: SystemTime,
    opts: &StoreOptions,
) -> Option<Duration> {
    lifetime_from(
        &FreshnessDates::of(resp_headers, response_time),
        directives,
        status,
        opts,
    )
}

/// What [`freshness_lifetime`] reads from the date fields, worked out once: parsing HTTP-dates
/// is most of its cost, and a stored response's dates do not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshnessDates {
    /// `Expires` − `Date` (0 when `Expires` is invalid or earlier); `None` without `Expires`.
    expires_lifetime: Option<Duration>,
    /// `Date` − `Last-Modified` (0 when `Last-Modified` is later); `None` without a valid
    /// `Last-Modified`.
    since_modified: Option<Duration>,
}

impl FreshnessDates {
    /// A missing or invalid `Date` is `response_time`.
    pub fn of(resp_headers: &HeaderMap, response_time: SystemTime) -> FreshnessDates {
        let date = || http_date::header(resp_headers, &DATE).unwrap_or(response_time);
        let expires_lifetime = resp_headers.contains_key(EXPIRES).then(|| {
            http_date::header(resp_headers, &EXPIRES)
                .and_then(|expires| expires.duration_since(date()).ok())
                .unwrap_or(Duration::ZERO)
        });
        // A Last-Modified after Date is nonsense; it earns no heuristic lifetime.
        let since_modified = http_date::header(resp_headers, &LAST_MODIFIED)
            .map(|lm| date().duration_since(lm).unwrap_or(Duration::ZERO));
        FreshnessDates {
            expires_lifetime,
            since_modified,
        }
    }
}

/// [`freshness_lifetime`] from dates worked out beforehand.
pub fn lifetime_from(
    dates: &FreshnessDates,
    directives: &ResponseDirectives,
    status: StatusCode,
    opts: &StoreOptions,
) -> Option<Duration> {
    if let Some(ttl) = opts.enforce_ttl {
        return Some(ttl);
    }
    if let Some(s) = directives.s_maxage.or(directives.max_age) {
        return Some(Duration::from_secs(s));
    }
    if directives.source == Source::CacheControl
        && let Some(lifetime) = dates.expires_lifetime
    {
        return Some(lifetime);
    }
    if !(heuristically_cacheable(status) || directives.public) {
        return None;
    }
    if let Some(ttl) = opts.default_ttl {
        return Some(ttl);
    }
    dates
        .since_modified
        .map(|since| (since / 10).min(opts.heuristic_max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::directives::parse_response;
    use http::{HeaderName, HeaderValue};
    use std::time::UNIX_EPOCH;

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

    fn lifetime_with(h: &HeaderMap, status: u16, opts: &StoreOptions) -> Option<u64> {
        let d = parse_response(h, opts.target);
        let status = StatusCode::from_u16(status).unwrap();
        freshness_lifetime(h, &d, status, at(T), opts).map(|d| d.as_secs())
    }

    fn lifetime(pairs: &[(&str, &str)], status: u16) -> Option<u64> {
        lifetime_with(&with(pairs), status, &StoreOptions::default())
    }

    // §5.2.2.10: a shared cache uses s-maxage over max-age, longer or shorter.
    #[test]
    fn s_maxage_wins_over_max_age_in_a_shared_cache_rfc9111_5_2_2_10() {
        assert_eq!(
            lifetime(&[("cache-control", "max-age=3600, s-maxage=1")], 200),
            Some(1)
        );
        assert_eq!(
            lifetime(&[("cache-control", "max-age=1, s-maxage=3600")], 200),
            Some(3600)
        );
    }

    // §5.3: max-age beats Expires, whether Expires is past, future or invalid.
    #[test]
    fn max_age_overrides_expires_rfc9111_5_3() {
        let past = date(T - 10_000);
        assert_eq!(
            lifetime(
                &[("cache-control", "max-age=3600"), ("expires", &past)],
                200
            ),
            Some(3600)
        );
        assert_eq!(
            lifetime(&[("cache-control", "max-age=3600"), ("expires", "0")], 200),
            Some(3600)
        );
        let future = date(T + 10_000);
        assert_eq!(
            lifetime(&[("cache-control", "max-age=0"), ("expires", &future)], 200),
            Some(0)
        );
    }

    // §4.2.1: Expires − Date; Date missing → response_time; Expires before Date → 0.
    #[test]
    fn expires_minus_date_rfc9111_4_2_1() {
        let (d, e) = (date(T - 10), date(T + 20));
        assert_eq!(lifetime(&[("date", &d), ("expires", &e)], 200), Some(30));
        assert_eq!(lifetime(&[("expires", &e)], 200), Some(20));
        assert_eq!(lifetime(&[("date", "foo"), ("expires", &e)], 200), Some(20));
        let (d, e) = (date(T + 400), date(T + 300));
        assert_eq!(lifetime(&[("date", &d), ("expires", &e)], 200), Some(0));
    }

    // §5.3: an invalid Expires ("0", "UTC", ...) means already expired, and is explicit
    // expiration: no heuristic may apply (§4.2.2).
    #[test]
    fn invalid_expires_is_already_expired_rfc9111_5_3() {
        let lm = date(T - 100_000);
        for bad in [
            "0",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18-Aug-2050 02:01:18 GMT",
        ] {
            assert_eq!(
                lifetime(&[("expires", bad), ("last-modified", &lm)], 200),
                Some(0),
                "{bad}"
            );
        }
    }

    // §4.2.2: 10% of Date − Last-Modified, for heuristically cacheable statuses only.
    #[test]
    fn heuristic_freshness_only_for_heuristically_cacheable_statuses_rfc9111_4_2_2() {
        let (d, lm) = (date(T), date(T - 86_400));
        let h = [("date", d.as_str()), ("last-modified", lm.as_str())];
        for ok in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert_eq!(lifetime(&h, ok), Some(8640), "{ok}");
        }
        for no in [201, 202, 206, 302, 403, 500, 502, 503, 504, 599] {
            assert_eq!(lifetime(&h, no), None, "{no}");
        }
    }

    // §4.2.2 / §5.2.2.9: public makes any status eligible; the heuristic is capped.
    #[test]
    fn public_allows_heuristics_and_the_heuristic_is_capped_rfc9111_4_2_2() {
        let (d, lm) = (date(T), date(T - 86_400));
        let h = [
            ("date", d.as_str()),
            ("last-modified", lm.as_str()),
            ("cache-control", "public"),
        ];
        assert_eq!(lifetime(&h, 599), Some(8640));
        let lm_old = date(T - 100 * 86_400);
        assert_eq!(
            lifetime(&[("date", &d), ("last-modified", &lm_old)], 200),
            Some(86_400)
        );
        assert_eq!(lifetime(&[("date", &d)], 200), None);
    }

    // RFC 9213 §2.2: with a targeted field in charge, Expires is ignored.
    #[test]
    fn expires_is_ignored_under_cdn_cache_control_rfc9213_2_2() {
        let e = date(T + 10_000);
        let h = with(&[("cdn-cache-control", "public"), ("expires", &e)]);
        assert_eq!(lifetime_with(&h, 200, &StoreOptions::default()), None);
        let h = with(&[("cdn-cache-control", "max-age=5"), ("expires", &e)]);
        assert_eq!(lifetime_with(&h, 200, &StoreOptions::default()), Some(5));
    }

    #[test]
    fn cache_rule_default_and_enforced_ttls() {
        let rule = StoreOptions {
            default_ttl: Some(Duration::from_secs(60)),
            ..StoreOptions::default()
        };
        let lm = date(T - 86_400);
        // Replaces the heuristic, never explicit freshness, and not for a 500.
        assert_eq!(
            lifetime_with(&with(&[("last-modified", &lm)]), 200, &rule),
            Some(60)
        );
        assert_eq!(
            lifetime_with(&with(&[("cache-control", "max-age=5")]), 200, &rule),
            Some(5)
        );
        assert_eq!(lifetime_with(&HeaderMap::new(), 500, &rule), None);
        let enforce = StoreOptions {
            enforce_ttl: Some(Duration::from_secs(9)),
            ..StoreOptions::default()
        };
        assert_eq!(
            lifetime_with(&with(&[("cache-control", "max-age=5")]), 200, &enforce),
            Some(9)
        );
    }
}
