//! Field names as `http` values, the common ones without `HeaderName::from_bytes`: that parse
//! lower-cases the name into a buffer and searches the standard names, about 150 instructions
//! a field, and a head has ten. The names below are recognised by their length and first
//! letter, then compared once.

use http::header::{self, HeaderName, InvalidHeaderName};

/// The field name `raw` (a token, as httparse checked), in lower case.
pub(crate) fn field_name(raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    match known(raw) {
        Some(name) => Ok(name),
        None => HeaderName::from_bytes(raw),
    }
}

fn known(raw: &[u8]) -> Option<HeaderName> {
    let first = raw.first()?.to_ascii_lowercase();
    let (lower, name): (&[u8], HeaderName) = match (raw.len(), first) {
        (3, b'a') => (b"age", header::AGE),
        (4, b'd') => (b"date", header::DATE),
        (4, b'e') => (b"etag", header::ETAG),
        (4, b'h') => (b"host", header::HOST),
        (4, b'v') => (b"vary", header::VARY),
        (5, b'r') => (b"range", header::RANGE),
        (6, b'a') => (b"accept", header::ACCEPT),
        (6, b'c') => (b"cookie", header::COOKIE),
        (6, b's') => (b"server", header::SERVER),
        (7, b'e') => (b"expires", header::EXPIRES),
        (7, b'r') => (b"referer", header::REFERER),
        (8, b'l') => (b"location", header::LOCATION),
        (10, b'c') => (b"connection", header::CONNECTION),
        (10, b's') => (b"set-cookie", header::SET_COOKIE),
        (10, b'u') => (b"user-agent", header::USER_AGENT),
        (12, b'c') => (b"content-type", header::CONTENT_TYPE),
        (13, b'a') => (b"accept-ranges", header::ACCEPT_RANGES),
        (13, b'c') => (b"cache-control", header::CACHE_CONTROL),
        (13, b'i') => (b"if-none-match", header::IF_NONE_MATCH),
        (13, b'l') => (b"last-modified", header::LAST_MODIFIED),
        (14, b'c') => (b"content-length", header::CONTENT_LENGTH),
        (15, b'a') => (b"accept-encoding", header::ACCEPT_ENCODING),
        (15, b'x') => (
            b"x-forwarded-for",
            HeaderName::from_static("x-forwarded-for"),
        ),
        (16, b'c') => (b"content-encoding", header::CONTENT_ENCODING),
        (17, b'i') => (b"if-modified-since", header::IF_MODIFIED_SINCE),
        (17, b't') => (b"transfer-encoding", header::TRANSFER_ENCODING),
        _ => return None,
    };
    same_lower(raw, lower).then_some(name)
}

/// `raw` is `lower` in any case. Exact for a token against lower-case letters and `-`: the
/// 0x20 bit folds only letters onto those (the other bytes it would fold are no token's).
/// Compared a word at a time (the last word overlapping the one before), with no early exit.
fn same_lower(raw: &[u8], lower: &[u8]) -> bool {
    let n = raw.len();
    if n != lower.len() {
        return false;
    }
    if n < 8 {
        return raw
            .iter()
            .zip(lower)
            .fold(0u8, |diff, (&a, &b)| diff | ((a | 0x20) ^ b))
            == 0;
    }
    const FOLD: u64 = 0x2020_2020_2020_2020;
    let word = |s: &[u8], at: usize| -> u64 {
        let w = s.get(at..at + 8).and_then(|w| <[u8; 8]>::try_from(w).ok());
        u64::from_le_bytes(w.unwrap_or_default())
    };
    let mut diff = (word(raw, n - 8) | FOLD) ^ word(lower, n - 8);
    let mut at = 0;
    while at + 8 < n {
        diff |= (word(raw, at) | FOLD) ^ word(lower, at);
        at += 8;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_and_others_give_what_from_bytes_gives() {
        let names = [
            "Age",
            "DATE",
            "etag",
            "Host",
            "vary",
            "Range",
            "accept",
            "Cookie",
            "Server",
            "Expires",
            "Referer",
            "Location",
            "Connection",
            "Set-Cookie",
            "User-Agent",
            "Content-Type",
            "Accept-Ranges",
            "Cache-Control",
            "If-None-Match",
            "Last-Modified",
            "Content-Length",
            "Accept-Encoding",
            "X-Forwarded-For",
            "Content-Encoding",
            "If-Modified-Since",
            "Transfer-Encoding",
            "Hosts",
            "Dote",
            "X-Custom",
            "a",
            "Keep-Alive",
            "cookiE",
            "Content-Lengtx",
            "x-forwarded-fox",
            "Cantent-Type",
            "Content-Xype",
            "Content-Typf",
            "Transfer-Encodinf",
            "Tbansfer-Encoding",
            "Transfer_Encoding",
        ];
        for n in names {
            assert_eq!(
                field_name(n.as_bytes()).unwrap(),
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                "{n}"
            );
        }
        assert!(known(b"Hosts").is_none() && known(b"Dote").is_none());
        // Bytes that fold onto a letter or `-` but are no token's: never taken as known.
        assert!(known(b"hos\x14").is_none() && known(b"Age\r").is_none());
        assert!(field_name(b"").is_err());
    }
}
