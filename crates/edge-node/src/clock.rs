//! One monotonic clock in milliseconds, shared by workers, for state kept in atomics (passive
//! health windows, EWMA stamps, rate-limit buckets). Decisions take `now_ms` as an argument.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process first asked, never 0 (0 means "never" in peer state).
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

thread_local! {
    /// A monotonic instant and the wall-clock time read with it, re-read once a second.
    static WALL_BASE: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
}

/// The wall-clock time at `at`, a monotonic instant already read: one clock read for both,
/// as nginx reads the time once per event and derives the rest. The base pair is re-read
/// when `at` is a second or more past it (or before it), so the time follows the wall clock's
/// steps within a second.
pub fn wall_at(at: Instant) -> SystemTime {
    if let Some((base, wall)) = WALL_BASE.get()
        && let Some(since) = at.checked_duration_since(base)
        && since < Duration::from_secs(1)
    {
        return wall + since;
    }
    let (base, wall) = (Instant::now(), SystemTime::now());
    WALL_BASE.set(Some((base, wall)));
    match at.checked_duration_since(base) {
        Some(after) => wall + after,
        None => wall - base.duration_since(at),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime};

    #[test]
    fn the_wall_time_of_an_instant_is_the_wall_clock_at_it() {
        for _ in 0..3 {
            let (at, wall) = (Instant::now(), SystemTime::now());
            let derived = super::wall_at(at);
            let skew = derived
                .duration_since(wall)
                .unwrap_or_else(|e| e.duration());
            assert!(skew < Duration::from_millis(50), "{skew:?}");
        }
        // An instant before the base (a request that began before it was read) maps back.
        let earlier = Instant::now() - Duration::from_secs(5);
        let derived = super::wall_at(earlier);
        let back = SystemTime::now().duration_since(derived).unwrap();
        assert!(
            back >= Duration::from_secs(5) && back < Duration::from_secs(6),
            "{back:?}"
        );
    }
}
