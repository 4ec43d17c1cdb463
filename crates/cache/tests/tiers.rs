//! How objects are spread over the two tiers: fills go to memory, what memory drops goes to
//! disk (if dropped twice), objects too large for memory go straight to disk, and a restart
//! keeps what is on disk.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use http::HeaderMap;
use outpost_cache::{
    Cache, CacheSettings, DiskTier, FillRole, KeyHash, ObjectMeta, SharedDisk, Tier,
};

fn meta(url: &str, body_len: u64) -> Arc<ObjectMeta> {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "text/plain".parse().unwrap());
    Arc::new(ObjectMeta {
        url: url.into(),
        status: 200,
        headers,
        request_time_ms: 1000,
        response_time_ms: 1001,
        vary_fields: vec![],
        secondary_key: String::new(),
        tags: vec![],
        body_len,
        invalidated_ms: AtomicU64::new(0),
        derived: Default::default(),
    })
}

fn open(dir: &std::path::Path, memory_bytes: u64, disk_bytes: u64) -> Arc<Cache> {
    Cache::open(&CacheSettings {
        memory_bytes,
        max_memory_object: 64 << 10,
        disk: Some((dir.to_path_buf(), disk_bytes)),
    })
    .unwrap()
}

/// A miss on `url` filled from the origin with `len` bytes, the length declared or not.
fn fill(cache: &Cache, url: &str, len: usize, declared: bool) -> KeyHash {
    let key = KeyHash::of(url);
    let FillRole::Leader(mut f) = cache.begin_fill(key) else {
        panic!("no fill running");
    };
    let m = meta(url, len as u64);
    assert!(f.start(m.clone(), declared.then_some(len as u64), key));
    f.push(&Bytes::from(vec![b'x'; len]));
    f.finish(m);
    key
}

fn on_disk(cache: &Cache, key: &KeyHash) -> bool {
    cache.disk().unwrap().get(key).is_some()
}

#[test]
fn a_fill_that_fits_memory_goes_to_memory_only() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 8 << 20, 8 << 20);
    for declared in [true, false] {
        let key = fill(&cache, &format!("http://a.test/{declared}"), 100, declared);
        assert!(cache.memory().get(&key).is_some());
        assert!(!on_disk(&cache, &key), "declared length: {declared}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn an_object_memory_drops_twice_is_written_to_disk_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    const LEN: usize = 10 << 10;
    let weight = meta("http://a.test/resident-0", LEN as u64).weight();
    let x = KeyHash::of("http://a.test/x");
    {
        let cache = open(dir.path(), weight * 10, 8 << 20);
        // Ten popular objects fill memory; TinyLFU then turns a newcomer away.
        let residents: Vec<KeyHash> = (0..10)
            .map(|i| fill(&cache, &format!("http://a.test/resident-{i}"), LEN, true))
            .collect();
        for _ in 0..20 {
            for k in &residents {
                cache.get(k);
            }
        }
        cache.settle();
        fill(&cache, "http://a.test/x", LEN, true);
        cache.settle();
        assert!(cache.memory().get(&x).is_none(), "memory turned it away");
        assert!(!on_disk(&cache, &x), "dropped once: not worth a file yet");
        fill(&cache, "http://a.test/x", LEN, true);
        cache.settle();
        assert!(on_disk(&cache, &x), "dropped a second time: written");
    }
    let cache = open(dir.path(), 1 << 20, 8 << 20);
    assert_eq!(cache.get(&x).map(|s| s.meta.body_len), Some(LEN as u64));
}

#[test]
fn a_use_in_another_tier_keeps_an_object_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SharedDisk(Arc::new(DiskTier::open(dir.path(), 100_000).unwrap()));
    let keys: Vec<KeyHash> = (0..10).map(|i| KeyHash::of(&format!("o{i}"))).collect();
    let body = [Bytes::from(vec![0u8; 10_000])];
    for (i, k) in keys.iter().enumerate().take(8) {
        disk.put(*k, meta(&format!("o{i}"), 10_000), &body).unwrap();
    }
    // The oldest was just served from memory.
    assert!(disk.touch(&keys[0]));
    assert!(!disk.touch(&KeyHash::of("absent")));
    for (i, k) in keys.iter().enumerate().skip(8) {
        disk.put(*k, meta(&format!("o{i}"), 10_000), &body).unwrap();
    }
    assert!(disk.get(&keys[0]).is_some(), "used in memory: kept");
    assert!(disk.get(&keys[1]).is_none(), "least recently used: evicted");
}

#[test]
fn an_object_too_large_for_memory_goes_to_disk_on_its_first_miss() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 8 << 20, 8 << 20);
    for declared in [true, false] {
        let url = format!("http://a.test/large-{declared}");
        let key = fill(&cache, &url, 100 << 10, declared);
        assert!(on_disk(&cache, &key), "declared length: {declared}");
        assert!(cache.memory().get(&key).is_none());
    }
}
