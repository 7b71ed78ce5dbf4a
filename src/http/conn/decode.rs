//! A request body's framing as its bytes arrive: a `Content-Length`
//! counted down, or a chunked body decoded ([`crate::http::chunked`]).
//!
//! Where it stops: it says how many input bytes are body and where the
//! body ends; whether the body is kept whole or handed to a reader, and
//! what it costs in the worker's budget, is the intake's
//! ([`super::intake`]).

use crate::http::chunked::Decoder;

/// The framing of the body being received.
#[derive(Debug)]
pub(super) enum Body {
    /// Bytes of a `Content-Length` body still to come.
    Length(u64),
    /// A chunked body.
    Chunked(Decoder),
}

impl Body {
    /// A body of `length` bytes, or chunked when there is no length.
    pub(super) fn new(length: Option<u64>) -> Body {
        match length {
            Some(len) => Body::Length(len),
            None => Body::Chunked(Decoder::new()),
        }
    }

    /// Whether the body is chunked (its pieces must be de-chunked for a
    /// reader), rather than of a declared length.
    pub(super) fn is_chunked(&self) -> bool {
        matches!(self, Body::Chunked(_))
    }

    /// Appends the body's bytes in `input` to `held`, de-chunked, keeping
    /// `held` within `max` bytes (a chunked body; a length was checked up
    /// front). `Ok(Some(n))`: the body ended after `n` bytes of `input`;
    /// `Ok(None)`: all of `input` was body and more is to come;
    /// `Err(status)` on a framing error or an oversized body.
    pub(super) fn collect(&mut self, input: &[u8], held: &mut Vec<u8>, max: usize) -> Result<Option<usize>, u16> {
        match self {
            Body::Length(left) => {
                let n = input.len().min(*left as usize);
                held.extend_from_slice(&input[..n]);
                *left -= n as u64;
                Ok((*left == 0).then_some(n))
            }
            Body::Chunked(dec) => dec.decode(input, held, max),
        }
    }

    /// The next piece of the body in `input`, for a reader: returns how
    /// many bytes of `input` it used and whether the body ended there. A
    /// length's piece is `input[..used]` itself; a chunked body's is
    /// appended to `decoded`, de-chunked.
    pub(super) fn piece(&mut self, input: &[u8], decoded: &mut Vec<u8>) -> Result<(usize, bool), u16> {
        match self {
            Body::Length(left) => {
                let n = (input.len() as u64).min(*left) as usize;
                *left -= n as u64;
                Ok((n, *left == 0))
            }
            Body::Chunked(dec) => match dec.decode(input, decoded, usize::MAX) {
                Ok(Some(n)) => Ok((n, true)),
                Ok(None) => Ok((input.len(), false)),
                Err(status) => Err(status),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNKED: &[u8] = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\nNEXT";

    #[test]
    fn a_length_is_counted_down_across_reads() {
        let mut body = Body::new(Some(7));
        let mut held = b"HEAD".to_vec();
        assert_eq!(body.collect(b"abc", &mut held, 0), Ok(None));
        assert_eq!(body.collect(b"defgGET", &mut held, 0), Ok(Some(4)), "the rest is the next request");
        assert_eq!(held, b"HEADabcdefg");
        let mut body = Body::new(Some(3));
        assert_eq!(body.piece(b"ab", &mut Vec::new()), Ok((2, false)));
        assert_eq!(body.piece(b"cde", &mut Vec::new()), Ok((1, true)));
    }

    #[test]
    fn a_chunked_body_ends_where_its_framing_does_whatever_the_reads() {
        for cut in 0..CHUNKED.len() {
            let mut body = Body::new(None);
            assert!(body.is_chunked());
            let mut held = Vec::new();
            let first = body.collect(&CHUNKED[..cut], &mut held, 100);
            let end = match first {
                Ok(Some(n)) => n,
                Ok(None) => cut + body.collect(&CHUNKED[cut..], &mut held, 100).unwrap().unwrap(),
                Err(e) => panic!("cut at {cut}: {e}"),
            };
            assert_eq!(&CHUNKED[end..], b"NEXT", "cut at {cut}");
            assert_eq!(held, b"hello world", "cut at {cut}");
        }
    }

    #[test]
    fn a_chunked_body_reaches_a_reader_in_pieces() {
        let mut body = Body::new(None);
        let mut pieces = Vec::new();
        let mut used = 0;
        for read in CHUNKED.chunks(7) {
            let mut decoded = Vec::new();
            let (n, ended) = body.piece(read, &mut decoded).unwrap();
            pieces.extend_from_slice(&decoded);
            used += n;
            if ended {
                break;
            }
        }
        assert_eq!(pieces, b"hello world");
        assert_eq!(&CHUNKED[used..], b"NEXT");
    }

    #[test]
    fn a_chunked_body_over_its_limit_or_badly_framed_is_refused() {
        assert_eq!(Body::new(None).collect(b"b\r\nhello world\r\n", &mut Vec::new(), 10), Err(413));
        assert_eq!(Body::new(None).piece(b"5\nhello", &mut Vec::new()), Err(400));
    }
}
