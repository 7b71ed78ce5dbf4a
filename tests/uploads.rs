//! Streamed request bodies through the demo's `POST /upload`, on real
//! processes and sockets, on both backends: a 1 GiB upload in constant
//! memory with the right CRC-32, a refusal before the body is sent
//! (`Expect: 100-continue`), flow control (a reader that pauses makes the
//! client's send block), and chunked uploads.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::bytes::pattern;
use forkring_testkit::http::Response;
use forkring_testkit::proc;

/// The worker of a one-worker server.
fn worker_pid(server: &Server) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let workers = proc::descendants(server.pid());
        if workers.len() == 1 {
            return workers[0];
        }
        assert!(Instant::now() < deadline, "expected one worker, found {workers:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// CRC-32 (IEEE), a bit at a time: the oracle for the demo's table.
fn crc32(mut crc: u32, bytes: &[u8]) -> u32 {
    crc = !crc;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// `crc32` of `a ++ b` from `crc32(a)`, `crc32(b)` and `b`'s length (zlib's
/// `crc32_combine`, by GF(2) matrices): the CRC of a gigabyte without
/// reading it again.
fn crc32_combine(mut crc1: u32, crc2: u32, mut len2: u64) -> u32 {
    fn times(mat: &[u32; 32], mut vec: u32) -> u32 {
        let mut sum = 0;
        let mut i = 0;
        while vec != 0 {
            if vec & 1 != 0 {
                sum ^= mat[i];
            }
            vec >>= 1;
            i += 1;
        }
        sum
    }
    fn square(mat: &[u32; 32]) -> [u32; 32] {
        let mut sq = [0u32; 32];
        for n in 0..32 {
            sq[n] = times(mat, mat[n]);
        }
        sq
    }
    if len2 == 0 {
        return crc1;
    }
    // The operator for one zero bit, then two, then four.
    let mut odd = [0u32; 32];
    odd[0] = 0xEDB8_8320;
    for (n, row) in odd.iter_mut().enumerate().skip(1) {
        *row = 1 << (n - 1);
    }
    let mut even = square(&odd);
    odd = square(&even);
    loop {
        even = square(&odd);
        if len2 & 1 != 0 {
            crc1 = times(&even, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
        odd = square(&even);
        if len2 & 1 != 0 {
            crc1 = times(&odd, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
    }
    crc1 ^ crc2
}

/// `{"length": N, "crc32": "xxxxxxxx"}` as the demo writes it.
fn answer(length: u64, crc: u32) -> String {
    format!("{{\"length\": {length}, \"crc32\": \"{crc:08x}\"}}\n")
}

/// Uploads `blocks` copies of `block` with a `Content-Length`; the
/// response.
fn upload(server: &Server, block: &[u8], blocks: usize) -> Response {
    let mut c = server.connect();
    let total = block.len() * blocks;
    c.send(format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {total}\r\n\r\n").as_bytes());
    for _ in 0..blocks {
        c.send(block);
    }
    c.try_response_within(false, Duration::from_secs(120)).expect("the upload's answer")
}

#[test]
fn crc32_oracle_and_combine_agree() {
    assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
    let a = pattern(1000, 1);
    let b = pattern(777, 2);
    let whole = [a.clone(), b.clone()].concat();
    assert_eq!(crc32_combine(crc32(0, &a), crc32(0, &b), b.len() as u64), crc32(0, &whole));
}

#[test]
fn a_gigabyte_upload_streams_in_constant_memory() {
    let server = Server::start(&["--workers", "1"]);
    let worker = worker_pid(&server);
    const BLOCK: usize = 1 << 20;
    const BLOCKS: usize = 1024;
    let block = pattern(BLOCK, 7);
    let block_crc = crc32(0, &block);
    // A warm-up upload first: the worker's steady state (on io_uring, its
    // provided receive buffers, which any busy second makes resident) is
    // the baseline; the gigabyte must add nothing to it.
    let r = upload(&server, &block, 64);
    assert_eq!(r.status, 200);
    let baseline = proc::vm_rss_kib(worker).expect("the worker's VmRSS");
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        thread::spawn(move || {
            // Bounded: the upload takes well under 10 minutes.
            for _ in 0..60_000 {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(kib) = proc::vm_rss_kib(worker) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let started = Instant::now();
    let r = upload(&server, &block, BLOCKS);
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let mut crc = block_crc;
    for _ in 1..BLOCKS {
        crc = crc32_combine(crc, block_crc, BLOCK as u64);
    }
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(String::from_utf8_lossy(&r.body), answer((BLOCK * BLOCKS) as u64, crc));
    let grown = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!(
        "1 GiB upload: {:.1} s ({:.0} MiB/s), worker RSS {baseline} KiB, peak growth {grown} KiB",
        took.as_secs_f64(),
        1024.0 / took.as_secs_f64()
    );
    assert!(grown < 4 * 1024, "the worker's RSS grew by {grown} KiB during a streamed upload");
}

#[test]
fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let server = Server::start(&["--workers", "1", "--max-upload", "1000000"]);
    let mut c = server.connect();
    c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n");
    // No `100 Continue`: the answer comes at once, and the body is never
    // sent.
    let r = c.try_response_within(false, Duration::from_secs(5)).expect("an answer before the body");
    assert_eq!(r.status, 413);
    assert!(r.headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("connection") && v == "close"));
    c.expect_close();

    // Within the limit, the client gets `100 Continue` and then the answer.
    let mut c = server.connect();
    c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let mut interim = [0u8; 25];
    c.stream.read_exact(&mut interim).expect("100 Continue");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"hello");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), answer(5, crc32(0, b"hello")));
    // The connection stays open for the next request.
    assert_eq!(c.get("/").status, 200);

    // Without `Expect`, the refusal is the same, and the connection closes
    // (the body that follows is not read).
    let mut c = server.connect();
    c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n");
    c.send(&[0u8; 4096]);
    assert_eq!(c.response().status, 413);
    c.expect_close();
}

#[test]
fn a_reader_that_pauses_makes_the_client_wait() {
    let server = Server::start(&["--workers", "1"]);
    let worker = worker_pid(&server);
    let baseline = proc::vm_rss_kib(worker).unwrap();
    let mut c = server.connect();
    // One piece every 5 s: the reader takes almost nothing.
    let declared: usize = 256 << 20;
    c.send(format!("POST /upload?pause=5000 HTTP/1.1\r\nHost: t\r\nContent-Length: {declared}\r\n\r\n").as_bytes());
    c.stream.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let chunk = pattern(64 * 1024, 3);
    let mut sent = 0usize;
    let mut blocked = false;
    for _ in 0..declared / chunk.len() {
        match c.stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                blocked = true;
                break;
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    assert!(blocked, "the client sent all {sent} bytes without blocking");
    // What the kernel buffers on both sides, and a few pieces: far less
    // than the body.
    assert!(sent < 64 << 20, "the client sent {sent} bytes before blocking");
    let grown = proc::vm_rss_kib(worker).unwrap().saturating_sub(baseline);
    assert!(grown < 4 * 1024, "the worker's RSS grew by {grown} KiB while the client waited");
    eprintln!("flow control: the client blocked after {} KiB", sent / 1024);
    drop(c);
    let mut fresh = server.connect();
    assert_eq!(fresh.get("/").status, 200);
}

#[test]
fn chunked_uploads_are_streamed_and_limited() {
    let server = Server::start(&["--workers", "1", "--max-upload", "3000000"]);
    let body = pattern(2_500_000, 11);
    let mut wire = Vec::new();
    let mut at = 0;
    let mut size = 1;
    while at < body.len() {
        let n = size.min(body.len() - at);
        wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        wire.extend_from_slice(&body[at..at + n]);
        wire.extend_from_slice(b"\r\n");
        at += n;
        size = size * 3 + 1;
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let mut c = server.connect();
    c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(&wire);
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), answer(body.len() as u64, crc32(0, &body)));
    // The connection goes on after a streamed body.
    let r = c.post("/echo", "text/plain", b"after");
    assert_eq!(r.body, b"after");

    // Past the limit, a chunked body is stopped with 413.
    let mut c = server.connect();
    c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    let big = pattern(1 << 20, 12);
    let mut refused = false;
    for _ in 0..8 {
        let mut piece = format!("{:x}\r\n", big.len()).into_bytes();
        piece.extend_from_slice(&big);
        piece.extend_from_slice(b"\r\n");
        if c.stream.write_all(&piece).is_err() {
            refused = true;
            break;
        }
    }
    let r = c.try_response_within(false, Duration::from_secs(10));
    match r {
        Ok(r) => assert_eq!(r.status, 413),
        Err(e) => assert!(refused, "no answer: {e}"),
    }
}
