//! The disk tier: one immutable body file and one small head file per object, under a cache
//! directory, with the index in memory.
//!
//! Layout: `objects/<h0h1>/<hash>.meta` and `objects/<h0h1>/<hash>.<generation>.body`; writes
//! go to `tmp/` first. An object becomes visible only when its `.meta` is renamed into place,
//! after its body is complete, so a write torn by a crash or a kill is never served: at start
//! `tmp/` is emptied, a body no head points to is deleted, and a head whose body is missing or
//! of the wrong length is dropped. File names are hex digests, so no key escapes the directory.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::key::KeyHash;
use crate::object::ObjectMeta;
use crate::tier::{BodySource, StorageError, Stored, Tier, TierWriter};

const META_MAGIC: &[u8; 4] = b"OPM1";

struct IndexEntry {
    generation: u64,
    size: u64,
    url: String,
    tags: Vec<String>,
    /// A logical clock: larger = used more recently.
    last_used: u64,
}

struct Index {
    entries: HashMap<KeyHash, IndexEntry>,
    bytes: u64,
}

pub struct DiskTier {
    root: PathBuf,
    capacity: u64,
    index: Mutex<Index>,
    clock: AtomicU64,
    generation: AtomicU64,
}

impl DiskTier {
    /// Opens (or creates) the cache directory and rebuilds the index from it.
    pub fn open(root: impl Into<PathBuf>, capacity: u64) -> Result<DiskTier, StorageError> {
        let root = root.into();
        fs::create_dir_all(root.join("objects"))?;
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let mut index = Index {
            entries: HashMap::new(),
            bytes: 0,
        };
        let mut max_generation = 0;
        let mut bodies = Vec::new();
        for shard in fs::read_dir(root.join("objects"))? {
            let shard = shard?.path();
            if !shard.is_dir() {
                continue;
            }
            for file in fs::read_dir(&shard)? {
                let path = file?.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if let Some(hex) = name.strip_suffix(".meta") {
                    let Some(key) = KeyHash::from_hex(hex) else {
                        let _ = fs::remove_file(&path);
                        continue;
                    };
                    match read_meta(&path) {
                        Ok((generation, meta))
                            if body_len_on_disk(&body_path(&root, &key, generation))
                                == Some(meta.body_len) =>
                        {
                            max_generation = max_generation.max(generation);
                            let size = meta.weight();
                            index.bytes += size;
                            index.entries.insert(
                                key,
                                IndexEntry {
                                    generation,
                                    size,
                                    url: meta.url.clone(),
                                    tags: meta.tags.clone(),
                                    last_used: 0,
                                },
                            );
                        }
                        _ => {
                            tracing::warn!(path = %path.display(), "dropping a damaged cache object");
                            let _ = fs::remove_file(&path);
                        }
                    }
                } else if name.ends_with(".body") {
                    bodies.push(path);
                }
            }
        }
        // Bodies that no head points to: leftovers of interrupted writes or replacements.
        for path in bodies {
            let referenced = parse_body_name(&path)
                .and_then(|(key, g)| index.entries.get(&key).map(|e| e.generation == g))
                .unwrap_or(false);
            if !referenced {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(DiskTier {
            root,
            capacity,
            index: Mutex::new(index),
            clock: AtomicU64::new(1),
            generation: AtomicU64::new(max_generation + 1),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_generation(&self) -> u64 {
        // Unique across restarts too: seeded past the largest generation found on disk.
        self.generation.fetch_add(1, Ordering::Relaxed)
    }

    /// Evicts the least recently used objects until the tier is at 90% of its capacity.
    fn evict_if_full(&self) {
        let victims: Vec<(KeyHash, u64)> = {
            let mut index = self.lock();
            if index.bytes <= self.capacity {
                return;
            }
            let target = self.capacity / 10 * 9;
            let mut by_age: Vec<(u64, KeyHash, u64, u64)> = index
                .entries
                .iter()
                .map(|(k, e)| (e.last_used, *k, e.size, e.generation))
                .collect();
            by_age.sort_unstable();
            let mut victims = Vec::new();
            for (_, key, size, generation) in by_age {
                if index.bytes <= target {
                    break;
                }
                index.entries.remove(&key);
                index.bytes -= size;
                victims.push((key, generation));
            }
            victims
        };
        for (key, generation) in victims {
            let _ = fs::remove_file(meta_path(&self.root, &key));
            let _ = fs::remove_file(body_path(&self.root, &key, generation));
        }
    }

    fn write_meta(&self, key: &KeyHash, generation: u64, meta: &ObjectMeta) -> std::io::Result<()> {
        let tmp =
            self.root
                .join("tmp")
                .join(format!("{}.{}.meta", key.hex(), self.next_generation()));
        let mut f = File::create(&tmp)?;
        f.write_all(META_MAGIC)?;
        f.write_all(&generation.to_le_bytes())?;
        f.write_all(&meta.encode())?;
        drop(f);
        let dest = meta_path(&self.root, key);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::rename(&tmp, &dest)
    }
}

fn shard_dir(root: &Path, key: &KeyHash) -> PathBuf {
    root.join("objects").join(&key.hex()[..2])
}

fn meta_path(root: &Path, key: &KeyHash) -> PathBuf {
    shard_dir(root, key).join(format!("{}.meta", key.hex()))
}

fn body_path(root: &Path, key: &KeyHash, generation: u64) -> PathBuf {
    shard_dir(root, key).join(format!("{}.{generation}.body", key.hex()))
}

fn parse_body_name(path: &Path) -> Option<(KeyHash, u64)> {
    let name = path.file_name()?.to_str()?.strip_suffix(".body")?;
    let (hex, generation) = name.split_once('.')?;
    Some((KeyHash::from_hex(hex)?, generation.parse().ok()?))
}

fn body_len_on_disk(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.len())
}

fn read_meta(path: &Path) -> Result<(u64, ObjectMeta), StorageError> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let bad = || StorageError::Io(std::io::Error::other("damaged head file"));
    if bytes.len() < 12 || &bytes[..4] != META_MAGIC {
        return Err(bad());
    }
    let generation = u64::from_le_bytes(bytes[4..12].try_into().map_err(|_| bad())?);
    let meta = ObjectMeta::decode(&bytes[12..]).map_err(|_| bad())?;
    Ok((generation, meta))
}

/// A body being written to `tmp/`; visible only after `commit`.
pub struct DiskWriter {
    tier: Arc<DiskTier>,
    key: KeyHash,
    generation: u64,
    tmp: PathBuf,
    file: Option<File>,
    len: u64,
}

impl DiskWriter {
    /// Bytes written so far; the path to read them from while the write goes on.
    pub fn progress(&self) -> (u64, &Path) {
        (self.len, &self.tmp)
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl TierWriter for DiskWriter {
    fn write(&mut self, chunk: &Bytes) -> Result<(), StorageError> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("writer closed"))?;
        f.write_all(chunk)?;
        self.len += chunk.len() as u64;
        if self.len > self.tier.capacity {
            return Err(StorageError::TooLarge(self.len));
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>, meta: Arc<ObjectMeta>) -> Result<(), StorageError> {
        if self.len != meta.body_len {
            return Err(StorageError::Length {
                got: self.len,
                declared: meta.body_len,
            });
        }
        let file = self.file.take();
        drop(file);
        let tier = self.tier.clone();
        let body = body_path(&tier.root, &self.key, self.generation);
        if let Some(dir) = body.parent() {
            fs::create_dir_all(dir)?;
        }
        let renamed = fs::rename(&self.tmp, &body)
            .and_then(|_| tier.write_meta(&self.key, self.generation, &meta));
        if let Err(e) = renamed {
            let _ = fs::remove_file(&self.tmp);
            let _ = fs::remove_file(&body);
            return Err(e.into());
        }
        let size = meta.weight();
        let replaced = {
            let mut index = tier.lock();
            let last_used = tier.clock.fetch_add(1, Ordering::Relaxed);
            let old = index.entries.insert(
                self.key,
                IndexEntry {
                    generation: self.generation,
                    size,
                    url: meta.url.clone(),
                    tags: meta.tags.clone(),
                    last_used,
                },
            );
            index.bytes += size;
            if let Some(old) = &old {
                index.bytes -= old.size;
            }
            old
        };
        if let Some(old) = replaced
            && old.generation != self.generation
        {
            let _ = fs::remove_file(body_path(&tier.root, &self.key, old.generation));
        }
        tier.evict_if_full();
        Ok(())
    }
}

/// The disk tier behind an `Arc`, so writers can outlive the call that made them.
#[derive(Clone)]
pub struct SharedDisk(pub Arc<DiskTier>);

impl SharedDisk {
    pub fn disk_writer(&self, key: KeyHash) -> Result<DiskWriter, StorageError> {
        let generation = self.0.next_generation();
        let tmp = self
            .0
            .root
            .join("tmp")
            .join(format!("{}.{generation}.body", key.hex()));
        let file = File::create(&tmp)?;
        Ok(DiskWriter {
            tier: self.0.clone(),
            key,
            generation,
            tmp,
            file: Some(file),
            len: 0,
        })
    }
}

impl SharedDisk {
    /// Counts a use of the object in another tier; says whether the disk holds it.
    pub fn touch(&self, key: &KeyHash) -> bool {
        let mut index = self.0.lock();
        match index.entries.get_mut(key) {
            Some(e) => {
                e.last_used = self.0.clock.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }
}

impl Tier for SharedDisk {
    fn get(&self, key: &KeyHash) -> Option<Stored> {
        let generation = {
            let mut index = self.0.lock();
            let e = index.entries.get_mut(key)?;
            e.last_used = self.0.clock.fetch_add(1, Ordering::Relaxed);
            e.generation
        };
        let (on_disk_generation, meta) = read_meta(&meta_path(&self.0.root, key)).ok()?;
        if on_disk_generation != generation {
            return None;
        }
        let path = body_path(&self.0.root, key, generation);
        Some(Stored {
            body: BodySource::File {
                path,
                len: meta.body_len,
            },
            meta: Arc::new(meta),
        })
    }

    fn writer(&self, key: KeyHash) -> Result<Box<dyn TierWriter>, StorageError> {
        Ok(Box::new(self.disk_writer(key)?))
    }

    fn update_meta(&self, key: &KeyHash, meta: Arc<ObjectMeta>) -> Result<(), StorageError> {
        let generation = match self.0.lock().entries.get(key) {
            Some(e) => e.generation,
            None => return Ok(()),
        };
        self.0.write_meta(key, generation, &meta)?;
        if let Some(e) = self.0.lock().entries.get_mut(key) {
            e.tags = meta.tags.clone();
        }
        Ok(())
    }

    fn remove(&self, key: &KeyHash) {
        let removed = {
            let mut index = self.0.lock();
            let e = index.entries.remove(key);
            if let Some(e) = &e {
                index.bytes -= e.size;
            }
            e
        };
        if let Some(e) = removed {
            let _ = fs::remove_file(meta_path(&self.0.root, key));
            let _ = fs::remove_file(body_path(&self.0.root, key, e.generation));
        }
    }

    fn scan(&self, f: &mut dyn FnMut(&KeyHash, &str, &[String])) {
        let snapshot: Vec<(KeyHash, String, Vec<String>)> = self
            .0
            .lock()
            .entries
            .iter()
            .map(|(k, e)| (*k, e.url.clone(), e.tags.clone()))
            .collect();
        for (k, url, tags) in snapshot {
            f(&k, &url, &tags);
        }
    }

    fn size(&self) -> u64 {
        self.0.lock().bytes
    }

    fn len(&self) -> u64 {
        self.0.lock().entries.len() as u64
    }
}
