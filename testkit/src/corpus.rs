//! The hostile-request corpus: one table of [`Case`]s, each with the bytes
//! sent on a fresh connection and what the server must do with them.
//!
//! - [`smuggling`]: RFC 9112 request-smuggling vectors, each followed in
//!   the same write by [`FOLLOWER`], a well-formed `GET` that would be
//!   answered if the server had guessed a framing and carried on;
//! - [`limits`]: heads, targets and bodies over the demo server's limits
//!   (its default head limits: 16 KiB head, 100 fields, 8 KiB target; and
//!   `--max-body` [`MAX_BODY`]);
//! - [`generated`]: random bytes, random heads, mutated valid requests, and
//!   valid requests followed by garbage, from a seeded [`Rng`];
//! - the fuzz seeds made from the fixed cases ([`fuzz_seeds`]), which
//!   `fuzz/seeds/http_conn/` holds as files (written by the `fuzz-seeds`
//!   binary, checked by this crate's tests).
//!
//! `tests/smuggling.rs` and `tests/limits.rs` send the fixed cases to the
//! demo server one by one; the stress harness sends all of them, and
//! generated ones, from many threads at once.
//!
//! Where it stops: it says what is sent and what must come back; sending,
//! reading and judging are the callers'.

use std::fs;
use std::io;
use std::path::Path;

use crate::rng::Rng;

/// The body limit (`--max-body`) the limit cases assume.
pub const MAX_BODY: usize = 1000;

/// Sent after every smuggling vector in the same write: answered only if
/// the server guessed a framing and carried on.
pub const FOLLOWER: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";

/// What the server must do with a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Answer exactly this status with `Connection: close`, then close, with
    /// nothing after the answer.
    Status(u16),
    /// Answer a 4xx/5xx and close, or close without an answer.
    RejectOrClose,
    /// Answer something well-formed or close; a 4xx/5xx must close.
    Anything,
    /// Answer the valid request in front with 200, then reject or close.
    OkThenReject,
}

/// Which rule a case breaks (one test per group in `tests/smuggling.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    /// `Content-Length` and `Transfer-Encoding` together.
    ClAndTe,
    /// Several or invalid `Content-Length` fields.
    ContentLength,
    /// A `Transfer-Encoding` that does not end in exactly one `chunked`.
    TransferEncoding,
    /// Invalid chunk framing.
    Chunks,
    /// Header field syntax.
    HeaderSyntax,
    /// `Host` missing or repeated in HTTP/1.1, or not an authority.
    Host,
    /// A version other than 1.x.
    Version,
    /// Not HTTP at all.
    Garbage,
    /// Over a head, target or body limit.
    Limit,
    /// Generated from a seed.
    Generated,
}

/// One hostile request.
#[derive(Clone, Debug)]
pub struct Case {
    /// Unique among the fixed cases, usable as a file name.
    pub name: String,
    /// Which rule it breaks.
    pub group: Group,
    /// The bytes sent, all in one write.
    pub wire: Vec<u8>,
    /// What must happen.
    pub expect: Expect,
}

impl Case {
    fn status(group: Group, name: &str, wire: Vec<u8>, status: u16) -> Case {
        Case { name: name.to_owned(), group, wire, expect: Expect::Status(status) }
    }

    /// A smuggling vector: `wire` then [`FOLLOWER`].
    fn smuggle(group: Group, name: &str, wire: &[u8], status: u16) -> Case {
        let mut w = wire.to_vec();
        w.extend_from_slice(FOLLOWER);
        Case::status(group, name, w, status)
    }
}

/// Every fixed case: [`smuggling`] then [`limits`].
pub fn fixed() -> Vec<Case> {
    let mut all = smuggling();
    all.extend(limits());
    all
}

/// The fixed case called `name`; panics if there is none.
pub fn case(name: &str) -> Case {
    fixed().into_iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no corpus case {name:?}"))
}

/// The fixed cases of `group`.
pub fn group(group: Group) -> Vec<Case> {
    fixed().into_iter().filter(|c| c.group == group).collect()
}

/// The request-smuggling vectors, each followed by [`FOLLOWER`].
pub fn smuggling() -> Vec<Case> {
    use Group::*;
    let fixed: &[(Group, &str, &[u8], u16)] = &[
        (
            ClAndTe,
            "cl-then-te",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
            400,
        ),
        (
            ClAndTe,
            "te-then-cl",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
            400,
        ),
        (
            ClAndTe,
            "cl-0-and-te",
            b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            ContentLength,
            "cl-two-different",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
            400,
        ),
        (
            ContentLength,
            "cl-two-equal",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde",
            400,
        ),
        (ContentLength, "cl-list", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nabcde", 400),
        (ContentLength, "cl-plus-sign", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nabcde", 400),
        (ContentLength, "cl-negative", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
        (ContentLength, "cl-hex", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nabcde", 400),
        (ContentLength, "cl-hex-digits", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: a\r\n\r\nabcdeabcde", 400),
        (ContentLength, "cl-empty", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: \r\n\r\n", 400),
        (
            ContentLength,
            "cl-inner-space",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1 0\r\n\r\n0123456789",
            400,
        ),
        (ContentLength, "cl-decimal-point", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5.0\r\n\r\nabcde", 400),
        (
            ContentLength,
            "cl-overflow-u64",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551621\r\n\r\nabcde",
            400,
        ),
        (
            ContentLength,
            "cl-overflow-long",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
            400,
        ),
        (
            TransferEncoding,
            "te-chunked-then-gzip",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            TransferEncoding,
            "te-gzip-alone",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            TransferEncoding,
            "te-chunked-twice",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            TransferEncoding,
            "te-chunked-then-gzip-in-two-fields",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            TransferEncoding,
            "te-empty-coding",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            TransferEncoding,
            "te-in-http10",
            b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            TransferEncoding,
            "te-unknown-coding",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: foo\r\n\r\n0\r\n\r\n",
            501,
        ),
        (
            TransferEncoding,
            "te-unknown-then-chunked",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
        (
            TransferEncoding,
            "te-xchunked",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            501,
        ),
        (
            TransferEncoding,
            "te-chunked-plus-an-unknown-field",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
            400,
        ),
        (HeaderSyntax, "space-before-colon", b"GET / HTTP/1.1\r\nHost: t\r\nX-A : b\r\n\r\n", 400),
        (
            HeaderSyntax,
            "space-before-colon-of-te",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc",
            400,
        ),
        (HeaderSyntax, "tab-before-colon", b"GET / HTTP/1.1\r\nHost: t\r\nX-A\t: b\r\n\r\n", 400),
        (HeaderSyntax, "obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n", 400),
        (HeaderSyntax, "obs-fold-with-tab", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tb\r\n\r\n", 400),
        (
            HeaderSyntax,
            "obs-fold-of-cl",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n 3\r\n\r\nabc",
            400,
        ),
        (HeaderSyntax, "nul-in-value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n", 400),
        (HeaderSyntax, "soh-in-value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n", 400),
        (HeaderSyntax, "us-in-value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x1fb\r\n\r\n", 400),
        (HeaderSyntax, "bare-cr-in-value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n", 400),
        (HeaderSyntax, "del-in-value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n", 400),
        (HeaderSyntax, "empty-name", b"GET / HTTP/1.1\r\nHost: t\r\n: b\r\n\r\n", 400),
        (HeaderSyntax, "no-colon", b"GET / HTTP/1.1\r\nHost: t\r\nX-A b\r\n\r\n", 400),
        // RFC 9112 §2.2 lets a server take a bare LF for a line end; a front
        // end that does not would read a different request.
        (HeaderSyntax, "bare-lf-line-ends", b"GET / HTTP/1.1\nHost: t\n\n", 400),
        (HeaderSyntax, "bare-lf-after-the-request-line", b"GET / HTTP/1.1\nHost: t\r\n\r\n", 400),
        (HeaderSyntax, "bare-lf-after-a-field", b"GET / HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n", 400),
        (HeaderSyntax, "bare-lf-ending-the-head", b"GET / HTTP/1.1\r\nHost: t\r\n\n", 400),
        (HeaderSyntax, "bare-lf-before-the-request-line", b"\nGET / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (
            HeaderSyntax,
            "bare-lf-hiding-a-content-length",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nX-A: b\nContent-Length: 3\r\n\r\nabc",
            400,
        ),
        (Host, "no-host", b"GET / HTTP/1.1\r\n\r\n", 400),
        (Host, "no-host-other-fields", b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400),
        (Host, "two-host-fields", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (Host, "host-with-a-space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        (Host, "host-with-a-path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        (Host, "host-with-userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
        (Host, "host-port-not-digits", b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
        (Host, "host-two-ports", b"GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", 400),
        (Host, "host-unclosed-bracket", b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
        (Host, "host-bad-ipv6", b"GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n", 400),
        (Host, "host-non-ascii", b"GET / HTTP/1.1\r\nHost: \xc3\xa9\r\n\r\n", 400),
        (Host, "host-bad-percent", b"GET / HTTP/1.1\r\nHost: a%2\r\n\r\n", 400),
        (Version, "http-2.0", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (Version, "http-3.0", b"GET / HTTP/3.0\r\nHost: t\r\n\r\n", 505),
        (Version, "http-0.9-line", b"GET / HTTP/0.9\r\nHost: t\r\n\r\n", 505),
        (Garbage, "binary", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
        (Garbage, "words", b"hello there\r\n\r\n", 400),
        (Garbage, "no-version", b"GET /\r\nHost: t\r\n\r\n", 400),
        (Garbage, "lowercase-version", b"GET / http/1.1\r\nHost: t\r\n\r\n", 400),
        (Garbage, "space-in-target", b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (Garbage, "method-with-slash", b"GE/T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (Garbage, "utf-8-in-target", b"GET /\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (Garbage, "raw-byte-in-target", b"GET /\xff HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ];
    let mut out: Vec<Case> =
        fixed.iter().map(|&(g, name, wire, status)| Case::smuggle(g, name, wire, status)).collect();
    const H: &str = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunks: &[(&str, &str)] = &[
        ("chunk-size-not-hex", "zz\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-negative", "-5\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-plus-sign", "+5\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-0x-prefix", "0x5\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-empty", "\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-overflow", "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-overflow-to-small", "10000000000000005\r\nhello\r\n0\r\n\r\n"),
        ("bare-lf-after-chunk-size", "5\nhello\r\n0\r\n\r\n"),
        ("chunk-data-longer-than-size", "5\r\nhelloXX\r\n0\r\n\r\n"),
        ("no-crlf-after-chunk-data", "5\r\nhello0\r\n\r\n"),
        ("control-byte-in-chunk-extension", "5;a\x01b\r\nhello\r\n0\r\n\r\n"),
        ("chunk-extension-without-name", "5;\r\nhello\r\n0\r\n\r\n"),
        ("chunk-extension-value-without-name", "5;=x\r\nhello\r\n0\r\n\r\n"),
        ("chunk-extension-name-with-space", "5;a b\r\nhello\r\n0\r\n\r\n"),
        ("last-chunk-extension-without-name", "5\r\nhello\r\n0;\r\n\r\n"),
        ("obs-fold-in-trailer", "0\r\nX: 1\r\n folded\r\n\r\n"),
    ];
    for (name, body) in chunks {
        out.push(Case::smuggle(Chunks, name, format!("{H}{body}").as_bytes(), 400));
    }
    out
}

/// The limit vectors: heads, targets and bodies over the limits, some of
/// them unfinished (the answer must not wait for the end).
pub fn limits() -> Vec<Case> {
    let limit = |name: &str, wire: Vec<u8>, status: u16| Case::status(Group::Limit, name, wire, status);
    let mut out = Vec::new();
    let big = "a".repeat(20 * 1024);
    out.push(limit("head-over-16k", format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n").into_bytes(), 431));
    out.push(limit("head-over-16k-unfinished", format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}").into_bytes(), 431));
    let mut many = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-F{i}: {}\r\n", "b".repeat(500)));
    }
    many.push_str("\r\n");
    out.push(limit("40-fields-of-500-bytes", many.into_bytes(), 431));
    let mut fields = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..150 {
        fields.push_str(&format!("X-H{i}: v\r\n"));
    }
    fields.push_str("\r\n");
    out.push(limit("150-fields", fields.into_bytes(), 431));
    out.push(limit(
        "target-over-8k",
        format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "x".repeat(9 * 1024)).into_bytes(),
        414,
    ));
    out.push(limit("target-over-8k-unfinished", format!("GET /{}", "y".repeat(12 * 1024)).into_bytes(), 414));
    out.push(limit(
        "declared-body-over-the-limit-head-only",
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1).into_bytes(),
        413,
    ));
    out.push(limit(
        "huge-declared-body",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000000\r\n\r\n".to_vec(),
        413,
    ));
    let mut streamed = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", 2 << 20).into_bytes();
    streamed.resize(streamed.len() + (2 << 20), b'q');
    out.push(limit("2-mib-body-over-the-limit-streamed", streamed, 413));
    out.push(limit(
        "expect-100-continue-over-the-limit",
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n", MAX_BODY * 5)
            .into_bytes(),
        413,
    ));
    // 1200 bytes in 100-byte chunks.
    let mut chunked = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..12 {
        chunked.extend_from_slice(b"64\r\n");
        chunked.extend_from_slice(&[b'c'; 100]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    out.push(limit("chunked-body-over-the-limit", chunked, 413));
    out.push(limit(
        "one-chunk-over-the-limit",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n".to_vec(),
        413,
    ));
    out
}

/// Valid requests the mutations start from.
const VALID: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /x?a=1 HTTP/1.1\r\nHost: t\r\nAccept: */*\r\nUser-Agent: stress\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HEAD / HTTP/1.0\r\n\r\n",
];

/// `n` generated cases of each kind (random bytes, random heads, mutated
/// requests) and `n / 4` valid requests followed by garbage.
pub fn generated(rng: &mut Rng, n: usize) -> Vec<Case> {
    let case = |name: String, wire: Vec<u8>, expect: Expect| Case { name, group: Group::Generated, wire, expect };
    let mut out = Vec::new();
    for i in 0..n {
        let len = 1 + rng.below(2048);
        out.push(case(format!("random-bytes-{i}"), rng.bytes(len), Expect::RejectOrClose));
    }
    for i in 0..n {
        let len = rng.below(512);
        let mut w = rng.bytes(len);
        w.extend_from_slice(b"\r\n\r\n");
        out.push(case(format!("random-head-{i}"), w, Expect::RejectOrClose));
    }
    for i in 0..n {
        let mut w = rng.pick(VALID).to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(w.len());
            match rng.below(5) {
                0 => w[at] = rng.byte(),
                1 => w.insert(at, rng.byte()),
                2 => {
                    w.remove(at);
                }
                3 => w.insert(at, *rng.pick(b"\r\n\t:; ,\x00\x7f")),
                _ => {
                    // Repeat a slice: duplicated fields, doubled lines.
                    let end = (at + 1 + rng.below(40)).min(w.len());
                    let piece = w[at..end].to_vec();
                    w.splice(end..end, piece);
                }
            }
            if w.is_empty() {
                w.push(b'G');
            }
        }
        out.push(case(format!("mutated-request-{i}"), w, Expect::Anything));
    }
    for i in 0..n / 4 {
        let mut w = VALID[0].to_vec();
        // Garbage that cannot start a valid request: a control byte first.
        w.push(1 + rng.below(8) as u8);
        let len = rng.below(256);
        w.extend(rng.bytes(len));
        w.extend_from_slice(b"\r\n\r\n");
        out.push(case(format!("valid-then-garbage-{i}"), w, Expect::OkThenReject));
    }
    out
}

/// Fixed cases longer than this make no fuzz seed.
pub const SEED_MAX: usize = 32 * 1024;
/// Path-traversal attempts against a static-file route, as the part of
/// the request-target after the route's prefix (`/files/`): dot segments
/// plain and percent-encoded (either case, mixed with plain dots), encoded
/// slashes and backslashes, NUL bytes, links that point outside the
/// served directory (`out-link` to a file beside it, `abs-link` to
/// `/etc/passwd`, `up` to the parent), and the directory itself. A server
/// must answer each with `403` or `404` (or refuse the target with `400`),
/// never with a file from outside.
pub fn traversal_paths() -> Vec<&'static str> {
    vec![
        "../secret",
        "..%2fsecret",
        "..%2Fsecret",
        "%2e%2e/secret",
        "%2E%2E/secret",
        ".%2e/secret",
        "%2e./secret",
        "%2e%2e%2fsecret",
        "sub/../../secret",
        "sub/%2e%2e/%2e%2e/secret",
        "sub/..%2f..%2fsecret",
        "..%5csecret",
        "%2e%2e%5csecret",
        "./../secret",
        "....//secret",
        "%252e%252e/secret",
        "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "../../../../../../etc/passwd",
        "out-link",
        "abs-link",
        "up/secret",
        "up/root/small.txt/../../secret",
        "small.txt%00.png",
        "%00",
        "sub%00/inner.txt",
        "/etc/passwd",
        "//etc/passwd",
        "sub",
        "",
        "sub/",
        ".",
        "%2e",
        "%zz",
    ]
}

/// Seed files made from the corpus are named `corpus-<case name>`; other
/// files in the seed directory are written by hand and left alone.
pub const SEED_PREFIX: &str = "corpus-";

/// The input of the `http_conn` fuzz target that feeds `wire`: flags 0x0c
/// (default limits, output drained in full between reads), then three cut
/// offsets (3, 17, 40: little-endian `u16`, taken modulo the payload
/// length), then the payload. The layout is the fuzz target's (see
/// `fuzz/fuzz_targets/http_conn.rs`); the hand-written seeds use the same
/// prefix.
pub fn fuzz_input(wire: &[u8]) -> Vec<u8> {
    let mut input = vec![0x0c, 3, 3, 0, 17, 0, 40, 0];
    input.extend_from_slice(wire);
    input
}

/// The seed files the fixed cases make: (file name, contents).
pub fn fuzz_seeds() -> Vec<(String, Vec<u8>)> {
    fixed()
        .into_iter()
        .filter(|c| c.wire.len() <= SEED_MAX)
        .map(|c| (format!("{SEED_PREFIX}{}", c.name), fuzz_input(&c.wire)))
        .collect()
}

/// Writes [`fuzz_seeds`] into `dir` and removes `corpus-` files no case
/// makes any more; returns how many seeds it wrote.
pub fn write_fuzz_seeds(dir: &Path) -> io::Result<usize> {
    fs::create_dir_all(dir)?;
    let seeds = fuzz_seeds();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(SEED_PREFIX) && !seeds.iter().any(|(n, _)| *n == name) {
            fs::remove_file(dir.join(&name))?;
        }
    }
    for (name, bytes) in &seeds {
        fs::write(dir.join(name), bytes)?;
    }
    Ok(seeds.len())
}

/// How the `corpus-` files in `dir` differ from [`fuzz_seeds`]: one line
/// per missing, different or stale file; empty when they match.
pub fn fuzz_seed_drift(dir: &Path) -> io::Result<Vec<String>> {
    let seeds = fuzz_seeds();
    let mut drift = Vec::new();
    for (name, bytes) in &seeds {
        match fs::read(dir.join(name)) {
            Ok(on_disk) if on_disk == *bytes => {}
            Ok(_) => drift.push(format!("{name}: differs from the corpus")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => drift.push(format!("{name}: missing")),
            Err(e) => return Err(e),
        }
    }
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(SEED_PREFIX) && !seeds.iter().any(|(n, _)| *n == name) {
            drift.push(format!("{name}: no corpus case makes it"));
        }
    }
    Ok(drift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_file_names() {
        let all = fixed();
        let names: HashSet<&str> = all.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.len(), all.len(), "duplicate case names");
        for n in names {
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b)),
                "{n:?} is no plain file name"
            );
        }
    }

    #[test]
    fn every_group_and_expectation_is_there() {
        use Group::*;
        for g in [ClAndTe, ContentLength, TransferEncoding, Chunks, HeaderSyntax, Host, Version, Garbage, Limit] {
            assert!(!group(g).is_empty(), "{g:?}");
        }
        assert_eq!(smuggling().len(), 62 + 6 + 9 + 2 + 4);
        assert_eq!(limits().len(), 12);
        for c in smuggling() {
            assert!(c.wire.ends_with(FOLLOWER), "{}", c.name);
            assert!(matches!(c.expect, Expect::Status(400 | 501 | 505)), "{}", c.name);
        }
        assert_eq!(case("cl-then-te").expect, Expect::Status(400));
    }

    #[test]
    fn generated_cases_replay_from_their_seed() {
        let a = generated(&mut Rng::new(42), 20);
        let b = generated(&mut Rng::new(42), 20);
        assert_eq!(a.len(), 65);
        assert!(a.iter().zip(&b).all(|(x, y)| x.wire == y.wire && x.expect == y.expect && x.name == y.name));
        assert!(a.iter().all(|c| !c.wire.is_empty()));
        assert_ne!(generated(&mut Rng::new(43), 20)[0].wire, a[0].wire);
    }

    #[test]
    fn fuzz_input_layout() {
        let input = fuzz_input(b"GET");
        assert_eq!(input, b"\x0c\x03\x03\x00\x11\x00\x28\x00GET");
        assert!(fuzz_seeds().iter().all(|(n, b)| n.starts_with(SEED_PREFIX) && b.len() <= SEED_MAX + 8));
        assert!(fuzz_seeds().len() > 60, "the 2 MiB case alone is left out");
    }
}
