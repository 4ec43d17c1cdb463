//! Cache directives: `Cache-Control` (RFC 9111 §5.2) on requests and responses, and for a CDN
//! the targeted fields that replace it on responses: `CDN-Cache-Control` (RFC 9213) and the
//! legacy `Surrogate-Control` (Edge Architecture 1.0), in that order.
//!
//! Choices where the RFCs leave room:
//! - A directive given twice: the first occurrence counts (RFC 9111 §4.2.1 allows this or
//!   "stale"). `no-cache` and `private` are the exception: their field lists are merged, and
//!   the bare form wins, because merging can only make them stricter.
//! - An invalid `max-age`/`s-maxage` (`a100`, `-1`, `3600.0`, `max-age =60`) makes the response
//!   stale (§4.2.1): it is recorded as 0. Other invalid values are ignored.
//! - Delta-seconds beyond 2^31 saturate to 2^31 (§1.2.2).
//! - `CDN-Cache-Control` follows RFC 9213 strictly: it must parse as a Structured Field
//!   Dictionary (so `MaX-AgE` makes it invalid), and once valid it replaces `Cache-Control`
//!   even if it holds no directive we know. `Surrogate-Control` predates that rule; it
//!   replaces `Cache-Control` only when it holds a directive we act on.

use http::header::{CACHE_CONTROL, HeaderMap, HeaderName};

use super::structured::{self, BareItem, Member};

/// Delta-seconds are clamped to this (RFC 9111 §1.2.2).
pub const DELTA_SECONDS_MAX: u64 = 2_147_483_648;

/// RFC 9213's CDN-targeted field.
pub static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
/// The Edge Architecture Specification's field, still sent by many origins.
pub static SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// The response directives we act on.
const RESPONSE_DIRECTIVES: [&str; 13] = [
    "max-age",
    "s-maxage",
    "no-store",
    "no-cache",
    "private",
    "public",
    "must-revalidate",
    "proxy-revalidate",
    "must-understand",
    "no-transform",
    "immutable",
    "stale-while-revalidate",
    "stale-if-error",
];

/// Which fields govern a response's caching policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// `Cache-Control` (and `Expires`) only.
    CacheControl,
    /// `CDN-Cache-Control`, else `Surrogate-Control`, else `Cache-Control`: the first present
    /// and valid field is used instead of the others (RFC 9213 §2.2).
    #[default]
    Cdn,
}

/// The field the response directives came from. `Expires` only counts for `CacheControl`:
/// RFC 9213 §2.2 says a cache obeying a targeted field ignores `Cache-Control` and `Expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    #[default]
    CacheControl,
    CdnCacheControl,
    SurrogateControl,
}

/// `no-cache` and `private` apply to the whole response or to listed fields only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FieldScope {
    #[default]
    None,
    All,
    Fields(Vec<HeaderName>),
}

impl FieldScope {
    pub fn is_all(&self) -> bool {
        matches!(self, FieldScope::All)
    }

    pub fn is_none(&self) -> bool {
        matches!(self, FieldScope::None)
    }

    fn merge(&mut self, other: FieldScope) {
        match (&mut *self, other) {
            (_, FieldScope::None) | (FieldScope::All, _) => {}
            (FieldScope::Fields(mine), FieldScope::Fields(theirs)) => {
                for f in theirs {
                    if !mine.contains(&f) {
                        mine.push(f);
                    }
                }
            }
            (slot, other) => *slot = other,
        }
    }

    /// From a directive's argument: none means the whole response; a list of field names means
    /// those fields. A list we cannot read is taken as the whole response, the stricter reading.
    fn from_arg(arg: Option<&str>) -> FieldScope {
        let Some(list) = arg else {
            return FieldScope::All;
        };
        let mut fields = Vec::new();
        for name in list.split(',').map(str::trim) {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) if !fields.contains(&n) => fields.push(n),
                Ok(_) => {}
                Err(_) => return FieldScope::All,
            }
        }
        if fields.is_empty() {
            FieldScope::All
        } else {
            FieldScope::Fields(fields)
        }
    }
}

/// Response directives (RFC 9111 §5.2.2, RFC 5861, RFC 8246). Delta-seconds are in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseDirectives {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    pub no_cache: FieldScope,
    pub private: FieldScope,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub no_transform: bool,
    pub immutable: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    pub source: Source,
}

impl ResponseDirectives {
    /// Fields a shared cache must not store or serve unvalidated: those named by `private`
    /// (§5.2.2.7) and by `no-cache` (§5.2.2.4, and §3.1 which lets us drop them at storage).
    pub fn uncacheable_fields(&self) -> Vec<HeaderName> {
        let mut out: Vec<HeaderName> = Vec::new();
        for scope in [&self.no_cache, &self.private] {
            if let FieldScope::Fields(fields) = scope {
                for f in fields {
                    if !out.contains(f) {
                        out.push(f.clone());
                    }
                }
            }
        }
        out
    }

    /// Whether an explicit in-protocol directive forbids serving this response stale
    /// (RFC 9111 §4.2.4). `s-maxage` implies `proxy-revalidate` (§5.2.2.10); it is reported
    /// separately because we let an explicit `stale-*` directive override it.
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.no_cache.is_all()
    }
}

/// The `max-stale` request directive (RFC 9111 §5.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    /// No argument: any staleness is acceptable.
    Any,
    Seconds(u64),
}

/// Request directives (RFC 9111 §5.2.1, RFC 5861 §4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestDirectives {
    pub max_age: Option<u64>,
    pub max_stale: Option<MaxStale>,
    pub min_fresh: Option<u64>,
    pub no_cache: bool,
    pub no_store: bool,
    pub only_if_cached: bool,
    pub stale_if_error: Option<u64>,
}

/// Parses the response directives that govern `headers` for `target`.
pub fn parse_response(headers: &HeaderMap, target: Target) -> ResponseDirectives {
    if target == Target::Cdn {
        if let Some(d) = parse_targeted(headers) {
            return d;
        }
        let surrogate = parse_list(field_lines(headers, &SURROGATE_CONTROL), true);
        // Unlike RFC 9213 fields, Surrogate-Control often carries only ESI's `content=...`;
        // it replaces Cache-Control only when it says something about caching.
        if surrogate
            .iter()
            .any(|d| RESPONSE_DIRECTIVES.contains(&d.name.as_str()))
        {
            let mut d = response_from_list(&surrogate);
            d.source = Source::SurrogateControl;
            return d;
        }
    }
    response_from_list(&parse_list(field_lines(headers, &CACHE_CONTROL), false))
}

/// Parses the request's `Cache-Control`. Invalid values are ignored: unlike a response's,
/// they carry no freshness information to be conservative about.
pub fn parse_request(headers: &HeaderMap) -> RequestDirectives {
    let mut d = RequestDirectives::default();
    let mut seen: Vec<&str> = Vec::new();
    let list = parse_list(field_lines(headers, &CACHE_CONTROL), false);
    for dir in &list {
        let first = !seen.contains(&dir.name.as_str());
        if first {
            seen.push(dir.name.as_str());
        }
        match dir.name.as_str() {
            "max-age" if first => d.max_age = dir.delta_seconds(),
            "min-fresh" if first => d.min_fresh = dir.delta_seconds(),
            "stale-if-error" if first => d.stale_if_error = dir.delta_seconds(),
            "max-stale" if first => {
                d.max_stale = match &dir.arg {
                    Arg::None => Some(MaxStale::Any),
                    _ => dir.delta_seconds().map(MaxStale::Seconds),
                }
            }
            "no-cache" => d.no_cache = true,
            "no-store" => d.no_store = true,
            "only-if-cached" => d.only_if_cached = true,
            _ => {}
        }
    }
    d
}

fn field_lines<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
    headers.get_all(name).iter().map(|v| v.as_bytes())
}

/// One `token [ "=" ( token / quoted-string ) ]` element (RFC 9111 §5.2).
#[derive(Debug)]
struct Directive {
    name: String,
    arg: Arg,
}

#[derive(Debug, PartialEq, Eq)]
enum Arg {
    None,
    Value(String),
    /// Present but not a token or quoted-string (`max-age= 1`, `max-age =1`, `a="open`).
    Malformed,
}

impl Directive {
    fn value(&self) -> Option<&str> {
        match &self.arg {
            Arg::Value(v) => Some(v),
            _ => None,
        }
    }

    /// `delta-seconds = 1*DIGIT` (§1.2.2), saturating at 2^31. `None` when invalid.
    fn delta_seconds(&self) -> Option<u64> {
        let v = self.value()?;
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(v.bytes().fold(0u64, |acc, b| {
            (acc * 10 + u64::from(b - b'0')).min(DELTA_SECONDS_MAX)
        }))
    }
}

fn response_from_list(list: &[Directive]) -> ResponseDirectives {
    let mut d = ResponseDirectives::default();
    let mut seen: Vec<&str> = Vec::new();
    for dir in list {
        let first = !seen.contains(&dir.name.as_str());
        if first {
            seen.push(dir.name.as_str());
        }
        match dir.name.as_str() {
            // Invalid freshness information means stale (§4.2.1).
            "max-age" if first => d.max_age = Some(dir.delta_seconds().unwrap_or(0)),
            "s-maxage" if first => d.s_maxage = Some(dir.delta_seconds().unwrap_or(0)),
            "stale-while-revalidate" if first => d.stale_while_revalidate = dir.delta_seconds(),
            "stale-if-error" if first => d.stale_if_error = dir.delta_seconds(),
            "no-cache" => d.no_cache.merge(scope_of(dir)),
            "private" => d.private.merge(scope_of(dir)),
            "no-store" => d.no_store = true,
            "public" => d.public = true,
            "must-revalidate" => d.must_revalidate = true,
            "proxy-revalidate" => d.proxy_revalidate = true,
            "must-understand" => d.must_understand = true,
            "no-transform" => d.no_transform = true,
            "immutable" => d.immutable = true,
            _ => {}
        }
    }
    d
}

fn scope_of(dir: &Directive) -> FieldScope {
    match &dir.arg {
        Arg::None => FieldScope::All,
        Arg::Value(v) => FieldScope::from_arg(Some(v)),
        Arg::Malformed => FieldScope::All,
    }
}

/// Splits field lines into directives. Names are lower-cased; a `,` inside a quoted-string
/// does not end a directive. With `targets`, a directive followed by `;device` is aimed at a
/// named surrogate (Edge Architecture 1.0) and, not being for us, is dropped.
fn parse_list<'a>(lines: impl Iterator<Item = &'a [u8]>, targets: bool) -> Vec<Directive> {
    let mut out = Vec::new();
    for s in lines {
        let mut i = 0;
        while i < s.len() {
            while i < s.len() && matches!(s[i], b' ' | b'\t' | b',') {
                i += 1;
            }
            if i >= s.len() {
                break;
            }
            let start = i;
            while i < s.len() && structured::is_tchar(s[i]) {
                i += 1;
            }
            if i == start {
                i = skip_element(s, i);
                continue;
            }
            let name = String::from_utf8_lossy(&s[start..i]).to_ascii_lowercase();
            let mut arg = Arg::None;
            if i < s.len() && s[i] == b'=' {
                i += 1;
                if i < s.len() && s[i] == b'"' {
                    match quoted_string(s, i) {
                        Some((v, next)) => {
                            arg = Arg::Value(v);
                            i = next;
                        }
                        None => {
                            arg = Arg::Malformed;
                            i = s.len();
                        }
                    }
                } else {
                    let vs = i;
                    while i < s.len() && structured::is_tchar(s[i]) {
                        i += 1;
                    }
                    arg = if i == vs {
                        Arg::Malformed
                    } else {
                        Arg::Value(String::from_utf8_lossy(&s[vs..i]).into_owned())
                    };
                }
            }
            let mut j = skip_ows(s, i);
            let mut targeted = false;
            if targets && j < s.len() && s[j] == b';' {
                targeted = true;
                j = skip_element(s, j);
            } else if j < s.len() && s[j] != b',' {
                arg = Arg::Malformed;
                j = skip_element(s, j);
            }
            i = j;
            if !targeted {
                out.push(Directive { name, arg });
            }
        }
    }
    out
}

fn skip_ows(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t') {
        i += 1;
    }
    i
}

/// Index of the next top-level `,` (or the end), stepping over quoted-strings.
fn skip_element(s: &[u8], mut i: usize) -> usize {
    while i < s.len() {
        match s[i] {
            b',' => return i,
            b'"' => match quoted_string(s, i) {
                Some((_, next)) => i = next,
                None => return s.len(),
            },
            _ => i += 1,
        }
    }
    i
}

/// Reads a quoted-string starting at `s[i] == '"'` (RFC 9110 §5.6.4). Returns the unescaped
/// content and the index after the closing quote; `None` if it is never closed.
fn quoted_string(s: &[u8], i: usize) -> Option<(String, usize)> {
    let mut out = Vec::new();
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'"' => return Some((String::from_utf8_lossy(&out).into_owned(), j + 1)),
            b'\\' if j + 1 < s.len() => {
                out.push(s[j + 1]);
                j += 2;
            }
            c => {
                out.push(c);
                j += 1;
            }
        }
    }
    None
}

/// `CDN-Cache-Control` as a Structured Field Dictionary (RFC 9213 §2.1). `None` when absent,
/// empty or invalid, so that the next field is used (§2.2). A known directive whose value has
/// the wrong type also invalidates the field: consuming it is a "SHOULD NOT" (§2.1), and
/// half-obeying the field could be less strict than either field alone.
fn parse_targeted(headers: &HeaderMap) -> Option<ResponseDirectives> {
    let mut combined: Vec<u8> = Vec::new();
    for line in field_lines(headers, &CDN_CACHE_CONTROL) {
        if !combined.is_empty() {
            combined.extend_from_slice(b", ");
        }
        combined.extend_from_slice(line);
    }
    let members = structured::parse_dictionary(&combined)?;
    if members.is_empty() {
        return None;
    }
    let mut d = ResponseDirectives {
        source: Source::CdnCacheControl,
        ..ResponseDirectives::default()
    };
    for (key, member) in members {
        let item = match member {
            Member::Item(item) => Some(item),
            Member::InnerList => None,
        };
        let seconds = || match &item {
            Some(BareItem::Integer(n)) if *n >= 0 => Some((*n as u64).min(DELTA_SECONDS_MAX)),
            _ => None,
        };
        // Restrictive flags count unless explicitly false; permissive ones need `true`.
        let restrictive = !matches!(item, Some(BareItem::Boolean(false)));
        let permissive = matches!(item, Some(BareItem::Boolean(true)));
        let scope = || match &item {
            Some(BareItem::Boolean(false)) => FieldScope::None,
            Some(BareItem::String(list)) => FieldScope::from_arg(Some(list)),
            _ => FieldScope::All,
        };
        match key.as_str() {
            "max-age" => d.max_age = Some(seconds()?),
            "s-maxage" => d.s_maxage = Some(seconds()?),
            "stale-while-revalidate" => d.stale_while_revalidate = Some(seconds()?),
            "stale-if-error" => d.stale_if_error = Some(seconds()?),
            "no-cache" => d.no_cache = scope(),
            "private" => d.private = scope(),
            "no-store" => d.no_store = restrictive,
            "must-revalidate" => d.must_revalidate = restrictive,
            "proxy-revalidate" => d.proxy_revalidate = restrictive,
            "must-understand" => d.must_understand = restrictive,
            "no-transform" => d.no_transform = restrictive,
            "public" => d.public = permissive,
            "immutable" => d.immutable = permissive,
            _ => {}
        }
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn cc(v: &str) -> ResponseDirectives {
        parse_response(&headers(&[("cache-control", v)]), Target::CacheControl)
    }

    fn req(v: &str) -> RequestDirectives {
        parse_request(&headers(&[("cache-control", v)]))
    }

    #[test]
    fn parses_every_response_directive_rfc9111_5_2_2() {
        let d = cc(
            "max-age=60, s-maxage=30, no-store, no-cache, private, public, must-revalidate, \
                    proxy-revalidate, must-understand, no-transform, immutable, \
                    stale-while-revalidate=10, stale-if-error=20",
        );
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(30));
        assert!(d.no_store && d.public && d.must_revalidate && d.proxy_revalidate);
        assert!(d.must_understand && d.no_transform && d.immutable);
        assert_eq!(d.no_cache, FieldScope::All);
        assert_eq!(d.private, FieldScope::All);
        assert_eq!(d.stale_while_revalidate, Some(10));
        assert_eq!(d.stale_if_error, Some(20));
        assert_eq!(d.source, Source::CacheControl);
    }

    // §5.2: names are case-insensitive; lists span lines; unknown directives are ignored.
    #[test]
    fn names_are_case_insensitive_across_lines_and_extensions_ignored_rfc9111_5_2() {
        let h = headers(&[
            ("cache-control", "foobar, MaX-AgE=60"),
            ("cache-control", "No-StOrE"),
        ]);
        let d = parse_response(&h, Target::CacheControl);
        assert_eq!(d.max_age, Some(60));
        assert!(d.no_store);
    }

    // §5.2: recipients accept the quoted-string form too.
    #[test]
    fn quoted_max_age_is_accepted_rfc9111_5_2() {
        assert_eq!(cc("max-age=\"3600\"").max_age, Some(3600));
        assert_eq!(cc("max-age=003600").max_age, Some(3600));
    }

    // §5.2: "max-age" inside another directive's quoted-string is not a directive.
    #[test]
    fn directive_text_inside_a_quoted_string_is_ignored_rfc9111_5_2() {
        assert_eq!(cc("extension=\"max-age=3600\", max-age=1").max_age, Some(1));
        assert_eq!(
            cc("max-age=1, extension=\"max-age=3600, x\"").max_age,
            Some(1)
        );
    }

    // §4.2.1 / §1.2.2: invalid delta-seconds mean stale; spaces around `=` are invalid.
    #[test]
    fn invalid_max_age_is_treated_as_stale_rfc9111_4_2_1() {
        for v in [
            "max-age=a100",
            "max-age=100a",
            "max-age=-100",
            "max-age='3600'",
            "max-age=3600.0",
            "max-age =100",
            "max-age= 100",
            "max-age",
        ] {
            assert_eq!(cc(v).max_age, Some(0), "{v}");
        }
        assert_eq!(cc("s-maxage=x").s_maxage, Some(0));
        assert_eq!(cc("stale-while-revalidate=x").stale_while_revalidate, None);
    }

    // §1.2.2: overflowing delta-seconds saturate at 2^31.
    #[test]
    fn huge_delta_seconds_saturate_at_2_pow_31_rfc9111_1_2_2() {
        assert_eq!(
            cc("max-age=99999999999999999999999").max_age,
            Some(DELTA_SECONDS_MAX)
        );
        assert_eq!(cc("max-age=2147483648").max_age, Some(DELTA_SECONDS_MAX));
        assert_eq!(cc("max-age=2147483647").max_age, Some(2_147_483_647));
    }

    // §4.2.1: with duplicates "the first occurrence should be used" (our pick).
    #[test]
    fn first_of_duplicate_directives_wins_rfc9111_4_2_1() {
        assert_eq!(cc("max-age=1800, max-age=1").max_age, Some(1800));
        let h = headers(&[
            ("cache-control", "max-age=1"),
            ("cache-control", "max-age=1800"),
        ]);
        assert_eq!(parse_response(&h, Target::CacheControl).max_age, Some(1));
    }

    // §5.2.2.4 / §5.2.2.7: qualified forms list field names; bare forms win when merged.
    #[test]
    fn no_cache_and_private_with_field_lists_rfc9111_5_2_2_4() {
        let d = cc("no-cache=\"Set-Cookie, X-Foo\", private=x-bar");
        assert_eq!(
            d.no_cache,
            FieldScope::Fields(vec![
                HeaderName::from_static("set-cookie"),
                HeaderName::from_static("x-foo")
            ])
        );
        assert_eq!(
            d.private,
            FieldScope::Fields(vec![HeaderName::from_static("x-bar")])
        );
        assert_eq!(d.uncacheable_fields().len(), 3);
        assert_eq!(cc("no-cache=\"a\", no-cache").no_cache, FieldScope::All);
        assert_eq!(cc("no-cache=\"bad name\"").no_cache, FieldScope::All);
    }

    #[test]
    fn parses_every_request_directive_rfc9111_5_2_1() {
        let d = req(
            "max-age=5, max-stale=10, min-fresh=3, no-cache, no-store, only-if-cached, \
                     stale-if-error=60",
        );
        assert_eq!(d.max_age, Some(5));
        assert_eq!(d.max_stale, Some(MaxStale::Seconds(10)));
        assert_eq!(d.min_fresh, Some(3));
        assert!(d.no_cache && d.no_store && d.only_if_cached);
        assert_eq!(d.stale_if_error, Some(60));
        assert_eq!(req("max-stale").max_stale, Some(MaxStale::Any));
        assert_eq!(req("max-age=abc").max_age, None);
    }

    // RFC 9213 §2.2: a valid CDN-Cache-Control replaces Cache-Control entirely.
    #[test]
    fn cdn_cache_control_replaces_cache_control_rfc9213_2_2() {
        let h = headers(&[
            ("cache-control", "no-store, max-age=1"),
            ("cdn-cache-control", "max-age=3600"),
        ]);
        let d = parse_response(&h, Target::Cdn);
        assert_eq!(d.source, Source::CdnCacheControl);
        assert_eq!(d.max_age, Some(3600));
        assert!(!d.no_store);
        assert!(parse_response(&h, Target::CacheControl).no_store);
    }

    // RFC 9213 §2.1/§2.2: an invalid or empty targeted field is ignored.
    #[test]
    fn invalid_cdn_cache_control_falls_back_to_cache_control_rfc9213_2_1() {
        for bad in [
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "MaX-aGe=10",
            "max-age=-1",
            "",
        ] {
            let h = headers(&[("cache-control", "no-store"), ("cdn-cache-control", bad)]);
            let d = parse_response(&h, Target::Cdn);
            assert_eq!(d.source, Source::CacheControl, "{bad:?}");
            assert!(d.no_store);
        }
    }

    #[test]
    fn cdn_cache_control_field_lists_and_booleans_rfc9213_2_1() {
        let h = headers(&[(
            "cdn-cache-control",
            "private=\"set-cookie\", no-cache=?0, public",
        )]);
        let d = parse_response(&h, Target::Cdn);
        assert_eq!(
            d.private,
            FieldScope::Fields(vec![HeaderName::from_static("set-cookie")])
        );
        assert_eq!(d.no_cache, FieldScope::None);
        assert!(d.public);
    }

    // RFC 9213 §2.2 target list order: CDN-Cache-Control, then Surrogate-Control.
    #[test]
    fn surrogate_control_is_used_when_no_cdn_cache_control_rfc9213_2_2() {
        let h = headers(&[
            ("cache-control", "max-age=3600"),
            ("surrogate-control", "max-age=1"),
        ]);
        let d = parse_response(&h, Target::Cdn);
        assert_eq!((d.source, d.max_age), (Source::SurrogateControl, Some(1)));
        let h = headers(&[
            ("surrogate-control", "max-age=1"),
            ("cdn-cache-control", "max-age=7"),
        ]);
        assert_eq!(parse_response(&h, Target::Cdn).max_age, Some(7));
        // ESI's `content` alone says nothing about caching.
        let h = headers(&[
            ("cache-control", "max-age=60"),
            ("surrogate-control", "content=\"ESI/1.0\""),
        ]);
        assert_eq!(parse_response(&h, Target::Cdn).source, Source::CacheControl);
        // A directive aimed at another surrogate is not ours.
        let h = headers(&[("surrogate-control", "no-store;other, max-age=60")]);
        let d = parse_response(&h, Target::Cdn);
        assert!(!d.no_store);
        assert_eq!(d.max_age, Some(60));
    }
}
