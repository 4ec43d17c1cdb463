//! A counter every worker adds to on every request without touching another worker's memory,
//! as `sharded_histogram.rs` does for latencies. prometheus-client's `Counter` is one atomic
//! shared by all workers: two workers adding to it on every request pass its cache line back
//! and forth between their cores, at tens of nanoseconds an add.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use super::sharded_histogram::{SHARDS, add, worker_shard};

/// One worker's count, alone on its cache lines.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Shard(AtomicU64);

#[derive(Debug, Clone, Default)]
pub struct ShardedCounter {
    shards: Arc<[Shard; SHARDS]>,
}

impl ShardedCounter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, v: u64) {
        let index = worker_shard();
        add(index, &self.shards[index].0, v);
    }

    pub fn get(&self) -> u64 {
        self.shards.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::sharded_histogram::claim_worker_shard;

    #[test]
    fn adds_from_every_worker_add_up_and_encode_as_a_counter() {
        let c = ShardedCounter::default();
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    // Twenty threads: some hold a shard of their own, the rest share shard 0.
                    let _claim = claim_worker_shard();
                    for _ in 0..1000 {
                        c.inc();
                    }
                    c.inc_by(5);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), 20 * 1005);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("sent_bytes", "bytes", c);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE sent_bytes counter"), "{text}");
        assert!(text.contains("sent_bytes_total 20100"), "{text}");
    }
}
