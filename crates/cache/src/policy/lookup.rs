//! Whether a stored response can answer a request (RFC 9111 §4.2, §4.2.4, §5.2.1) and how
//! stale it may be served (RFC 5861).
//!
//! Choices where the RFCs leave room:
//! - `s-maxage` implies `proxy-revalidate` (§5.2.2.10), so it forbids serving stale on a
//!   client's `max-stale` or `stale-if-error`, or on the operator's default; an explicit
//!   `stale-while-revalidate`/`stale-if-error` in the same response still applies (the origin
//!   said so, and CDNs commonly pair them). `must-revalidate`, `proxy-revalidate` and bare
//!   `no-cache` forbid serving stale in every case (§5.2.2.2).
//! - A response revalidated only because the request asked (`no-cache`, `max-age`,
//!   `min-fresh`) is still fresh, so it may be served if the origin fails.
//! - A soft-purged response is stale from the purge on, but keeps its `stale-*` windows.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, StatusCode};

use super::age::{age_at, initial_age};
use super::directives::{MaxStale, ResponseDirectives, Target, parse_request, parse_response};
use super::freshness::{FreshnessDates, StoreOptions, lifetime_from};

/// A stored response, as the lookup needs it.
#[derive(Debug, Clone, Copy)]
pub struct StoredView<'a> {
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
    /// When the request that fetched (or last revalidated) it was sent.
    pub request_time: SystemTime,
    /// When that response was received.
    pub response_time: SystemTime,
    /// When it was soft-purged or invalidated, if it was.
    pub invalidated_at: Option<SystemTime>,
}

/// What to do with a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve it without contacting the origin.
    Fresh,
    /// Serve it although stale: the request's `max-stale` accepts it (§4.2.4).
    StaleAllowed,
    /// Revalidate (or refetch) before serving. While revalidating in the background the stale
    /// response may be served if `can_serve_while_revalidate`; if the origin answers 5xx or
    /// cannot be reached it may be served if `can_serve_if_error`.
    Stale {
        can_serve_while_revalidate: bool,
        can_serve_if_error: bool,
    },
    /// `only-if-cached` and nothing servable: answer 504 (§5.2.1.7).
    GatewayTimeout,
    /// The method is not answered from the cache.
    Bypass,
}

/// The decision and the numbers behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    pub decision: Decision,
    /// Current age (§4.2.3); the `Age` header is `age.as_secs()` (§5.1).
    pub age: Duration,
    /// Freshness lifetime minus age, in seconds: negative when stale (for `Cache-Status`).
    pub ttl: i64,
}

impl Lookup {
    /// The `Age` field value to send (§5.1: integer seconds).
    pub fn age_secs(&self) -> u64 {
        self.age.as_secs()
    }
}

/// What a lookup reads from a stored response's head, parsed once: the directives for each
/// [`Target`], the dates, the age on arrival. Everything here is fixed while the response is
/// stored; only `now` (and a purge) moves a lookup's outcome.
#[derive(Debug, Clone)]
pub struct StoredFacts {
    pub status: StatusCode,
    pub response_time: SystemTime,
    /// `corrected_initial_age` (§4.2.3).
    pub initial_age: std::time::Duration,
    pub dates: FreshnessDates,
    cdn: ResponseDirectives,
    cache_control: ResponseDirectives,
}

impl StoredFacts {
    pub fn of(
        status: StatusCode,
        headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> StoredFacts {
        StoredFacts {
            status,
            response_time,
            initial_age: initial_age(headers, request_time, response_time),
            dates: FreshnessDates::of(headers, response_time),
            cdn: parse_response(headers, Target::Cdn),
            cache_control: parse_response(headers, Target::CacheControl),
        }
    }

    /// The response directives [`parse_response`] gives for `target`.
    pub fn directives(&self, target: Target) -> &ResponseDirectives {
        match target {
            Target::Cdn => &self.cdn,
            Target::CacheControl => &self.cache_control,
        }
    }
}

/// Decides how a stored response may answer a GET or HEAD request at `now`.
pub fn lookup_decision(
    req_method: &Method,
    req_headers: &HeaderMap,
    stored: &StoredView<'_>,
    now: SystemTime,
    opts: &StoreOptions,
) -> Lookup {
    let facts = StoredFacts::of(
        stored.status,
        stored.headers,
        stored.request_time,
        stored.response_time,
    );
    lookup_with_facts(
        req_method,
        req_headers,
        &facts,
        stored.invalidated_at,
        now,
        opts,
    )
}

/// [`lookup_decision`] from a stored response's [`StoredFacts`] (worked out when it was
/// stored) and when it was purged, if it was.
pub fn lookup_with_facts(
    req_method: &Method,
    req_headers: &HeaderMap,
    stored: &StoredFacts,
    invalidated_at: Option<SystemTime>,
    now: SystemTime,
    opts: &StoreOptions,
) -> Lookup {
    let age = age_at(stored.initial_age, stored.response_time, now);
    let no_directives = ResponseDirectives::default();
    let resp = if opts.enforce_ttl.is_some() {
        &no_directives
    } else {
        stored.directives(opts.target)
    };
    let lifetime =
        lifetime_from(&stored.dates, resp, stored.status, opts).unwrap_or(Duration::ZERO);
    // Staleness in seconds, negative while fresh. A purge ends freshness at the purge.
    let mut staleness = secs(age) - secs(lifetime);
    if let Some(purged) = invalidated_at {
        staleness = staleness.max(signed_since(now, purged));
    }
    let ttl = -staleness;
    let lookup = |decision| Lookup { decision, age, ttl };

    if *req_method != Method::GET && *req_method != Method::HEAD {
        return lookup(Decision::Bypass);
    }
    let req = parse_request(req_headers);
    let fresh = staleness < 0;
    let age_s = secs(age);

    // The client's own limits (§5.2.1.1, §5.2.1.3, §5.2.1.4).
    let too_old_for_client = req.max_age.is_some_and(|m| age_s > m as i64);
    let not_fresh_enough = req
        .min_fresh
        .is_some_and(|m| fresh && -staleness < m as i64);
    let client_validates =
        (req.no_cache && !opts.ignore_request_no_cache) || too_old_for_client || not_fresh_enough;
    let origin_validates = resp.no_cache.is_all();

    if fresh && !client_validates && !origin_validates {
        return lookup(Decision::Fresh);
    }

    let strictly_forbidden = resp.forbids_stale();
    let smaxage_forbids = strictly_forbidden || resp.s_maxage.is_some();
    let stale_by = staleness.max(0) as u64;
    let within = |window: Option<u64>| window.is_some_and(|w| stale_by <= w);

    if !fresh
        && !smaxage_forbids
        && !client_validates
        && req.min_fresh.is_none()
        && match req.max_stale {
            Some(MaxStale::Any) => true,
            Some(MaxStale::Seconds(n)) => stale_by <= n,
            None => false,
        }
    {
        return lookup(Decision::StaleAllowed);
    }

    let can_serve_while_revalidate =
        !fresh && !strictly_forbidden && !client_validates && within(resp.stale_while_revalidate);
    let can_serve_if_error = !origin_validates
        && (fresh
            || (!strictly_forbidden
                && (within(resp.stale_if_error)
                    || (!smaxage_forbids
                        && (within(req.stale_if_error)
                            || within(opts.stale_if_error_default.map(|d| d.as_secs())))))));

    if req.only_if_cached && !can_serve_while_revalidate {
        return lookup(Decision::GatewayTimeout);
    }
    lookup(Decision::Stale {
        can_serve_while_revalidate,
        can_serve_if_error,
    })
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// `later - earlier` in whole seconds, negative if `later` is earlier.
fn signed_since(later: SystemTime, earlier: SystemTime) -> i64 {
    match later.duration_since(earlier) {
        Ok(d) => secs(d),
        Err(e) => -secs(e.duration()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use std::time::UNIX_EPOCH;

    const T: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
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

    /// Stored at T with `resp` headers; looked up `elapsed` seconds later with `req`.
    fn decide_with(
        resp: &[(&str, &str)],
        req: &[(&str, &str)],
        elapsed: u64,
        opts: &StoreOptions,
    ) -> Lookup {
        let headers = with(resp);
        let stored = StoredView {
            status: StatusCode::OK,
            headers: &headers,
            request_time: at(T),
            response_time: at(T),
            invalidated_at: None,
        };
        lookup_decision(&Method::GET, &with(req), &stored, at(T + elapsed), opts)
    }

    fn decide(resp: &[(&str, &str)], req: &[(&str, &str)], elapsed: u64) -> Decision {
        decide_with(resp, req, elapsed, &StoreOptions::default()).decision
    }

    const REVALIDATE: Decision = Decision::Stale {
        can_serve_while_revalidate: false,
        can_serve_if_error: false,
    };
    const REVALIDATE_OR_ON_ERROR: Decision = Decision::Stale {
        can_serve_while_revalidate: false,
        can_serve_if_error: true,
    };

    // §4.2: fresh while freshness_lifetime > current_age, stale after.
    #[test]
    fn fresh_until_the_lifetime_is_reached_rfc9111_4_2() {
        let r = [("cache-control", "max-age=10")];
        assert_eq!(decide(&r, &[], 9), Decision::Fresh);
        assert_eq!(decide(&r, &[], 10), REVALIDATE);
        let l = decide_with(&r, &[], 4, &StoreOptions::default());
        assert_eq!((l.age_secs(), l.ttl), (4, 6));
        assert_eq!(decide_with(&r, &[], 15, &StoreOptions::default()).ttl, -5);
    }

    // §4.2.3: an Age header counts towards the age; Age > max-age is stale on arrival.
    #[test]
    fn age_header_counts_towards_staleness_rfc9111_4_2_3() {
        assert_eq!(
            decide(&[("cache-control", "max-age=10"), ("age", "15")], &[], 0),
            REVALIDATE
        );
        assert_eq!(
            decide(&[("cache-control", "max-age=600"), ("age", "30")], &[], 2),
            Decision::Fresh
        );
    }

    // §5.2.2.4: bare no-cache means always revalidate, even when fresh, never stale on error.
    #[test]
    fn response_no_cache_always_revalidates_rfc9111_5_2_2_4() {
        let r = [(
            "cache-control",
            "max-age=10000, no-cache, stale-if-error=60",
        )];
        assert_eq!(decide(&r, &[], 1), REVALIDATE);
        let r = [("cache-control", "max-age=10000, no-cache=\"set-cookie\"")];
        assert_eq!(decide(&r, &[], 1), Decision::Fresh);
    }

    // §5.2.1.4: request no-cache forces validation, but the fresh copy survives an error.
    #[test]
    fn request_no_cache_forces_validation_rfc9111_5_2_1_4() {
        let r = [("cache-control", "max-age=3600")];
        assert_eq!(
            decide(&r, &[("cache-control", "no-cache")], 1),
            REVALIDATE_OR_ON_ERROR
        );
        let opts = StoreOptions {
            ignore_request_no_cache: true,
            ..StoreOptions::default()
        };
        assert_eq!(
            decide_with(&r, &[("cache-control", "no-cache")], 1, &opts).decision,
            Decision::Fresh
        );
    }

    // §5.2.1.1 and §5.2.1.3: request max-age and min-fresh.
    #[test]
    fn request_max_age_and_min_fresh_rfc9111_5_2_1_1() {
        let r = [("cache-control", "max-age=3600"), ("age", "1800")];
        assert_eq!(
            decide(&r, &[("cache-control", "max-age=600")], 0),
            REVALIDATE_OR_ON_ERROR
        );
        assert_eq!(
            decide(&r, &[("cache-control", "max-age=2000")], 0),
            Decision::Fresh
        );
        let r = [("cache-control", "max-age=1500"), ("age", "1000")];
        assert_eq!(
            decide(&r, &[("cache-control", "min-fresh=1000")], 0),
            REVALIDATE_OR_ON_ERROR
        );
        assert_eq!(
            decide(&r, &[("cache-control", "min-fresh=400")], 0),
            Decision::Fresh
        );
    }

    // §5.2.1.2 / §4.2.4: max-stale accepts stale responses, unless the origin forbids it.
    #[test]
    fn max_stale_serves_stale_unless_forbidden_rfc9111_5_2_1_2() {
        let ms = [("cache-control", "max-stale=1000")];
        assert_eq!(
            decide(
                &[("cache-control", "max-age=1500"), ("age", "2000")],
                &ms,
                0
            ),
            Decision::StaleAllowed
        );
        assert_eq!(
            decide(&[("cache-control", "max-age=1")], &ms, 2000),
            REVALIDATE
        );
        assert_eq!(
            decide(
                &[("cache-control", "max-age=1")],
                &[("cache-control", "max-stale")],
                99_999
            ),
            Decision::StaleAllowed
        );
        for forbid in [
            "max-age=1, must-revalidate",
            "max-age=1, proxy-revalidate",
            "max-age=1, no-cache",
            "s-maxage=1",
        ] {
            assert_ne!(
                decide(&[("cache-control", forbid)], &ms, 10),
                Decision::StaleAllowed,
                "{forbid}"
            );
        }
    }

    // RFC 5861 §3: stale-while-revalidate window past expiry.
    #[test]
    fn stale_while_revalidate_window_rfc5861_3() {
        let r = [("cache-control", "max-age=10, stale-while-revalidate=30")];
        let swr = Decision::Stale {
            can_serve_while_revalidate: true,
            can_serve_if_error: false,
        };
        assert_eq!(decide(&r, &[], 25), swr);
        assert_eq!(decide(&r, &[], 40), swr);
        assert_eq!(decide(&r, &[], 41), REVALIDATE);
        // s-maxage does not cancel an explicit stale-while-revalidate (our choice)...
        let r = [("cache-control", "s-maxage=10, stale-while-revalidate=30")];
        assert_eq!(decide(&r, &[], 25), swr);
        // ...but must-revalidate does (§5.2.2.2).
        let r = [(
            "cache-control",
            "max-age=10, must-revalidate, stale-while-revalidate=30",
        )];
        assert_eq!(decide(&r, &[], 25), REVALIDATE);
    }

    // RFC 5861 §4: stale-if-error from the response or the request.
    #[test]
    fn stale_if_error_from_response_or_request_rfc5861_4() {
        let r = [("cache-control", "max-age=2, stale-if-error=60")];
        assert_eq!(decide(&r, &[], 30), REVALIDATE_OR_ON_ERROR);
        assert_eq!(decide(&r, &[], 63), REVALIDATE);
        let r = [("cache-control", "max-age=2")];
        assert_eq!(
            decide(&r, &[("cache-control", "stale-if-error=60")], 30),
            REVALIDATE_OR_ON_ERROR
        );
        // The origin's s-maxage outranks the client's wish.
        let r = [("cache-control", "s-maxage=2")];
        assert_eq!(
            decide(&r, &[("cache-control", "stale-if-error=60")], 30),
            REVALIDATE
        );
    }

    // §4.2.4: no stale on disconnect when must-revalidate, proxy-revalidate, no-cache or
    // s-maxage say so, even with an operator default.
    #[test]
    fn operator_stale_default_respects_in_protocol_prohibitions_rfc9111_4_2_4() {
        let opts = StoreOptions {
            stale_if_error_default: Some(Duration::from_secs(86_400)),
            ..StoreOptions::default()
        };
        assert_eq!(
            decide_with(&[("cache-control", "max-age=2")], &[], 30, &opts).decision,
            REVALIDATE_OR_ON_ERROR
        );
        for cc in [
            "max-age=2, must-revalidate",
            "max-age=2, proxy-revalidate",
            "max-age=2, no-cache",
            "max-age=2, s-maxage=2",
        ] {
            assert_eq!(
                decide_with(&[("cache-control", cc)], &[], 30, &opts).decision,
                REVALIDATE,
                "{cc}"
            );
        }
    }

    // §5.2.1.7: only-if-cached with nothing servable is a 504.
    #[test]
    fn only_if_cached_gets_504_when_not_servable_rfc9111_5_2_1_7() {
        let oic = [("cache-control", "only-if-cached")];
        assert_eq!(
            decide(&[("cache-control", "max-age=10")], &oic, 1),
            Decision::Fresh
        );
        assert_eq!(
            decide(&[("cache-control", "max-age=10")], &oic, 20),
            Decision::GatewayTimeout
        );
    }

    #[test]
    fn soft_purged_responses_are_stale_but_keep_their_windows() {
        let headers = with(&[("cache-control", "max-age=3600, stale-while-revalidate=60")]);
        let mut stored = StoredView {
            status: StatusCode::OK,
            headers: &headers,
            request_time: at(T),
            response_time: at(T),
            invalidated_at: Some(at(T + 100)),
        };
        let opts = StoreOptions::default();
        let l = lookup_decision(&Method::GET, &HeaderMap::new(), &stored, at(T + 130), &opts);
        assert_eq!(
            l.decision,
            Decision::Stale {
                can_serve_while_revalidate: true,
                can_serve_if_error: false
            }
        );
        assert_eq!(l.ttl, -30);
        stored.invalidated_at = Some(at(T + 10));
        let l = lookup_decision(
            &Method::HEAD,
            &HeaderMap::new(),
            &stored,
            at(T + 130),
            &opts,
        );
        assert_eq!(l.decision, REVALIDATE);
        let l = lookup_decision(
            &Method::POST,
            &HeaderMap::new(),
            &stored,
            at(T + 130),
            &opts,
        );
        assert_eq!(l.decision, Decision::Bypass);
    }

    // §4.2.1: no freshness information at all means stale (lifetime 0).
    #[test]
    fn responses_without_freshness_are_always_revalidated_rfc9111_4_2_1() {
        assert_eq!(
            decide(&[("etag", "\"a\""), ("cache-control", "public")], &[], 0),
            REVALIDATE
        );
    }
}
