//! The cache as the proxy sees it: lookups through memory then disk (promoting what the disk
//! serves), fills with request collapsing, and purges.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

use crate::admission::DiskAdmission;
use crate::disk::{DiskTier, DiskWriter, SharedDisk};
use crate::fill::{Fill, FillEnd};
use crate::key::KeyHash;
use crate::memory::MemoryTier;
use crate::object::ObjectMeta;
use crate::tier::{BodySource, StorageError, Stored, Tier, TierWriter};
use crate::victims::{self, PurgeEpoch, Victim};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    pub memory_bytes: u64,
    /// Larger objects live on disk only.
    pub max_memory_object: u64,
    /// Directory and size of the disk tier; `None`: memory only.
    pub disk: Option<(PathBuf, u64)>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            memory_bytes: 256 << 20,
            max_memory_object: 8 << 20,
            disk: None,
        }
    }
}

pub struct Cache {
    memory: MemoryTier,
    disk: Option<SharedDisk>,
    /// Which memory victims the disk takes: those evicted twice within a window.
    victim_admission: Mutex<DiskAdmission>,
    purges: PurgeEpoch,
    victims_pending: Arc<victims::Pending>,
    fills: Mutex<HashMap<KeyHash, Arc<Fill>>>,
    me: Weak<Cache>,
}

/// What a lookup found under a primary key.
pub struct Lookup {
    /// The key the response for this request is (or would be) stored under: the primary key,
    /// or a variant key when the stored response varies.
    pub key: KeyHash,
    pub stored: Option<Stored>,
    /// From a variants marker: the fields the response varies on.
    pub vary_fields: Vec<String>,
}

/// What a request that missed should do.
pub enum FillRole {
    /// Go to the origin and fill the cache.
    Leader(FillHandle),
    /// Another request is filling this key: wait for its head, then stream from it.
    Follower(Arc<Fill>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurgeSelector {
    /// `scheme://host/path?query`, exactly.
    Url(String),
    Prefix(String),
    Tag(String),
    All,
}

impl Cache {
    pub fn open(settings: &CacheSettings) -> Result<Arc<Cache>, StorageError> {
        let disk = match &settings.disk {
            Some((dir, size)) => Some(SharedDisk(Arc::new(DiskTier::open(dir, *size)?))),
            None => None,
        };
        let window = DiskAdmission::window_for(settings.disk.as_ref().map_or(0, |d| d.1));
        let purges = PurgeEpoch::default();
        let pending = Arc::new(victims::Pending::default());
        Ok(Arc::new_cyclic(|me: &Weak<Cache>| {
            let memory = (|| {
                disk.as_ref()?;
                let cache = me.clone();
                let sender = victims::spawn(purges.clone(), pending.clone(), move |v, epoch| {
                    if let Some(c) = cache.upgrade() {
                        c.take_victim(v, epoch);
                    }
                });
                match sender {
                    Ok(s) => Some(MemoryTier::with_victims(
                        settings.memory_bytes,
                        settings.max_memory_object,
                        s,
                    )),
                    Err(e) => {
                        tracing::warn!(error = %e, "no victim writer; memory evictions are lost");
                        None
                    }
                }
            })()
            .unwrap_or_else(|| MemoryTier::new(settings.memory_bytes, settings.max_memory_object));
            Cache {
                memory,
                disk,
                victim_admission: Mutex::new(DiskAdmission::new(window)),
                purges: purges.clone(),
                victims_pending: pending.clone(),
                fills: Mutex::new(HashMap::new()),
                me: me.clone(),
            }
        }))
    }

    /// Settles the memory tier and waits until the objects it evicted are on disk (or
    /// dropped); tests and the `zipf_tiers` example use it to see a settled state.
    pub fn settle(&self) {
        self.memory.settle();
        self.victims_pending.wait_empty();
    }

    pub fn memory(&self) -> &MemoryTier {
        &self.memory
    }

    pub fn disk(&self) -> Option<&SharedDisk> {
        self.disk.as_ref()
    }

    /// The object under `key`: memory first, then disk (promoted to memory when it fits).
    pub fn get(&self, key: &KeyHash) -> Option<Stored> {
        if let Some(s) = self.memory.get(key) {
            return Some(s);
        }
        let disk = self.disk.as_ref()?;
        let stored = disk.get(key)?;
        if let BodySource::File { path, len } = &stored.body
            && *len <= self.memory.max_object()
            && let Ok(bytes) = std::fs::read(path)
            && bytes.len() as u64 == *len
        {
            let body = [Bytes::from(bytes)];
            let _ = self.memory.put(*key, stored.meta.clone(), &body);
            return Some(Stored {
                meta: stored.meta,
                body: BodySource::Memory(Arc::from(body.to_vec())),
            });
        }
        Some(stored)
    }

    /// Looks up `primary`, following a variants marker with `secondary` (the caller computes
    /// it from the marker's fields and the request; see [`crate::policy`]).
    pub fn lookup(&self, primary: &str, secondary: impl Fn(&[String]) -> String) -> Lookup {
        let key = KeyHash::of(primary);
        match self.get(&key) {
            Some(s) if s.meta.is_variants_marker() => {
                let fields = s.meta.vary_fields.clone();
                let variant = KeyHash::variant(primary, &secondary(&fields));
                Lookup {
                    key: variant,
                    stored: self.get(&variant),
                    vary_fields: fields,
                }
            }
            found => Lookup {
                key,
                stored: found,
                vary_fields: Vec::new(),
            },
        }
    }

    /// Records that the response under `primary` varies on `fields`.
    pub fn put_variants_marker(&self, primary: &str, url: &str, fields: Vec<String>) {
        let meta = Arc::new(ObjectMeta {
            url: url.to_string(),
            status: 0,
            headers: http::HeaderMap::new(),
            request_time_ms: 0,
            response_time_ms: 0,
            vary_fields: fields,
            secondary_key: String::new(),
            tags: Vec::new(),
            body_len: 0,
            invalidated_ms: Default::default(),
            derived: Default::default(),
        });
        let key = KeyHash::of(primary);
        let _ = self.memory.put(key, meta.clone(), &[]);
        if let Some(d) = &self.disk {
            let _ = d.put(key, meta, &[]);
        }
    }

    /// A miss on `key`: become the one request that fills it, or follow the one that does.
    pub fn begin_fill(&self, key: KeyHash) -> FillRole {
        let mut fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = fills.get(&key)
            && f.end() == FillEnd::Running
        {
            return FillRole::Follower(f.clone());
        }
        let fill = Fill::new();
        fills.insert(key, fill.clone());
        FillRole::Leader(FillHandle {
            cache: self.me.upgrade(),
            key,
            store_key: key,
            fill,
            memory: None,
            disk: None,
            disk_only: false,
            started: false,
            finished: false,
        })
    }

    /// An object memory dropped for room: a use if the disk has it, else maybe a new file.
    fn take_victim(&self, v: Victim, purges: &PurgeEpoch) {
        let Some(disk) = &self.disk else { return };
        if disk.touch(&v.key) {
            return;
        }
        let admitted = self
            .victim_admission
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(&v.key);
        if !admitted {
            return;
        }
        let Some(_gate) = purges.unchanged_since(v.epoch) else {
            return;
        };
        if let Err(e) = disk.put(v.key, v.meta, &v.body) {
            tracing::warn!(error = %e, "could not write an evicted object to disk");
        }
    }

    fn end_fill(&self, key: &KeyHash, fill: &Arc<Fill>) {
        let mut fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        if fills.get(key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            fills.remove(key);
        }
    }

    /// Replaces a stored object's head (after a 304 revalidation), in every tier holding it.
    pub fn update_meta(&self, key: &KeyHash, meta: Arc<ObjectMeta>) {
        let _ = self.memory.update_meta(key, meta.clone());
        if let Some(d) = &self.disk
            && let Err(e) = d.update_meta(key, meta)
        {
            tracing::warn!(error = %e, "could not update a cached head on disk");
        }
    }

    /// Removes the object under `key` from every tier; says whether any tier held it.
    pub fn remove(&self, key: &KeyHash) -> bool {
        self.purges.bump();
        let mut held = self.memory.get(key).is_some();
        self.memory.remove(key);
        if let Some(d) = &self.disk {
            held |= d.get(key).is_some();
            d.remove(key);
        }
        held
    }

    /// Stores a whole object at once (one a script made, not a fill from the origin): in
    /// memory when it fits, and on disk when there is a disk tier. Fails only if no tier took
    /// it.
    pub fn put(
        &self,
        key: KeyHash,
        meta: Arc<ObjectMeta>,
        body: &[Bytes],
    ) -> Result<(), StorageError> {
        let mut stored = false;
        let mut first_error = None;
        if meta.body_len <= self.memory.max_object() {
            match self.memory.put(key, meta.clone(), body) {
                Ok(()) => stored = true,
                Err(e) => first_error = Some(e),
            }
        } else {
            // An older, smaller copy must not outlive this one in memory.
            self.memory.remove(&key);
            first_error = Some(StorageError::TooLarge(meta.body_len));
        }
        if let Some(d) = &self.disk {
            match d.put(key, meta, body) {
                Ok(()) => stored = true,
                Err(e) => {
                    tracing::warn!(error = %e, "could not store an object on disk");
                    // The memory copy, if any, still serves; a stale disk copy must not.
                    d.remove(&key);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if !stored => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes (hard) or marks stale (soft) every object the selector matches; returns how
    /// many objects it touched.
    pub fn purge(&self, selector: &PurgeSelector, soft: bool) -> usize {
        // A matching object on its way from memory to disk is in neither tier's scan.
        self.purges.bump();
        let mut keys = std::collections::HashSet::new();
        let mut collect = |k: &KeyHash, url: &str, tags: &[String]| {
            let hit = match selector {
                PurgeSelector::Url(u) => url == u,
                PurgeSelector::Prefix(p) => url.starts_with(p.as_str()),
                PurgeSelector::Tag(t) => tags.iter().any(|x| x == t),
                PurgeSelector::All => true,
            };
            if hit {
                keys.insert(*k);
            }
        };
        self.memory.scan(&mut collect);
        if let Some(d) = &self.disk {
            d.scan(&mut collect);
        }
        for key in &keys {
            if soft {
                self.invalidate(key);
            } else {
                self.remove(key);
            }
        }
        keys.len()
    }

    /// Soft purge of one object: it stays, but counts as stale from now on.
    fn invalidate(&self, key: &KeyHash) {
        self.purges.bump();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        if let Some(s) = self.memory.get(key) {
            s.meta.invalidate(now_ms);
        }
        if let Some(d) = &self.disk
            && let Some(s) = d.get(key)
        {
            s.meta.invalidate(now_ms);
            let _ = d.update_meta(key, s.meta);
        }
    }
}

/// The leader's side of a fill.
pub struct FillHandle {
    cache: Option<Arc<Cache>>,
    /// The key requests collapse on.
    key: KeyHash,
    /// The key the object is stored under: `key`, or a variant key when the response varies.
    store_key: KeyHash,
    fill: Arc<Fill>,
    memory: Option<Box<dyn TierWriter>>,
    disk: Option<DiskWriter>,
    /// The body is too large for memory. Otherwise the disk writer, opened only for a body
    /// of unknown length, is a fallback for when the body outgrows memory.
    disk_only: bool,
    started: bool,
    finished: bool,
}

impl FillHandle {
    pub fn key(&self) -> KeyHash {
        self.key
    }

    pub fn fill(&self) -> Arc<Fill> {
        self.fill.clone()
    }

    /// The response is storable: publish its head to followers and open the tiers. A body
    /// declared larger than every tier takes is abandoned here.
    pub fn start(
        &mut self,
        meta: Arc<ObjectMeta>,
        declared_len: Option<u64>,
        store_key: KeyHash,
    ) -> bool {
        let Some(cache) = self.cache.clone() else {
            return false;
        };
        self.store_key = store_key;
        let fits_memory = declared_len.is_none_or(|n| n <= cache.memory.max_object());
        if fits_memory {
            self.memory = cache.memory.writer(store_key).ok();
        }
        // Memory's victims reach the disk later; only what memory cannot take goes now.
        let fits_for_sure = declared_len.is_some_and(|n| n <= cache.memory.max_object());
        self.disk_only = !fits_memory;
        if let Some(d) = &cache.disk
            && !fits_for_sure
        {
            match d.disk_writer(store_key) {
                Ok(w) => self.disk = Some(w),
                Err(e) => tracing::warn!(error = %e, "cannot open a cache file"),
            }
        }
        if self.memory.is_none() && self.disk.is_none() {
            self.abandon();
            return false;
        }
        let mut s = self.fill.lock();
        s.meta = Some(meta);
        s.in_memory = fits_memory;
        if !fits_memory {
            s.spill = self
                .disk
                .as_ref()
                .map(|d| (d.progress().1.to_path_buf(), 0));
        }
        drop(s);
        self.started = true;
        self.fill.bump();
        true
    }

    /// A body chunk, as it goes to the leader's client.
    pub fn push(&mut self, chunk: &Bytes) {
        if !self.started || self.finished || chunk.is_empty() {
            return;
        }
        if let Some(m) = &mut self.memory
            && m.write(chunk).is_err()
        {
            self.memory = None;
        }
        if let Some(d) = &mut self.disk
            && let Err(e) = d.write(chunk)
        {
            tracing::warn!(error = %e, "cache file write failed; not storing");
            self.disk = None;
        }
        let mut s = self.fill.lock();
        s.received += chunk.len() as u64;
        if s.in_memory && self.memory.is_some() {
            s.chunks.push(chunk.clone());
        } else if s.in_memory {
            // Past the memory limit: followers continue from the file, or the fill ends.
            s.in_memory = false;
            s.chunks = Vec::new();
        }
        match &self.disk {
            Some(d) if !s.in_memory => {
                let (written, path) = d.progress();
                s.spill = Some((path.to_path_buf(), written));
            }
            None if !s.in_memory => {
                s.end = FillEnd::Abandoned;
            }
            _ => {}
        }
        let abandoned = s.end == FillEnd::Abandoned;
        drop(s);
        self.fill.bump();
        if abandoned {
            self.finished = true;
            if let Some(c) = &self.cache {
                c.end_fill(&self.key, &self.fill);
            }
        }
    }

    /// The whole body arrived: store it, with `meta` (its final head and length).
    pub fn finish(mut self, meta: Arc<ObjectMeta>) {
        if !self.started || self.finished {
            return;
        }
        self.finished = true;
        let mut stored_somewhere = false;
        if let Some(m) = self.memory.take() {
            stored_somewhere |= m.commit(meta.clone()).is_ok();
        }
        let mut final_path = None;
        // Memory took the whole body: the fallback file is not needed.
        let disk = self
            .disk
            .take()
            .filter(|_| self.disk_only || !stored_somewhere);
        if let Some(d) = disk {
            let key = self.store_key;
            match Box::new(d).commit(meta.clone()) {
                Ok(()) => {
                    stored_somewhere = true;
                    final_path = self
                        .cache
                        .as_ref()
                        .and_then(|c| c.disk.as_ref())
                        .and_then(|d| d.get(&key))
                        .and_then(|s| match s.body {
                            BodySource::File { path, .. } => Some(path),
                            BodySource::Memory(_) => None,
                        });
                }
                Err(e) => tracing::warn!(error = %e, "cache commit failed"),
            }
        }
        {
            let mut s = self.fill.lock();
            if let Some(p) = final_path {
                s.spill = Some((p, s.received));
            }
            s.meta = Some(meta);
            s.end = if stored_somewhere || s.in_memory {
                FillEnd::Complete
            } else {
                FillEnd::Failed
            };
        }
        self.fill.bump();
        if let Some(c) = &self.cache {
            c.end_fill(&self.key, &self.fill);
        }
    }

    /// The response is not for sharing: followers go to the origin themselves.
    pub fn abandon(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.memory = None;
        self.disk = None;
        self.fill.lock().end = FillEnd::Abandoned;
        self.fill.bump();
        if let Some(c) = &self.cache {
            c.end_fill(&self.key, &self.fill);
        }
    }
}

impl Drop for FillHandle {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            let mut s = self.fill.lock();
            s.end = if s.received == 0 && !self.started {
                FillEnd::Abandoned
            } else {
                FillEnd::Failed
            };
            drop(s);
            self.fill.bump();
            if let Some(c) = &self.cache {
                c.end_fill(&self.key, &self.fill);
            }
        }
    }
}
