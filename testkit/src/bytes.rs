//! Bodies a test sends and compares: reproducible pseudo-random bytes, and
//! where two byte strings part.
//!
//! Where it stops: generating requests is the corpus's job
//! ([`crate::corpus`]); this module only makes and compares payloads.

use crate::rng::Rng;

/// Deterministic pseudo-random bytes (xorshift), so a failing body can be
/// reproduced.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

/// Index of the first byte where `a` and `b` differ, for readable failures
/// on large bodies.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y).or(if a.len() == b.len() { None } else { Some(a.len().min(b.len())) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_names_the_first_differing_byte_or_the_shorter_end() {
        assert_eq!(first_difference(b"abc", b"abc"), None);
        assert_eq!(first_difference(b"abc", b"abd"), Some(2));
        assert_eq!(first_difference(b"ab", b"abc"), Some(2));
        assert_eq!(first_difference(b"", b""), None);
    }

    #[test]
    fn a_pattern_is_the_same_for_the_same_seed() {
        assert_eq!(pattern(1000, 7), pattern(1000, 7));
        assert_ne!(pattern(1000, 7), pattern(1000, 8));
        assert_eq!(pattern(33, 1).len(), 33);
    }
}
