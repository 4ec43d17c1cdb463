//! The edge's HTTP cache as Lua's `require "outpost.cache"` reaches it. This crate knows
//! nothing of the cache crate: the edge implements [`CacheAccess`] over its cache and gives
//! it to each VM ([`crate::LuaVm::set_cache_access`]), as it gives shared dicts.
//!
//! Keys are the cache's primary key *text* (what a cache rule builds, or what a script passes
//! to `set_key`); the edge hashes them as it hashes a rule's key, so `set`, `get`, `delete`
//! and `set_key` all name the same objects.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

/// An object read from the cache.
#[derive(Debug, Clone)]
pub struct CachedObject {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Current age (RFC 9111 §4.2.3), in seconds.
    pub age: u64,
    /// Freshness lifetime left, in seconds; zero or negative when stale.
    pub ttl: i64,
    pub stale: bool,
}

/// An object a script stores.
#[derive(Debug, Clone)]
pub struct NewObject {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// How long the object is fresh, as if the origin had said `s-maxage`.
    pub ttl: Duration,
    /// Purge tags, besides any in `Surrogate-Key` / `Cache-Tag`.
    pub tags: Vec<String>,
    /// The URL purges by URL and prefix match (empty: none does).
    pub url: String,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CacheAccessError {
    /// What the script passed cannot be stored (bad status, header, `Vary`).
    #[error("{0}")]
    Invalid(String),
    /// The stored response varies: its variants need a request's headers to be found.
    #[error("the stored response varies on {0}; it cannot be read by key alone")]
    Varies(String),
    #[error("cache storage: {0}")]
    Storage(String),
}

/// Worker-local futures: they run on the worker that called, between two polls of the
/// script's coroutine, so the worker goes on serving while one waits.
pub type CacheFuture<T> = Pin<Box<dyn Future<Output = Result<T, CacheAccessError>>>>;

/// What the edge provides for `outpost.cache`'s `get`, `set`, `delete`, `purge_tag` and `key`.
pub trait CacheAccess {
    /// The object under `key`; stale ones only with `allow_stale`.
    fn get(&self, key: &str, allow_stale: bool) -> CacheFuture<Option<CachedObject>>;
    fn set(&self, key: &str, object: NewObject) -> CacheFuture<()>;
    /// Whether there was an object to remove.
    fn delete(&self, key: &str) -> CacheFuture<bool>;
    /// Hard purge of every object tagged `tag`; how many there were.
    fn purge_tag(&self, tag: &str) -> CacheFuture<u64>;
    /// The key text a cache rule with the default key parts builds for `url`
    /// (`scheme://host/path?query`); `None` for a URL that is not absolute.
    fn key_for_url(&self, url: &str) -> Option<String>;
}
