//! Connection timeouts over real sockets, with short test values: the
//! header timeout (slowloris), the idle keep-alive timeout, and stalled
//! bodies. Slow clients never delay a normal one.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::client::Client;
use forkring_testkit::http::{show, CloseOutcome};
use forkring_testkit::server::HELLO;

/// Longest a deadline may be overshot (sweep interval, a loaded machine).
const LATE: Duration = Duration::from_millis(2500);

/// Checks that what a timed-out connection received before its close is
/// nothing, or a single 408.
fn assert_silent_or_408(extra: &[u8]) {
    assert!(
        extra.is_empty() || extra.starts_with(b"HTTP/1.1 408 "),
        "a timed-out connection got {} before its close",
        show(extra)
    );
}

/// Asserts that `elapsed` lies within `[timeout * 0.8, timeout + LATE]`.
fn assert_near(what: &str, elapsed: Duration, timeout: Duration) {
    assert!(elapsed >= timeout.mul_f64(0.8), "{what}: closed after {elapsed:?}, before the {timeout:?} timeout");
    assert!(elapsed <= timeout + LATE, "{what}: closed after {elapsed:?}, long after the {timeout:?} timeout");
}

#[test]
fn silent_connection_is_closed_after_the_header_timeout() {
    let srv = Server::start(&["--header-timeout", "300", "--idle-timeout", "10000"]);
    let t0 = Instant::now();
    let mut c = srv.connect();
    match c.wait_close(Duration::from_secs(5)) {
        CloseOutcome::Closed { extra } => assert_silent_or_408(&extra),
        CloseOutcome::Open { .. } => {
            panic!("a connection that never sent a byte is still open after 5 s")
        }
    }
    assert_near("silent connection", t0.elapsed(), Duration::from_millis(300));
}

#[test]
fn trickling_header_is_closed_after_the_header_timeout() {
    let srv = Server::start(&["--header-timeout", "300", "--idle-timeout", "10000"]);
    let t0 = Instant::now();
    let mut c = srv.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ");
    let closed = loop {
        // A byte every 30 ms: each one is progress, none may extend the
        // header timer.
        if c.try_send(b"a").is_err() {
            break t0.elapsed();
        }
        match c.wait_close(Duration::from_millis(30)) {
            CloseOutcome::Closed { extra } => {
                assert_silent_or_408(&extra);
                break t0.elapsed();
            }
            CloseOutcome::Open { extra } => {
                assert!(extra.is_empty(), "got {} mid-head", show(&extra))
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "trickling client still open after 5 s");
    };
    assert_near("trickling client", closed, Duration::from_millis(300));
}

/// Sends an empty line every `every` until the server closes `c` (or 5 s
/// pass); returns how long after `t0` it closed.
fn send_empty_lines_until_closed(c: &mut Client, t0: Instant, every: Duration) -> Duration {
    loop {
        if c.try_send(b"\r\n").is_err() {
            return t0.elapsed();
        }
        match c.wait_close(every) {
            CloseOutcome::Closed { extra } => {
                assert_silent_or_408(&extra);
                return t0.elapsed();
            }
            CloseOutcome::Open { extra } => assert!(extra.is_empty(), "got {} for empty lines", show(&extra)),
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "a connection sending only empty lines is still open after 5 s (header timeout 1 s)"
        );
    }
}

#[test]
fn empty_lines_do_not_hold_a_new_connection_open() {
    // RFC 9112 §2.2 has empty lines before a request line ignored: they
    // are not a request, and the header timer runs on through them.
    let srv = Server::start(&["--header-timeout", "1000", "--idle-timeout", "10000"]);
    let t0 = Instant::now();
    let mut c = srv.connect();
    let closed = send_empty_lines_until_closed(&mut c, t0, Duration::from_millis(400));
    assert_near("connection sending empty lines", closed, Duration::from_millis(1000));
}

#[test]
fn empty_lines_after_a_response_start_the_header_timer() {
    let srv = Server::start(&["--header-timeout", "1000", "--idle-timeout", "10000"]);
    let mut c = srv.connect();
    assert_eq!(c.get("/").status, 200);
    let t0 = Instant::now();
    let closed = send_empty_lines_until_closed(&mut c, t0, Duration::from_millis(400));
    assert_near("kept-alive connection sending empty lines", closed, Duration::from_millis(1000));
}

#[test]
fn header_timer_restarts_for_each_request_on_keep_alive() {
    let srv = Server::start(&["--header-timeout", "300", "--idle-timeout", "10000"]);
    let mut c = srv.connect();
    // Well past the first header deadline, still served: the timer covers
    // one head, not the connection's life.
    for _ in 0..4 {
        assert_eq!(c.get("/").status, 200);
        thread::sleep(Duration::from_millis(100));
    }
    // Now a head that starts and stalls.
    let t0 = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHo");
    match c.wait_close(Duration::from_secs(5)) {
        CloseOutcome::Closed { extra } => assert_silent_or_408(&extra),
        CloseOutcome::Open { .. } => panic!("stalled second head still open after 5 s"),
    }
    assert_near("stalled second head", t0.elapsed(), Duration::from_millis(300));
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let srv = Server::start(&["--header-timeout", "10000", "--idle-timeout", "500"]);
    let mut c = srv.connect();
    assert_eq!(c.get("/").status, 200);
    let t0 = Instant::now();
    match c.wait_close(Duration::from_secs(5)) {
        CloseOutcome::Closed { extra } => assert_silent_or_408(&extra),
        CloseOutcome::Open { .. } => {
            panic!("idle connection still open after 5 s (idle timeout 500 ms)")
        }
    }
    assert_near("idle connection", t0.elapsed(), Duration::from_millis(500));
}

#[test]
fn busy_connection_outlives_the_idle_timeout() {
    let srv = Server::start(&["--header-timeout", "10000", "--idle-timeout", "500"]);
    let mut c = srv.connect();
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_millis(1600) {
        let r = c.get("/");
        assert_eq!((r.status, r.body.as_slice()), (200, HELLO), "request {n} at {:?}", t0.elapsed());
        n += 1;
        thread::sleep(Duration::from_millis(150));
    }
}

#[test]
fn stalled_body_is_closed_after_the_idle_timeout() {
    let srv = Server::start(&["--header-timeout", "10000", "--idle-timeout", "500"]);
    let mut c = srv.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    let t0 = Instant::now();
    match c.wait_close(Duration::from_secs(5)) {
        CloseOutcome::Closed { extra } => assert_silent_or_408(&extra),
        CloseOutcome::Open { .. } => {
            panic!("stalled body still open after 5 s (idle timeout 500 ms)")
        }
    }
    assert_near("stalled body", t0.elapsed(), Duration::from_millis(500));
}

/// One slowloris client: a head that never ends.
struct Slow {
    stream: TcpStream,
    opened: Instant,
    closed: Option<Duration>,
    received: Vec<u8>,
}

/// Opens `n` slowloris connections, reports once they are all open, and
/// trickles a byte to each every 50 ms until each is closed or `limit`
/// passes. Returns when each closed (if it did) and what each received.
fn slowloris(addr: SocketAddr, n: usize, limit: Duration, ready: mpsc::Sender<()>) -> Vec<(Option<Duration>, Vec<u8>)> {
    let mut slow: Vec<Slow> = (0..n)
        .map(|_| {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("slowloris connect");
            let opened = Instant::now();
            stream.set_nodelay(true).unwrap();
            stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slowloris: ").unwrap();
            stream.set_nonblocking(true).unwrap();
            Slow { stream, opened, closed: None, received: Vec::new() }
        })
        .collect();
    let _ = ready.send(());
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    while slow.iter().any(|s| s.closed.is_none()) && start.elapsed() < limit {
        for s in slow.iter_mut().filter(|s| s.closed.is_none()) {
            match s.stream.write(b"a") {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    s.closed = Some(s.opened.elapsed());
                    continue;
                }
            }
            loop {
                match s.stream.read(&mut buf) {
                    Ok(0) => {
                        s.closed = Some(s.opened.elapsed());
                        break;
                    }
                    Ok(k) => s.received.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        s.closed = Some(s.opened.elapsed());
                        break;
                    }
                }
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    slow.into_iter().map(|s| (s.closed, s.received)).collect()
}

#[test]
fn slowloris_clients_are_dropped_while_a_normal_client_is_served_fast() {
    const SLOW: usize = 200;
    let timeout = Duration::from_millis(1000);
    let mut srv = Server::start(&["--header-timeout", "1000", "--idle-timeout", "10000"]);
    let addr = srv.addr;
    let (tx, rx) = mpsc::channel();
    let slow = thread::spawn(move || slowloris(addr, SLOW, Duration::from_secs(6), tx));
    rx.recv_timeout(Duration::from_secs(10)).expect("slowloris clients connected");

    // While the slow clients hold their heads open, a normal client is
    // served at once: on a kept-alive connection and on fresh ones.
    let t0 = Instant::now();
    let mut keep = srv.connect();
    let mut times = Vec::new();
    let mut n = 0;
    while t0.elapsed() < timeout.mul_f64(1.3) {
        let started = Instant::now();
        let r = if n % 2 == 0 { keep.get("/") } else { srv.connect().get("/") };
        times.push(started.elapsed());
        assert_eq!((r.status, r.body.as_slice()), (200, HELLO), "normal request {n}");
        n += 1;
        thread::sleep(Duration::from_millis(20));
    }
    // No normal request waited for the slow ones to time out, and the
    // typical one was not slowed at all. (Bounds generous enough for a
    // loaded 2-CPU machine: speed itself is measured by `make stress`.)
    times.sort();
    let (median, worst) = (times[times.len() / 2], times[times.len() - 1]);
    assert!(
        worst < timeout.mul_f64(0.8) && median < Duration::from_millis(100),
        "normal requests took median {median:?}, worst {worst:?} while {SLOW} slowloris clients were connected"
    );

    let results = slow.join().expect("slowloris thread");
    let mut still_open = 0;
    for (i, (closed, received)) in results.iter().enumerate() {
        assert_silent_or_408(received);
        match closed {
            Some(t) => assert_near(&format!("slowloris client {i}"), *t, timeout),
            None => still_open += 1,
        }
    }
    assert_eq!(still_open, 0, "{still_open} of {SLOW} slowloris clients were never closed");
    srv.assert_healthy();
}
