//! Secondary cache keys from `Vary` (RFC 9111 §4.1).
//!
//! A stored response matches a request when the request's secondary key equals the one
//! computed from the request that produced it. Values are normalised only where that cannot
//! merge requests an origin might answer differently:
//! - all fields: lines are combined with `,` (RFC 9110 §5.3) and whitespace around commas
//!   outside quoted-strings is dropped, so `1,2`, ` 1, 2 ` and two lines `1` / `2` match;
//! - `Cookie`: lines are combined with `; ` instead (HTTP/2 splits cookies, RFC 9113 §8.2.3);
//! - `Accept-Language`: lower-cased (language tags are case-insensitive); order is kept, as
//!   it can express preference;
//! - `Accept-Encoding`: reduced to the sorted set of codings we key on (`br`, `gzip`, `zstd`)
//!   that the request accepts (q > 0, `*` included, `x-gzip` = `gzip`). So `gzip, deflate, br`
//!   and `br, gzip` share a variant. That is safe only if a stored variant's coding is one of
//!   those (or none), which [`storable`](super::storable) enforces.

use http::header::{ACCEPT_ENCODING, ACCEPT_LANGUAGE, COOKIE, VARY};
use http::{HeaderMap, HeaderName};

/// Content codings the `Accept-Encoding` part of a secondary key distinguishes.
const KEYED_CODINGS: [&str; 3] = ["br", "gzip", "zstd"];

/// The fields a response varies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaryFields {
    /// `*`, or a member that is not a field name: never matches (§4.1).
    Star,
    /// Lower-cased, deduplicated and sorted; empty when the response does not vary.
    Fields(Vec<HeaderName>),
}

/// Reads every `Vary` line of a response.
pub fn vary_fields(resp_headers: &HeaderMap) -> VaryFields {
    let mut fields: Vec<HeaderName> = Vec::new();
    for line in resp_headers.get_all(VARY) {
        for member in line.as_bytes().split(|&b| b == b',') {
            let member = member.trim_ascii();
            if member.is_empty() {
                continue;
            }
            if member == b"*" {
                return VaryFields::Star;
            }
            match HeaderName::from_bytes(member) {
                Ok(name) if !fields.contains(&name) => fields.push(name),
                Ok(_) => {}
                Err(_) => return VaryFields::Star,
            }
        }
    }
    fields.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    VaryFields::Fields(fields)
}

/// The canonical secondary key of `req_headers` for `fields`; `None` for `Vary: *`, which
/// matches nothing. A field absent from the request is recorded as absent (not as empty), so
/// it matches only another request that lacks it too.
pub fn secondary_key(fields: &VaryFields, req_headers: &HeaderMap) -> Option<String> {
    let VaryFields::Fields(names) = fields else {
        return None;
    };
    let mut key = String::new();
    for name in names {
        if !key.is_empty() {
            key.push('\n');
        }
        key.push_str(name.as_str());
        if let Some(value) = normalised(name, req_headers) {
            key.push('=');
            escape_into(&mut key, &value);
        }
    }
    Some(key)
}

/// Whether `coding` (a `Content-Encoding` member) is one the `Accept-Encoding` key tells apart.
pub fn is_keyed_coding(coding: &[u8]) -> bool {
    coding.eq_ignore_ascii_case(b"identity")
        || KEYED_CODINGS
            .iter()
            .any(|k| coding.eq_ignore_ascii_case(k.as_bytes()))
}

fn normalised(name: &HeaderName, req_headers: &HeaderMap) -> Option<Vec<u8>> {
    let mut lines = req_headers
        .get_all(name)
        .iter()
        .map(|v| v.as_bytes().trim_ascii())
        .peekable();
    lines.peek()?;
    if name == ACCEPT_ENCODING {
        return Some(accept_encoding_key(lines));
    }
    let separator: &[u8] = if name == COOKIE { b"; " } else { b"," };
    let mut combined = Vec::new();
    for (i, line) in lines.enumerate() {
        if i > 0 {
            combined.extend_from_slice(separator);
        }
        combined.extend_from_slice(line);
    }
    let mut value = collapse_comma_space(&combined);
    if name == ACCEPT_LANGUAGE {
        value.make_ascii_lowercase();
    }
    Some(value)
}

/// Drops spaces and tabs next to commas that are outside quoted-strings.
fn collapse_comma_space(s: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let mut in_quotes = false;
    let mut escaped = false;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if in_quotes {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_quotes = false;
            }
        } else if c == b',' {
            while matches!(out.last(), Some(b' ' | b'\t')) {
                out.pop();
            }
            out.push(c);
            while i + 1 < s.len() && matches!(s[i + 1], b' ' | b'\t') {
                i += 1;
            }
        } else {
            if c == b'"' {
                in_quotes = true;
            }
            out.push(c);
        }
        i += 1;
    }
    out
}

fn accept_encoding_key<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut explicit: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut star: Option<bool> = None;
    for line in lines {
        for member in line.split(|&b| b == b',') {
            let mut parts = member.split(|&b| b == b';');
            let coding = parts
                .next()
                .unwrap_or_default()
                .trim_ascii()
                .to_ascii_lowercase();
            if coding.is_empty() {
                continue;
            }
            let accepted = parts.all(|p| !is_zero_weight(p.trim_ascii()));
            let coding = if coding == b"x-gzip" {
                b"gzip".to_vec()
            } else {
                coding
            };
            if coding == b"*" {
                star.get_or_insert(accepted);
            } else if !explicit.iter().any(|(c, _)| *c == coding) {
                explicit.push((coding, accepted));
            }
        }
    }
    let mut out = Vec::new();
    for k in KEYED_CODINGS {
        let listed = explicit
            .iter()
            .find(|(c, _)| c == k.as_bytes())
            .map(|(_, a)| *a);
        if listed.or(star).unwrap_or(false) {
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(k.as_bytes());
        }
    }
    out
}

/// `q=0`, `q=0.`, `q=0.000` (RFC 9110 §12.4.2): "not acceptable".
fn is_zero_weight(param: &[u8]) -> bool {
    let Some(value) = param
        .strip_prefix(b"q=")
        .or_else(|| param.strip_prefix(b"Q="))
    else {
        return false;
    };
    match value.split_first() {
        Some((b'0', rest)) => match rest.split_first() {
            None => true,
            Some((b'.', frac)) => frac.iter().all(|&d| d == b'0'),
            Some(_) => false,
        },
        _ => false,
    }
}

/// Escapes so that distinct values give distinct keys: `%`, controls and non-ASCII bytes
/// become `%XX`, which also keeps the `\n` separators unambiguous.
fn escape_into(key: &mut String, value: &[u8]) {
    for &b in value {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            key.push(char::from(b));
        } else {
            key.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    fn key(vary: &str, req: &[(&str, &[u8])]) -> Option<String> {
        let fields = vary_fields(&with(&[("vary", vary.as_bytes())]));
        secondary_key(&fields, &with(req))
    }

    // §4.1: names are case-insensitive, lists span lines, duplicates collapse.
    #[test]
    fn vary_fields_are_lowercased_deduplicated_and_sorted_rfc9111_4_1() {
        let h = with(&[("vary", b"Foo, bar"), ("vary", b"FOO,Baz")]);
        let names = ["bar", "baz", "foo"].map(HeaderName::from_static).to_vec();
        assert_eq!(vary_fields(&h), VaryFields::Fields(names));
        assert_eq!(vary_fields(&HeaderMap::new()), VaryFields::Fields(vec![]));
    }

    // §4.1: a `*` anywhere (any line, any position) never matches.
    #[test]
    fn vary_star_never_matches_rfc9111_4_1() {
        for v in [
            vec!["*"],
            vec!["*, *"],
            vec!["", "*"],
            vec![", *"],
            vec!["Foo, *"],
            vec!["*, Foo"],
        ] {
            let h: Vec<(&str, &[u8])> = v.iter().map(|s| ("vary", s.as_bytes())).collect();
            let fields = vary_fields(&with(&h));
            assert_eq!(fields, VaryFields::Star, "{v:?}");
            assert_eq!(secondary_key(&fields, &HeaderMap::new()), None);
        }
        assert_eq!(
            vary_fields(&with(&[("vary", b"bad name")])),
            VaryFields::Star
        );
    }

    // §4.1: selecting fields must match; other fields do not matter.
    #[test]
    fn secondary_keys_match_only_on_selecting_fields_rfc9111_4_1() {
        let a = key(
            "Foo, Bar",
            &[("foo", b"1"), ("bar", b"abc"), ("other", b"2")],
        );
        let b = key(
            "Foo, Bar",
            &[("bar", b"abc"), ("foo", b"1"), ("other", b"3")],
        );
        let c = key("Foo, Bar", &[("foo", b"2"), ("bar", b"abc")]);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    // §4.1: a field absent from both requests matches; absent differs from present or empty.
    #[test]
    fn absent_fields_match_only_absent_fields_rfc9111_4_1() {
        assert_eq!(
            key("Foo, Bar", &[("foo", b"1")]),
            key("Foo, Bar", &[("foo", b"1")])
        );
        assert_ne!(key("Foo", &[]), key("Foo", &[("foo", b"1")]));
        assert_ne!(key("Foo", &[]), key("Foo", &[("foo", b"")]));
    }

    // §4.1: "removing whitespace" and "combining multiple field lines" are allowed.
    #[test]
    fn whitespace_and_line_combination_are_normalised_rfc9111_4_1() {
        let one = key("Foo", &[("foo", b"1,2")]);
        assert_eq!(one, key("Foo", &[("foo", b" 1, 2 ")]));
        assert_eq!(one, key("Foo", &[("foo", b"1"), ("foo", b"2")]));
        // Inside a quoted-string, whitespace is data.
        assert_ne!(
            key("Foo", &[("foo", b"\"a, b\"")]),
            key("Foo", &[("foo", b"\"a,b\"")])
        );
    }

    #[test]
    fn accept_encoding_is_reduced_to_the_keyed_codings_rfc9110_12_5_3() {
        let br_gzip = key("Accept-Encoding", &[("accept-encoding", b"br, gzip")]);
        assert_eq!(br_gzip.as_deref(), Some("accept-encoding=br,gzip"));
        assert_eq!(
            br_gzip,
            key(
                "Accept-Encoding",
                &[("accept-encoding", b"gzip, deflate, br")]
            )
        );
        assert_eq!(
            br_gzip,
            key(
                "accept-encoding",
                &[("accept-encoding", b"GZIP;q=0.5, x-gzip, BR")]
            )
        );
        assert_ne!(
            br_gzip,
            key("Accept-Encoding", &[("accept-encoding", b"gzip, br;q=0")])
        );
        let star = key("Accept-Encoding", &[("accept-encoding", b"*, zstd;q=0.0")]);
        assert_eq!(star.as_deref(), Some("accept-encoding=br,gzip"));
        assert!(is_keyed_coding(b"GZIP") && !is_keyed_coding(b"deflate"));
    }

    #[test]
    fn cookie_and_accept_language_normalisation() {
        let one = key("Cookie", &[("cookie", b"a=1; b=2")]);
        assert_eq!(
            one,
            key("Cookie", &[("cookie", b"a=1"), ("cookie", b"b=2")])
        );
        let en = key("Accept-Language", &[("accept-language", b"en-US, de")]);
        assert_eq!(
            en,
            key("Accept-Language", &[("accept-language", b"en-us,de")])
        );
        assert_ne!(
            en,
            key("Accept-Language", &[("accept-language", b"de, en-us")])
        );
    }

    #[test]
    fn distinct_bytes_give_distinct_keys() {
        let a = key("Foo", &[("foo", b"\xc3\xa9")]);
        let b = key("Foo", &[("foo", b"%C3%A9")]);
        assert_ne!(a, b);
        assert_eq!(a.as_deref(), Some("foo=%C3%A9"));
    }
}
