//! Incremental decoder for `Transfer-Encoding: chunked` bodies.
//!
//! It consumes any amount of input at a time (one byte or many requests'
//! worth) and stops exactly after the final CRLF, so the bytes after it are
//! the next request. Extensions and trailers are checked and skipped:
//! extensions against their grammar (RFC 9112 §7.1.1), trailers for the
//! bytes a field line may hold. Line endings must be CRLF: a bare LF is a
//! framing error, the kind of leniency that lets two parsers disagree about
//! where a body ends.

use super::syntax::is_tchar;

/// Where the decoder is inside the chunked framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In the hex digits of a chunk size.
    Size,
    /// Whitespace after the size, before `;` or CR.
    SizeWs,
    /// After a `;`: optional whitespace, then an extension name.
    ExtStart,
    /// In an extension name (a token).
    ExtName,
    /// Whitespace after an extension name.
    ExtNameWs,
    /// After the `=` of an extension: optional whitespace, then its value.
    ExtValueStart,
    /// In an extension value that is a token.
    ExtToken,
    /// In an extension value that is a quoted-string.
    ExtQuoted,
    /// After a backslash inside a quoted-string.
    ExtQuotedPair,
    /// After an extension value: whitespace, then `;` or CR.
    ExtValueWs,
    /// After the CR that ends a size line.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    /// Inside a trailer line, until CR.
    Trailer,
    /// After the CR that ends a trailer line.
    TrailerLf,
    /// After the CR of the final empty line.
    FinalLf,
}

/// A chunked-body decoder. Errors are HTTP status codes.
#[derive(Clone, Debug)]
pub(crate) struct Decoder {
    state: State,
    /// Size of the current chunk (while in `Size`), then bytes left of it.
    remaining: u64,
    /// Hex digits seen in the current size.
    digits: u8,
    /// Bytes of extensions on the current line or of trailers in total.
    skipped: u32,
}

/// Longest run of extension or trailer bytes accepted, as a framing guard.
const MAX_SKIPPED: u32 = 16 * 1024;

impl Decoder {
    pub(crate) fn new() -> Decoder {
        Decoder { state: State::Size, remaining: 0, digits: 0, skipped: 0 }
    }

    /// Decodes from `input`, appending data to `body` (which must stay within
    /// `max_body`). Returns `Ok(Some(n))` when the body ended after `n` bytes
    /// of `input`, `Ok(None)` when all of `input` was consumed and more is
    /// needed, `Err(status)` on a framing error (400) or an oversized body
    /// (413).
    pub(crate) fn decode(&mut self, input: &[u8], body: &mut Vec<u8>, max_body: usize) -> Result<Option<usize>, u16> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size => match hex(b) {
                    Some(v) => {
                        // 15 hex digits already exceed any body limit; more
                        // would overflow.
                        if self.digits >= 15 {
                            return Err(400);
                        }
                        self.digits += 1;
                        self.remaining = self.remaining << 4 | v as u64;
                    }
                    None if self.digits == 0 => return Err(400),
                    None => {
                        if body.len() as u64 + self.remaining > max_body as u64 {
                            return Err(413);
                        }
                        match b {
                            b'\r' => self.state = State::SizeLf,
                            b';' => self.state = State::ExtStart,
                            b' ' | b'\t' => self.state = State::SizeWs,
                            _ => return Err(400),
                        }
                    }
                },
                State::SizeWs => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = State::ExtStart,
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(400),
                },
                // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
                // ext-val   = token / quoted-string
                // A name is required: `5;` or `5;=x` is a framing error.
                State::ExtStart
                | State::ExtName
                | State::ExtNameWs
                | State::ExtValueStart
                | State::ExtToken
                | State::ExtQuoted
                | State::ExtQuotedPair
                | State::ExtValueWs => {
                    i += self.extension(&input[i..])?;
                    continue;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(400);
                    }
                    self.digits = 0;
                    self.skipped = 0;
                    self.state = if self.remaining == 0 { State::TrailerStart } else { State::Data };
                }
                State::Data => {
                    let n = (input.len() - i).min(self.remaining as usize);
                    body.extend_from_slice(&input[i..i + n]);
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    i += n;
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(400);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(400);
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::FinalLf,
                    b' ' | b'\t' | b'\n' | b':' => return Err(400), // obs-fold, bare LF, empty name
                    _ => {
                        self.skip()?;
                        self.state = State::Trailer;
                    }
                },
                State::Trailer => match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\t' => self.skip()?,
                    0..=0x1f | 0x7f => return Err(400),
                    _ => self.skip()?,
                },
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(400);
                    }
                    self.state = State::TrailerStart;
                }
                State::FinalLf => {
                    if b != b'\n' {
                        return Err(400);
                    }
                    return Ok(Some(i + 1));
                }
            }
            i += 1;
        }
        Ok(None)
    }

    /// Runs the extension grammar over `input` until the CR that ends the
    /// size line (consumed) or the end of `input`; returns how many bytes
    /// it consumed. A loop of its own, as extensions come a byte at a time.
    fn extension(&mut self, input: &[u8]) -> Result<usize, u16> {
        let room = (MAX_SKIPPED - self.skipped) as usize;
        let mut state = self.state;
        for (k, &b) in input.iter().enumerate() {
            if k == room {
                return Err(400);
            }
            state = ext_step(state, b).ok_or(400u16)?;
            if state == State::SizeLf {
                self.state = state;
                self.skipped += k as u32 + 1;
                return Ok(k + 1);
            }
        }
        self.state = state;
        self.skipped += input.len() as u32;
        Ok(input.len())
    }

    fn skip(&mut self) -> Result<(), u16> {
        self.skipped += 1;
        if self.skipped > MAX_SKIPPED {
            return Err(400);
        }
        Ok(())
    }
}

/// The next state inside a chunk extension after byte `b`, or `None` where
/// the grammar has no place for `b`.
#[inline]
fn ext_step(state: State, b: u8) -> Option<State> {
    let ws = b == b' ' || b == b'\t';
    Some(match state {
        State::ExtStart if ws => State::ExtStart,
        State::ExtStart if is_tchar(b) => State::ExtName,
        State::ExtName if is_tchar(b) => State::ExtName,
        State::ExtName | State::ExtNameWs if ws => State::ExtNameWs,
        State::ExtName | State::ExtNameWs if b == b'=' => State::ExtValueStart,
        State::ExtValueStart if ws => State::ExtValueStart,
        State::ExtValueStart if b == b'"' => State::ExtQuoted,
        State::ExtValueStart | State::ExtToken if is_tchar(b) => State::ExtToken,
        State::ExtToken | State::ExtValueWs if ws => State::ExtValueWs,
        // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
        State::ExtQuoted if b == b'"' => State::ExtValueWs,
        State::ExtQuoted if b == b'\\' => State::ExtQuotedPair,
        State::ExtQuoted if ws || matches!(b, 0x21..=0x7e | 0x80..=0xff) => State::ExtQuoted,
        // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
        State::ExtQuotedPair if ws || matches!(b, 0x21..=0x7e | 0x80..=0xff) => State::ExtQuoted,
        // After a whole extension: the next one, or the line's end.
        State::ExtName | State::ExtNameWs | State::ExtToken | State::ExtValueWs if b == b';' => State::ExtStart,
        State::ExtName | State::ExtNameWs | State::ExtToken | State::ExtValueWs if b == b'\r' => State::SizeLf,
        _ => return None,
    })
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize), u16> {
        let mut d = Decoder::new();
        let mut body = Vec::new();
        match d.decode(input, &mut body, 1 << 20)? {
            Some(n) => Ok((body, n)),
            None => Err(0),
        }
    }

    #[test]
    fn decodes_whole_and_split() {
        let msg = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (body, n) = decode_all(msg).unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(&msg[n..], b"NEXT");
        for split in 0..msg.len() {
            let mut d = Decoder::new();
            let mut body = Vec::new();
            let first = d.decode(&msg[..split], &mut body, 1 << 20).unwrap();
            let total = match first {
                Some(n) => n,
                None => split + d.decode(&msg[split..], &mut body, 1 << 20).unwrap().unwrap(),
            };
            assert_eq!(body, b"hello world", "split at {split}");
            assert_eq!(total, msg.len() - 4);
        }
    }

    #[test]
    fn accepts_every_form_of_extension() {
        for ext in [
            &b"a"[..],
            b"a=b",
            b" a = b ",
            b"\ta\t=\t\"q; \\\"x\\\" \xff\"",
            b"a;b=1;c=\"\"",
            b"a=\"\" ;b",
            b"!#$%&'*+-.^_`|~09Az=!#$%&'*+-.^_`|~09Az",
        ] {
            let mut msg = b"2;".to_vec();
            msg.extend_from_slice(ext);
            msg.extend_from_slice(b"\r\nab\r\n0;");
            msg.extend_from_slice(ext);
            msg.extend_from_slice(b"\r\n\r\n");
            let r = decode_all(&msg);
            assert!(
                matches!(&r, Ok((body, n)) if body == b"ab" && *n == msg.len()),
                "{:?} gave {r:?}",
                String::from_utf8_lossy(ext)
            );
        }
    }

    #[test]
    fn rejects_bad_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"-5\r\n",
            b"+5\r\n",
            b"0x5\r\n",
            b"ffffffffffffffffff\r\n",
            b"0\r\n X: 1\r\n\r\n",
            b"5;a\x01\r\n",
            b"2;\r\nab\r\n0\r\n\r\n",
            b"2; \r\nab\r\n0\r\n\r\n",
            b"2;;a\r\nab\r\n0\r\n\r\n",
            b"2;=v\r\nab\r\n0\r\n\r\n",
            b"2;a=\r\nab\r\n0\r\n\r\n",
            b"2;a;\r\nab\r\n0\r\n\r\n",
            b"2;a b\r\nab\r\n0\r\n\r\n",
            b"2;a=\"x\r\nab\r\n0\r\n\r\n",
            b"2;a=b c\r\nab\r\n0\r\n\r\n",
            b"2;a=\"q\"x\r\nab\r\n0\r\n\r\n",
            b"2;a(b)\r\nab\r\n0\r\n\r\n",
            b"0;\r\n\r\n",
        ] {
            let r = decode_all(bad);
            assert!(matches!(r, Err(400)), "{:?} gave {r:?}", String::from_utf8_lossy(bad));
        }
        let mut d = Decoder::new();
        assert_eq!(d.decode(b"200001\r\n", &mut Vec::new(), 1 << 21), Err(413));
    }
}
