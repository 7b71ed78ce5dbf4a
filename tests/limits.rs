//! Protocol limits over real sockets: each is answered with its status and
//! the connection closes. The demo server runs with the library's default
//! head limits (16 KiB head, 100 fields, 8 KiB target) and a small
//! `--max-body` ([`MAX_BODY`]). The oversized requests are the corpus's
//! limit vectors (`forkring_testkit::corpus::limits`).

mod common;

use std::time::Duration;

use common::Server;
use forkring_testkit::client::Client;
use forkring_testkit::corpus::{self, MAX_BODY};
use forkring_testkit::http::{show, CloseOutcome};

fn server() -> Server {
    Server::start(&["--max-body", &MAX_BODY.to_string()])
}

/// The bytes of the corpus's limit vector `name`.
fn wire(name: &str) -> Vec<u8> {
    corpus::case(name).wire
}

/// Sends `wire` on a fresh connection; expects one response with `status`
/// and then the close, with nothing in between.
fn expect_rejected(srv: &Server, wire: &[u8], status: u16) {
    let mut c = srv.connect();
    // The server may answer and close before it has read everything: a
    // failed send is fine, the answer is what counts.
    let _ = c.try_send(wire);
    let r = c.try_response(false).unwrap_or_else(|e| panic!("no response to {}: {e}", show(wire)));
    assert_eq!(r.status, status, "request {}", show(wire));
    assert!(r.says_close(), "a {status} must say Connection: close: {:?}", r.headers);
    c.expect_close();
}

#[test]
fn header_block_too_large_is_431() {
    let srv = server();
    expect_rejected(&srv, &wire("head-over-16k"), 431);
    // Many medium fields adding up past the block limit.
    expect_rejected(&srv, &wire("40-fields-of-500-bytes"), 431);
}

#[test]
fn header_block_too_large_is_431_before_it_ends() {
    // The head never ends; the server must not wait for it.
    let srv = server();
    let mut c = srv.connect();
    let _ = c.try_send(&wire("head-over-16k-unfinished"));
    let r = c.try_response(false).expect("a 431 for an unfinished oversized head");
    assert_eq!(r.status, 431);
    c.expect_close();
}

#[test]
fn too_many_header_fields_is_431() {
    let srv = server();
    expect_rejected(&srv, &wire("150-fields"), 431);
}

#[test]
fn heads_within_the_limits_are_served() {
    let srv = server();
    let mut c = srv.connect();
    let mut wire = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..90 {
        wire.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(100)));
    }
    wire.push_str("\r\n");
    c.send(wire.as_bytes());
    assert_eq!(c.response().status, 200, "90 fields, 10 KiB head");
    let target = format!("/{}", "p".repeat(8000));
    let r = c.get(&target);
    assert_eq!(r.status, 404, "an 8001-byte target is within the limit");
}

#[test]
fn request_target_too_long_is_414() {
    let srv = server();
    expect_rejected(&srv, &wire("target-over-8k"), 414);
    // And without waiting for the end of the line.
    let mut c = srv.connect();
    let _ = c.try_send(&wire("target-over-8k-unfinished"));
    let r = c.try_response(false).expect("a 414 for an unfinished oversized target");
    assert_eq!(r.status, 414);
    c.expect_close();
}

#[test]
fn declared_body_over_limit_is_413_before_the_body_is_sent() {
    let srv = server();
    let mut c = srv.connect();
    // Only the head: the 413 must come without the body.
    c.send(&wire("declared-body-over-the-limit-head-only"));
    let r = c.try_response(false).expect("a 413 before the body is sent");
    assert_eq!(r.status, 413);
    assert!(r.says_close());
    c.expect_close();

    // A huge declared length, also without the body.
    let mut c = srv.connect();
    c.send(&wire("huge-declared-body"));
    assert_eq!(c.response().status, 413);
    c.expect_close();
}

#[test]
fn declared_body_over_limit_is_answered_even_while_the_body_streams_in() {
    // A client that sends its oversized body anyway must still read the
    // 413, not a reset caused by its unread bytes.
    let srv = server();
    let mut c = srv.connect();
    let wire = wire("2-mib-body-over-the-limit-streamed");
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        // Fails once the server stops taking the body; that is expected.
        let _ = writer.write_all(&wire);
    });
    let r = c.try_response(false).expect("the 413 while the body is still being sent");
    assert_eq!(r.status, 413);
    assert!(r.says_close());
    match c.wait_close(Duration::from_secs(10)) {
        CloseOutcome::Closed { extra } => {
            assert!(extra.is_empty(), "bytes after the 413: {}", show(&extra))
        }
        CloseOutcome::Open { .. } => panic!("connection still open 10 s after a 413"),
    }
    sender.join().unwrap();
}

#[test]
fn expect_continue_over_limit_gets_413_and_no_100() {
    let srv = server();
    let mut c = srv.connect();
    c.send(&wire("expect-100-continue-over-the-limit"));
    let r = c.response();
    assert_eq!(r.status, 413, "no 100 Continue for a body that will be refused");
    c.expect_close();
}

#[test]
fn body_at_the_limit_is_served() {
    let srv = server();
    let mut c = srv.connect();
    let body = vec![b'z'; MAX_BODY];
    let r = c.post("/echo", "text/plain", &body);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
}

#[test]
fn chunked_body_over_limit_is_413() {
    let srv = server();
    let mut c = srv.connect();
    // 1200 bytes in 100-byte chunks.
    let _ = c.try_send(&wire("chunked-body-over-the-limit"));
    let r = c.try_response(false).expect("a 413 for an oversized chunked body");
    assert_eq!(r.status, 413);
    c.expect_close();

    // One chunk declared larger than the limit, data not sent.
    let mut c = srv.connect();
    c.send(&wire("one-chunk-over-the-limit"));
    let r = c.try_response(false).expect("a 413 for a chunk larger than the limit");
    assert_eq!(r.status, 413);
    c.expect_close();
}

#[test]
fn rejected_client_does_not_disturb_a_served_one() {
    let mut srv = server();
    let mut good = srv.connect();
    assert_eq!(good.get("/").status, 200);
    for _ in 0..20 {
        let mut bad = Client::connect(srv.addr);
        let _ = bad.try_send(format!("GET /{} HTTP/1.1\r\n\r\n", "x".repeat(10_000)).as_bytes());
        let _ = bad.wait_close(Duration::from_secs(5));
        assert_eq!(good.get("/").status, 200);
    }
    srv.assert_healthy();
}
