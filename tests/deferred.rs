//! Deferred responses on real sockets, on both backends, through the demo's
//! `/sleep` (a pool thread that blocks) and `/delay` (a worker timer): the
//! loop serves other connections meanwhile, pipelined order holds, and the
//! cap, the deadline and a client that leaves early behave.

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::client::Client;
use forkring_testkit::metrics;
use forkring_testkit::server::HELLO;

#[test]
fn a_blocked_pool_thread_does_not_hold_up_other_connections() {
    let mut server = Server::start(&["--workers", "1"]);
    for route in ["/sleep?ms=600", "/delay?ms=600"] {
        let mut slow = server.connect();
        slow.send(format!("GET {route} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        // While it waits, another connection gets 100 answers.
        let mut fast = server.connect();
        for i in 0..100 {
            let r = fast.get("/");
            assert_eq!((r.status, &r.body[..]), (200, HELLO), "fast request {i} behind {route}");
        }
        let r = slow.response();
        assert_eq!(r.status, 200, "{route}");
        assert_eq!(r.body, b"waited 600 ms\n");
        // The same connection goes on after it.
        assert_eq!(slow.get("/").status, 200);
    }
    server.assert_healthy();
}

#[test]
fn pipelined_requests_keep_their_order_around_a_deferred_one() {
    let mut server = Server::start(&["--workers", "1"]);
    for route in ["/sleep?ms=100", "/delay?ms=100"] {
        let mut c = server.connect();
        c.send(
            format!(
                "GET / HTTP/1.1\r\nHost: t\r\n\r\nGET {route} HTTP/1.1\r\nHost: t\r\n\r\nGET /nothing HTTP/1.1\r\nHost: t\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(c.response().body, HELLO);
        assert_eq!(c.response().body, b"waited 100 ms\n", "{route}");
        assert_eq!(c.response().status, 404);
    }
    server.assert_healthy();
}

/// Slot 0's value of `name` in a scrape of `GET /metrics`.
fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    metrics::slot(addr, name, 0)
}

/// Waits (at most 5 s) until slot 0's metrics `(name, value)` all hold.
fn wait_metrics(addr: SocketAddr, want: &[(&str, u64)]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now: Vec<(&str, Option<u64>)> = want.iter().map(|&(name, _)| (name, metric(addr, name))).collect();
        if now.iter().zip(want).all(|((_, got), (_, v))| *got == Some(*v)) {
            return;
        }
        assert!(Instant::now() < deadline, "metrics {want:?} not within 5 s: {now:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn too_many_deferred_requests_get_503_and_slow_ones_504() {
    let mut server = Server::start(&[
        "--workers",
        "1",
        "--max-deferred",
        "2",
        "--deferred-timeout",
        "1000",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let maddr = metrics::addr(&server);
    let mut waiting: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = server.connect();
            c.send(b"GET /delay?ms=2000 HTTP/1.1\r\nHost: t\r\n\r\n");
            c
        })
        .collect();
    // Both are deferred (the worker's gauge says so) before a third
    // connection asks.
    wait_metrics(maddr, &[("forkring_deferred_in_flight", 2)]);
    let mut third = server.connect();
    let r = third.get("/sleep?ms=10");
    assert_eq!(r.status, 503, "the worker waits on two already");
    for c in &mut waiting {
        let r = c.response();
        assert_eq!(r.status, 504, "past --deferred-timeout");
        assert!(r.says_close(), "{:?}", r.headers);
    }
    // Room again.
    assert_eq!(server.connect().get("/sleep?ms=10").status, 200);
    server.assert_healthy();
}

#[test]
fn a_client_that_leaves_before_its_answer_disturbs_nothing() {
    let mut server = Server::start(&["--workers", "1", "--max-deferred", "4", "--metrics", "127.0.0.1:0"]);
    let maddr = metrics::addr(&server);
    for _ in 0..8 {
        let mut c = server.connect();
        c.send(b"GET /sleep?ms=100 HTTP/1.1\r\nHost: t\r\n\r\n");
        drop(c);
    }
    // All eight were taken in, the four deferred ones completed, and
    // their connections are gone.
    wait_metrics(
        maddr,
        &[("forkring_requests_total", 8), ("forkring_deferred_in_flight", 0), ("forkring_open_connections", 0)],
    );
    // The completions for the connections that left found nothing, and
    // every place under the cap is free again.
    let mut clients: Vec<Client> = (0..4)
        .map(|_| {
            let mut c = server.connect();
            c.send(b"GET /sleep?ms=50 HTTP/1.1\r\nHost: t\r\n\r\n");
            c
        })
        .collect();
    for c in &mut clients {
        assert_eq!(c.response().status, 200);
    }
    server.assert_healthy();
}
