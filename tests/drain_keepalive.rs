//! A rolling reload (`SIGHUP`) with a keep-alive client in the middle of
//! each kind of answer: a file (also one read slowly, whose last bytes
//! reach the client long after the server's last send), a stream, a large
//! whole answer, a deferred one and an upload, on whichever backend
//! `FORKRING_BACKEND` selects. The drain begins while the answer is in
//! flight; the client then sends its next request on the same connection
//! as soon as the answer ends, as keep-alive clients do. Whatever the
//! kind, the
//! client never meets a closed or reset connection: an answer whose head
//! went out before the drain (and so promised a next request) is followed
//! by an answer to that request, with `Connection: close`; an answer that
//! starts during the drain says `Connection: close` itself. Either way the
//! connection then ends with a clean close (a FIN, never a reset).
//!
//! Each test makes its in-flight window from a condition: the answer's
//! head is seen before the `SIGHUP`, and its body stays unsent (a file or
//! an echo larger than every socket buffer between the two, read only once
//! the drain has begun; a stream that ends only at the drain) or unwritten
//! (a deferred answer checked to be still missing when the drain begins;
//! an upload whose body is sent only then).

mod common;

use std::io::{ErrorKind, Read};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::bytes::pattern;
use forkring_testkit::client::Client;
use forkring_testkit::http::{find, parse_head, show_cut, Framing, Response};
use forkring_testkit::server::HELLO;

/// A file (and an echo) far larger than what the socket buffers of both
/// ends hold with the client's receive buffer made small: its last bytes
/// can only leave once the client reads.
const LARGE: usize = 16 << 20;
/// The largest request body the fixture takes by default: the echo's size.
const ECHO: usize = 8 << 20;
/// The client's receive buffer while a large answer is in flight.
const SMALL_RCVBUF: i32 = 64 * 1024;
/// How long a client stops reading in the middle of a body: far beyond
/// the drain's idle grace, far below the idle timeout.
const STALL: Duration = Duration::from_secs(1);
/// A bound on every wait for the server (log lines, heads, closes).
const WAIT: Duration = Duration::from_secs(10);

/// A served directory holding one large file, removed on drop.
struct Dir {
    path: PathBuf,
    big: Vec<u8>,
}

impl Dir {
    fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("forkring-drain-keepalive-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        let big = pattern(LARGE, 21);
        std::fs::write(path.join("big.bin"), &big).unwrap();
        Dir { path, big }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A one-worker server (and, for files, its directory) whose worker is
/// ready.
fn server(args: &[&str]) -> Server {
    let srv = Server::start(args);
    srv.wait_line(&["ready 0.0"], WAIT);
    srv
}

/// Waits until the head of the answer has arrived, without consuming it.
fn wait_for_head(c: &Client) {
    wait_for(c, b"\r\n\r\n");
}

/// Waits until the bytes received and not yet read hold `needle`, without
/// consuming them.
fn wait_for(c: &Client, needle: &[u8]) {
    let deadline = Instant::now() + WAIT;
    let mut peek = vec![0u8; 64 * 1024];
    loop {
        let n = c.stream.peek(&mut peek).unwrap_or_else(|e| panic!("waiting for a head: {e}"));
        assert!(n > 0, "the connection closed before the answer's {}", show_cut(needle, 20));
        if find(&peek[..n], needle).is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {} within {WAIT:?}: {}",
            show_cut(needle, 20),
            show_cut(&peek[..n], 200)
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Reads an answer framed by `Content-Length` straight off the socket,
/// its body compared with `expected` as it comes, and returns its head as
/// soon as the last byte is in: the next request then follows at once, as
/// a keep-alive client's does. After each read of at most 64 KiB, `pause`
/// (given the body bytes read so far) may say how long to wait: a slow
/// link, or a client that stalls.
fn read_promptly(c: &mut Client, expected: &[u8], mut pause: impl FnMut(usize) -> Option<Duration>) -> Response {
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = find(&got, b"\r\n\r\n") {
            break i + 4;
        }
        let n = c.stream.read(&mut chunk).unwrap_or_else(|e| panic!("reading a head: {e}"));
        assert!(n > 0, "the connection ended inside a head: {}", show_cut(&got, 200));
        got.extend_from_slice(&chunk[..n]);
    };
    let head = parse_head(&got[..head_end - 4]).unwrap_or_else(|e| panic!("{e}"));
    let length = head.header("Content-Length").and_then(|v| v.parse::<usize>().ok());
    assert_eq!(length, Some(expected.len()), "{:?}", head.headers);
    let mut at = got.len() - head_end;
    assert!(got[head_end..] == expected[..at], "the body differs within its first {at} bytes");
    while at < expected.len() {
        let want = (expected.len() - at).min(chunk.len());
        let n = c.stream.read(&mut chunk[..want]).unwrap_or_else(|e| panic!("after {at} body bytes: {e}"));
        assert!(n > 0, "the connection ended after {at} of {} body bytes", expected.len());
        assert!(chunk[..n] == expected[at..at + n], "the body differs from byte {at} on");
        at += n;
        if let Some(p) = pause(at) {
            thread::sleep(p);
        }
    }
    head
}

/// Whether any byte of an answer has arrived.
fn anything_arrived(c: &Client) -> bool {
    c.stream.set_nonblocking(true).unwrap();
    let r = c.stream.peek(&mut [0u8; 1]);
    c.stream.set_nonblocking(false).unwrap();
    match r {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("peek: {e}"),
    }
}

/// Starts a rolling reload and waits until the worker holding the
/// connection has begun to drain.
fn reload(srv: &Server) {
    srv.signal(libc::SIGHUP);
    srv.wait_line(&["draining: 1 connections open"], WAIT);
}

/// The next request, sent as soon as the answer before it ended: a small
/// upload, which no client may send again on its own if it is lost. It
/// must be answered, with `Connection: close`.
fn next_request_is_answered_with_close(c: &mut Client) {
    c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    let r = c.try_response(false).unwrap_or_else(|e| panic!("the request after the drain began: {e}"));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(String::from_utf8_lossy(&r.body).contains("\"length\": 5"), "{r:?}");
    assert!(r.says_close(), "an answer during a drain says Connection: close: {:?}", r.headers);
}

/// The server ends the connection with a FIN and nothing after the last
/// answer: a reset could have destroyed that answer in the client's
/// receive buffer.
fn closes_cleanly(c: &mut Client) {
    c.stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = [0u8; 1024];
    match c.stream.read(&mut rest) {
        Ok(0) => {}
        Ok(n) => panic!("bytes after the last answer: {}", show_cut(&rest[..n], 200)),
        Err(e) => panic!("not a clean close: {e}"),
    }
}

/// The drained worker left on its own, not at the drain's timeout.
fn drained(srv: &Server) {
    srv.wait_line(&["exit 0.0", "requested=true"], WAIT);
    let log = srv.log_text();
    assert!(!log.contains("drain timeout"), "{log}");
}

/// An answer whose head went out before the drain without `close`.
fn kept_alive(r: &Response) {
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert!(!r.says_close(), "its head left before the drain: {:?}", r.headers);
}

#[test]
fn a_file_in_flight_at_a_reload_is_followed_by_the_next_request() {
    let dir = Dir::new("file");
    let srv = server(&["--static", dir.path.to_str().unwrap()]);
    let mut c = srv.connect();
    c.set_recv_buffer(SMALL_RCVBUF);
    c.send(b"GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_for_head(&c);
    reload(&srv);
    kept_alive(&read_promptly(&mut c, &dir.big, |_| None));
    next_request_is_answered_with_close(&mut c);
    closes_cleanly(&mut c);
    drained(&srv);
}

#[test]
fn a_file_read_slowly_at_a_reload_is_followed_by_the_next_request() {
    let dir = Dir::new("slow");
    let srv = server(&["--static", dir.path.to_str().unwrap()]);
    let mut c = srv.connect();
    c.set_recv_buffer(SMALL_RCVBUF);
    c.send(b"GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_for_head(&c);
    reload(&srv);
    // The last of the file reaches the client long after the server has
    // handed it to the kernel: the client's next request comes later than
    // the drain's grace after the server's last send.
    kept_alive(&read_promptly(&mut c, &dir.big, |_| Some(Duration::from_millis(5))));
    next_request_is_answered_with_close(&mut c);
    closes_cleanly(&mut c);
    drained(&srv);
}

#[test]
fn a_file_whose_reader_stalls_during_a_drain_arrives_whole() {
    let dir = Dir::new("stall");
    let srv = server(&["--static", dir.path.to_str().unwrap()]);
    let mut c = srv.connect();
    c.set_recv_buffer(SMALL_RCVBUF);
    c.send(b"GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_for_head(&c);
    reload(&srv);
    // A client that stops reading for a while, far less than the idle
    // timeout, in the middle of the body: a body being sent is waited on
    // as long as while serving, however short the drain's idle grace.
    let mut stalled = false;
    let stall = |at: usize| (at >= LARGE / 4 && !std::mem::replace(&mut stalled, true)).then_some(STALL);
    kept_alive(&read_promptly(&mut c, &dir.big, stall));
    next_request_is_answered_with_close(&mut c);
    closes_cleanly(&mut c);
    drained(&srv);
}

#[test]
fn a_stream_in_flight_at_a_reload_is_followed_by_the_next_request() {
    let srv = server(&[]);
    let mut c = srv.connect();
    // Far longer than the test: the stream ends because the worker drains.
    c.send(b"GET /stream?n=100000&ms=10 HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_for(&c, b"data: 0\n\n");
    reload(&srv);
    let r = c.response_any(false, WAIT);
    kept_alive(&r);
    assert_eq!(r.framing, Framing::Chunked, "{:?}", r.headers);
    assert!(r.body.starts_with(b"data: 0\n\n"), "{}", show_cut(&r.body, 200));
    next_request_is_answered_with_close(&mut c);
    closes_cleanly(&mut c);
    drained(&srv);
}

#[test]
fn a_large_whole_answer_in_flight_at_a_reload_is_followed_by_the_next_request() {
    let srv = server(&[]);
    let mut c = srv.connect();
    c.set_recv_buffer(SMALL_RCVBUF);
    let body = pattern(ECHO, 8);
    let mut req = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {ECHO}\r\n\r\n").into_bytes();
    req.extend_from_slice(&body);
    c.send(&req);
    wait_for_head(&c);
    reload(&srv);
    kept_alive(&read_promptly(&mut c, &body, |_| None));
    next_request_is_answered_with_close(&mut c);
    closes_cleanly(&mut c);
    drained(&srv);
}

#[test]
fn a_large_whole_answer_whose_reader_stalls_during_a_drain_arrives_whole() {
    let srv = server(&[]);
    let mut c = srv.connect();
    c.set_recv_buffer(SMALL_RCVBUF);
    let body = pattern(ECHO, 9);
    let mut req = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {ECHO}\r\n\r\n").into_bytes();
    req.extend_from_slice(&body);
    c.send(&req);
    wait_for_head(&c);
    reload(&srv);
    let mut stalled = false;
    let stall = |at: usize| (at >= ECHO / 4 && !std::mem::replace(&mut stalled, true)).then_some(STALL);
    kept_alive(&read_promptly(&mut c, &body, stall));
    next_request_is_answered_with_close(&mut c);
    closes_cleanly(&mut c);
    drained(&srv);
}

#[test]
fn a_deferred_answer_pending_at_a_reload_says_close() {
    let srv = server(&[]);
    let mut c = srv.connect();
    assert_eq!(c.get("/").body, HELLO);
    // Long enough that the reload's drain begins before the answer.
    c.send(b"GET /sleep?ms=3000 HTTP/1.1\r\nHost: t\r\n\r\n");
    reload(&srv);
    assert!(!anything_arrived(&c), "the answer came before the drain began: the window was too short");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"waited 3000 ms\n"[..]));
    assert!(r.says_close(), "framed during the drain: {:?}", r.headers);
    closes_cleanly(&mut c);
    drained(&srv);
}

#[test]
fn an_upload_under_way_at_a_reload_is_answered_with_close() {
    let srv = server(&[]);
    let mut c = srv.connect();
    let body = pattern(1 << 20, 3);
    c.send(
        format!("POST /upload HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len())
            .as_bytes(),
    );
    // The interim answer says the head was taken in and its reader set up.
    let interim = c.response_any(true, WAIT);
    assert_eq!(interim.status, 100, "{interim:?}");
    reload(&srv);
    c.send(&body);
    let r = c.response();
    assert_eq!(r.status, 200, "{r:?}");
    let length = format!("\"length\": {}", body.len());
    assert!(String::from_utf8_lossy(&r.body).contains(&length), "{}", show_cut(&r.body, 200));
    assert!(r.says_close(), "framed during the drain: {:?}", r.headers);
    closes_cleanly(&mut c);
    drained(&srv);
}

#[test]
fn an_upload_that_pauses_during_a_drain_is_answered_with_close() {
    let srv = server(&[]);
    let mut c = srv.connect();
    let body = pattern(1 << 20, 4);
    let (first, rest) = body.split_at(body.len() / 2);
    let mut req = format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    req.extend_from_slice(first);
    c.send(&req);
    reload(&srv);
    // The rest of the body comes after a pause far beyond the drain's idle
    // grace, far below the idle timeout.
    thread::sleep(STALL);
    c.send(rest);
    let r = c.response();
    assert_eq!(r.status, 200, "{r:?}");
    let length = format!("\"length\": {}", body.len());
    assert!(String::from_utf8_lossy(&r.body).contains(&length), "{}", show_cut(&r.body, 200));
    assert!(r.says_close(), "framed during the drain: {:?}", r.headers);
    closes_cleanly(&mut c);
    drained(&srv);
}
