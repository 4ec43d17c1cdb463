//! What the cache keeps about a stored response besides its body, and its on-disk encoding.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::policy::StoredFacts;

/// A stored response's head and bookkeeping. Shared (`Arc`) between the tiers and readers; only
/// the soft-purge flag changes after storing.
#[derive(Debug)]
pub struct ObjectMeta {
    /// `scheme://host/path?query` of the request that filled it: purge by URL and prefix.
    pub url: String,
    /// 0 marks a *variants marker*: the response under this primary key varies on
    /// `vary_fields`, and each variant is stored under its own key.
    pub status: u16,
    pub headers: HeaderMap,
    /// When the request was sent and the response received (RFC 9111 §4.2.3), ms since epoch.
    pub request_time_ms: u64,
    pub response_time_ms: u64,
    /// Lower-case names from `Vary` (empty when the response does not vary).
    pub vary_fields: Vec<String>,
    /// The request's values of `vary_fields`, normalised, as stored.
    pub secondary_key: String,
    /// Purge tags from `Surrogate-Key` / `Cache-Tag`.
    pub tags: Vec<String>,
    pub body_len: u64,
    /// Soft purge: when (ms since epoch; 0 = never) the object became stale, whatever its
    /// headers say.
    pub invalidated_ms: AtomicU64,
    /// Worked out from the fields above on first use, so that each hit does not parse the
    /// stored head again. Build a new `ObjectMeta` (e.g. [`ObjectMeta::clone_meta`]) to change
    /// its head: this is not recomputed.
    pub derived: Derived,
}

/// What hits read from a stored head, computed once per `ObjectMeta` (see
/// [`ObjectMeta::facts`] and [`ObjectMeta::hit_head`]).
#[derive(Debug, Default)]
pub struct Derived {
    facts: OnceLock<StoredFacts>,
    hit_head: OnceLock<HeaderMap>,
}

impl ObjectMeta {
    pub fn is_variants_marker(&self) -> bool {
        self.status == 0
    }

    pub fn is_invalidated(&self) -> bool {
        self.invalidated_at_ms().is_some()
    }

    pub fn invalidated_at_ms(&self) -> Option<u64> {
        Some(self.invalidated_ms.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }

    /// Marks it stale from `at_ms` on (the first purge wins).
    pub fn invalidate(&self, at_ms: u64) {
        let _ = self.invalidated_ms.compare_exchange(
            0,
            at_ms.max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The stored response as [`crate::policy::lookup_with_facts`] reads it.
    pub fn facts(&self) -> &StoredFacts {
        self.derived.facts.get_or_init(|| {
            StoredFacts::of(
                StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK),
                &self.headers,
                time(self.request_time_ms),
                time(self.response_time_ms),
            )
        })
    }

    /// The head a full hit starts from, built by `build` on first use and kept: the caller
    /// decides what it holds, and must always pass the same `build`.
    pub fn hit_head(&self, build: impl FnOnce(&ObjectMeta) -> HeaderMap) -> &HeaderMap {
        self.derived.hit_head.get_or_init(|| build(self))
    }

    /// Bytes this object costs in memory, roughly: body plus head.
    pub fn weight(&self) -> u64 {
        let head: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        self.body_len + head as u64 + self.url.len() as u64 + 256
    }

    pub fn clone_meta(&self) -> ObjectMeta {
        ObjectMeta {
            url: self.url.clone(),
            status: self.status,
            headers: self.headers.clone(),
            request_time_ms: self.request_time_ms,
            response_time_ms: self.response_time_ms,
            vary_fields: self.vary_fields.clone(),
            secondary_key: self.secondary_key.clone(),
            tags: self.tags.clone(),
            body_len: self.body_len,
            invalidated_ms: AtomicU64::new(self.invalidated_ms.load(Ordering::Relaxed)),
            derived: Derived::default(),
        }
    }

    /// Binary encoding: a version byte, then fixed fields, then length-prefixed strings and
    /// header pairs. Header values are bytes, not necessarily UTF-8, so JSON would not do.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.push(ENCODING_VERSION);
        out.extend_from_slice(&self.invalidated_ms.load(Ordering::Relaxed).to_le_bytes());
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&self.request_time_ms.to_le_bytes());
        out.extend_from_slice(&self.response_time_ms.to_le_bytes());
        out.extend_from_slice(&self.body_len.to_le_bytes());
        put_bytes(&mut out, self.url.as_bytes());
        put_bytes(&mut out, self.secondary_key.as_bytes());
        put_list(&mut out, &self.vary_fields);
        put_list(&mut out, &self.tags);
        out.extend_from_slice(&(self.headers.len() as u32).to_le_bytes());
        for (k, v) in &self.headers {
            put_bytes(&mut out, k.as_str().as_bytes());
            put_bytes(&mut out, v.as_bytes());
        }
        out
    }

    pub fn decode(mut b: &[u8]) -> Result<ObjectMeta, DecodeError> {
        let r = &mut b;
        if take(r, 1)?[0] != ENCODING_VERSION {
            return Err(DecodeError("unknown encoding version"));
        }
        let invalidated_ms = get_u64(r)?;
        let status = u16::from_le_bytes(take(r, 2)?.try_into().unwrap_or_default());
        let request_time_ms = get_u64(r)?;
        let response_time_ms = get_u64(r)?;
        let body_len = get_u64(r)?;
        let url = get_string(r)?;
        let secondary_key = get_string(r)?;
        let vary_fields = get_list(r)?;
        let tags = get_list(r)?;
        let n = get_u32(r)? as usize;
        let mut headers = HeaderMap::with_capacity(n.min(256));
        for _ in 0..n {
            let name = take_prefixed(r)?;
            let value = take_prefixed(r)?;
            let name = HeaderName::from_bytes(name).map_err(|_| DecodeError("header name"))?;
            let value = HeaderValue::from_bytes(value).map_err(|_| DecodeError("header value"))?;
            headers.append(name, value);
        }
        Ok(ObjectMeta {
            url,
            status,
            headers,
            request_time_ms,
            response_time_ms,
            vary_fields,
            secondary_key,
            tags,
            body_len,
            invalidated_ms: AtomicU64::new(invalidated_ms),
            derived: Derived::default(),
        })
    }
}

const ENCODING_VERSION: u8 = 2;

fn time(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

#[derive(Debug, thiserror::Error)]
#[error("corrupt object metadata: {0}")]
pub struct DecodeError(&'static str);

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_list(out: &mut Vec<u8>, items: &[String]) {
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for s in items {
        put_bytes(out, s.as_bytes());
    }
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if b.len() < n {
        return Err(DecodeError("truncated"));
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn get_u32(b: &mut &[u8]) -> Result<u32, DecodeError> {
    Ok(u32::from_le_bytes(
        take(b, 4)?.try_into().unwrap_or_default(),
    ))
}

fn get_u64(b: &mut &[u8]) -> Result<u64, DecodeError> {
    Ok(u64::from_le_bytes(
        take(b, 8)?.try_into().unwrap_or_default(),
    ))
}

fn take_prefixed<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let n = get_u32(b)? as usize;
    take(b, n)
}

fn get_string(b: &mut &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(take_prefixed(b)?.to_vec()).map_err(|_| DecodeError("not UTF-8"))
}

fn get_list(b: &mut &[u8]) -> Result<Vec<String>, DecodeError> {
    let n = get_u32(b)? as usize;
    if n > b.len() {
        return Err(DecodeError("list longer than the data"));
    }
    (0..n).map(|_| get_string(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_with_non_utf8_header_values() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.append("set-thing", HeaderValue::from_bytes(b"a\xe9b").unwrap());
        headers.append("set-thing", HeaderValue::from_static("second"));
        let m = ObjectMeta {
            url: "https://a.test/x?y=1".into(),
            status: 200,
            headers,
            request_time_ms: 1,
            response_time_ms: 2,
            vary_fields: vec!["accept-encoding".into()],
            secondary_key: "gzip".into(),
            tags: vec!["t1".into(), "t2".into()],
            body_len: 42,
            invalidated_ms: AtomicU64::new(5),
            derived: Derived::default(),
        };
        let d = ObjectMeta::decode(&m.encode()).unwrap();
        assert_eq!(d.url, m.url);
        assert_eq!(d.headers, m.headers);
        assert_eq!((d.status, d.body_len, d.response_time_ms), (200, 42, 2));
        assert_eq!(d.tags, m.tags);
        assert_eq!(d.vary_fields, m.vary_fields);
        assert_eq!(d.invalidated_at_ms(), Some(5));
    }

    #[test]
    fn truncated_metadata_is_an_error_not_a_panic() {
        let m = ObjectMeta {
            url: "u".into(),
            status: 200,
            headers: HeaderMap::new(),
            request_time_ms: 0,
            response_time_ms: 0,
            vary_fields: vec![],
            secondary_key: String::new(),
            tags: vec![],
            body_len: 0,
            invalidated_ms: AtomicU64::new(0),
            derived: Derived::default(),
        };
        let bytes = m.encode();
        for cut in 0..bytes.len() {
            assert!(ObjectMeta::decode(&bytes[..cut]).is_err());
        }
    }
}
