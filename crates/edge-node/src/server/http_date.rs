//! The `Date` field's value, formatted at most once a second per worker thread, as hyper and
//! nginx cache it.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Calls `f` with the `Date` value (IMF-fixdate, RFC 9110 section 5.6.7) for `now`.
pub fn with<R>(now: SystemTime, f: impl FnOnce(&[u8]) -> R) -> R {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, value)| {
        if *at != secs {
            *at = secs;
            *value = httpdate::fmt_http_date(now);
        }
        f(value.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_value_is_an_http_date_of_now() {
        let value = super::with(std::time::SystemTime::now(), |d| {
            String::from_utf8(d.to_vec()).unwrap()
        });
        let when = httpdate::parse_http_date(&value).unwrap();
        let skew = std::time::SystemTime::now().duration_since(when).unwrap();
        assert!(skew.as_secs() < 5, "{value}");
        assert_eq!(value.len(), 29);
    }
}
