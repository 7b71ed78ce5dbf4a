//! Fuzzes `forkring::http::Conn` with arbitrary bytes, fed whole and cut
//! into reads at points chosen by the input itself.
//!
//! Input layout: `flags`, `k`, then `k` little-endian `u16` cut offsets
//! (taken modulo the payload length), then the payload.
//! `flags` bits 0–1 pick the limits, bits 2–3 how output is drained between
//! reads.
//!
//! Besides "never panics", it checks what must hold for any input:
//! - the output is a well-framed stream of HTTP/1.1 responses;
//! - every handler call gets exactly one response, in call order; a
//!   response the core makes itself (an error) comes last and closes;
//! - the handler is never called more often than the payload holds head
//!   terminators (`\n\n` or `\n\r\n`), so a body is never read as heads;
//! - how the payload is cut into reads never changes which requests reach
//!   the handler, nor what they carry.
#![no_main]

use forkring::internals::{Conn, Shared}; use forkring::Handler;
use forkring::{Limits, Request, Response, Timeouts};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
struct Call {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

#[derive(Default)]
struct Recorder {
    calls: Vec<Call>,
}

impl Handler for Recorder {
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) {
        self.calls.push(Call {
            method: req.method().to_owned(),
            target: req.target().to_owned(),
            headers: req
                .headers()
                .iter()
                .map(|(n, v)| (n.to_owned(), v.to_vec()))
                .collect(),
            body: req.body().to_vec(),
        });
        res.header("X-Call", self.calls.len().to_string());
        if req.method() == "HEAD" {
            res.header("X-Head", "1");
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

struct Run {
    out: Vec<u8>,
    closing: bool,
    calls: Vec<Call>,
}

fn limits(sel: u8) -> Limits {
    match sel & 3 {
        0 => Limits::default(),
        1 => Limits {
            max_head: 256,
            max_headers: 8,
            max_target: 64,
            max_body: 512,
        },
        2 => Limits {
            max_head: 64,
            max_headers: 2,
            max_target: 16,
            max_body: 16,
        },
        _ => Limits {
            max_head: 4096,
            max_headers: 32,
            max_target: 1024,
            max_body: 65536,
        },
    }
}

/// Feeds `payload` cut at `cuts`; between reads drains output as `drain`
/// says (0: never, 1: half, 2: take_output, 3: all).
fn drive(payload: &[u8], cuts: &[usize], limits: Limits, drain: u8) -> Run {
    let mut sh = Shared::new(limits, Timeouts::default());
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
    let run = Run {
        out,
        closing: conn.is_closing(),
        calls: rec.calls,
    };
    conn.on_eof(&mut sh);
    assert!(conn.is_closing());
    conn.release(&mut sh);
    run
}

struct Resp {
    status: u16,
    call: Option<usize>,
    close: bool,
}

/// Splits the output into responses, asserting each one's framing.
fn parse_output(mut out: &[u8]) -> Vec<Resp> {
    let mut resps = Vec::new();
    while !out.is_empty() {
        let end = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("response head terminated");
        let head = std::str::from_utf8(&out[..end]).expect("response head is UTF-8");
        let mut lines = head.split("\r\n");
        let line = lines.next().unwrap();
        assert!(line.starts_with("HTTP/1.1 ") && line.len() >= 13 && line.as_bytes()[12] == b' ');
        let status: u16 = line[9..12].parse().expect("numeric status");
        let mut resp = Resp {
            status,
            call: None,
            close: false,
        };
        let mut length = None;
        let mut head_only = false;
        for l in lines {
            let (name, value) = l.split_once(": ").expect("header line");
            assert!(!name.is_empty() && !name.contains([' ', '\t']));
            assert!(!value.contains(['\r', '\n', '\0']));
            match name {
                "Content-Length" => {
                    assert!(length.is_none());
                    length = Some(value.parse::<usize>().expect("numeric Content-Length"));
                }
                "X-Call" => resp.call = Some(value.parse().unwrap()),
                "X-Head" => head_only = true,
                "Connection" => resp.close = value == "close",
                "Transfer-Encoding" => panic!("chunked response"),
                _ => {}
            }
        }
        out = &out[end + 4..];
        let bodyless = status < 200 || status == 204 || status == 304;
        if bodyless {
            assert!(length.is_none());
        } else {
            let len = length.expect("Content-Length");
            if !head_only {
                assert!(out.len() >= len, "body cut short");
                out = &out[len..];
            }
        }
        resps.push(resp);
    }
    resps
}

fn head_ends(input: &[u8]) -> usize {
    (0..input.len())
        .filter(|&i| {
            input[i] == b'\n'
                && (input[i + 1..].starts_with(b"\n") || input[i + 1..].starts_with(b"\r\n"))
        })
        .count()
}

fn check(run: &Run, payload: &[u8]) {
    let resps = parse_output(&run.out);
    let mut next_call = 1;
    for (i, r) in resps.iter().enumerate() {
        match r.call {
            Some(n) => {
                assert_eq!(n, next_call, "responses out of call order");
                next_call += 1;
            }
            None if r.status == 100 => {}
            None => {
                assert!(
                    r.status >= 400 && r.close && i == resps.len() - 1 && run.closing,
                    "error response must end the connection"
                );
            }
        }
        if r.close {
            assert!(
                i == resps.len() - 1 && run.closing,
                "output after Connection: close"
            );
        }
    }
    assert_eq!(
        next_call - 1,
        run.calls.len(),
        "one response per handler call"
    );
    assert!(
        run.calls.len() <= head_ends(payload),
        "more handler calls than head terminators"
    );
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
    let mut cuts: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as usize % (payload.len() + 1))
        .collect();
    cuts.sort_unstable();

    let limits = limits(flags);
    let whole = drive(payload, &[], limits, 3);
    check(&whole, payload);
    let split = drive(payload, &cuts, limits, (flags >> 2) & 3);
    check(&split, payload);
    assert!(
        split.calls == whole.calls,
        "cutting the input into reads changed the handler calls"
    );
});
