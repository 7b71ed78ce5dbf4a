//! Byte classes of HTTP's grammar, as tables: checks that run once per
//! byte of a head, a chunk extension or a header a handler sets.

/// A byte class as a table: ASCII letters and digits, and the bytes of
/// `punct`.
pub(crate) const fn alnum_and(punct: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).is_ascii_alphanumeric();
        i += 1;
    }
    let mut j = 0;
    while j < punct.len() {
        t[punct[j] as usize] = true;
        j += 1;
    }
    t
}

/// Whether `b` may appear in a token (RFC 9110 §5.6.2): field names,
/// methods, chunk extensions.
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// [`is_tchar`] as a table: it runs once per byte.
static TCHAR: [bool; 256] = alnum_and(b"!#$%&'*+-.^_`|~");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_letters_digits_and_the_listed_marks() {
        let token: Vec<u8> = (0..=255u8).filter(|&b| is_tchar(b)).collect();
        assert_eq!(token.len(), 26 * 2 + 10 + 15);
        for b in b" \t\r\n\"(),/:;<=>?@[\\]{}\x7f\x80\xff" {
            assert!(!is_tchar(*b), "{b:#x}");
        }
    }
}
