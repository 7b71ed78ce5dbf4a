//! Fuzzes `forkring::http::Conn` with arbitrary bytes, fed whole and cut
//! into reads at points chosen by the input itself.
//!
//! Input layout: `flags`, `k`, then `k` little-endian `u16` cut offsets
//! (taken modulo the payload length), then the payload.
//! `flags` bits 0–1 pick the limits, bits 2–3 how output is drained between
//! reads.
//!
//! Besides "never panics", it checks what must hold for any input: the
//! response-stream oracle (`forkring_testkit::oracle`, shared with the
//! property tests: a well-framed response stream, one response per handler
//! call in call order, an error response last and closing, no more calls
//! than head terminators), and that how the payload is cut into reads never
//! changes which requests reach the handler, nor what they carry.
//!
//! Seeds are in `fuzz/seeds/http_conn/`: a few written by hand, and one per
//! case of the hostile-request corpus (`corpus-*`, written by
//! `cargo run -p forkring-testkit --bin fuzz-seeds`).
#![no_main]

use forkring::internals::{Conn, WorkerState};
use forkring::Handler;
use forkring::{Limits, Request, Response, Timeouts};
use forkring_testkit::oracle::{check_run, Call, Run, CALL_HEADER, HEAD_HEADER};
use libfuzzer_sys::fuzz_target;

/// Records every call; marks each response with its call number (and a
/// HEAD answer as such) for the oracle.
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
        // A few paths reach the other response shapes.
        match req.path() {
            "/c" => {
                res.close();
            }
            "/n" => {
                res.status(204);
            }
            "/m" => {
                res.status(304);
            }
            _ => {}
        }
        res.body_mut().extend_from_slice(req.target().as_bytes());
    }
}

fn limits(sel: u8) -> Limits {
    match sel & 3 {
        0 => Limits::default(),
        1 => Limits::DEFAULT.with_max_head(256).with_max_headers(8).with_max_target(64).with_max_body(512),
        2 => Limits::DEFAULT.with_max_head(64).with_max_headers(2).with_max_target(16).with_max_body(16),
        _ => Limits::DEFAULT.with_max_head(4096).with_max_headers(32).with_max_target(1024).with_max_body(65536),
    }
}

/// Feeds `payload` cut at `cuts`; between reads drains output as `drain`
/// says (0: never, 1: half, 2: take_output, 3: all).
fn drive(payload: &[u8], cuts: &[usize], limits: Limits, drain: u8) -> Run {
    let mut sh = WorkerState::new(limits, Timeouts::default());
    sh.tick();
    let mut conn = Conn::new(&sh);
    let mut rec = Recorder::default();
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&payload.len())) {
        conn.on_read(&payload[start..end], &mut sh, &mut rec);
        start = end;
        match drain {
            0 => {}
            1 => {
                let n = conn.output_len() / 2;
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
    }
    out.extend_from_slice(conn.output());
    let run = Run { out, closing: conn.is_closing(), calls: rec.calls };
    conn.on_eof(&mut sh);
    assert!(conn.is_closing());
    conn.release(&mut sh);
    run
}

fuzz_target!(|data: &[u8]| {
    let (flags, rest) = match data.split_first() {
        Some((&f, rest)) => (f, rest),
        None => (0, data),
    };
    let (k, rest) = match rest.split_first() {
        Some((&k, rest)) => ((k & 31) as usize, rest),
        None => (0, rest),
    };
    let k = k.min(rest.len() / 2);
    let (cut_bytes, payload) = rest.split_at(2 * k);
    let mut cuts: Vec<usize> =
        cut_bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as usize % (payload.len() + 1)).collect();
    cuts.sort_unstable();

    let limits = limits(flags);
    let whole = drive(payload, &[], limits, 3);
    check_run(&whole, payload);
    let split = drive(payload, &cuts, limits, (flags >> 2) & 3);
    check_run(&split, payload);
    assert!(split.calls == whole.calls, "cutting the input into reads changed the handler calls");
});
