//! A slow request body costs its own connection only, on real processes
//! and sockets, on both backends: forty clients that declare 8 MiB bodies,
//! send 1,000 bytes and go quiet hold only the bytes they sent, so uploads
//! beside them are accepted; once their grace is over they are answered
//! `408` and closed; and every byte they held comes back to the worker's
//! body budget (read from `/metrics`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::bytes::pattern;
use forkring_testkit::client::Client;
use forkring_testkit::http::{show, CloseOutcome};

/// Trickling connections.
const SLOW: usize = 40;
/// The body each of them declares: the demo's largest (`--max-body`).
const DECLARED: usize = 8 << 20;
/// The bytes of it each sends before it goes quiet.
const SENT: usize = 1_000;
/// The default grace of `Limits::min_body_rate` (240 bytes/s after 5 s):
/// 1,000 bytes would last 4.2 s at that rate, so the grace is the longer.
const GRACE: Duration = Duration::from_secs(5);

/// The metrics address the server logged.
fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server.wait_line(&["metrics on http://"], Duration::from_secs(10));
    let rest = line.split("metrics on http://").nth(1).unwrap();
    rest.trim_end_matches("/metrics").trim().parse().unwrap()
}

/// The worker's body budget in use, from `/metrics`.
fn body_bytes(addr: SocketAddr) -> u64 {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    let text = String::from_utf8(all).unwrap();
    let mut lines = text.lines().filter(|l| l.starts_with("forkring_body_bytes{"));
    let line = lines.next().unwrap_or_else(|| panic!("no forkring_body_bytes in\n{text}"));
    assert!(lines.next().is_none(), "one worker, one series");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Waits (at most `limit`) until the worker's body budget in use is
/// `want`.
fn wait_body_bytes(addr: SocketAddr, want: u64, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let now = body_bytes(addr);
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: the body budget holds {now} bytes after {limit:?}, not {want}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn trickling_bodies_hold_only_their_bytes_and_are_answered_408_after_the_grace() {
    let server = Server::start(&["--metrics", "127.0.0.1:0"]);
    let maddr = metrics_addr(&server);
    assert_eq!(body_bytes(maddr), 0);
    let t0 = Instant::now();
    let mut slow: Vec<Client> = (0..SLOW)
        .map(|i| {
            let mut c = server.connect();
            let mut req = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {DECLARED}\r\n\r\n").into_bytes();
            req.extend_from_slice(&pattern(SENT, i as u64));
            c.send(&req);
            c
        })
        .collect();
    // Every head is in, and what the budget holds is what was sent, not
    // what was declared (40 × 8 MiB would be more than the whole budget).
    wait_body_bytes(maddr, (SLOW * SENT) as u64, Duration::from_secs(4), "the trickling bodies' bytes");

    // Uploads whose bodies do not come with their heads are let send them.
    for i in 0..5 {
        let mut c = server.connect();
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        let interim = c.try_response_within(false, Duration::from_secs(5)).expect("an answer to the head");
        assert_eq!(interim.status, 100, "upload {i} beside {SLOW} trickling bodies: {}", show(&interim.body));
        c.send(b"hello");
        let r = c.response();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]), "upload {i}");
    }
    assert_eq!(body_bytes(maddr), (SLOW * SENT) as u64, "the uploads were answered beside the trickling bodies");

    // Each trickling connection is answered 408 and closed once its grace
    // is over: its rate is below the minimum.
    let limit = t0 + GRACE * 6;
    for (i, c) in slow.iter_mut().enumerate() {
        match c.wait_close(limit.saturating_duration_since(Instant::now())) {
            CloseOutcome::Closed { extra } => {
                assert!(extra.starts_with(b"HTTP/1.1 408 "), "connection {i} got {}", show(&extra))
            }
            CloseOutcome::Open { extra } => {
                panic!("connection {i} still open after {:?} (received {})", t0.elapsed(), show(&extra))
            }
        }
        if i == 0 {
            let first = t0.elapsed();
            assert!(first >= GRACE.mul_f64(0.9), "a trickling body was refused after {first:?}, within its grace");
        }
    }
    eprintln!("{SLOW} trickling bodies answered 408 within {:?} of their start", t0.elapsed());
    wait_body_bytes(maddr, 0, Duration::from_secs(10), "after the 408s");
    assert_eq!(server.connect().get("/").status, 200);
}
