//! A stored response's current age (RFC 9111 §4.2.3) and the `Age` field it is read from (§5.1).

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::{AGE, DATE};

use super::directives::DELTA_SECONDS_MAX;
use super::http_date;

/// The `Age` field value (§5.1): the first member of the first line, which must be a
/// non-negative integer; anything else is ignored. Large values saturate at 2^31 (§1.2.2).
pub fn age_value(headers: &HeaderMap) -> Option<u64> {
    let line = headers.get(AGE)?.as_bytes();
    let first = line.split(|&b| b == b',').next()?.trim_ascii();
    if first.is_empty() || !first.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(first.iter().fold(0u64, |acc, &b| {
        (acc * 10 + u64::from(b - b'0')).min(DELTA_SECONDS_MAX)
    }))
}

/// The current age of a stored response (§4.2.3):
///
/// ```text
/// apparent_age          = max(0, response_time - date_value)
/// response_delay        = response_time - request_time
/// corrected_age_value   = age_value + response_delay
/// corrected_initial_age = max(apparent_age, corrected_age_value)
/// resident_time         = now - response_time
/// current_age           = corrected_initial_age + resident_time
/// ```
///
/// A missing or invalid `Date` is taken as `response_time`, the value a recipient must add
/// (RFC 9110 §6.6.1). Clock skew never makes an age negative.
pub fn current_age(
    resp_headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
    now: SystemTime,
) -> Duration {
    age_at(
        initial_age(resp_headers, request_time, response_time),
        response_time,
        now,
    )
}

/// `corrected_initial_age` of [`current_age`]: it depends only on the stored response, so a
/// cache can work it out once when it stores the response.
pub fn initial_age(
    resp_headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let date = http_date::header(resp_headers, &DATE).unwrap_or(response_time);
    let apparent_age = since(response_time, date);
    let response_delay = since(response_time, request_time);
    let age = Duration::from_secs(age_value(resp_headers).unwrap_or(0));
    let corrected_age_value = age.saturating_add(response_delay);
    apparent_age.max(corrected_age_value)
}

/// The current age at `now` from a response's `corrected_initial_age`.
pub fn age_at(initial_age: Duration, response_time: SystemTime, now: SystemTime) -> Duration {
    initial_age.saturating_add(since(now, response_time))
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn with(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    // §4.2.3 worked example: request at T, origin dated T+1 with Age 10, received at T+2,
    // now T+32. apparent 1, delay 2, corrected_age_value 12, initial 12, resident 30 → 42.
    #[test]
    fn worked_example_of_the_age_calculation_rfc9111_4_2_3() {
        let t = 1_700_000_000;
        let h = with(&[("date", &date(t + 1)), ("age", "10")]);
        assert_eq!(
            current_age(&h, at(t), at(t + 2), at(t + 32)),
            Duration::from_secs(42)
        );
    }

    // §4.2.3: a Date far in the past dominates a small Age (apparent_age wins).
    #[test]
    fn apparent_age_wins_when_larger_than_corrected_age_rfc9111_4_2_3() {
        let t = 1_700_000_000;
        let h = with(&[("date", &date(t - 100)), ("age", "5")]);
        assert_eq!(
            current_age(&h, at(t), at(t), at(t + 10)),
            Duration::from_secs(110)
        );
    }

    // §4.2.3 / RFC 9110 §6.6.1: no Date means date_value = response_time; a Date in the
    // future (fast origin clock) never makes the age negative.
    #[test]
    fn missing_or_future_date_does_not_go_negative_rfc9111_4_2_3() {
        let t = 1_700_000_000;
        assert_eq!(
            current_age(&HeaderMap::new(), at(t), at(t), at(t + 7)),
            Duration::from_secs(7)
        );
        let h = with(&[("date", &date(t + 500))]);
        assert_eq!(
            current_age(&h, at(t), at(t), at(t + 7)),
            Duration::from_secs(7)
        );
    }

    // §5.1: first member of a list; invalid values ignored; overflow saturates.
    #[test]
    fn age_field_parsing_rfc9111_5_1() {
        assert_eq!(age_value(&with(&[("age", "7200,0")])), Some(7200));
        assert_eq!(age_value(&with(&[("age", "0, 7200")])), Some(0));
        assert_eq!(
            age_value(&with(&[("age", "30"), ("age", "7200")])),
            Some(30)
        );
        assert_eq!(
            age_value(&with(&[("age", "99999999999999")])),
            Some(DELTA_SECONDS_MAX)
        );
        for bad in ["abc", "-7200", "7200.0", ""] {
            assert_eq!(age_value(&with(&[("age", bad)])), None, "{bad}");
        }
    }
}
