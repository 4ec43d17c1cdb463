//! The storage trait both tiers implement, so one test suite runs against each.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::key::KeyHash;
use crate::object::ObjectMeta;

/// Where a stored body is.
#[derive(Clone, Debug)]
pub enum BodySource {
    Memory(Arc<[Bytes]>),
    /// A complete, immutable body file of `len` bytes.
    File {
        path: PathBuf,
        len: u64,
    },
}

#[derive(Clone, Debug)]
pub struct Stored {
    pub meta: Arc<ObjectMeta>,
    pub body: BodySource,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object larger than this tier takes ({0} bytes)")]
    TooLarge(u64),
    #[error("body length {got} differs from the declared {declared}")]
    Length { got: u64, declared: u64 },
    #[error("cache storage I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A body being written. Dropped without `commit`, it leaves nothing behind.
pub trait TierWriter: Send {
    fn write(&mut self, chunk: &Bytes) -> Result<(), StorageError>;
    /// Makes the object visible, atomically: readers see the old object or the whole new one.
    fn commit(self: Box<Self>, meta: Arc<ObjectMeta>) -> Result<(), StorageError>;
}

/// One storage tier.
pub trait Tier: Send + Sync {
    fn get(&self, key: &KeyHash) -> Option<Stored>;
    fn writer(&self, key: KeyHash) -> Result<Box<dyn TierWriter>, StorageError>;
    /// Stores a whole object at once (promotion from another tier, small objects).
    fn put(&self, key: KeyHash, meta: Arc<ObjectMeta>, body: &[Bytes]) -> Result<(), StorageError> {
        let mut w = self.writer(key)?;
        for chunk in body {
            w.write(chunk)?;
        }
        w.commit(meta)
    }
    /// Replaces the head of a stored object, keeping its body (after a 304, or a soft purge).
    fn update_meta(&self, key: &KeyHash, meta: Arc<ObjectMeta>) -> Result<(), StorageError>;
    fn remove(&self, key: &KeyHash);
    /// Calls `f` with every object's key, URL and tags (for purges).
    fn scan(&self, f: &mut dyn FnMut(&KeyHash, &str, &[String]));
    /// Bytes used.
    fn size(&self) -> u64;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
