//! A peer of an upstream and the state every worker shares about it: requests in flight,
//! active-check health, passive failures, and the peak-EWMA latency.
//!
//! State lives in atomics behind an `Arc` and survives config reloads (keyed by upstream name
//! and address), so a reload does not forget that a peer is down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The name the peer was configured or discovered with (for SNI, logs and metrics).
    pub name: Arc<str>,
    pub weight: u32,
    pub backup: bool,
    pub state: Arc<PeerState>,
}

#[derive(Debug, Clone, Copy)]
pub struct PassiveParams {
    pub enabled: bool,
    pub max_fails: u32,
    pub fail_timeout_ms: u64,
}

#[derive(Debug)]
pub struct PeerState {
    /// Written by every request on every worker: on a cache line of its own, so the health
    /// fields each request reads are not invalidated by other workers' counting.
    active: Padded<AtomicU32>,
    /// Set by the active health checker; peers start healthy.
    healthy: AtomicBool,
    fails: AtomicU32,
    fail_window_start_ms: AtomicU64,
    down_until_ms: AtomicU64,
    /// Peak-EWMA of response latency, in microseconds (f64 bits).
    ewma_us: AtomicU64,
    ewma_stamp_ms: AtomicU64,
}

impl Default for PeerState {
    fn default() -> Self {
        PeerState {
            active: Padded(AtomicU32::new(0)),
            healthy: AtomicBool::new(true),
            fails: AtomicU32::new(0),
            fail_window_start_ms: AtomicU64::new(0),
            down_until_ms: AtomicU64::new(0),
            ewma_us: AtomicU64::new(0f64.to_bits()),
            ewma_stamp_ms: AtomicU64::new(0),
        }
    }
}

/// A value alone on its (64-byte) cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The decay time of the latency average (as linkerd's default).
const EWMA_DECAY_MS: f64 = 10_000.0;
/// Latency assumed for a peer with no measurement yet, so new peers are not flooded.
const EWMA_DEFAULT_US: f64 = 1_000.0;

impl PeerState {
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.healthy.load(Relaxed) && self.down_until_ms.load(Relaxed) <= now_ms
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Returns whether the state changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Relaxed) != healthy
    }

    pub fn active(&self) -> u32 {
        self.active.load(Relaxed)
    }

    pub fn begin_request(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Relaxed);
        ActiveGuard(self.clone())
    }

    /// A failure seen while proxying (as nginx's `max_fails`/`fail_timeout`).
    pub fn record_failure(&self, now_ms: u64, p: &PassiveParams) {
        if !p.enabled {
            return;
        }
        let window = self.fail_window_start_ms.load(Relaxed);
        if now_ms.saturating_sub(window) > p.fail_timeout_ms {
            self.fail_window_start_ms.store(now_ms, Relaxed);
            self.fails.store(0, Relaxed);
        }
        if self.fails.fetch_add(1, Relaxed) + 1 >= p.max_fails {
            self.down_until_ms
                .store(now_ms + p.fail_timeout_ms, Relaxed);
            self.fails.store(0, Relaxed);
        }
    }

    pub fn record_success(&self) {
        if self.fails.load(Relaxed) != 0 {
            self.fails.store(0, Relaxed);
        }
    }

    /// Folds one latency sample into the peak-EWMA: a slower sample is taken at once, a
    /// faster one decays in.
    pub fn observe_latency(&self, rtt_us: f64, now_ms: u64) {
        let prev = f64::from_bits(self.ewma_us.load(Relaxed));
        let stamp = self.ewma_stamp_ms.swap(now_ms, Relaxed);
        let next = if prev == 0.0 || rtt_us > prev {
            rtt_us
        } else {
            let w = (-(now_ms.saturating_sub(stamp) as f64) / EWMA_DECAY_MS).exp();
            prev * w + rtt_us * (1.0 - w)
        };
        self.ewma_us.store(next.to_bits(), Relaxed);
    }

    /// The peak-EWMA cost: latency times the load it would see.
    pub fn ewma_cost(&self, weight: u32) -> f64 {
        let ewma = f64::from_bits(self.ewma_us.load(Relaxed));
        let ewma = if ewma == 0.0 { EWMA_DEFAULT_US } else { ewma };
        ewma * (self.active() as f64 + 1.0) / weight.max(1) as f64
    }
}

/// Counts a request in flight on a peer until dropped.
#[derive(Debug)]
pub struct ActiveGuard(Arc<PeerState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PassiveParams = PassiveParams {
        enabled: true,
        max_fails: 2,
        fail_timeout_ms: 1000,
    };

    #[test]
    fn max_fails_within_the_window_takes_a_peer_out_for_fail_timeout() {
        let s = PeerState::default();
        s.record_failure(100, &P);
        assert!(s.is_available(100));
        s.record_failure(200, &P);
        assert!(!s.is_available(201));
        assert!(!s.is_available(1199));
        assert!(s.is_available(1200));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let s = PeerState::default();
        s.record_failure(100, &P);
        s.record_failure(1200, &P);
        assert!(s.is_available(1201));
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let s = PeerState::default();
        s.observe_latency(1000.0, 0);
        s.observe_latency(5000.0, 10);
        assert_eq!(s.ewma_cost(1), 5000.0);
        s.observe_latency(1000.0, 10_010);
        let after = s.ewma_cost(1);
        assert!(after < 5000.0 && after > 1000.0, "{after}");
        let g = Arc::new(PeerState::default());
        let _a = g.begin_request();
        assert_eq!(g.ewma_cost(2), EWMA_DEFAULT_US * 2.0 / 2.0);
    }
}
