//! The hostile-bytes corpus: the request-smuggling vectors of
//! `tests/smuggling.rs` and the limit vectors of `tests/limits.rs`, each
//! with the status the server must answer (with `Connection: close`, then
//! the close, and nothing after it), plus generated ones: random bytes,
//! mutated valid requests, and valid requests followed by garbage.
//!
//! The limit statuses assume the demo server's default head limits (16 KiB
//! head, 100 fields, 8 KiB target) and `--max-body 1000`.

/// The body limit the server runs with in this scenario.
pub const MAX_BODY: usize = 1000;

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

/// One hostile request.
#[derive(Clone, Debug)]
pub struct Case {
    /// Where it comes from.
    pub name: String,
    /// The bytes sent.
    pub wire: Vec<u8>,
    /// What must happen.
    pub expect: Expect,
}

/// Sent after every smuggling vector in the same write: answered only if
/// the server guessed a framing and carried on.
const FOLLOWER: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";

/// The fixed vectors.
pub fn fixed() -> Vec<Case> {
    let mut out = Vec::new();
    let smuggling: &[(&str, &[u8], u16)] = &[
        (
            "CL then TE",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
            400,
        ),
        (
            "TE then CL",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
            400,
        ),
        ("CL 0 and TE", b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("two different CL", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde", 400),
        ("two equal CL", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde", 400),
        ("CL list", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nabcde", 400),
        ("CL plus sign", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nabcde", 400),
        ("CL negative", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
        ("CL hex", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nabcde", 400),
        ("CL hex digits", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: a\r\n\r\nabcdeabcde", 400),
        ("CL empty", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: \r\n\r\n", 400),
        ("CL inner space", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1 0\r\n\r\n0123456789", 400),
        ("CL decimal point", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5.0\r\n\r\nabcde", 400),
        ("CL overflow u64", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551621\r\n\r\nabcde", 400),
        ("CL overflow long", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999999\r\n\r\n", 400),
        ("TE chunked then gzip", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
        ("TE gzip alone", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n", 400),
        ("TE chunked twice", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
        (
            "TE chunked then gzip in two fields",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
            400,
        ),
        ("TE empty coding", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", 400),
        ("TE in HTTP/1.0", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("TE unknown coding", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: foo\r\n\r\n0\r\n\r\n", 501),
        ("TE unknown then chunked", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n", 501),
        ("TE xchunked", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501),
        (
            "TE chunked plus an unknown field",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
            400,
        ),
        ("space before colon", b"GET / HTTP/1.1\r\nHost: t\r\nX-A : b\r\n\r\n", 400),
        (
            "space before colon of TE",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc",
            400,
        ),
        ("tab before colon", b"GET / HTTP/1.1\r\nHost: t\r\nX-A\t: b\r\n\r\n", 400),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n", 400),
        ("obs-fold with tab", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tb\r\n\r\n", 400),
        ("obs-fold of CL", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n 3\r\n\r\nabc", 400),
        ("NUL in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n", 400),
        ("SOH in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n", 400),
        ("US in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x1fb\r\n\r\n", 400),
        ("bare CR in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n", 400),
        ("DEL in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n", 400),
        ("empty name", b"GET / HTTP/1.1\r\nHost: t\r\n: b\r\n\r\n", 400),
        ("no colon", b"GET / HTTP/1.1\r\nHost: t\r\nX-A b\r\n\r\n", 400),
        ("no Host", b"GET / HTTP/1.1\r\n\r\n", 400),
        ("no Host, other fields", b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400),
        ("two Host fields", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        ("HTTP/3.0", b"GET / HTTP/3.0\r\nHost: t\r\n\r\n", 505),
        ("HTTP/0.9 line", b"GET / HTTP/0.9\r\nHost: t\r\n\r\n", 505),
        ("binary", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
        ("words", b"hello there\r\n\r\n", 400),
        ("no version", b"GET /\r\nHost: t\r\n\r\n", 400),
        ("lowercase version", b"GET / http/1.1\r\nHost: t\r\n\r\n", 400),
        ("space in target", b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("method with slash", b"GE/T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ];
    for &(name, wire, status) in smuggling {
        let mut w = wire.to_vec();
        w.extend_from_slice(FOLLOWER);
        out.push(Case { name: format!("smuggling: {name}"), wire: w, expect: Expect::Status(status) });
    }
    const H: &str = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunks: &[(&str, String)] = &[
        ("chunk size not hex", format!("{H}zz\r\nhello\r\n0\r\n\r\n")),
        ("chunk size negative", format!("{H}-5\r\nhello\r\n0\r\n\r\n")),
        ("chunk size plus sign", format!("{H}+5\r\nhello\r\n0\r\n\r\n")),
        ("chunk size 0x prefix", format!("{H}0x5\r\nhello\r\n0\r\n\r\n")),
        ("chunk size empty", format!("{H}\r\nhello\r\n0\r\n\r\n")),
        ("chunk size overflow", format!("{H}ffffffffffffffffff\r\nhello\r\n0\r\n\r\n")),
        ("chunk size overflow to small", format!("{H}10000000000000005\r\nhello\r\n0\r\n\r\n")),
        ("bare LF after chunk size", format!("{H}5\nhello\r\n0\r\n\r\n")),
        ("chunk data longer than size", format!("{H}5\r\nhelloXX\r\n0\r\n\r\n")),
        ("no CRLF after chunk data", format!("{H}5\r\nhello0\r\n\r\n")),
        ("control byte in chunk extension", format!("{H}5;a\x01b\r\nhello\r\n0\r\n\r\n")),
        ("obs-fold in trailer", format!("{H}0\r\nX: 1\r\n folded\r\n\r\n")),
    ];
    for (name, wire) in chunks {
        let mut w = wire.clone().into_bytes();
        w.extend_from_slice(FOLLOWER);
        out.push(Case { name: format!("smuggling: {name}"), wire: w, expect: Expect::Status(400) });
    }
    // Limits (tests/limits.rs).
    let mut limits: Vec<(&str, Vec<u8>, u16)> = Vec::new();
    let big = "a".repeat(20 * 1024);
    limits.push(("head over 16 KiB", format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n").into_bytes(), 431));
    limits.push((
        "head over 16 KiB, unfinished",
        format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}").into_bytes(),
        431,
    ));
    let mut many = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-F{i}: {}\r\n", "b".repeat(500)));
    }
    many.push_str("\r\n");
    limits.push(("40 fields of 500 bytes", many.into_bytes(), 431));
    let mut fields = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..150 {
        fields.push_str(&format!("X-H{i}: v\r\n"));
    }
    fields.push_str("\r\n");
    limits.push(("150 fields", fields.into_bytes(), 431));
    limits.push((
        "target over 8 KiB",
        format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "x".repeat(9 * 1024)).into_bytes(),
        414,
    ));
    limits.push(("target over 8 KiB, unfinished", format!("GET /{}", "y".repeat(12 * 1024)).into_bytes(), 414));
    limits.push((
        "declared body over the limit, head only",
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1).into_bytes(),
        413,
    ));
    limits.push((
        "huge declared body",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000000\r\n\r\n".to_vec(),
        413,
    ));
    let mut streamed = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", 2 << 20).into_bytes();
    streamed.extend(std::iter::repeat(b'q').take(2 << 20));
    limits.push(("2 MiB body over the limit, streamed", streamed, 413));
    limits.push((
        "Expect: 100-continue over the limit",
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n", MAX_BODY * 5)
            .into_bytes(),
        413,
    ));
    let mut chunked = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..12 {
        chunked.extend_from_slice(b"64\r\n");
        chunked.extend_from_slice(&[b'c'; 100]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    limits.push(("chunked body over the limit", chunked, 413));
    limits.push((
        "one chunk over the limit",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n".to_vec(),
        413,
    ));
    for (name, wire, status) in limits {
        out.push(Case { name: format!("limits: {name}"), wire, expect: Expect::Status(status) });
    }
    out
}

/// A small deterministic generator (xorshift64*), so a run can be replayed
/// from its seed.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Valid requests the mutations start from.
const VALID: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /x?a=1 HTTP/1.1\r\nHost: t\r\nAccept: */*\r\nUser-Agent: stress\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HEAD / HTTP/1.0\r\n\r\n",
];

/// `n` generated cases of each kind.
pub fn generated(rng: &mut Rng, n: usize) -> Vec<Case> {
    let mut out = Vec::new();
    for i in 0..n {
        let len = 1 + rng.below(2048);
        out.push(Case { name: format!("random bytes #{i}"), wire: rng.bytes(len), expect: Expect::RejectOrClose });
    }
    for i in 0..n {
        let len = rng.below(512);
        let mut w = rng.bytes(len);
        w.extend_from_slice(b"\r\n\r\n");
        out.push(Case { name: format!("random head #{i}"), wire: w, expect: Expect::RejectOrClose });
    }
    for i in 0..n {
        let mut w = VALID[rng.below(VALID.len())].to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(w.len());
            match rng.below(5) {
                0 => w[at] = rng.next() as u8,
                1 => w.insert(at, rng.next() as u8),
                2 => {
                    w.remove(at);
                }
                3 => w.insert(at, b"\r\n\t:; ,\x00\x7f"[rng.below(9)]),
                _ => {
                    // Repeat a slice: duplicated fields, doubled lines.
                    let end = (at + 1 + rng.below(40)).min(w.len());
                    let piece = w[at..end].to_vec();
                    for (k, b) in piece.into_iter().enumerate() {
                        w.insert(end + k, b);
                    }
                }
            }
            if w.is_empty() {
                w.push(b'G');
            }
        }
        out.push(Case { name: format!("mutated request #{i}"), wire: w, expect: Expect::Anything });
    }
    for i in 0..n / 4 {
        let mut w = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
        // Garbage that cannot start a valid request: a control byte first.
        w.push(1 + rng.below(8) as u8);
        let len = rng.below(256);
        w.extend(rng.bytes(len));
        w.extend_from_slice(b"\r\n\r\n");
        out.push(Case { name: format!("valid then garbage #{i}"), wire: w, expect: Expect::OkThenReject });
    }
    out
}
