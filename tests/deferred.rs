//! Deferred responses on real sockets, on both backends, through the demo's
//! `/sleep` (a pool thread that blocks) and `/delay` (a worker timer): the
//! loop serves other connections meanwhile, pipelined order holds, and the
//! cap, the deadline and a client that leaves early behave.

mod common;

use std::thread;
use std::time::Duration;

use common::Server;
use forkring_testkit::client::Client;
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

#[test]
fn too_many_deferred_requests_get_503_and_slow_ones_504() {
    let mut server = Server::start(&["--workers", "1", "--max-deferred", "2", "--deferred-timeout", "1000"]);
    let mut waiting: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = server.connect();
            c.send(b"GET /delay?ms=2000 HTTP/1.1\r\nHost: t\r\n\r\n");
            c
        })
        .collect();
    // Both are deferred once the worker answers on a third connection.
    thread::sleep(Duration::from_millis(200));
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
    let mut server = Server::start(&["--workers", "1", "--max-deferred", "4"]);
    for _ in 0..8 {
        let mut c = server.connect();
        c.send(b"GET /sleep?ms=100 HTTP/1.1\r\nHost: t\r\n\r\n");
        drop(c);
    }
    thread::sleep(Duration::from_millis(300));
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
