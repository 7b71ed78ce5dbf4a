//! One request head, parsed into a value ([`Head`]): method, target,
//! version, fields and the body's framing. Parsing changes nothing of the
//! connection; what to do with the head is the state machine's.
//!
//! A head seen for the first time goes to the parser (httparse) at once:
//! most arrive whole, and then the incremental scan is not needed; a cheap
//! check ([`quick_check`]) confirms that the scan would have passed it. The
//! rest of a head that arrived in pieces is scanned first
//! ([`crate::http::scan`]), keeping its place between reads, and parsed
//! once it ends. When the two disagree on a head, the scan's answer wins,
//! so that the answer does not depend on how the head was cut into reads.

use std::mem::MaybeUninit;
use std::os::fd::RawFd;

use crate::config::Limits;
use crate::http::fields::{framing, version_status, Framing};
use crate::http::request::{Headers, Request, Version};
use crate::http::scan::{quick_check, HeadScan, Scan};

/// Room for a head's fields, on the caller's stack.
pub(super) type Slots<'b> = [MaybeUninit<httparse::Header<'b>>; Limits::HEADERS_CAP];

/// Empty room for a head's fields.
#[inline]
pub(super) fn slots<'b>() -> Slots<'b> {
    [const { MaybeUninit::uninit() }; Limits::HEADERS_CAP]
}

/// What the bytes at the front of a buffer are.
pub(super) enum Parse<'h, 'b> {
    /// The start of a head: more bytes are needed.
    Partial,
    /// Empty lines before a request line (RFC 9112 §2.2): this many bytes,
    /// to be skipped.
    Skip(usize),
    /// A broken head: answer with this status and close.
    Fail(u16),
    /// A complete head.
    Head(Head<'h, 'b>),
}

/// A complete, valid request head, borrowed from the buffer it was read
/// from (`'b`) and the room its fields were parsed into (`'h`).
pub(super) struct Head<'h, 'b> {
    /// The method token.
    pub(super) method: &'b str,
    /// The request-target.
    pub(super) target: &'b str,
    /// The protocol version.
    pub(super) version: Version,
    /// The header fields.
    pub(super) fields: &'h [httparse::Header<'b>],
    /// What the fields say of the body and the connection.
    pub(super) framing: Framing,
    /// Bytes of the head, its final empty line included.
    pub(super) len: usize,
}

impl Head<'_, '_> {
    /// Whether a body follows the head.
    pub(super) fn has_body(&self) -> bool {
        self.framing.chunked || self.framing.length.is_some_and(|len| len > 0)
    }

    /// Whether the client waits for `100 Continue` before it sends the
    /// body.
    pub(super) fn expects_continue(&self) -> bool {
        self.framing.expect_continue && self.version == Version::Http11
    }

    /// The request as a handler sees it, with `body`, on the connection
    /// whose socket is `socket`.
    pub(super) fn request<'s>(&'s self, body: &'s [u8], socket: RawFd) -> Request<'s> {
        Request {
            method: self.method,
            target: self.target,
            version: self.version,
            headers: Headers { fields: self.fields },
            body,
            keep_alive: self.framing.keep_alive,
            socket,
        }
    }
}

/// Parses the head at the front of `buf`. `scan` is the incremental scan
/// of a head that arrived in pieces: fresh for a head not seen before, and
/// left fresh again once this head is complete or refused.
#[inline]
pub(super) fn parse<'h, 'b>(
    buf: &'b [u8],
    scan: &mut HeadScan,
    limits: &Limits,
    slots: &'h mut Slots<'b>,
) -> Parse<'h, 'b> {
    // RFC 9112 §2.2: ignore empty lines before a request line. Like every
    // line of a head they end in CRLF: a bare LF is refused here, a bare
    // CR by the parser.
    let mut skip = 0;
    loop {
        match &buf[skip..] {
            [b'\r', b'\n', ..] => skip += 2,
            [b'\n', ..] => return Parse::Fail(400),
            _ => break,
        }
    }
    if skip > 0 {
        return Parse::Skip(skip);
    }
    if buf == b"\r" {
        // Maybe the start of an empty line.
        return Parse::Partial;
    }
    let mut req = httparse::Request::new(&mut []);
    let scanned = !scan.is_fresh();
    let parsed = if scanned {
        match scan.scan(buf, limits) {
            Scan::Partial => return Parse::Partial,
            Scan::Fail(status) => return Parse::Fail(status),
            Scan::End(n) => req.parse_with_uninit_headers(&buf[..n], &mut slots[..limits.max_headers]),
        }
    } else {
        req.parse_with_uninit_headers(buf, &mut slots[..limits.max_headers])
    };
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        other => return unparsed(buf, other, scanned, scan, limits),
    };
    let target = req.path.unwrap_or("");
    if !scanned && !quick_check(&buf[..len], target, req.headers, limits) {
        return refused(buf, scan, limits);
    }
    let version = version_of(&req);
    let framing = match framing(req.headers, version) {
        Ok(f) => f,
        Err(status) => return Parse::Fail(status),
    };
    Parse::Head(Head { method: req.method.unwrap_or(""), target, version, fields: req.headers, framing, len })
}

/// Parses again a head that was parsed and checked before (kept while its
/// body arrived): parsing is cheaper than keeping borrowed fields alive
/// across reads. `None` only if it no longer parses, which is a bug.
pub(super) fn reparse<'h, 'b>(head: &'b [u8], limits: &Limits, slots: &'h mut Slots<'b>) -> Option<Head<'h, 'b>> {
    let mut req = httparse::Request::new(&mut []);
    let Ok(httparse::Status::Complete(len)) = req.parse_with_uninit_headers(head, &mut slots[..limits.max_headers])
    else {
        return None;
    };
    let version = version_of(&req);
    let framing = framing(req.headers, version).ok()?;
    Some(Head {
        method: req.method.unwrap_or(""),
        target: req.path.unwrap_or(""),
        version,
        fields: req.headers,
        framing,
        len,
    })
}

/// The version the parser read (it accepts only 1.0 and 1.1).
fn version_of(req: &httparse::Request<'_, '_>) -> Version {
    if req.version == Some(0) {
        Version::Http10
    } else {
        Version::Http11
    }
}

/// The parser did not complete the head at the front of `buf`: it wants
/// more bytes, or refuses it. `scanned` says whether the scan saw its end
/// already.
#[cold]
fn unparsed<'h, 'b>(
    buf: &[u8],
    parsed: httparse::Result<usize>,
    scanned: bool,
    scan: &mut HeadScan,
    limits: &Limits,
) -> Parse<'h, 'b> {
    let e = match parsed {
        Ok(httparse::Status::Complete(_)) => unreachable!("a complete head is not unparsed"),
        Ok(httparse::Status::Partial) if !scanned => {
            // Remember how far it was scanned; a rule it breaks already is
            // answered now.
            return match scan.scan(buf, limits) {
                Scan::Partial => Parse::Partial,
                Scan::Fail(status) => Parse::Fail(status),
                Scan::End(_) => {
                    debug_assert!(false, "the parser and the scan disagree on where a head ends");
                    Parse::Fail(400)
                }
            };
        }
        Ok(httparse::Status::Partial) => {
            debug_assert!(false, "a head the scan saw end does not parse whole");
            return Parse::Fail(400);
        }
        Err(e) => e,
    };
    // A rule the scan judges may break before the parser's error: its
    // answer comes first, so that the answer does not depend on how the
    // head was cut into reads.
    if !scanned {
        match scan.scan(buf, limits) {
            Scan::Fail(status) => return Parse::Fail(status),
            Scan::End(_) => {}
            Scan::Partial => {
                if e == httparse::Error::Version && version_status(buf).is_none() {
                    return Parse::Partial;
                }
                *scan = HeadScan::default();
            }
        }
    }
    Parse::Fail(match e {
        httparse::Error::TooManyHeaders => 431,
        httparse::Error::Version => version_status(buf).unwrap_or(400),
        _ => 400,
    })
}

/// A head the parser completed in one go failed [`quick_check`]: which
/// rule it breaks, and so the answer, is the scan's to say.
#[cold]
fn refused<'h, 'b>(buf: &[u8], scan: &mut HeadScan, limits: &Limits) -> Parse<'h, 'b> {
    match scan.scan(buf, limits) {
        Scan::Fail(status) => Parse::Fail(status),
        _ => {
            debug_assert!(false, "the quick check and the scan disagree");
            *scan = HeadScan::default();
            Parse::Fail(400)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits::DEFAULT.with_max_head(256).with_max_headers(4).with_max_target(32);

    /// What parsing `buf` (fresh, or after the scan saw `seen` bytes of
    /// it) comes to: the head's length, or a status, or `Partial`/`Skip`.
    fn outcome(buf: &[u8], scan: &mut HeadScan) -> String {
        let mut room = slots();
        match parse(buf, scan, &LIMITS, &mut room) {
            Parse::Partial => "partial".into(),
            Parse::Skip(n) => format!("skip {n}"),
            Parse::Fail(status) => format!("fail {status}"),
            Parse::Head(h) => format!("head {} {} {}", h.method, h.target, h.len),
        }
    }

    fn bytewise(buf: &[u8]) -> String {
        let mut scan = HeadScan::default();
        for n in 1..buf.len() {
            let o = outcome(&buf[..n], &mut scan);
            if o != "partial" {
                return o;
            }
        }
        outcome(buf, &mut scan)
    }

    #[test]
    fn a_head_is_a_value_whole_or_in_pieces() {
        let buf = b"POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc";
        let mut room = slots();
        let Parse::Head(h) = parse(buf, &mut HeadScan::default(), &LIMITS, &mut room) else { panic!() };
        assert_eq!((h.method, h.target, h.version, h.len), ("POST", "/a?b", Version::Http11, buf.len() - 3));
        assert!(h.has_body() && h.expects_continue() && h.framing.keep_alive);
        let req = h.request(&buf[h.len..], -1);
        assert_eq!((req.path(), req.header("host"), req.body()), ("/a", Some(&b"x"[..]), &b"abc"[..]));
        assert_eq!(bytewise(buf), format!("head POST /a?b {}", buf.len() - 3));
        let mut room = slots();
        let again = reparse(&buf[..h.len], &LIMITS, &mut room).expect("a valid head parses again");
        assert_eq!((again.target, again.len, again.fields.len()), ("/a?b", h.len, 3));
    }

    #[test]
    fn empty_lines_before_a_head_are_skipped_and_a_bare_lf_is_not() {
        let mut scan = HeadScan::default();
        assert_eq!(outcome(b"\r\n\r\nGET / HTTP/1.1\r\n", &mut scan), "skip 4");
        assert_eq!(outcome(b"\r", &mut scan), "partial");
        assert_eq!(outcome(b"\n", &mut scan), "fail 400");
        let ten = b"GET / HTTP/1.0\r\n\r\n";
        let mut room = slots();
        let Parse::Head(h) = parse(ten, &mut scan, &LIMITS, &mut room) else { panic!() };
        assert!(h.version == Version::Http10 && !h.framing.keep_alive && !h.has_body());
    }

    #[test]
    fn the_answer_to_a_broken_head_does_not_depend_on_the_reads() {
        for (head, want) in [
            (&b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n"[..], "fail 400"),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", "fail 505"),
            (b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n", "fail 414"),
            (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n", "fail 431"),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", "fail 400"),
            (b"GET / HTTP/1.1\r\n\r\n", "fail 400"),
        ] {
            let whole = outcome(head, &mut HeadScan::default());
            assert_eq!(whole, want, "{:?}", String::from_utf8_lossy(head));
            assert_eq!(bytewise(head), want, "{:?} byte by byte", String::from_utf8_lossy(head));
        }
    }
}
