//! Incremental scan of a request head that arrives in pieces: where it
//! ends, and the rules that can be judged byte by byte before it ends.
//!
//! A client may send its head one byte per read (slowloris does). Parsing
//! the head from its start on every read would make such a client cost the
//! square of its head's length; the scanner instead keeps its place, so each
//! received byte is examined once, and the full parser runs once, when the
//! blank line that ends the head is in the buffer.
//!
//! The rules it judges are the ones whose answer must not depend on how the
//! head was cut into reads, each failing at the byte that breaks it (the
//! earliest byte wins):
//!
//! - every line ends in CRLF: a bare LF is 400 (RFC 9112 §2.2 lets a server
//!   accept it; one that does reads a different request than a front end
//!   that does not split there);
//! - the request-target, from the first space of the request line to the
//!   next space or line end, holds no byte above 0x7F (400) and is at most
//!   `max_target` bytes (414);
//! - the head is at most `max_head` bytes (431) and has at most
//!   `max_headers` field lines (431).
//!
//! Where it stops: the syntax of methods, fields and versions is the
//! parser's (httparse), once the head is complete. [`quick_check`] tells a
//! head the parser completed in one go whether the scan would have passed
//! it, without scanning it.

use crate::config::Limits;

/// What a scan found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The head does not end in the bytes so far and breaks no rule yet.
    Partial,
    /// The head ends after this many bytes (its final CRLF included).
    End(usize),
    /// A rule is broken: answer with this status.
    Fail(u16),
}

/// Where the scan is in the head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// In the method, before the first space.
    #[default]
    Method,
    /// In the request-target, which started at `HeadScan::target_start`.
    Target,
    /// After the target, until the request line ends.
    Version,
    /// In the field lines; the current one started at
    /// `HeadScan::line_start`.
    Fields,
}

/// The scan state of one incomplete head, kept between reads. Positions are
/// offsets from the head's first byte, which stays at the front of the
/// buffer the head is collected in. Every connection holds one, so they
/// are kept in 32 bits: the scan never goes past [`MAX_SCANNED`].
#[derive(Clone, Debug, Default)]
pub(crate) struct HeadScan {
    /// Bytes of the head examined so far; 0 for a head not scanned yet.
    scanned: u32,
    /// Where the scan is.
    phase: Phase,
    /// Offset of the first byte of the request-target.
    target_start: u32,
    /// Offset of the first byte of the current field line.
    line_start: u32,
    /// Field lines ended so far.
    fields: u32,
}

/// The scan's offsets fit in its 32-bit fields: a head limit above this is
/// applied as this.
const MAX_SCANNED: usize = u32::MAX as usize;

impl HeadScan {
    /// Whether no byte of the head has been scanned yet.
    pub(crate) fn is_fresh(&self) -> bool {
        self.scanned == 0
    }

    /// Scans `head[self.scanned..]`: `head` is the whole head so far, of
    /// which the bytes before `self.scanned` were scanned by earlier calls
    /// and must not have changed. After [`Scan::End`] or [`Scan::Fail`] the
    /// state is spent; start the next head with a fresh one.
    pub(crate) fn scan(&mut self, head: &[u8], limits: &Limits) -> Scan {
        // Bytes from offset `max_head` on are over the limit, unless the
        // head ends before them: scan no further than that.
        let max_head = limits.max_head.min(MAX_SCANNED);
        let window = head.len().min(max_head);
        let mut i = self.scanned as usize;
        while i < window {
            let rest = &head[i..window];
            match self.phase {
                Phase::Method => match rest.iter().position(|&b| b == b' ' || b == b'\n') {
                    Some(j) if rest[j] == b' ' => {
                        self.phase = Phase::Target;
                        self.target_start = (i + j + 1) as u32;
                        i += j + 1;
                    }
                    Some(j) => {
                        // A request line without a space: the parser refuses
                        // it once the head ends; its line end is still judged.
                        if let Some(status) = self.line_end(head, i + j) {
                            return self.fail(status);
                        }
                        i += j + 1;
                    }
                    None => i = window,
                },
                Phase::Target => {
                    for &b in rest {
                        match b {
                            // The target ends at a space or a line end (a
                            // bare CR is the parser's to refuse).
                            b' ' | b'\r' => {
                                self.phase = Phase::Version;
                                break;
                            }
                            b'\n' => return self.fail(400),
                            0x80..=0xff => return self.fail(400),
                            _ => {}
                        }
                        i += 1;
                        if i - self.target_start as usize > limits.max_target {
                            return self.fail(414);
                        }
                    }
                    if self.phase == Phase::Version {
                        i += 1;
                    }
                }
                Phase::Version => match rest.iter().position(|&b| b == b'\n') {
                    Some(j) => {
                        if let Some(status) = self.line_end(head, i + j) {
                            return self.fail(status);
                        }
                        i += j + 1;
                    }
                    None => i = window,
                },
                Phase::Fields => match rest.iter().position(|&b| b == b'\n') {
                    Some(j) => {
                        let lf = i + j;
                        if head[lf - 1] != b'\r' {
                            return self.fail(400);
                        }
                        if lf == self.line_start as usize + 1 {
                            *self = HeadScan::default();
                            return Scan::End(lf + 1);
                        }
                        self.fields += 1;
                        if self.fields as usize > limits.max_headers {
                            return self.fail(431);
                        }
                        self.line_start = (lf + 1) as u32;
                        i = lf + 1;
                    }
                    None => i = window,
                },
            }
        }
        self.scanned = i as u32;
        if head.len() > max_head {
            return self.fail(431);
        }
        Scan::Partial
    }

    /// The request line ends with the LF at `lf`: checks its CR and moves to
    /// the field lines.
    fn line_end(&mut self, head: &[u8], lf: usize) -> Option<u16> {
        if lf == 0 || head[lf - 1] != b'\r' {
            return Some(400);
        }
        self.phase = Phase::Fields;
        self.line_start = (lf + 1) as u32;
        None
    }

    fn fail(&mut self, status: u16) -> Scan {
        *self = HeadScan::default();
        Scan::Fail(status)
    }
}

/// Whether a head the parser completed (`head` is exactly its bytes) passes
/// every rule of [`HeadScan`], judged from what the parser found instead of
/// scanning again: line ends sit just before each field name and at the
/// end; the target is the parsed one. The parser already bounds the number
/// of fields and refuses a bare LF anywhere but at a line end.
pub(crate) fn quick_check(head: &[u8], target: &str, fields: &[httparse::Header<'_>], limits: &Limits) -> bool {
    if head.len() > limits.max_head || target.len() > limits.max_target || !target.is_ascii() {
        return false;
    }
    if !head.ends_with(b"\r\n\r\n") {
        return false;
    }
    let base = head.as_ptr() as usize;
    fields.iter().all(|f| {
        // The field's name is a slice of `head`: its offset is the distance
        // between the two addresses.
        let at = f.name.as_ptr() as usize - base;
        at >= 2 && &head[at - 2..at] == b"\r\n"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits::DEFAULT.with_max_head(256).with_max_headers(4).with_max_target(32).with_max_body(16);

    fn whole(head: &[u8]) -> Scan {
        HeadScan::default().scan(head, &LIMITS)
    }

    fn bytewise(head: &[u8]) -> Scan {
        let mut s = HeadScan::default();
        for n in 1..=head.len() {
            match s.scan(&head[..n], &LIMITS) {
                Scan::Partial => {}
                done => return done,
            }
        }
        Scan::Partial
    }

    #[test]
    fn finds_the_end_whole_and_byte_by_byte() {
        let head = b"GET /a HTTP/1.1\r\nHost: x\r\nX: y\r\n\r\nBODY";
        assert_eq!(whole(head), Scan::End(head.len() - 4));
        assert_eq!(bytewise(head), Scan::End(head.len() - 4));
        assert_eq!(whole(b"GET / HTTP/1.1\r\n\r\n"), Scan::End(18));
        assert_eq!(whole(b"GET / HTTP/1.1\r\nHost: x\r\n"), Scan::Partial);
    }

    #[test]
    fn judges_each_rule_at_the_byte_that_breaks_it() {
        let cases: &[(&[u8], Scan)] = &[
            (b"GET / HTTP/1.1\nHost: x\n\n", Scan::Fail(400)),
            (b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", Scan::Fail(400)),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\n", Scan::Fail(400)),
            (b"GET /a\nb HTTP/1.1\r\n\r\n", Scan::Fail(400)),
            (b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n", Scan::Fail(400)),
            (b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", Scan::Fail(414)),
            (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n", Scan::Fail(431)),
            // The target's 414 comes before a bare LF later in the line.
            (b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\n\n", Scan::Fail(414)),
        ];
        for (head, want) in cases {
            assert_eq!(whole(head), *want, "{:?}", String::from_utf8_lossy(head));
            assert_eq!(bytewise(head), *want, "{:?} byte by byte", String::from_utf8_lossy(head));
        }
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(257, b'v');
        assert_eq!(whole(&long), Scan::Fail(431));
        assert_eq!(bytewise(&long), Scan::Fail(431));
        long.truncate(256);
        assert_eq!(whole(&long), Scan::Partial);
        // A head of exactly `max_head` bytes is within the limit.
        let mut exact = b"GET / HTTP/1.1\r\nX: ".to_vec();
        exact.resize(252, b'v');
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(whole(&exact), Scan::End(256));
        assert_eq!(bytewise(&exact), Scan::End(256));
    }

    #[test]
    fn quick_check_agrees_with_the_scan() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nX: y\r\n\r\n"[..],
            b"GET / HTTP/1.1\nHost: x\r\nX: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: y\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: y\r\n\n",
            b"GET / HTTP/1.1\n\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
        ] {
            let mut slots = [httparse::EMPTY_HEADER; 8];
            let mut req = httparse::Request::new(&mut slots);
            let Ok(httparse::Status::Complete(n)) = req.parse(head) else {
                panic!("{:?} does not parse", String::from_utf8_lossy(head))
            };
            let quick = quick_check(&head[..n], req.path.unwrap(), req.headers, &LIMITS);
            assert_eq!(quick, whole(head) == Scan::End(n), "{:?}", String::from_utf8_lossy(head));
        }
    }
}
