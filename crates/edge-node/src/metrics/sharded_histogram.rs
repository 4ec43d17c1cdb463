//! A latency histogram every worker observes into on every request without touching another
//! worker's memory: one shard per worker, each on its own cache lines, added up when scraped.
//! prometheus-client's `Histogram` takes a write lock per observation, one lock per
//! application shared by all workers: on a many-core edge, every request of an application
//! would wait its turn on it.
//!
//! A worker that holds a shard of its own ([`claim_worker_shard`]) is its only writer, so it
//! adds with a plain load and store: a locked read-modify-write costs some twenty cycles
//! even uncontended, and a request made several. Every other thread writes shard 0, which
//! they share, with atomic adds.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering, Ordering::Relaxed};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards per histogram: shard 0 is shared, the others are each one worker's.
pub(crate) const SHARDS: usize = 16;
/// Upper bounds: 0.5 ms doubling to about 16 s, as the edge's latency histograms had them.
const BOUNDS: usize = 16;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Shards held by a live worker, one bit each (bit 0, the shared shard, is never held).
static CLAIMED: AtomicU16 = AtomicU16::new(0);
const _: () = assert!(SHARDS <= 16, "CLAIMED has a bit per shard");

/// The calling thread's hold on a shard of its own, given up when dropped (on that thread:
/// it is not `Send`). One per thread.
pub struct ShardClaim {
    shard: usize,
    _on_this_thread: std::marker::PhantomData<*const ()>,
}

/// Gives the calling thread (a worker, for its lifetime) a shard no other thread writes, or
/// leaves it on the shared shard when all are held (more workers than shards, or several
/// edges in one process, as in tests).
pub fn claim_worker_shard() -> ShardClaim {
    let mut held = CLAIMED.load(Relaxed);
    loop {
        let Some(free) = (1..SHARDS).find(|&i| held & (1 << i) == 0) else {
            return ShardClaim::on(0);
        };
        match CLAIMED.compare_exchange_weak(held, held | (1 << free), Ordering::AcqRel, Relaxed) {
            Ok(_) => {
                SHARD.set(free);
                return ShardClaim::on(free);
            }
            Err(seen) => held = seen,
        }
    }
}

impl ShardClaim {
    fn on(shard: usize) -> ShardClaim {
        ShardClaim {
            shard,
            _on_this_thread: std::marker::PhantomData,
        }
    }
}

impl Drop for ShardClaim {
    fn drop(&mut self) {
        if self.shard != 0 {
            SHARD.set(0);
            CLAIMED.fetch_and(!(1 << self.shard), Ordering::AcqRel);
        }
    }
}

/// The shard the calling thread writes to; it is the only writer unless this is 0.
pub(crate) fn worker_shard() -> usize {
    SHARD.get()
}

/// Adds `v` to `cell` of the calling thread's shard `shard`.
#[inline]
pub(crate) fn add(shard: usize, cell: &AtomicU64, v: u64) {
    if shard == 0 {
        cell.fetch_add(v, Relaxed);
    } else {
        // The shard's only writer: readers (a scrape) see the old or the new value.
        cell.store(cell.load(Relaxed).wrapping_add(v), Relaxed);
    }
}

fn bound(i: usize) -> f64 {
    0.0005 * f64::powi(2.0, i as i32)
}

/// One worker's counts, alone on its cache lines.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Shard {
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
    count: AtomicU64,
    /// Per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BOUNDS + 1],
}

#[derive(Debug, Clone, Default)]
pub struct ShardedHistogram {
    shards: Arc<[Shard; SHARDS]>,
}

impl ShardedHistogram {
    pub fn observe(&self, v: f64) {
        let index = worker_shard();
        let shard = &self.shards[index];
        let bucket = (0..BOUNDS).find(|&i| v <= bound(i)).unwrap_or(BOUNDS);
        add(index, &shard.buckets[bucket], 1);
        add(index, &shard.count, 1);
        if index != 0 {
            let sum = f64::from_bits(shard.sum.load(Relaxed)) + v;
            shard.sum.store(sum.to_bits(), Relaxed);
            return;
        }
        // Threads that share shard 0 race here; the loop settles it.
        let mut current = shard.sum.load(Relaxed);
        loop {
            let next = (f64::from_bits(current) + v).to_bits();
            match shard
                .sum
                .compare_exchange_weak(current, next, Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
    }

    /// Sum, count and the per-bucket counts (upper bound, count), the last bound `f64::MAX`
    /// (`+Inf`), as prometheus-client's histogram gives them to its encoder.
    pub fn get(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut sum = 0.0;
        let mut count = 0;
        let mut buckets: Vec<(f64, u64)> = (0..BOUNDS)
            .map(bound)
            .chain(std::iter::once(f64::MAX))
            .map(|b| (b, 0))
            .collect();
        for shard in self.shards.iter() {
            sum += f64::from_bits(shard.sum.load(Relaxed));
            count += shard.count.load(Relaxed);
            for (total, n) in buckets.iter_mut().zip(&shard.buckets) {
                total.1 += n.load(Relaxed);
            }
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.get();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_from_every_worker_add_up_into_the_right_buckets() {
        let h = ShardedHistogram::default();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    let _claim = claim_worker_shard();
                    for _ in 0..1000 {
                        h.observe(0.0004);
                        h.observe(0.003);
                        h.observe(100.0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (sum, count, buckets) = h.get();
        assert_eq!(count, 12_000);
        assert!((sum - 4000.0 * (0.0004 + 0.003 + 100.0)).abs() < 1e-6);
        assert_eq!(buckets.len(), BOUNDS + 1);
        assert_eq!(buckets[0], (0.0005, 4000));
        // 0.003 s falls in the bucket up to 4 ms (0.5 ms x 2^3).
        assert_eq!(buckets[3], (0.004, 4000));
        assert_eq!(buckets[BOUNDS], (f64::MAX, 4000));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 12_000);
    }

    #[test]
    fn two_threads_holding_shards_at_once_hold_different_ones() {
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let claim = claim_worker_shard();
                    assert_eq!(worker_shard(), claim.shard);
                    barrier.wait(); // both hold theirs here
                    let shard = claim.shard;
                    drop(claim);
                    assert_eq!(worker_shard(), 0, "back on the shared shard");
                    shard
                })
            })
            .collect();
        let shards: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        // Other tests' threads may hold every shard at the time: a claim is then shard 0.
        if shards[0] != 0 {
            assert_ne!(shards[0], shards[1]);
        }
    }

    #[test]
    fn the_text_format_shows_cumulative_buckets_and_inf() {
        let mut registry = prometheus_client::registry::Registry::default();
        let h = ShardedHistogram::default();
        h.observe(0.001);
        registry.register("latency_seconds", "Latency", h);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("latency_seconds_bucket{le=\"0.0005\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("latency_seconds_bucket{le=\"0.001\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("latency_seconds_bucket{le=\"+Inf\"} 1"),
            "{out}"
        );
        assert!(out.contains("latency_seconds_count 1"), "{out}");
    }
}
