//! How fills are spread over the two tiers: which objects the disk takes, and what a restart
//! keeps.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use http::HeaderMap;
use outpost_cache::{Cache, CacheSettings, FillRole, KeyHash, ObjectMeta, Tier};

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
fn an_object_that_missed_once_stays_off_disk_and_one_that_missed_twice_goes_there() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 8 << 20, 8 << 20);
    let once = fill(&cache, "http://a.test/once", 100, true);
    assert!(cache.get(&once).is_some(), "served from memory");
    assert!(!on_disk(&cache, &once));

    let twice = fill(&cache, "http://a.test/twice", 100, true);
    cache.remove(&twice);
    // Dropped (as memory would evict it) and requested again: now it has earned a file.
    let twice = fill(&cache, "http://a.test/twice", 100, false);
    assert!(on_disk(&cache, &twice));
    assert!(cache.get(&twice).is_some());
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

#[test]
fn a_body_of_unknown_length_that_fits_memory_leaves_no_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 8 << 20, 8 << 20);
    let key = fill(&cache, "http://a.test/chunked", 100, false);
    assert!(!on_disk(&cache, &key));
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}
