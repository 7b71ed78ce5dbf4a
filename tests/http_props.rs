//! Property tests for the sans-io HTTP/1.1 core, driven by a small
//! deterministic PRNG:
//!
//! - random and mutated bytes, split at random points, never panic; the
//!   output is always a well-framed response stream; the handler is called
//!   the same way however the input is split;
//! - a stream of random valid requests, split at random points, reaches the
//!   handler exactly once per request, in order, with the right bodies, and
//!   gives the same output as the whole stream;
//! - bodies made of request-looking bytes never yield extra handler calls.
//!
//! The output is judged by the response-stream oracle
//! (`forkring_testkit::oracle`), which the fuzz target uses too.
//!
//! Each property runs over fixed seeds; set `FORKRING_PROP_SEED=<u64>` to
//! add one (a failure message names the seed that produced it).

use std::panic::{self, AssertUnwindSafe};

use forkring::internals::{Conn, WorkerState};
use forkring::Handler;
use forkring::{Limits, Request, Response, Timeouts};
use forkring_testkit::oracle::{check_run, comparable, Call, Run, CALL_HEADER, HEAD_HEADER};
use forkring_testkit::rng::Rng;

// ---------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------

const FIXED_SEEDS: [u64; 4] = [1, 0x5eed, 0xdead_beef_cafe_f00d, 20_240_611];

fn seeds() -> Vec<u64> {
    let mut seeds = FIXED_SEEDS.to_vec();
    if let Ok(v) = std::env::var("FORKRING_PROP_SEED") {
        let v = v.trim();
        let seed = match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse(),
        };
        seeds.push(seed.unwrap_or_else(|_| panic!("FORKRING_PROP_SEED={v:?} is not a u64")));
    }
    seeds
}

/// Runs `prop` once per seed; a failure (assertion or panic inside the
/// core) is reported with the seed that reproduces it.
fn for_each_seed(name: &str, prop: impl Fn(u64)) {
    for seed in seeds() {
        if let Err(e) = panic::catch_unwind(AssertUnwindSafe(|| prop(seed))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{name} failed with seed {seed} (rerun: FORKRING_PROP_SEED={seed}): {msg}");
        }
    }
}

// ---------------------------------------------------------------------------
// Driving a connection
// ---------------------------------------------------------------------------

/// Records every call; marks each response with its call number so that
/// the output can be matched against the calls.
#[derive(Default)]
struct Recorder {
    /// Every handler call so far, in order.
    calls: Vec<Call>,
}

impl Handler for Recorder {
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) {
        self.calls.push(Call {
            method: req.method().to_owned(),
            target: req.target().to_owned(),
            headers: req.headers().iter().map(|(n, v)| (n.to_owned(), v.to_vec())).collect(),
            body: req.body().to_vec(),
        });
        res.header(CALL_HEADER, self.calls.len().to_string());
        if req.method() == "HEAD" {
            res.header(HEAD_HEADER, "1");
        }
        let body = res.body_mut();
        body.extend_from_slice(req.target().as_bytes());
        body.extend_from_slice(format!(" {}", req.body().len()).as_bytes());
    }
}

/// Feeds `input` cut at `cuts` (sorted offsets). Between reads a random
/// share of the output is "sent", through `consume_output` or
/// `take_output`, the way a driver would.
fn drive(input: &[u8], cuts: &[usize], limits: Limits, rng: &mut Rng) -> Run {
    let mut sh = WorkerState::new(limits, Timeouts::default());
    sh.tick();
    let mut conn = Conn::new(&sh);
    let mut rec = Recorder::default();
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        conn.on_read(&input[start..end], &mut sh, &mut rec);
        start = end;
        match rng.below(4) {
            0 => {}
            1 => {
                let n = rng.range(0, conn.output_len());
                out.extend_from_slice(&conn.output()[..n]);
                conn.consume_output(n, &mut sh);
            }
            2 => {
                let taken = conn.take_output();
                out.extend_from_slice(&taken);
                sh.recycle(taken);
                conn.on_sent(&sh);
            }
            _ => {
                let n = conn.output_len();
                out.extend_from_slice(conn.output());
                conn.consume_output(n, &mut sh);
            }
        }
        assert_eq!(conn.has_output(), conn.output_len() > 0);
        if conn.is_idle() {
            assert!(!conn.has_output() && !conn.is_closing());
        }
    }
    out.extend_from_slice(conn.output());
    let run = Run { out, closing: conn.is_closing(), calls: rec.calls };
    conn.on_eof(&mut sh);
    assert!(conn.is_closing());
    conn.release(&mut sh);
    run
}

fn drive_whole(input: &[u8], limits: Limits, rng: &mut Rng) -> Run {
    drive(input, &[], limits, rng)
}

/// Up to `max` distinct sorted cut points inside `len`.
fn random_cuts(rng: &mut Rng, len: usize, max: usize) -> Vec<usize> {
    if len < 2 {
        return Vec::new();
    }
    let n = rng.range(1, max);
    let mut cuts: Vec<usize> = (0..n).map(|_| rng.range(1, len - 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

// ---------------------------------------------------------------------------
// Generating valid requests
// ---------------------------------------------------------------------------

const TCHAR: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~";
const PCHAR: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@%";
const VCHAR: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \t!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// A request that the core must accept, and what the handler must see.
struct Generated {
    bytes: Vec<u8>,
    call: Call,
}

/// How the body of a generated request is framed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length,
    Chunked,
}

fn gen_target(rng: &mut Rng) -> String {
    let mut t = String::new();
    for _ in 0..rng.range(0, 4) {
        t.push('/');
        t.push_str(&rng.string_from(PCHAR, 0, 12));
    }
    if t.is_empty() {
        t.push('/');
    }
    if rng.one_in(3) {
        t.push('?');
        t.push_str(&rng.string_from(PCHAR, 0, 20));
        if rng.one_in(2) {
            t.push_str("&a=/b?c");
        }
    }
    t
}

fn gen_body(rng: &mut Rng, limits: &Limits) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => 0,
        1..=6 => rng.range(1, 64),
        7 | 8 => rng.range(64, 1024),
        _ => rng.range(1024, 4096.min(limits.max_body)),
    };
    match rng.below(3) {
        // Bytes that look like requests and chunk framing.
        0 => {
            let mut b = Vec::with_capacity(len);
            while b.len() < len {
                let piece: &[u8] = rng.pick::<&[u8]>(&[
                    &b"GET /evil HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                    b"0\r\n\r\n",
                    b"\r\n",
                    b"5\r\nhello\r\n",
                    b"Content-Length: 3\r\n",
                    b"POST /evil HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                ]);
                b.extend_from_slice(piece);
            }
            b.truncate(len);
            b
        }
        _ => (0..len).map(|_| rng.byte()).collect(),
    }
}

fn chunk_size_line(rng: &mut Rng, size: usize) -> String {
    let mut s = if rng.one_in(2) { format!("{size:x}") } else { format!("{size:X}") };
    if rng.one_in(6) {
        s = format!("00{s}");
    }
    match rng.below(5) {
        0 => s.push_str(";ext"),
        1 => {
            s.push_str(";name=");
            s.push_str(&rng.string_from(TCHAR, 1, 8));
        }
        2 => s.push_str(";q=\"quoted; \\\"value\\\"\";b"),
        _ => {}
    }
    s.push_str("\r\n");
    s
}

fn chunked(rng: &mut Rng, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let n = rng.range(1, rest.len().min(300));
        out.extend_from_slice(chunk_size_line(rng, n).as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(chunk_size_line(rng, 0).as_bytes());
    for _ in 0..rng.range(0, 2) {
        let name = rng.string_from(TCHAR, 1, 10);
        let value = rng.string_from(b"abc xyz019", 0, 10);
        out.extend_from_slice(format!("X-T{name}: {}\r\n", value.trim()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// One valid request with keep-alive framing. `body_override` replaces the
/// random body.
fn gen_request(rng: &mut Rng, limits: &Limits, body_override: Option<Vec<u8>>) -> Generated {
    let method = match rng.below(10) {
        0..=5 => (*rng.pick(&["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])).to_owned(),
        _ => rng.string_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 1, 12),
    };
    let target = gen_target(rng);
    let http10 = rng.one_in(6);
    let framing = if body_override.is_some() {
        if !http10 && rng.one_in(2) {
            Framing::Chunked
        } else {
            Framing::Length
        }
    } else {
        match rng.below(3) {
            0 => Framing::None,
            1 => Framing::Length,
            _ if http10 => Framing::Length,
            _ => Framing::Chunked,
        }
    };
    let body = match (framing, body_override) {
        (Framing::None, _) => Vec::new(),
        (_, Some(b)) => b,
        (_, None) => gen_body(rng, limits),
    };

    let mut headers: Vec<(String, String)> = Vec::new();
    if !http10 || rng.one_in(2) {
        // `uri-host [ ":" port ]`, as RFC 9112 §3.2 requires.
        let mut host = rng.string_from(b"abcxyz.0123-", 0, 12);
        if rng.one_in(3) {
            host.push(':');
            host.push_str(&rng.string_from(b"0123456789", 0, 5));
        }
        headers.push(((*rng.pick(&["Host", "host", "HOST"])).to_owned(), host));
    }
    if http10 {
        headers
            .push(("Connection".to_owned(), (*rng.pick(&["keep-alive", "Keep-Alive", "foo, keep-alive"])).to_owned()));
    } else if rng.one_in(5) {
        headers.push(("Connection".to_owned(), "keep-alive".to_owned()));
    }
    match framing {
        Framing::None => {}
        Framing::Length => headers.push((
            (*rng.pick(&["Content-Length", "content-length"])).to_owned(),
            format!("{}{}", if rng.one_in(8) { "0" } else { "" }, body.len()),
        )),
        Framing::Chunked => {
            headers.push(((*rng.pick(&["Transfer-Encoding", "transfer-encoding"])).to_owned(), "chunked".to_owned()))
        }
    }
    if framing != Framing::None && !http10 && rng.one_in(5) {
        headers.push(("Expect".to_owned(), "100-continue".to_owned()));
    }
    for _ in 0..rng.range(0, 6) {
        let name = format!("X-{}", rng.string_from(TCHAR, 1, 16));
        let value = rng.string_from(VCHAR, 0, 40).trim_matches([' ', '\t']).to_owned();
        headers.push((name, value));
    }
    // Shuffle so that framing headers come anywhere.
    for i in (1..headers.len()).rev() {
        let j = rng.below(i + 1);
        headers.swap(i, j);
    }

    let mut bytes = Vec::new();
    let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
    bytes.extend_from_slice(format!("{method} {target} {version}\r\n").as_bytes());
    for (n, v) in &headers {
        // Optional whitespace around the value is not part of it.
        let (pre, post) = match rng.below(4) {
            0 => ("", ""),
            1 => ("  ", " "),
            2 => ("\t", "\t"),
            _ => (" ", ""),
        };
        bytes.extend_from_slice(format!("{n}:{pre}{v}{post}\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    match framing {
        Framing::None => {}
        Framing::Length => bytes.extend_from_slice(&body),
        Framing::Chunked => bytes.extend_from_slice(&chunked(rng, &body)),
    }
    let call = Call { method, target, headers: headers.into_iter().map(|(n, v)| (n, v.into_bytes())).collect(), body };
    Generated { bytes, call }
}

/// A stream of `n` valid requests (with the occasional empty line between
/// them, which a server ignores).
fn gen_stream(rng: &mut Rng, n: usize, limits: &Limits) -> (Vec<u8>, Vec<Call>) {
    let mut bytes = Vec::new();
    let mut calls = Vec::new();
    for _ in 0..n {
        if rng.one_in(10) {
            bytes.extend_from_slice(b"\r\n");
        }
        let g = gen_request(rng, limits, None);
        bytes.extend_from_slice(&g.bytes);
        calls.push(g.call);
    }
    (bytes, calls)
}

// ---------------------------------------------------------------------------
// Generating hostile input
// ---------------------------------------------------------------------------

const DICTIONARY: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"/",
    b"/a?b=c",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b" HTTP/2.0",
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b"Host: x",
    b"Content-Length: ",
    b"Content-Length: 5",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Expect: 100-continue",
    b": ",
    b" : ",
    b"0\r\n\r\n",
    b"5\r\nhello\r\n",
    b"ffffffffffffffff",
    b";ext=1",
    b"99999999999999999999",
    b"-1",
    b" ",
    b"\t",
    b"\0",
    b"\x7f",
    b"\xff",
    b"0",
    b"7",
    b",",
];

/// Random bytes, dictionary soup, or valid requests with a few mutations.
fn gen_hostile(rng: &mut Rng, limits: &Limits) -> Vec<u8> {
    match rng.below(4) {
        0 => {
            let n = rng.range(0, 300);
            (0..n).map(|_| rng.byte()).collect()
        }
        1 => {
            let mut v = Vec::new();
            for _ in 0..rng.range(1, 60) {
                v.extend_from_slice(rng.pick::<&[u8]>(DICTIONARY));
            }
            v
        }
        _ => {
            let n = rng.range(1, 4);
            let (mut v, _) = gen_stream(rng, n, limits);
            for _ in 0..rng.range(1, 6) {
                if v.is_empty() {
                    break;
                }
                let at = rng.below(v.len());
                match rng.below(6) {
                    0 => v[at] = rng.byte(),
                    1 => v[at] = *rng.pick(b"\r\n \t:;,0\x00\x7f"),
                    2 => {
                        v.remove(at);
                    }
                    3 => {
                        let piece = *rng.pick(DICTIONARY);
                        v.splice(at..at, piece.iter().copied());
                    }
                    4 => v.truncate(at),
                    _ => {
                        let end = rng.range(at, v.len().min(at + 40));
                        let dup = v[at..end].to_vec();
                        v.splice(at..at, dup);
                    }
                }
            }
            v
        }
    }
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

/// Small limits, so that hostile input reaches them.
const SMALL: Limits = Limits::DEFAULT.with_max_head(512).with_max_headers(12).with_max_target(96).with_max_body(2048);

#[test]
fn hostile_input_never_panics_and_always_frames() {
    for_each_seed("hostile input", |seed| {
        let mut rng = Rng::new(seed);
        for iter in 0..1500 {
            let limits = if rng.one_in(2) { SMALL } else { Limits::default() };
            let input = gen_hostile(&mut rng, &limits);
            let whole = drive_whole(&input, limits, &mut rng);
            check_run(&whole, &input);
            for _ in 0..3 {
                let cuts = random_cuts(&mut rng, input.len(), 12);
                let split = drive(&input, &cuts, limits, &mut rng);
                check_run(&split, &input);
                // How reads split never changes which requests are served.
                assert_eq!(
                    split.calls,
                    whole.calls,
                    "iteration {iter}: cuts {cuts:?} change the handler calls for {:?}",
                    String::from_utf8_lossy(&input[..input.len().min(600)])
                );
            }
            if input.len() <= 200 {
                let cuts: Vec<usize> = (1..input.len()).collect();
                let bytewise = drive(&input, &cuts, limits, &mut rng);
                check_run(&bytewise, &input);
                assert_eq!(bytewise.calls, whole.calls, "iteration {iter}: byte by byte");
            }
        }
    });
}

#[test]
fn valid_streams_reach_the_handler_exactly_once_each() {
    for_each_seed("valid streams", |seed| {
        let mut rng = Rng::new(seed);
        let limits = Limits::default();
        for iter in 0..150 {
            let n = rng.range(1, 24);
            let (input, expected) = gen_stream(&mut rng, n, &limits);
            let whole = drive_whole(&input, limits, &mut rng);
            check_run(&whole, &input);
            assert_eq!(whole.calls.len(), n, "iteration {iter}: calls");
            for (i, (got, want)) in whole.calls.iter().zip(&expected).enumerate() {
                assert_eq!(got, want, "iteration {iter}: request {i}");
            }
            assert!(!whole.closing, "iteration {iter}: keep-alive stream closed");
            let whole_out = comparable(&whole.out);
            for _ in 0..6 {
                let cuts = random_cuts(&mut rng, input.len(), 40);
                let split = drive(&input, &cuts, limits, &mut rng);
                check_run(&split, &input);
                assert!(split.calls == expected, "iteration {iter}: cuts {cuts:?} change the calls");
                assert!(comparable(&split.out) == whole_out, "iteration {iter}: cuts {cuts:?} change the output");
                assert!(!split.closing);
            }
        }
    });
}

#[test]
fn valid_streams_fed_byte_by_byte_give_the_same_calls_and_output() {
    for_each_seed("byte by byte", |seed| {
        let mut rng = Rng::new(seed);
        let limits = Limits::default();
        for iter in 0..20 {
            let n = rng.range(1, 6);
            let (input, expected) = gen_stream(&mut rng, n, &limits);
            let cuts: Vec<usize> = (1..input.len()).collect();
            let run = drive(&input, &cuts, limits, &mut rng);
            check_run(&run, &input);
            assert!(run.calls == expected, "iteration {iter}: byte-by-byte calls differ");
            let whole = drive_whole(&input, limits, &mut rng);
            assert!(comparable(&run.out) == comparable(&whole.out), "iteration {iter}: output differs");
        }
    });
}

#[test]
fn request_looking_bodies_never_yield_extra_calls() {
    for_each_seed("request-looking bodies", |seed| {
        let mut rng = Rng::new(seed);
        let limits = Limits::default();
        for iter in 0..150 {
            let mut input = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..rng.range(1, 6) {
                // The body is itself a stream of requests, possibly cut short
                // (so that the real next request would complete it if the
                // body were ever parsed as requests).
                let k = rng.range(1, 4);
                let (mut inner, _) = gen_stream(&mut rng, k, &limits);
                if rng.one_in(2) {
                    let keep = rng.range(1, inner.len());
                    inner.truncate(keep);
                }
                let g = gen_request(&mut rng, &limits, Some(inner));
                input.extend_from_slice(&g.bytes);
                expected.push(g.call);
            }
            for attempt in 0..4 {
                let cuts = if attempt == 0 { Vec::new() } else { random_cuts(&mut rng, input.len(), 30) };
                let run = drive(&input, &cuts, limits, &mut rng);
                check_run(&run, &input);
                assert_eq!(run.calls.len(), expected.len(), "iteration {iter}: cuts {cuts:?}: extra or missing calls");
                assert!(run.calls == expected, "iteration {iter}: cuts {cuts:?}: calls differ");
            }
        }
    });
}
