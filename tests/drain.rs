//! Graceful shutdown over real sockets: SIGTERM (or SIGINT) stops the
//! server after the request in flight is answered, closes idle keep-alive
//! connections, and the process exits 0 within a bound.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::http::CloseOutcome;
use forkring_testkit::metrics;
use forkring_testkit::server::HELLO;

/// How long a drained server may take to exit.
const EXIT_BOUND: Duration = Duration::from_secs(10);

/// Waits (at most 5 s) until the workers hold `n` bytes of request bodies
/// (`forkring_body_bytes` summed over the slots, from the metrics listener).
fn wait_body_bytes(srv: &Server, n: u64) {
    metrics::wait_sum(metrics::addr(srv), "forkring_body_bytes", Duration::from_secs(5), |held| held == n);
}

#[test]
fn sigterm_answers_the_request_in_flight_then_exits_0() {
    let mut srv = Server::start(&["--metrics", "127.0.0.1:0"]);
    let mut idle = srv.connect();
    assert_eq!(idle.get("/").status, 200);

    let mut busy = srv.connect();
    busy.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello");
    // The server takes in the first half of the body.
    wait_body_bytes(&srv, 5);
    srv.signal(libc::SIGTERM);
    srv.wait_line(&["draining: ", "connections open"], Duration::from_secs(5));
    assert!(srv.is_running(), "the server exited with a request in flight\n{}", srv.log_text());
    busy.send(b"world");
    let r = busy.response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"helloworld"[..]), "the request in flight");
    assert!(r.says_close(), "a response during a drain must say Connection: close: {:?}", r.headers);
    busy.expect_close();

    match idle.wait_close(Duration::from_secs(5)) {
        CloseOutcome::Closed { extra } => {
            assert!(extra.is_empty(), "idle connection got {extra:?}")
        }
        CloseOutcome::Open { .. } => {
            panic!("an idle keep-alive connection stayed open 5 s into a drain")
        }
    }

    let t0 = Instant::now();
    let status = srv.wait_exit(EXIT_BOUND).unwrap_or_else(|| panic!("still running {EXIT_BOUND:?} after SIGTERM"));
    assert!(status.success(), "exit status after SIGTERM: {status:?}\n{}", srv.log_text());
    eprintln!("exited {:?} after the last connection closed", t0.elapsed());
}

#[test]
fn sigterm_with_no_connections_exits_0_promptly() {
    let mut srv = Server::start(&[]);
    assert_eq!(srv.connect().get("/").body, HELLO);
    let t0 = Instant::now();
    srv.signal(libc::SIGTERM);
    let status = srv.wait_exit(EXIT_BOUND).unwrap_or_else(|| panic!("still running {EXIT_BOUND:?} after SIGTERM"));
    assert!(status.success(), "exit status after SIGTERM: {status:?}\n{}", srv.log_text());
    assert!(t0.elapsed() < Duration::from_secs(3), "an idle server took {:?} to drain", t0.elapsed());
}

#[test]
fn sigint_drains_like_sigterm() {
    let mut srv = Server::start(&[]);
    let mut c = srv.connect();
    assert_eq!(c.get("/").status, 200);
    srv.signal(libc::SIGINT);
    match c.wait_close(Duration::from_secs(5)) {
        CloseOutcome::Closed { extra } => {
            assert!(extra.is_empty(), "idle connection got {extra:?}")
        }
        CloseOutcome::Open { .. } => {
            panic!("an idle keep-alive connection stayed open 5 s into a drain")
        }
    }
    let status = srv.wait_exit(EXIT_BOUND).unwrap_or_else(|| panic!("still running {EXIT_BOUND:?} after SIGINT"));
    assert!(status.success(), "exit status after SIGINT: {status:?}\n{}", srv.log_text());
}

#[test]
fn pipelined_requests_during_a_drain_get_one_answer_and_a_close() {
    let mut srv = Server::start(&["--metrics", "127.0.0.1:0"]);
    let mut c = srv.connect();
    assert_eq!(c.get("/").status, 200);
    // Start a request so the connection is not idle when the drain begins.
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab");
    wait_body_bytes(&srv, 2);
    srv.signal(libc::SIGTERM);
    srv.wait_line(&["draining: ", "connections open"], Duration::from_secs(5));
    c.send(b"cdGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abcd"[..]));
    assert!(r.says_close());
    c.expect_close();
    let status = srv.wait_exit(EXIT_BOUND).unwrap_or_else(|| panic!("still running {EXIT_BOUND:?} after SIGTERM"));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}
