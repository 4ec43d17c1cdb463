//! Drives the cache itself (no HTTP, one thread) with the request sequences of
//! `bench/cache-zipf.sh` and reports the hit ratio and how much the two tiers overlap, which
//! the benchmark cannot see from outside.
//!
//! ```sh
//! cargo run --release -p outpost-cache --example zipf_tiers -- [memory MiB] [disk MiB] [rep]
//! ```
//!
//! Defaults: 64 MiB memory, 128 MiB disk (0 = no disk tier), repetition 1; 50,000 objects of
//! 10 KiB, Zipf s = 1.0, 200,000 warm-up then 200,000 measured requests, the seeds and
//! generator of `zipf_load` (so the sequences are the benchmark's).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use outpost_cache::{Cache, CacheSettings, FillRole, KeyHash, ObjectMeta, Tier};

const OBJECTS: u32 = 50_000;
const BODY: usize = 10 * 1024;
const REQUESTS: usize = 200_000;

fn sequence(seed: u64) -> Vec<u32> {
    let mut cdf = Vec::with_capacity(OBJECTS as usize);
    let mut sum = 0.0;
    for k in 1..=OBJECTS {
        sum += 1.0 / k as f64;
        cdf.push(sum);
    }
    let mut state = seed;
    (0..REQUESTS)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 11) as f64 / (1u64 << 53) as f64 * sum;
            cdf.partition_point(|&c| c < u).min(OBJECTS as usize - 1) as u32
        })
        .collect()
}

/// A head like the benchmark origin's (nginx serving a static file), for a similar weight.
fn meta(url: &str) -> Arc<ObjectMeta> {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("server", "nginx/1.22.1"),
        ("date", "Mon, 23 Nov 2026 23:00:00 GMT"),
        ("content-type", "application/octet-stream"),
        ("content-length", "10240"),
        ("last-modified", "Mon, 23 Nov 2026 22:59:00 GMT"),
        ("etag", "\"6a1b2c3d-2800\""),
        ("cache-control", "max-age=3600"),
        ("accept-ranges", "bytes"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Arc::new(ObjectMeta {
        url: url.to_string(),
        status: 200,
        headers,
        request_time_ms: 1,
        response_time_ms: 1,
        vary_fields: Vec::new(),
        secondary_key: String::new(),
        tags: Vec::new(),
        body_len: BODY as u64,
        invalidated_ms: Default::default(),
        derived: Default::default(),
    })
}

fn keys(tier: &dyn Tier) -> HashSet<KeyHash> {
    let mut out = HashSet::new();
    tier.scan(&mut |k, _, _| {
        out.insert(*k);
    });
    out
}

fn main() -> anyhow::Result<()> {
    let arg = |i: usize, default: u64| -> anyhow::Result<u64> {
        Ok(match std::env::args().nth(i) {
            Some(v) => v.parse()?,
            None => default,
        })
    };
    let (memory_mib, disk_mib, rep) = (arg(1, 64)?, arg(2, 128)?, arg(3, 1)?);
    let dir = tempfile::tempdir()?;
    let cache = Cache::open(&CacheSettings {
        memory_bytes: memory_mib << 20,
        max_memory_object: 8 << 20,
        disk: (disk_mib > 0).then(|| (dir.path().to_path_buf(), disk_mib << 20)),
    })?;
    let body = Bytes::from(vec![7u8; BODY]);
    let mut misses = 0;
    for (measuring, seed) in [(false, 1000 + rep * 2), (true, 1000 + rep * 2 + 1)] {
        for i in sequence(seed) {
            let url = format!("http://127.0.0.1/obj/{i}");
            let key = KeyHash::of(&url);
            if cache.get(&key).is_some() {
                continue;
            }
            misses += usize::from(measuring);
            if let FillRole::Leader(mut fill) = cache.begin_fill(key) {
                let m = meta(&url);
                if fill.start(m.clone(), Some(BODY as u64), key) {
                    fill.push(&body);
                    fill.finish(m);
                }
                // A miss waits for the origin; meanwhile the disk writes what memory evicted.
                cache.settle();
            }
        }
    }
    cache.settle();
    let memory = keys(cache.memory());
    let disk = cache.disk().map(|d| keys(d)).unwrap_or_default();
    let both = memory.intersection(&disk).count();
    // Where the 1,000 most popular objects are: what survives a restart is what is on disk.
    let top: Vec<KeyHash> = (0..1000)
        .map(|i| KeyHash::of(&format!("http://127.0.0.1/obj/{i}")))
        .collect();
    println!(
        "memory {memory_mib} MiB + disk {disk_mib} MiB: hit ratio {:.3}; objects: memory {}, \
         disk {}, in both {both}, distinct {}; of the 1000 most popular: memory {}, disk {}",
        1.0 - misses as f64 / REQUESTS as f64,
        memory.len(),
        disk.len(),
        memory.len() + disk.len() - both,
        top.iter().filter(|k| memory.contains(k)).count(),
        top.iter().filter(|k| disk.contains(k)).count(),
    );
    Ok(())
}
