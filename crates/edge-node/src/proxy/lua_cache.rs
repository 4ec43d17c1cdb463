//! The edge's cache as Lua's `require "outpost.cache"` reads and writes it: the
//! [`CacheAccess`] each worker's VM is given.
//!
//! Keys are hashed as the cache phase hashes a rule's key ([`KeyHash::of`] of the text), so
//! an object a script `set`s under a rule's key is what the next request for it hits. An
//! object's freshness is its `ttl`, written as `Surrogate-Control: max-age` in its head: the
//! CDN-targeted field governs the cache ahead of `Cache-Control` (RFC 9213 §2.2), and the edge
//! removes it from what clients see, so the script's own `Cache-Control` is the browsers'.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};
use outpost_cache::policy::{self, Decision, StoreOptions};
use outpost_cache::{BodySource, Cache, KeyHash, ObjectMeta, PurgeSelector};
use outpost_lua::{CacheAccess, CacheAccessError, CacheFuture, CachedObject, NewObject};

use super::cache_phase;
use super::forward;
use crate::config::Snapshot;
use crate::rules::{CacheRule, RequestId, RequestView};

static SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");
static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// Reads the current snapshot's cache at each call: a reload that opens a new cache (new
/// storage settings) leaves no VM writing to the old one.
pub struct LuaCache {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
}

impl LuaCache {
    fn cache(&self) -> Arc<Cache> {
        self.snapshot.load().cache.clone()
    }
}

/// Runs `op` on the cache: inline when it has only the memory tier, on the blocking pool when
/// it may touch the disk, so a script waiting on a disk read does not stall the worker.
fn run<T: Send + 'static>(
    cache: Arc<Cache>,
    op: impl FnOnce(&Cache) -> Result<T, CacheAccessError> + Send + 'static,
) -> CacheFuture<T> {
    if cache.disk().is_none() {
        let out = op(&cache);
        return Box::pin(async move { out });
    }
    Box::pin(async move {
        tokio::task::spawn_blocking(move || op(&cache))
            .await
            .map_err(|e| CacheAccessError::Storage(format!("cache task failed: {e}")))?
    })
}

impl CacheAccess for LuaCache {
    fn get(&self, key: &str, allow_stale: bool) -> CacheFuture<Option<CachedObject>> {
        let key = KeyHash::of(key);
        run(self.cache(), move |cache| read(cache, &key, allow_stale))
    }

    fn set(&self, key: &str, object: NewObject) -> CacheFuture<()> {
        let key = KeyHash::of(key);
        let meta = match meta_of(&object) {
            Ok(m) => Arc::new(m),
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        run(self.cache(), move |cache| {
            cache
                .put(key, meta, &[object.body])
                .map_err(|e| CacheAccessError::Storage(e.to_string()))
        })
    }

    fn delete(&self, key: &str) -> CacheFuture<bool> {
        let key = KeyHash::of(key);
        run(self.cache(), move |cache| Ok(cache.remove(&key)))
    }

    fn purge_tag(&self, tag: &str) -> CacheFuture<u64> {
        let selector = PurgeSelector::Tag(tag.to_string());
        run(self.cache(), move |cache| {
            Ok(cache.purge(&selector, false) as u64)
        })
    }

    fn key_for_url(&self, url: &str) -> Option<String> {
        default_key(url)
    }
}

/// The object under `key`, judged fresh or stale by its own head alone: no cache rule is in
/// play, so a rule's default TTL or `enforce` does not count here.
fn read(
    cache: &Cache,
    key: &KeyHash,
    allow_stale: bool,
) -> Result<Option<CachedObject>, CacheAccessError> {
    let Some(stored) = cache.get(key) else {
        return Ok(None);
    };
    let meta = &stored.meta;
    if meta.is_variants_marker() {
        return Err(CacheAccessError::Varies(meta.vary_fields.join(", ")));
    }
    let found = policy::lookup_decision(
        &Method::GET,
        &HeaderMap::new(),
        &cache_phase::view(meta),
        SystemTime::now(),
        &StoreOptions::default(),
    );
    let stale = !matches!(found.decision, Decision::Fresh);
    if stale && !allow_stale {
        return Ok(None);
    }
    let body = match &stored.body {
        BodySource::Memory(chunks) => match chunks.len() {
            1 => chunks[0].clone(),
            _ => Bytes::from(chunks.concat()),
        },
        BodySource::File { path, len } => {
            let bytes = std::fs::read(path)
                .map_err(|e| CacheAccessError::Storage(format!("cached body unreadable: {e}")))?;
            if bytes.len() as u64 != *len {
                return Err(CacheAccessError::Storage("cached body changed size".into()));
            }
            Bytes::from(bytes)
        }
    };
    let mut headers = meta.headers.clone();
    // What a hit would tell the client: the CDN-only fields stay with the cache.
    headers.remove(&SURROGATE_CONTROL);
    headers.remove(&CDN_CACHE_CONTROL);
    Ok(Some(CachedObject {
        status: meta.status,
        headers,
        body,
        age: found.age_secs(),
        ttl: found.ttl,
        stale,
    }))
}

/// The stored head for a script's object: its headers without hop-by-hop and framing fields,
/// its TTL as the CDN-targeted `Surrogate-Control`, its tags and those of its headers.
fn meta_of(o: &NewObject) -> Result<ObjectMeta, CacheAccessError> {
    if o.headers.contains_key(header::VARY) {
        // A variant is keyed by a request's headers; a script storing by key has none.
        return Err(CacheAccessError::Invalid(
            "Vary is not supported: set one key per variant".into(),
        ));
    }
    let mut headers = o.headers.clone();
    forward::strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(&CDN_CACHE_CONTROL);
    let ttl = HeaderValue::from_str(&format!("max-age={}", o.ttl.as_secs()))
        .map_err(|_| CacheAccessError::Invalid("bad ttl".into()))?;
    headers.insert(SURROGATE_CONTROL.clone(), ttl);
    let mut tags = cache_phase::tags(&o.headers);
    tags.extend(o.tags.iter().cloned());
    tags.sort();
    tags.dedup();
    let now = cache_phase::ms(SystemTime::now());
    Ok(ObjectMeta {
        url: o.url.clone(),
        status: o.status,
        headers,
        request_time_ms: now,
        response_time_ms: now,
        vary_fields: Vec::new(),
        secondary_key: String::new(),
        tags,
        body_len: o.body.len() as u64,
        invalidated_ms: Default::default(),
        derived: Default::default(),
    })
}

/// The key a cache rule with the default key parts (scheme, host, URI, all arguments sorted)
/// builds for a GET of `url`.
fn default_key(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = match uri.scheme_str()? {
        "http" => "http",
        "https" => "https",
        _ => return None,
    };
    let host = uri.host()?.to_ascii_lowercase();
    let rule = CacheRule::compile(&Default::default()).ok()?;
    let headers = HeaderMap::new();
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let view = RequestView {
        method: &Method::GET,
        version: Version::HTTP_11,
        scheme,
        host: &host,
        path: uri.path(),
        query: uri.query(),
        headers: &headers,
        client: addr,
        local: addr,
        request_id: &RequestId::default(),
        declared: &[],
    };
    Some(rule.key(&view))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_key_of_a_url_is_the_default_rule_key_of_its_request() {
        assert_eq!(
            default_key("http://A.test/x/y?b=2&a=1").as_deref(),
            Some("s=4:http;h=6:a.test;u=4:/x/y;a=7:a=1&b=2;")
        );
        assert_eq!(default_key("/relative"), None);
        assert_eq!(default_key("ftp://a/b"), None);
    }

    #[test]
    fn a_script_object_is_fresh_for_its_ttl_and_keeps_its_browser_headers() {
        let mut h = HeaderMap::new();
        h.insert("cache-control", HeaderValue::from_static("no-store"));
        h.insert("cdn-cache-control", HeaderValue::from_static("max-age=999"));
        h.insert("surrogate-key", HeaderValue::from_static("a b"));
        let o = NewObject {
            status: 200,
            headers: h,
            body: Bytes::from_static(b"x"),
            ttl: std::time::Duration::from_secs(30),
            tags: vec!["c".into(), "a".into()],
            url: String::new(),
        };
        let m = meta_of(&o).unwrap();
        assert_eq!(m.tags, ["a", "b", "c"]);
        assert_eq!(m.headers["cache-control"], "no-store");
        assert!(!m.headers.contains_key("cdn-cache-control"));
        let found = policy::lookup_decision(
            &Method::GET,
            &HeaderMap::new(),
            &cache_phase::view(&m),
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(m.response_time_ms),
            &StoreOptions::default(),
        );
        assert!(matches!(found.decision, Decision::Fresh));
        assert_eq!(found.ttl, 30);
    }

    #[test]
    fn a_script_object_with_vary_is_refused() {
        let mut h = HeaderMap::new();
        h.insert("vary", HeaderValue::from_static("accept"));
        let o = NewObject {
            status: 200,
            headers: h,
            body: Bytes::new(),
            ttl: std::time::Duration::from_secs(1),
            tags: vec![],
            url: String::new(),
        };
        assert!(matches!(meta_of(&o), Err(CacheAccessError::Invalid(_))));
    }
}
