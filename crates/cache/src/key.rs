//! Cache keys: the text a cache rule builds from the request, and its SHA-256, which names the
//! object everywhere (memory index, disk file names). A file name made of hex digits can never
//! escape the cache directory, whatever the request held.

use sha2::{Digest, Sha256};

/// 32 bytes of SHA-256 over the key text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn of(text: &str) -> KeyHash {
        KeyHash(Sha256::digest(text.as_bytes()).into())
    }

    /// The key of one variant of a response that has `Vary`: the primary key and the
    /// request's values of the varying fields.
    pub fn variant(primary: &str, secondary: &str) -> KeyHash {
        let mut h = Sha256::new();
        h.update(primary.as_bytes());
        h.update(b"\n\x00vary\x00\n");
        h.update(secondary.as_bytes());
        KeyHash(h.finalize().into())
    }

    pub fn hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 0xf) as usize] as char);
        }
        s
    }

    pub fn from_hex(s: &str) -> Option<KeyHash> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            out[i] = (digit(pair[0])? << 4 | digit(pair[1])?) as u8;
        }
        Some(KeyHash(out))
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_anything_else() {
        let k = KeyHash::of("http://a/b?c");
        assert_eq!(KeyHash::from_hex(&k.hex()), Some(k));
        assert_eq!(KeyHash::from_hex("../../etc/passwd"), None);
        assert_eq!(KeyHash::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn variants_differ_from_the_primary_and_from_each_other() {
        let p = "http://a/b";
        assert_ne!(KeyHash::variant(p, "gzip"), KeyHash::of(p));
        assert_ne!(KeyHash::variant(p, "gzip"), KeyHash::variant(p, "br"));
    }
}
