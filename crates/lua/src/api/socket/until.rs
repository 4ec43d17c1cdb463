//! What one call of a `receiveuntil` iterator returns, decided from what is buffered, as
//! lua-nginx-module's iterator behaves (checked against Debian's nginx): without a size, the
//! whole part before the pattern; with one, `size` bytes as soon as that many are known to
//! come before the pattern (without looking past them), else the rest of the part.

/// The iterator's next step.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The first `n` bytes are data before the pattern; the pattern is still ahead.
    Data(usize),
    /// The pattern starts at `n`: `n` bytes of data, then the pattern, end the part.
    Part(usize),
    /// Not enough is buffered to decide: read more.
    More,
}

pub fn next(buf: &[u8], pattern: &[u8], size: Option<usize>) -> Step {
    let found = find(buf, pattern);
    match (found, size) {
        (Some(i), Some(n)) if i >= n => Step::Data(n),
        (Some(i), _) => Step::Part(i),
        (None, None) => Step::More,
        (None, Some(n)) => {
            // Bytes that may begin the pattern stay buffered until the next ones decide.
            let sure = buf.len() - pattern_prefix_at_end(buf, pattern);
            if sure >= n { Step::Data(n) } else { Step::More }
        }
    }
}

fn find(buf: &[u8], pattern: &[u8]) -> Option<usize> {
    if pattern.is_empty() {
        return None;
    }
    buf.windows(pattern.len()).position(|w| w == pattern)
}

/// The length of the longest end of `buf` that is a proper start of `pattern`.
fn pattern_prefix_at_end(buf: &[u8], pattern: &[u8]) -> usize {
    let longest = pattern.len().saturating_sub(1).min(buf.len());
    (1..=longest)
        .rev()
        .find(|&k| buf.ends_with(&pattern[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &[u8] = b"\r\n--b";

    #[test]
    fn without_a_size_a_whole_part_or_more() {
        assert_eq!(next(b"hello\r\n--bX", P, None), Step::Part(5));
        assert_eq!(next(b"hello\r\n-", P, None), Step::More);
    }

    #[test]
    fn with_a_size_as_much_as_is_known_to_be_data() {
        assert_eq!(next(b"hello\r\n--b", P, Some(4)), Step::Data(4));
        // Exactly `size` before the pattern: returned without looking further, so the next
        // call finds the pattern at once (an empty last piece).
        assert_eq!(next(b"orld\r\n--b", P, Some(4)), Step::Data(4));
        assert_eq!(next(b"\r\n--b", P, Some(4)), Step::Part(0));
        assert_eq!(next(b"ld\r\n--b", P, Some(5)), Step::Part(2));
        // A possible start of the pattern waits for the bytes after it.
        assert_eq!(next(b"abc\r\n-", P, Some(4)), Step::More);
        assert_eq!(next(b"abcd\r\n-", P, Some(4)), Step::Data(4));
        assert_eq!(next(b"tail", P, Some(4)), Step::Data(4));
        assert_eq!(next(b"tail", P, Some(5)), Step::More);
    }
}
