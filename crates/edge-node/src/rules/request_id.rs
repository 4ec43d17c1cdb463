//! A request's id: the client's `X-Request-Id` when it is short and plain, else 32 random hex
//! digits made the first time something reads it (as nginx's `$request_id`, which costs
//! nothing for a request that never uses it).

use std::cell::OnceCell;
use std::rc::Rc;

use http::{HeaderMap, HeaderValue};

pub static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Shared by its copies (the request's Lua reads the same one): made once, when first read.
#[derive(Debug, Default, Clone)]
pub struct RequestId(Rc<OnceCell<HeaderValue>>);

impl RequestId {
    /// The client's id when it sent a usable one; otherwise one is made when first read.
    pub fn from_headers(h: &HeaderMap) -> RequestId {
        let id = RequestId::default();
        if let Some(v) = h.get(&X_REQUEST_ID)
            && usable(v.as_bytes())
        {
            let _ = id.0.set(v.clone());
        }
        id
    }

    /// A fixed id (tests, internal views).
    pub fn fixed(v: HeaderValue) -> RequestId {
        RequestId(Rc::new(OnceCell::from(v)))
    }

    pub fn value(&self) -> &HeaderValue {
        self.0.get_or_init(made)
    }

    pub fn as_str(&self) -> &str {
        // Both sources are plain ASCII, so this never falls back.
        self.value().to_str().unwrap_or("")
    }
}

/// The same id for the request's Lua (`$request_id`), still made only when read.
impl RequestId {
    pub fn lazy(&self) -> outpost_lua::LazyId {
        outpost_lua::LazyId {
            cell: self.0.clone(),
            make: made,
        }
    }
}

fn made() -> HeaderValue {
    random(rand::random())
}

fn usable(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn random(id: u128) -> HeaderValue {
    let mut hex = [0u8; 32];
    for (i, b) in hex.iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((id >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&hex).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_client_id_is_kept_and_anything_else_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("req-abc.1_2"));
        assert_eq!(RequestId::from_headers(&h).as_str(), "req-abc.1_2");
        for bad in ["has space", "semi;colon", ""] {
            h.insert(&X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = RequestId::from_headers(&h);
            assert_eq!(id.as_str().len(), 32, "{bad:?}");
            assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        }
        h.insert(
            &X_REQUEST_ID,
            HeaderValue::from_str(&"a".repeat(65)).unwrap(),
        );
        assert_eq!(RequestId::from_headers(&h).as_str().len(), 32);
    }

    #[test]
    fn a_made_id_is_made_once_and_then_stays() {
        let id = RequestId::default();
        let first = id.as_str().to_string();
        assert_eq!(id.as_str(), first);
        assert_ne!(RequestId::default().as_str(), first);
        assert_eq!(
            random(0x0123_4567_89ab_cdef_u128),
            "00000000000000000123456789abcdef"
        );
    }
}
