//! HTTP-date (RFC 9110 §5.6.7) reading and writing.
//!
//! Recipients must accept IMF-fixdate, rfc850 and asctime, which `httpdate` does. We also
//! accept day, month and `GMT` in the wrong case (`THU`, `AUG`, `gMT`): nothing else could be
//! meant, and cache-tests.fyi counts reusing those as optimal. A weekday that does not match
//! the date is ignored, as Apache Traffic Server and nginx ignore it: the day of the week is
//! redundant, and the date is what the sender meant. Anything else (`UTC`, two-digit years in
//! IMF-fixdate, dashes, missing comma) stays invalid.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

const NAMES: [&str; 27] = [
    "Mon",
    "Tue",
    "Wed",
    "Thu",
    "Fri",
    "Sat",
    "Sun",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
    "GMT",
];

/// Parses an HTTP-date. `None` if it is not one.
pub fn parse(value: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(value).ok()?.trim();
    if let Ok(t) = httpdate::parse_http_date(s) {
        return Some(t);
    }
    let fixed = canonical_case(s);
    if fixed != s
        && let Ok(t) = httpdate::parse_http_date(&fixed)
    {
        return Some(t);
    }
    any_weekday(&fixed)
}

/// `s` parsed with its leading weekday replaced by each of the seven in turn (the same form,
/// short or long): at most one matches the date, since `httpdate` checks them against each other.
fn any_weekday(s: &str) -> Option<SystemTime> {
    let len = s.find(|c: char| !c.is_ascii_alphabetic())?;
    let days = match len {
        3 => &NAMES[..7],
        6..=9 => &NAMES[7..14],
        _ => return None,
    };
    if !days.contains(&&s[..len]) {
        return None;
    }
    days.iter()
        .find_map(|day| httpdate::parse_http_date(&format!("{day}{}", &s[len..])).ok())
}

/// The first line of `name` as an HTTP-date. Later lines are ignored (RFC 9111 §4.2.1 lets a
/// cache use the first of duplicated values).
pub fn header(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    headers.get(name).and_then(|v| parse(v.as_bytes()))
}

/// Formats `t` as an IMF-fixdate header value. `None` outside the years 1970..=9999, which
/// `httpdate` would panic on.
pub fn format(t: SystemTime) -> Option<HeaderValue> {
    let since = t.duration_since(UNIX_EPOCH).ok()?;
    if since >= Duration::from_secs(253_402_300_800) {
        return None;
    }
    HeaderValue::from_str(&httpdate::fmt_http_date(t)).ok()
}

fn canonical_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match NAMES.iter().find(|n| n.eq_ignore_ascii_case(word)) {
            Some(n) => out.push_str(n),
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in s.chars() {
        if c.is_ascii_alphabetic() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    // RFC 9110 §5.6.7: recipients accept all three formats.
    #[test]
    fn parses_imf_fixdate_rfc850_and_asctime_rfc9110_5_6_7() {
        let t = at(784_111_777);
        assert_eq!(parse(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        assert_eq!(parse(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
        assert_eq!(parse(b"Sun Nov  6 08:49:37 1994"), Some(t));
    }

    #[test]
    fn accepts_wrong_case_names_but_not_other_mistakes_rfc9110_5_6_7() {
        let t = parse(b"Thu, 18 Aug 2050 02:01:18 GMT").unwrap();
        assert_eq!(parse(b"THU, 18 Aug 2050 02:01:18 GMT"), Some(t));
        assert_eq!(parse(b"Thu, 18 AUG 2050 02:01:18 gMT"), Some(t));
        for bad in [
            "0",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad}");
        }
    }

    // RFC 9110 §5.6.7 makes the weekday redundant; ATS and nginx ignore a wrong one.
    #[test]
    fn a_weekday_that_does_not_match_the_date_is_ignored_rfc9110_5_6_7() {
        let t = parse(b"Mon, 08 Aug 2050 02:01:18 GMT").unwrap();
        assert_eq!(parse(b"Thu Aug  8 02:01:18 2050"), Some(t));
        assert_eq!(parse(b"Thu, 08 Aug 2050 02:01:18 GMT"), Some(t));
        assert_eq!(parse(b"Thursday, 08-Aug-50 02:01:18 GMT"), Some(t));
        assert_eq!(parse(b"THU, 08 AUG 2050 02:01:18 GMT"), Some(t));
        for bad in [
            "Xyz, 08 Aug 2050 02:01:18 GMT",
            "Thu, 32 Aug 2050 02:01:18 GMT",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn formats_only_representable_dates() {
        assert_eq!(
            format(at(784_111_777)).unwrap(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(format(UNIX_EPOCH - Duration::from_secs(1)), None);
        assert_eq!(format(at(300_000_000_000)), None);
    }
}
