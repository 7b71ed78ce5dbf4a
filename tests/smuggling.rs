//! RFC 9112 hardening over real sockets: every request-smuggling vector is
//! answered with its error status, the connection closes, and nothing sent
//! after the bad request is ever answered.
//!
//! Each vector is followed, in the same write, by a well-formed `GET` that
//! would be answered if the server had guessed a framing and carried on.

mod common;

use common::{show, CloseOutcome, Server, IO_TIMEOUT};

const FOLLOWER: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";

/// Runs every `(name, request, status)` case on its own connection and
/// fails once, listing every case that went wrong.
fn check(cases: &[(&str, &[u8], u16)]) {
    let mut srv = Server::start(&[]);
    let mut failures = Vec::new();
    for &(name, wire, want) in cases {
        if let Err(why) = one(&srv, wire, want) {
            failures.push(format!("{name}: {why}\n    request: {}", show(wire)));
        }
    }
    srv.assert_healthy();
    assert!(failures.is_empty(), "{} of {} vectors failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

fn one(srv: &Server, wire: &[u8], want: u16) -> Result<(), String> {
    let mut c = srv.connect();
    let mut bytes = wire.to_vec();
    bytes.extend_from_slice(FOLLOWER);
    // The server may answer and close before it has read everything.
    let _ = c.try_send(&bytes);
    let r = c.try_response(false).map_err(|e| format!("expected {want}, got no response: {e}"))?;
    if r.status != want {
        return Err(format!("expected {want}, got {} {} (body {})", r.status, r.reason, show(&r.body)));
    }
    if !r.says_close() {
        return Err(format!("{want} without Connection: close ({:?})", r.headers));
    }
    match c.wait_close(IO_TIMEOUT) {
        CloseOutcome::Closed { extra } if extra.is_empty() => Ok(()),
        CloseOutcome::Closed { extra } => Err(format!("bytes after the {want}: {}", show(&extra))),
        CloseOutcome::Open { extra } => {
            Err(format!("connection still open {IO_TIMEOUT:?} after the {want} (then got {})", show(&extra)))
        }
    }
}

#[test]
fn content_length_and_transfer_encoding_together() {
    check(&[
        (
            "CL then TE",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
            400,
        ),
        (
            "TE then CL",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
            400,
        ),
        ("CL 0 and TE", b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ]);
}

#[test]
fn several_or_invalid_content_lengths() {
    check(&[
        (
            "two different",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
            400,
        ),
        ("two equal", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde", 400),
        ("list", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nabcde", 400),
        ("plus sign", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nabcde", 400),
        ("negative", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
        ("hex", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nabcde", 400),
        ("hex digits", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: a\r\n\r\nabcdeabcde", 400),
        ("empty", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: \r\n\r\n", 400),
        ("inner space", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1 0\r\n\r\n0123456789", 400),
        ("decimal point", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5.0\r\n\r\nabcde", 400),
        ("overflow u64", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551621\r\n\r\nabcde", 400),
        ("overflow long", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999999\r\n\r\n", 400),
    ]);
}

#[test]
fn transfer_encoding_not_ending_in_chunked() {
    check(&[
        ("chunked then gzip", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
        ("gzip alone", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n", 400),
        ("chunked twice", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
        (
            "chunked then gzip in two fields",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
            400,
        ),
        ("empty coding", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", 400),
        ("in HTTP/1.0", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("unknown coding", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: foo\r\n\r\n0\r\n\r\n", 501),
        ("unknown then chunked", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n", 501),
        ("xchunked", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501),
        (
            "chunked plus an unknown field",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
            400,
        ),
    ]);
}

#[test]
fn invalid_chunk_sizes() {
    const H: &str = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not hex", format!("{H}zz\r\nhello\r\n0\r\n\r\n").into_bytes()),
        ("negative", format!("{H}-5\r\nhello\r\n0\r\n\r\n").into_bytes()),
        ("plus sign", format!("{H}+5\r\nhello\r\n0\r\n\r\n").into_bytes()),
        ("0x prefix", format!("{H}0x5\r\nhello\r\n0\r\n\r\n").into_bytes()),
        ("empty size", format!("{H}\r\nhello\r\n0\r\n\r\n").into_bytes()),
        ("overflow", format!("{H}ffffffffffffffffff\r\nhello\r\n0\r\n\r\n").into_bytes()),
        ("overflow to small", format!("{H}10000000000000005\r\nhello\r\n0\r\n\r\n").into_bytes()),
        ("bare LF after size", format!("{H}5\nhello\r\n0\r\n\r\n").into_bytes()),
        ("data longer than size", format!("{H}5\r\nhelloXX\r\n0\r\n\r\n").into_bytes()),
        ("missing CRLF after data", format!("{H}5\r\nhello0\r\n\r\n").into_bytes()),
        ("control byte in extension", format!("{H}5;a\x01b\r\nhello\r\n0\r\n\r\n").into_bytes()),
        ("obs-fold in trailer", format!("{H}0\r\nX: 1\r\n folded\r\n\r\n").into_bytes()),
    ];
    let cases: Vec<(&str, &[u8], u16)> = cases.iter().map(|(n, w)| (*n, w.as_slice(), 400)).collect();
    check(&cases);
}

#[test]
fn header_syntax_vectors() {
    check(&[
        ("space before colon", b"GET / HTTP/1.1\r\nHost: t\r\nX-A : b\r\n\r\n", 400),
        (
            "space before colon of TE",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc",
            400,
        ),
        ("tab before colon", b"GET / HTTP/1.1\r\nHost: t\r\nX-A\t: b\r\n\r\n", 400),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n", 400),
        ("obs-fold with tab", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tb\r\n\r\n", 400),
        ("obs-fold of Content-Length", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n 3\r\n\r\nabc", 400),
        ("NUL in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n", 400),
        ("SOH in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n", 400),
        ("US in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x1fb\r\n\r\n", 400),
        ("bare CR in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n", 400),
        ("DEL in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n", 400),
        ("empty name", b"GET / HTTP/1.1\r\nHost: t\r\n: b\r\n\r\n", 400),
        ("no colon", b"GET / HTTP/1.1\r\nHost: t\r\nX-A b\r\n\r\n", 400),
    ]);
}

#[test]
fn host_is_required_in_http11() {
    check(&[
        ("no Host", b"GET / HTTP/1.1\r\n\r\n", 400),
        ("no Host, other fields", b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400),
        ("two Host fields", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ]);
}

#[test]
fn versions_other_than_1x_get_505() {
    check(&[
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        ("HTTP/3.0", b"GET / HTTP/3.0\r\nHost: t\r\n\r\n", 505),
        ("HTTP/0.9 line", b"GET / HTTP/0.9\r\nHost: t\r\n\r\n", 505),
    ]);
}

#[test]
fn garbage_gets_400() {
    check(&[
        ("binary", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
        ("words", b"hello there\r\n\r\n", 400),
        ("no version", b"GET /\r\nHost: t\r\n\r\n", 400),
        ("lowercase version", b"GET / http/1.1\r\nHost: t\r\n\r\n", 400),
        ("space in target", b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("method with slash", b"GE/T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ]);
}
