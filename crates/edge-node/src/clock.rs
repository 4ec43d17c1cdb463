//! One monotonic clock in milliseconds, shared by workers, for state kept in atomics (passive
//! health windows, EWMA stamps, rate-limit buckets). Decisions take `now_ms` as an argument.

use std::sync::OnceLock;
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process first asked, never 0 (0 means "never" in peer state).
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}
