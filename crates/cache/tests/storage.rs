//! One storage suite, run against both tiers; then what only the disk tier promises
//! (surviving a restart, never serving a torn write).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use http::HeaderMap;
use outpost_cache::{
    BodySource, DiskTier, KeyHash, MemoryTier, ObjectMeta, SharedDisk, Tier, TierWriter,
};

fn meta(url: &str, tags: &[&str], body_len: u64) -> Arc<ObjectMeta> {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "text/plain".parse().unwrap());
    headers.insert("etag", "\"v1\"".parse().unwrap());
    Arc::new(ObjectMeta {
        url: url.into(),
        status: 200,
        headers,
        request_time_ms: 1000,
        response_time_ms: 1001,
        vary_fields: vec![],
        secondary_key: String::new(),
        tags: tags.iter().map(|s| s.to_string()).collect(),
        body_len,
        invalidated_ms: AtomicU64::new(0),
        derived: Default::default(),
    })
}

fn body_of(s: &outpost_cache::Stored) -> Vec<u8> {
    match &s.body {
        BodySource::Memory(chunks) => chunks.iter().flat_map(|c| c.to_vec()).collect(),
        BodySource::File { path, len } => {
            let b = std::fs::read(path).unwrap();
            assert_eq!(b.len() as u64, *len);
            b
        }
    }
}

fn chunks(parts: &[&str]) -> Vec<Bytes> {
    parts.iter().map(|p| Bytes::from(p.to_string())).collect()
}

fn suite(tier: &dyn Tier) {
    let k1 = KeyHash::of("http://a.test/one");
    let k2 = KeyHash::of("http://a.test/two");
    let k3 = KeyHash::of("http://b.test/three");

    // Round trip, in chunks.
    tier.put(
        k1,
        meta("http://a.test/one", &["t1"], 11),
        &chunks(&["hello", " ", "world"]),
    )
    .unwrap();
    let got = tier.get(&k1).expect("stored object is found");
    assert_eq!(body_of(&got), b"hello world");
    assert_eq!(got.meta.headers.get("etag").unwrap(), "\"v1\"");
    assert!(tier.get(&k2).is_none());

    // A writer dropped before commit leaves nothing.
    let mut w = tier.writer(k2).unwrap();
    w.write(&Bytes::from_static(b"partial")).unwrap();
    drop(w);
    assert!(tier.get(&k2).is_none(), "an uncommitted write is invisible");

    // A body shorter than its head says is refused.
    let mut w = tier.writer(k2).unwrap();
    w.write(&Bytes::from_static(b"abc")).unwrap();
    assert!(w.commit(meta("http://a.test/two", &[], 10)).is_err());
    assert!(tier.get(&k2).is_none());

    // Replacing an object swaps it whole.
    tier.put(
        k1,
        meta("http://a.test/one", &["t1", "t2"], 3),
        &chunks(&["new"]),
    )
    .unwrap();
    assert_eq!(body_of(&tier.get(&k1).unwrap()), b"new");

    // Updating the head keeps the body.
    let mut updated = meta("http://a.test/one", &["t3"], 3).clone_meta();
    updated.headers.insert("etag", "\"v2\"".parse().unwrap());
    tier.update_meta(&k1, Arc::new(updated)).unwrap();
    let got = tier.get(&k1).unwrap();
    assert_eq!(got.meta.headers.get("etag").unwrap(), "\"v2\"");
    assert_eq!(body_of(&got), b"new");

    // Scan sees every object with its URL and tags.
    tier.put(k3, meta("http://b.test/three", &["t3"], 0), &[])
        .unwrap();
    let mut seen = Vec::new();
    tier.scan(&mut |k, url, tags| seen.push((*k, url.to_string(), tags.to_vec())));
    seen.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].1, "http://a.test/one");
    assert_eq!(seen[0].2, vec!["t3".to_string()]);
    assert_eq!(seen[1].0, k3);
    assert!(tier.size() > 0);

    tier.remove(&k1);
    assert!(tier.get(&k1).is_none());
    assert!(tier.get(&k3).is_some());
}

#[test]
fn memory_tier_passes_the_storage_suite() {
    let m = MemoryTier::new(1 << 20, 1 << 16);
    suite(&m);
}

#[test]
fn disk_tier_passes_the_storage_suite() {
    let dir = tempfile::tempdir().unwrap();
    let d = SharedDisk(Arc::new(DiskTier::open(dir.path(), 1 << 20).unwrap()));
    suite(&d);
}

#[test]
fn memory_tier_refuses_objects_over_its_limit_and_evicts_by_weight() {
    let m = MemoryTier::new(64 * 1024, 16 * 1024);
    let mut w = m.writer(KeyHash::of("big")).unwrap();
    assert!(w.write(&Bytes::from(vec![0u8; 20_000])).is_err());
    for i in 0..40 {
        let key = KeyHash::of(&format!("k{i}"));
        m.put(
            key,
            meta(&format!("k{i}"), &[], 8000),
            &[Bytes::from(vec![1u8; 8000])],
        )
        .unwrap();
    }
    m.settle();
    assert!(
        m.size() <= 64 * 1024,
        "weighted size {} over capacity",
        m.size()
    );
    assert!(m.len() < 40);
}

#[test]
fn disk_objects_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let k = KeyHash::of("http://a.test/persist");
    {
        let d = SharedDisk(Arc::new(DiskTier::open(dir.path(), 1 << 20).unwrap()));
        d.put(
            k,
            meta("http://a.test/persist", &["t"], 4),
            &chunks(&["keep"]),
        )
        .unwrap();
    }
    let d = SharedDisk(Arc::new(DiskTier::open(dir.path(), 1 << 20).unwrap()));
    let got = d.get(&k).expect("object back after reopening");
    assert_eq!(body_of(&got), b"keep");
    assert_eq!(got.meta.tags, vec!["t".to_string()]);
    assert_eq!(d.len(), 1);
}

#[test]
fn torn_writes_are_never_served_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let good = KeyHash::of("good");
    let torn = KeyHash::of("torn");
    let short = KeyHash::of("short");
    {
        let d = SharedDisk(Arc::new(DiskTier::open(dir.path(), 1 << 20).unwrap()));
        d.put(good, meta("good", &[], 4), &chunks(&["good"]))
            .unwrap();
        d.put(short, meta("short", &[], 6), &chunks(&["sixsix"]))
            .unwrap();
        // A write in progress when the process dies: its writer is never dropped.
        let mut w = d.disk_writer(torn).unwrap();
        w.write(&Bytes::from_static(b"half")).unwrap();
        std::mem::forget(w);
    }
    // And a body cut short on disk behind the cache's back (power loss before write-back).
    let mut cut = None;
    for shard in std::fs::read_dir(dir.path().join("objects")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if name.starts_with(&short.hex()) && name.ends_with(".body") {
                cut = Some(p);
            }
        }
    }
    std::fs::write(cut.expect("body file of `short`"), b"six").unwrap();

    let d = SharedDisk(Arc::new(DiskTier::open(dir.path(), 1 << 20).unwrap()));
    assert_eq!(body_of(&d.get(&good).unwrap()), b"good");
    assert!(d.get(&torn).is_none(), "an unfinished write is not served");
    assert!(
        d.get(&short).is_none(),
        "a body shorter than its head is not served"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn disk_tier_evicts_the_least_recently_used_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let d = SharedDisk(Arc::new(DiskTier::open(dir.path(), 100_000).unwrap()));
    let keys: Vec<KeyHash> = (0..10).map(|i| KeyHash::of(&format!("o{i}"))).collect();
    for (i, k) in keys.iter().enumerate().take(8) {
        d.put(
            *k,
            meta(&format!("o{i}"), &[], 10_000),
            &[Bytes::from(vec![0u8; 10_000])],
        )
        .unwrap();
    }
    // Touch the oldest so it becomes the most recent.
    assert!(d.get(&keys[0]).is_some());
    for (i, k) in keys.iter().enumerate().skip(8) {
        d.put(
            *k,
            meta(&format!("o{i}"), &[], 10_000),
            &[Bytes::from(vec![0u8; 10_000])],
        )
        .unwrap();
    }
    assert!(d.size() <= 100_000);
    assert!(d.get(&keys[0]).is_some(), "recently used object kept");
    assert!(
        d.get(&keys[1]).is_none(),
        "least recently used object evicted"
    );
    assert!(d.get(&keys[9]).is_some());
}

#[test]
fn a_whole_object_put_into_the_cache_goes_to_each_tier_that_takes_it() {
    use outpost_cache::{Cache, CacheSettings};
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(&CacheSettings {
        memory_bytes: 1 << 20,
        max_memory_object: 8,
        disk: Some((dir.path().to_path_buf(), 1 << 20)),
    })
    .unwrap();
    let small = KeyHash::of("small");
    cache
        .put(small, meta("u", &["t"], 3), &chunks(&["abc"]))
        .unwrap();
    assert!(cache.memory().get(&small).is_some());
    assert!(cache.disk().unwrap().get(&small).is_some());
    // Too large for memory: on disk only.
    let large = KeyHash::of("large");
    cache
        .put(large, meta("u", &[], 12), &chunks(&["0123456789ab"]))
        .unwrap();
    assert!(cache.memory().get(&large).is_none());
    assert_eq!(body_of(&cache.get(&large).unwrap()), b"0123456789ab");
    assert!(cache.remove(&small));
    assert!(!cache.remove(&small), "nothing left to remove");
    assert!(cache.get(&small).is_none());
}

#[test]
fn a_put_no_tier_takes_is_an_error() {
    use outpost_cache::{Cache, CacheSettings};
    let cache = Cache::open(&CacheSettings {
        memory_bytes: 1 << 20,
        max_memory_object: 4,
        disk: None,
    })
    .unwrap();
    let k = KeyHash::of("k");
    assert!(
        cache
            .put(k, meta("u", &[], 5), &chunks(&["hello"]))
            .is_err()
    );
    assert!(cache.get(&k).is_none());
}
