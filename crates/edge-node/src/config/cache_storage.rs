//! The node's HTTP cache across reloads: a reload with the same storage settings keeps the
//! same cache (and everything in it); changed settings open a new one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_cache::{Cache, CacheSettings};
use outpost_proto::pb;

use super::CompileError;

#[derive(Default)]
pub struct CacheStorage {
    current: Mutex<Option<(CacheSettings, Arc<Cache>)>>,
}

pub fn settings(s: &pb::CacheStorage) -> CacheSettings {
    let or = |v: u64, d: u64| if v == 0 { d } else { v };
    CacheSettings {
        memory_bytes: or(s.memory_bytes, 256 << 20),
        max_memory_object: or(s.max_memory_object_bytes, 8 << 20),
        disk: (!s.disk_path.is_empty())
            .then(|| (s.disk_path.clone().into(), or(s.disk_bytes, 10 << 30))),
    }
}

pub fn lock_timeout(s: &pb::CacheStorage) -> Duration {
    Duration::from_millis(if s.lock_timeout_ms == 0 {
        5000
    } else {
        u64::from(s.lock_timeout_ms)
    })
}

impl CacheStorage {
    pub fn get(&self, s: &pb::CacheStorage) -> Result<Arc<Cache>, CompileError> {
        let wanted = settings(s);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((have, cache)) = current.as_ref()
            && *have == wanted
        {
            return Ok(cache.clone());
        }
        let cache = Cache::open(&wanted).map_err(|e| CompileError {
            path: "server.cache.disk_path".into(),
            message: format!("cannot open the cache: {e}"),
        })?;
        *current = Some((wanted, cache.clone()));
        Ok(cache)
    }
}
