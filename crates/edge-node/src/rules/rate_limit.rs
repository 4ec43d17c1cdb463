//! Request-rate limiting as nginx's `limit_req` (a leaky bucket per key), shared by all
//! workers. The decision is a pure function of the bucket, the limit and the time; the store
//! around it is a sharded map with a bounded size.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitParams {
    pub rate_per_second: f64,
    /// Excess requests beyond which requests are rejected.
    pub burst: u32,
    /// Excess requests beyond which requests are delayed (0 = delay all excess, as nginx's default).
    pub delay: u32,
}

/// The state nginx keeps per key: excess requests (fractional) and when it was last updated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub excess: f64,
    pub last_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimitDecision {
    Pass,
    Delay(Duration),
    Reject,
}

/// One request arriving at `now_ms`. Returns the decision and the bucket to store (`None`:
/// keep the old one, as nginx does for a rejected request).
pub fn leaky_bucket(
    bucket: Option<Bucket>,
    p: &LimitParams,
    now_ms: u64,
) -> (LimitDecision, Option<Bucket>) {
    let excess = match bucket {
        // The first request of a key starts an empty bucket.
        None => 0.0,
        Some(b) => {
            let elapsed = now_ms.saturating_sub(b.last_ms) as f64 / 1000.0;
            (b.excess - p.rate_per_second * elapsed + 1.0).max(0.0)
        }
    };
    if excess > p.burst as f64 {
        return (LimitDecision::Reject, None);
    }
    let stored = Some(Bucket {
        excess,
        last_ms: now_ms,
    });
    if excess <= p.delay as f64 {
        (LimitDecision::Pass, stored)
    } else {
        let secs = (excess - p.delay as f64) / p.rate_per_second;
        (LimitDecision::Delay(Duration::from_secs_f64(secs)), stored)
    }
}

const SHARDS: usize = 16;
/// Keys kept per shard before drained buckets are swept.
const SHARD_CAPACITY: usize = 65_536;

/// Buckets of every rate-limit rule, keyed by rule id and key value.
pub struct RateLimiter {
    shards: Vec<Mutex<HashMap<(u64, String), Bucket>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }
}

impl RateLimiter {
    pub fn check(&self, rule_id: u64, key: String, p: &LimitParams, now_ms: u64) -> LimitDecision {
        let shard = &self.shards[self.hasher.hash_one((rule_id, key.as_str())) as usize % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let k = (rule_id, key);
        let (decision, stored) = leaky_bucket(map.get(&k).copied(), p, now_ms);
        if let Some(b) = stored {
            if map.len() >= SHARD_CAPACITY && !map.contains_key(&k) {
                sweep(&mut map, p.rate_per_second, now_ms);
            }
            map.insert(k, b);
        }
        decision
    }
}

/// Drops buckets that have fully drained; if none has, drops half (the map must stay bounded
/// under a flood of distinct keys).
fn sweep(map: &mut HashMap<(u64, String), Bucket>, rate: f64, now_ms: u64) {
    let before = map.len();
    map.retain(|_, b| b.excess - rate * (now_ms.saturating_sub(b.last_ms) as f64 / 1000.0) > 0.0);
    if map.len() == before {
        let mut n = 0;
        map.retain(|_, _| {
            n += 1;
            n % 2 == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: LimitParams = LimitParams {
        rate_per_second: 10.0,
        burst: 5,
        delay: 2,
    };

    #[test]
    fn a_burst_passes_up_to_delay_then_is_delayed_then_rejected() {
        let mut bucket = None;
        let mut decisions = vec![];
        for _ in 0..8 {
            let (d, b) = leaky_bucket(bucket, &P, 1_000);
            if b.is_some() {
                bucket = b;
            }
            decisions.push(d);
        }
        use LimitDecision::*;
        assert_eq!(
            decisions,
            vec![
                Pass,
                Pass,
                Pass,
                Delay(Duration::from_millis(100)),
                Delay(Duration::from_millis(200)),
                Delay(Duration::from_millis(300)),
                Reject,
                Reject
            ]
        );
    }

    #[test]
    fn the_bucket_drains_at_the_rate() {
        let p = LimitParams {
            rate_per_second: 10.0,
            burst: 0,
            delay: 0,
        };
        let (d, b) = leaky_bucket(None, &p, 0);
        assert_eq!(d, LimitDecision::Pass);
        assert_eq!(leaky_bucket(b, &p, 50).0, LimitDecision::Reject);
        assert_eq!(leaky_bucket(b, &p, 100).0, LimitDecision::Pass);
    }

    #[test]
    fn keys_and_rules_are_independent_and_the_store_stays_bounded() {
        let l = RateLimiter::default();
        let p = LimitParams {
            rate_per_second: 1.0,
            burst: 0,
            delay: 0,
        };
        assert_eq!(l.check(1, "a".into(), &p, 0), LimitDecision::Pass);
        assert_eq!(l.check(1, "a".into(), &p, 0), LimitDecision::Reject);
        assert_eq!(l.check(1, "b".into(), &p, 0), LimitDecision::Pass);
        assert_eq!(l.check(2, "a".into(), &p, 0), LimitDecision::Pass);
        for i in 0..(SHARD_CAPACITY * SHARDS * 2) as u64 {
            l.check(3, i.to_string(), &p, i);
        }
        let total: usize = l.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= SHARD_CAPACITY * SHARDS, "{total}");
    }
}
