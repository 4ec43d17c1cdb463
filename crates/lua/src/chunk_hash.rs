//! The hasher of the VM's compiled-chunk caches, keyed by the chunk's source. A request's
//! phase looks its chunk up by source, so a full hash would read the whole script on every
//! phase of every request (thousands of bytes for a real one). This one reads the length and
//! three 8-byte samples: scripts that collide still tell apart by the map's equality check,
//! which compares whole sources, and a config holds a handful of them.

use std::hash::{BuildHasherDefault, Hasher};

pub type ChunkHash = BuildHasherDefault<SampledHasher>;

#[derive(Default)]
pub struct SampledHasher(u64);

impl SampledHasher {
    fn mix(&mut self, word: u64) {
        // FxHash's step.
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// The 8 bytes of `bytes` from `at`, as a number (0 past the end, which callers avoid).
fn word_at(bytes: &[u8], at: usize) -> u64 {
    let word = bytes
        .get(at..at + 8)
        .and_then(|w| <[u8; 8]>::try_from(w).ok());
    u64::from_le_bytes(word.unwrap_or_default())
}

impl Hasher for SampledHasher {
    fn write(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        self.mix(n as u64);
        if n >= 8 {
            self.mix(word_at(bytes, 0));
            self.mix(word_at(bytes, (n - 8) / 2));
            self.mix(word_at(bytes, n - 8));
        } else {
            let mut short = [0u8; 8];
            short[..n].copy_from_slice(bytes);
            self.mix(u64::from_le_bytes(short));
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.mix(u64::from(b));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::ChunkHash;

    #[test]
    fn sources_that_share_samples_stay_apart() {
        let a = format!("{}a{}", "x".repeat(40), "y".repeat(40));
        let b = format!("{}b{}", "x".repeat(40), "y".repeat(40));
        let mut m: HashMap<String, u32, ChunkHash> = HashMap::default();
        m.insert(a.clone(), 1);
        m.insert(b.clone(), 2);
        m.insert(String::new(), 3);
        m.insert("ngx.say(1)".into(), 4);
        assert_eq!(
            (m.get(&*a), m.get(&*b), m.get(""), m.get("ngx.say(1)")),
            (Some(&1), Some(&2), Some(&3), Some(&4))
        );
        assert_eq!(m.get("ngx.say(2)"), None);
    }
}
