//! Serving over real loopback sockets: keep-alive, pipelining, requests
//! split at every byte, large bodies, HEAD, `Expect: 100-continue`, chunked
//! request bodies, IPv6.

mod common;

use std::time::Duration;

use common::Server;
use forkring_testkit::bytes::{first_difference, pattern};
use forkring_testkit::client::Client;
use forkring_testkit::http::{show, CloseOutcome};
use forkring_testkit::need::{require, Need};
use forkring_testkit::server::HELLO;

#[test]
fn get_root_says_hello() {
    let mut srv = Server::start(&[]);
    let mut c = srv.connect();
    let r = c.get("/");
    assert_eq!(r.version, "HTTP/1.1");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, HELLO);
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert_eq!(r.header("Content-Length"), Some("13"));
    assert_eq!(r.count("Content-Length"), 1);
    let date = r.header("Date").expect("a Date header");
    assert!(date.ends_with(" GMT") && date.len() == 29, "Date {date:?} is not an IMF-fixdate");
    assert!(!r.says_close(), "a 1.1 response without Connection: close must keep the connection");
    let r = c.get("/?name=value&x=1");
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO), "the query is not part of the path");
    srv.assert_healthy();
}

#[test]
fn unknown_path_is_404_and_connection_stays_usable() {
    let srv = Server::start(&[]);
    let mut c = srv.connect();
    let r = c.get("/nope");
    assert_eq!(r.status, 404);
    let r = c.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, HELLO);
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let mut srv = Server::start(&[]);
    let mut c = srv.connect();
    for i in 0..200 {
        if i % 2 == 0 {
            let r = c.get("/");
            assert_eq!((r.status, r.body.as_slice()), (200, HELLO), "request {i}");
        } else {
            let body = format!("request number {i}");
            let r = c.post("/echo", "text/x-test", body.as_bytes());
            assert_eq!(r.status, 200, "request {i}");
            assert_eq!(r.body, body.as_bytes(), "request {i}");
            assert_eq!(r.header("Content-Type"), Some("text/x-test"), "request {i}");
        }
    }
    srv.assert_healthy();
}

#[test]
fn connection_close_is_honoured() {
    let srv = Server::start(&[]);
    let mut c = srv.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(r.says_close(), "response to Connection: close must say close: {:?}", r.headers);
    c.expect_close();

    // Requests pipelined behind a `Connection: close` are not answered.
    let mut c = srv.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /second HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.says_close()), (200, true));
    c.expect_close();
}

#[test]
fn half_closed_client_still_gets_its_answers() {
    let srv = Server::start(&[]);
    let mut c = srv.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody");
    c.send(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
    // The client is done sending; it still wants every answer.
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"body"[..]));
    let r = c.response();
    assert_eq!(r.status, 404);
    c.expect_close();
}

#[test]
fn http10_closes_unless_keep_alive_is_asked() {
    let srv = Server::start(&[]);

    let mut c = srv.connect();
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
    c.expect_close();

    let mut c = srv.connect();
    for i in 0..3 {
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.response();
        assert_eq!(r.status, 200, "request {i}");
        assert!(
            r.header("Connection").is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")),
            "1.0 keep-alive response must say keep-alive: {:?}",
            r.headers
        );
    }
}

/// 32 requests of mixed kinds, each with a distinguishable answer.
fn pipeline_batch(n: usize) -> (Vec<u8>, Vec<(u16, Vec<u8>)>) {
    let mut wire = Vec::new();
    let mut expect = Vec::new();
    for i in 0..n {
        match i % 3 {
            0 => {
                wire.extend_from_slice(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
                expect.push((200, HELLO.to_vec()));
            }
            1 => {
                let body = format!("pipelined body {i}");
                wire.extend_from_slice(
                    format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                        .as_bytes(),
                );
                expect.push((200, body.into_bytes()));
            }
            _ => {
                wire.extend_from_slice(format!("GET /missing/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                expect.push((404, b"Not Found".to_vec()));
            }
        }
    }
    (wire, expect)
}

#[test]
fn requests_pipelined_32_deep_in_one_write_are_answered_in_order() {
    let mut srv = Server::start(&[]);
    let mut c = srv.connect();
    let (wire, expect) = pipeline_batch(32);
    for round in 0..3 {
        c.send(&wire);
        for (i, (status, body)) in expect.iter().enumerate() {
            let r = c.response();
            assert_eq!(r.status, *status, "round {round}, response {i}");
            assert_eq!(&r.body, body, "round {round}, response {i}");
        }
    }
    // Nothing beyond the 96 responses.
    match c.wait_close(Duration::from_millis(200)) {
        CloseOutcome::Open { extra } => {
            assert!(extra.is_empty(), "extra bytes: {}", show(&extra))
        }
        other => panic!("connection closed after pipelining: {other:?}"),
    }
    srv.assert_healthy();
}

#[test]
fn pipelined_requests_split_at_odd_boundaries_are_answered_in_order() {
    let srv = Server::start(&[]);
    let mut c = srv.connect();
    let (wire, expect) = pipeline_batch(32);
    // Writes of 1..=13 bytes with pauses, so the server sees requests
    // split everywhere: inside the request line, headers, the blank line,
    // and bodies.
    let mut pos = 0;
    let mut step = 1;
    while pos < wire.len() {
        let end = (pos + step).min(wire.len());
        c.send(&wire[pos..end]);
        pos = end;
        step = step % 13 + 1;
        if pos % 7 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for (i, (status, body)) in expect.iter().enumerate() {
        let r = c.response();
        assert_eq!((r.status, &r.body), (*status, body), "response {i}");
    }
}

#[test]
fn a_request_sent_byte_by_byte_is_answered() {
    let srv = Server::start(&[]);
    let mut c = srv.connect();
    c.send_bytewise(b"GET / HTTP/1.1\r\nHost: bytewise\r\nUser-Agent: test\r\n\r\n", Duration::from_millis(2));
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));

    let body = b"one byte at a time";
    let req = format!(
        "POST /echo HTTP/1.1\r\nHost: bytewise\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut wire = req.into_bytes();
    wire.extend_from_slice(body);
    c.send_bytewise(&wire, Duration::from_millis(1));
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, &body[..]));

    let wire = b"POST /echo HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n";
    c.send_bytewise(wire, Duration::from_millis(1));
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
}

#[test]
fn one_mebibyte_echoes_back_intact() {
    let mut srv = Server::start(&[]);
    let mut c = srv.connect();
    let body = pattern(1 << 20, 0x5eed);
    for round in 0..2 {
        let r = c.post("/echo", "application/octet-stream", &body);
        assert_eq!(r.status, 200, "round {round}");
        assert_eq!(r.body.len(), body.len(), "round {round}: echoed length");
        assert_eq!(first_difference(&r.body, &body), None, "round {round}: echoed content differs");
        assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    }
    srv.assert_healthy();
}

#[test]
fn echo_without_content_type_gets_octet_stream() {
    let srv = Server::start(&[]);
    let mut c = srv.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
}

#[test]
fn head_gets_headers_without_body() {
    let srv = Server::start(&[]);
    let mut c = srv.connect();
    // A HEAD followed by a GET in the same write: body bytes sent for the
    // HEAD would show up as garbage in front of the GET's response.
    c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("13"), "HEAD carries the GET's length");
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO), "the GET after a HEAD");
}

#[test]
fn expect_100_continue_waits_for_the_client() {
    let srv = Server::start(&[]);
    let mut c = srv.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.response();
    assert_eq!(interim.status, 100, "interim response before the body is sent");
    c.send(b"hello world");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello world"[..]));

    // A client that does not wait for the 100 gets both answers, in order.
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi");
    let first = c.response();
    let (interim, r) = if first.status == 100 { (Some(first), c.response()) } else { (None, first) };
    if let Some(i) = interim {
        assert_eq!(i.status, 100);
    }
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
    assert_eq!(c.get("/").status, 200, "connection usable afterwards");
}

#[test]
fn a_chunked_body_with_extensions_and_trailers_is_decoded() {
    let srv = Server::start(&[]);
    let mut c = srv.connect();
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=value\r\nhello\r\n\
          1\r\n \r\n\
          A;a=1;b=\"q\"\r\n0123456789\r\n\
          0\r\nX-Trailer: yes\r\nOther: 1\r\n\r\n",
    );
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello 0123456789");
    assert_eq!(r.header("Content-Length"), Some("16"));
    assert!(r.header("Transfer-Encoding").is_none());

    // A larger chunked body, many chunks, followed by another request.
    let data = pattern(300_000, 7);
    let mut wire = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in data.chunks(4093) {
        wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        wire.extend_from_slice(piece);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    c.send(&wire);
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(first_difference(&r.body, &data), None, "chunked echo differs");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
}

#[test]
fn a_body_is_never_parsed_as_a_request() {
    let srv = Server::start(&[]);
    let inner = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";

    // Content-Length body that looks like a request.
    let mut c = srv.connect();
    let mut wire = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", inner.len()).into_bytes();
    wire.extend_from_slice(inner);
    wire.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
    c.send(&wire);
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, &inner[..]));
    let r = c.response();
    assert_eq!(r.status, 404, "the request after the body");
    match c.wait_close(Duration::from_millis(300)) {
        CloseOutcome::Open { extra } => {
            assert!(extra.is_empty(), "a third response: {}", show(&extra))
        }
        other => panic!("unexpected close: {other:?}"),
    }

    // The same inside a chunked body.
    let mut c = srv.connect();
    let mut wire = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    wire.extend_from_slice(format!("{:x}\r\n", inner.len()).as_bytes());
    wire.extend_from_slice(inner);
    wire.extend_from_slice(b"\r\n0\r\n\r\n");
    c.send(&wire);
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, &inner[..]));
    match c.wait_close(Duration::from_millis(300)) {
        CloseOutcome::Open { extra } => {
            assert!(extra.is_empty(), "a second response: {}", show(&extra))
        }
        other => panic!("unexpected close: {other:?}"),
    }
}

#[test]
fn empty_lines_before_a_request_are_ignored() {
    let srv = Server::start(&[]);
    let mut c = srv.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert_eq!(c.response().status, 200);
}

#[test]
fn ipv6_loopback_is_served() {
    require(Need::Ipv6Loopback);
    let srv = Server::start_on("[::1]:0", &[]);
    assert!(srv.addr.is_ipv6(), "server reported {}", srv.addr);
    let mut c = Client::connect(srv.addr);
    let r = c.get("/");
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
    let r = c.post("/echo", "text/plain", b"over ipv6");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"over ipv6"[..]));
}
