//! Admission to the disk tier: an object the memory tier drops (see [`crate::victims`]) is
//! written to disk only when memory dropped it once before within a recent window, much as
//! nginx's `proxy_cache_min_uses 2` asks for a second request. Under a Zipf-like load most
//! misses are objects requested once, which memory's TinyLFU turns away at once; writing them
//! would push out objects that come back. Objects too large for memory skip this (disk is
//! their only tier).
//!
//! The memory of past events is two bit sets (a "doorkeeper"): events set bits in the current
//! one; after `window` of them it becomes the previous one and a fresh one starts, so a key is
//! remembered for between one and two windows. A false positive (another key's bit) only
//! admits an object early; there are no false negatives within the window.

use crate::key::KeyHash;

/// Bits per remembered event: at 8, about 12% of unseen keys pass as seen.
const BITS_PER_MISS: usize = 8;

pub(crate) struct DiskAdmission {
    current: Vec<u64>,
    previous: Vec<u64>,
    recorded: usize,
    window: usize,
}

impl DiskAdmission {
    /// Remembers the last `window` to `2 * window` events.
    pub(crate) fn new(window: usize) -> DiskAdmission {
        let window = window.max(64);
        let words = (window * BITS_PER_MISS).div_ceil(64);
        DiskAdmission {
            current: vec![0; words],
            previous: vec![0; words],
            recorded: 0,
            window,
        }
    }

    /// A window for a disk of `capacity` bytes: one event per 4 KiB of disk, so an object
    /// dropped twice while the disk turns over about once gets in (on the benchmark load,
    /// windows of a quarter to twice this gave the same hit ratio). Capped to keep the bit
    /// sets at a few MiB.
    pub(crate) fn window_for(capacity: u64) -> usize {
        (capacity / 4096).clamp(1024, 4 << 20) as usize
    }

    fn slot(&self, key: &KeyHash) -> (usize, u64) {
        // The key is a SHA-256 digest: any 8 of its bytes are a uniform hash.
        let mut h = [0u8; 8];
        h.copy_from_slice(&key.0[24..32]);
        let bit = (u64::from_le_bytes(h) % (self.current.len() as u64 * 64)) as usize;
        (bit / 64, 1 << (bit % 64))
    }

    /// Records an event for `key`; says whether the object should go to disk (one came before).
    pub(crate) fn admit(&mut self, key: &KeyHash) -> bool {
        let (word, mask) = self.slot(key);
        let seen = (self.current[word] | self.previous[word]) & mask != 0;
        if !seen {
            self.current[word] |= mask;
            self.recorded += 1;
            if self.recorded >= self.window {
                std::mem::swap(&mut self.current, &mut self.previous);
                self.current.fill(0);
                self.recorded = 0;
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_admitted_the_second_time_not_the_first() {
        let mut a = DiskAdmission::new(1000);
        let k = KeyHash::of("http://a.test/x");
        assert!(!a.admit(&k));
        assert!(a.admit(&k));
        assert!(a.admit(&k));
    }

    #[test]
    fn an_event_is_forgotten_after_two_windows() {
        let mut a = DiskAdmission::new(64);
        let k = KeyHash::of("http://a.test/old");
        assert!(!a.admit(&k));
        // Enough other events to turn the window over twice.
        let mut others = 0;
        let mut i = 0;
        while others < 2 * 64 + 1 {
            if !a.admit(&KeyHash::of(&format!("http://a.test/{i}"))) {
                others += 1;
            }
            i += 1;
        }
        assert!(!a.admit(&k), "an event two windows ago no longer counts");
    }

    #[test]
    fn few_unseen_keys_pass_as_seen() {
        let mut a = DiskAdmission::new(10_000);
        let passed = (0..5_000)
            .filter(|i| a.admit(&KeyHash::of(&format!("http://a.test/{i}"))))
            .count();
        assert!(passed < 500, "{passed} of 5000 unseen keys admitted");
    }
}
