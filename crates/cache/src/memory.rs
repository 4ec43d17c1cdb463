//! The memory tier: moka, weighed by bytes, with TinyLFU admission, so a scan of one-hit
//! objects does not flush the popular ones.

use std::sync::Arc;

use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::sync::Cache;

use crate::key::KeyHash;
use crate::object::ObjectMeta;
use crate::tier::{BodySource, StorageError, Stored, Tier, TierWriter};
use crate::victims::VictimSender;

#[derive(Clone)]
struct Entry {
    meta: Arc<ObjectMeta>,
    body: Arc<[Bytes]>,
}

/// Keys are SHA-256 digests already: a fast hasher is enough, and no one can aim collisions.
type Objects = Cache<KeyHash, Entry, foldhash::fast::RandomState>;

pub struct MemoryTier {
    cache: Objects,
    max_object: u64,
}

impl MemoryTier {
    /// `capacity` bytes in all; no object over `max_object` bytes.
    pub fn new(capacity: u64, max_object: u64) -> MemoryTier {
        MemoryTier::build(capacity, max_object, None)
    }

    /// Like `new`, handing each object it evicts or turns away for room to `victims`.
    pub(crate) fn with_victims(
        capacity: u64,
        max_object: u64,
        victims: VictimSender,
    ) -> MemoryTier {
        MemoryTier::build(capacity, max_object, Some(victims))
    }

    fn build(capacity: u64, max_object: u64, victims: Option<VictimSender>) -> MemoryTier {
        let builder = Cache::builder()
            .max_capacity(capacity)
            .weigher(|_, e: &Entry| e.meta.weight().min(u32::MAX as u64) as u32);
        let cache = match victims {
            // Only room: a purge (explicit) or a new version (replaced) is not a victim.
            Some(v) => builder
                .eviction_listener(move |k: Arc<KeyHash>, e: Entry, cause| {
                    if cause == RemovalCause::Size {
                        v.send(*k, e.meta, e.body);
                    }
                })
                .build_with_hasher(Default::default()),
            None => builder.build_with_hasher(Default::default()),
        };
        MemoryTier { cache, max_object }
    }

    pub fn max_object(&self) -> u64 {
        self.max_object
    }

    /// Runs moka's pending maintenance (evictions, admission) now; tests use it to see a
    /// settled state.
    pub fn settle(&self) {
        self.cache.run_pending_tasks();
    }
}

struct MemoryWriter {
    tier_cache: Objects,
    key: KeyHash,
    chunks: Vec<Bytes>,
    len: u64,
    max: u64,
}

impl TierWriter for MemoryWriter {
    fn write(&mut self, chunk: &Bytes) -> Result<(), StorageError> {
        self.len += chunk.len() as u64;
        if self.len > self.max {
            return Err(StorageError::TooLarge(self.len));
        }
        if !chunk.is_empty() {
            self.chunks.push(chunk.clone());
        }
        Ok(())
    }

    fn commit(self: Box<Self>, meta: Arc<ObjectMeta>) -> Result<(), StorageError> {
        if self.len != meta.body_len {
            return Err(StorageError::Length {
                got: self.len,
                declared: meta.body_len,
            });
        }
        self.tier_cache.insert(
            self.key,
            Entry {
                meta,
                body: self.chunks.into(),
            },
        );
        Ok(())
    }
}

impl Tier for MemoryTier {
    fn get(&self, key: &KeyHash) -> Option<Stored> {
        self.cache.get(key).map(|e| Stored {
            meta: e.meta,
            body: BodySource::Memory(e.body),
        })
    }

    fn writer(&self, key: KeyHash) -> Result<Box<dyn TierWriter>, StorageError> {
        Ok(Box::new(MemoryWriter {
            tier_cache: self.cache.clone(),
            key,
            chunks: Vec::new(),
            len: 0,
            max: self.max_object,
        }))
    }

    fn update_meta(&self, key: &KeyHash, meta: Arc<ObjectMeta>) -> Result<(), StorageError> {
        if let Some(e) = self.cache.get(key) {
            self.cache.insert(*key, Entry { meta, body: e.body });
        }
        Ok(())
    }

    fn remove(&self, key: &KeyHash) {
        self.cache.invalidate(key);
    }

    fn scan(&self, f: &mut dyn FnMut(&KeyHash, &str, &[String])) {
        for (k, e) in self.cache.iter() {
            f(&k, &e.meta.url, &e.meta.tags);
        }
    }

    // moka counts lazily; settle first so that metrics and tests see the real figures.
    fn size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}
