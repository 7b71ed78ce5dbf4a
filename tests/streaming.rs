//! Streamed responses on real sockets, on both backends, through the demo's
//! `GET /stream` (server-sent events written by worker timers, or as fast
//! as the client reads with `ms=0`): chunked framing read by curl and by
//! a raw client, pipelined order after a stream, HTTP/1.0 close-delimited
//! bodies, a slow reader against a fast writer with bounded worker memory,
//! clients that leave mid-stream, and the drain ending streams.

mod common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::http::Framing;
use forkring_testkit::metrics;
use forkring_testkit::need::{require, Need};
use forkring_testkit::server::HELLO;

/// The body `/stream?n=N` sends (without padding).
fn events(n: u64) -> Vec<u8> {
    (0..n).flat_map(|i| format!("data: {i}\n\n").into_bytes()).collect()
}

#[test]
fn curl_reads_a_chunked_event_stream() {
    require(Need::Curl);
    let mut server = Server::start(&[]);
    let url = format!("http://{}/stream?n=5&ms=20", server.addr);
    let out = Command::new("curl")
        .args(["-sS", "--no-buffer", "--max-time", "10", "-D", "-", &url])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head_lc = head.to_ascii_lowercase();
    assert!(head_lc.contains("transfer-encoding: chunked"), "{head}");
    assert!(head_lc.contains("content-type: text/event-stream"), "{head}");
    assert!(!head_lc.contains("content-length"), "{head}");
    assert_eq!(body.as_bytes(), &events(5)[..]);
    server.assert_healthy();
}

#[test]
fn events_arrive_apart_and_a_pipelined_request_waits_for_the_end() {
    let mut server = Server::start(&[]);
    let mut c = server.connect();
    let t0 = Instant::now();
    c.send(b"GET /stream?n=5&ms=100 HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response_any(false, Duration::from_secs(10));
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, Framing::Chunked);
    assert_eq!(r.body, events(5));
    assert!(t0.elapsed() >= Duration::from_millis(450), "5 events 100 ms apart took {:?}", t0.elapsed());
    // The request behind the stream is answered after it, on the same
    // connection.
    let r = c.response();
    assert_eq!((r.status, &r.body[..]), (200, HELLO));
    server.assert_healthy();
}

#[test]
fn an_http10_stream_ends_with_the_close() {
    let mut server = Server::start(&[]);
    let mut c = server.connect();
    c.send(b"GET /stream?n=3&ms=10 HTTP/1.0\r\n\r\n");
    let r = c.response_any(false, Duration::from_secs(10));
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, Framing::ToClose);
    assert_eq!(r.body, events(3));
    c.expect_close();
    server.assert_healthy();
}

#[test]
fn head_of_a_stream_sends_no_body() {
    let mut server = Server::start(&[]);
    let mut c = server.connect();
    c.send(b"HEAD /stream?n=3&ms=10 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response_any(true, Duration::from_secs(5));
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // The connection goes on at once.
    assert_eq!(c.get("/").body, HELLO);
    server.assert_healthy();
}

#[test]
fn a_slow_reader_holds_only_the_stream_queue() {
    let mut server = Server::start(&[]);
    // Warm the worker up (buffers, pool) before measuring.
    for _ in 0..3 {
        let mut c = server.connect();
        c.send(b"GET /stream?n=200&ms=0&bytes=16384 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.response_any(false, Duration::from_secs(10)).status, 200);
    }
    let before = server.rss_kib();
    // 2,000 events of 16 KiB: 32 MiB the writer would produce at once if
    // nothing held it back.
    let n = 2000u64;
    // The socket buffers take a few MiB of it (kernel memory, not the
    // worker's); the rest must wait in the writer, not in the worker.
    let mut c = server.connect();
    c.send(format!("GET /stream?n={n}&ms=0&bytes=16384 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let mut peak = before;
    for _ in 0..15 {
        thread::sleep(Duration::from_millis(100));
        peak = peak.max(server.rss_kib());
    }
    let grown = peak.saturating_sub(before);
    eprintln!("server RSS {before} KiB before, peak {peak} KiB while the client did not read (+{grown} KiB)");
    assert!(grown < 8 * 1024, "the server grew by {grown} KiB while its client did not read");
    // Then every event arrives, in order.
    let r = c.response_any(false, Duration::from_secs(30));
    assert_eq!(r.framing, Framing::Chunked);
    let mut count = 0u64;
    for (i, ev) in r.body.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        let want = format!("data: {i} ");
        assert!(ev.starts_with(want.as_bytes()), "event {i}: {:?}", String::from_utf8_lossy(&ev[..20.min(ev.len())]));
        assert_eq!(ev.len(), want.len() + 16384);
        count += 1;
    }
    assert_eq!(count, n);
    server.assert_healthy();
}

#[test]
fn clients_that_leave_mid_stream_disturb_nothing() {
    let mut server = Server::start(&["--metrics", "127.0.0.1:0"]);
    for i in 0..20 {
        let mut c = server.connect();
        let ms = if i % 2 == 0 { 1 } else { 0 };
        c.send(format!("GET /stream?n=1000000&ms={ms}&bytes=100 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let mut buf = [0u8; 512];
        let _ = std::io::Read::read(&mut c.stream, &mut buf);
        if i % 3 == 0 {
            c.reset();
        } else {
            drop(c);
        }
    }
    // The writers learn that their streams are gone and stop: the worker
    // goes back to idle, its connections all closed.
    metrics::wait_sum(metrics::addr(&server), "forkring_open_connections", Duration::from_secs(5), |open| open == 0);
    let mut fast = server.connect();
    for _ in 0..50 {
        assert_eq!(fast.get("/").body, HELLO);
    }
    server.assert_healthy();
}

#[test]
fn a_drain_ends_open_streams() {
    let mut server = Server::start(&["--drain-timeout", "10000"]);
    let mut c = server.connect();
    c.send(b"GET /stream?n=100000&ms=50 HTTP/1.1\r\nHost: t\r\n\r\n");
    // The stream is under way once its first event arrives (looked at,
    // not read: the response is read whole below).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut peeked = vec![0u8; 4096];
    loop {
        let n = c.stream.peek(&mut peeked).unwrap_or_else(|e| panic!("waiting for the first event: {e}"));
        assert!(n > 0, "the connection closed before the first event");
        if peeked[..n].windows(6).any(|w| w == b"data: ") {
            break;
        }
        assert!(Instant::now() < deadline, "no event within 5 s: {:?}", String::from_utf8_lossy(&peeked[..n]));
        thread::sleep(Duration::from_millis(5));
    }
    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    // The writer sees the drain, ends the stream with its last chunk, and
    // the connection closes.
    let r = c.response_any(false, Duration::from_secs(8));
    assert_eq!(r.framing, Framing::Chunked);
    assert!(r.says_close() || !r.body.is_empty());
    let n = r.body.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    assert!(n > 0 && n < 100_000, "{n} events");
    let status = server.wait_exit(Duration::from_secs(8)).expect("the server exits after the drain");
    assert!(status.success(), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "the drain took {:?}", t0.elapsed());
}
