//! RFC 9112 hardening over real sockets: every request-smuggling vector is
//! answered with its error status, the connection closes, and nothing sent
//! after the bad request is ever answered.
//!
//! The vectors are the corpus's (`forkring_testkit::corpus::smuggling`),
//! one test per group. Each is followed, in the same write, by a
//! well-formed `GET` that would be answered if the server had guessed a
//! framing and carried on.

mod common;

use common::Server;
use forkring_testkit::client::IO_TIMEOUT;
use forkring_testkit::corpus::{self, Expect, Group};
use forkring_testkit::http::{show, CloseOutcome};

/// Runs every case of `group` on its own connection and fails once,
/// listing every case that went wrong.
fn check(group: Group) {
    let cases = corpus::group(group);
    assert!(!cases.is_empty(), "no {group:?} vectors in the corpus");
    let mut srv = Server::start(&[]);
    let mut failures = Vec::new();
    for case in &cases {
        let Expect::Status(want) = case.expect else {
            panic!("{}: a fixed vector expects one status, not {:?}", case.name, case.expect)
        };
        if let Err(why) = one(&srv, &case.wire, want) {
            failures.push(format!("{}: {why}\n    request: {}", case.name, show(&case.wire)));
        }
    }
    srv.assert_healthy();
    assert!(failures.is_empty(), "{} of {} vectors failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// The groups the tests below send.
const TESTED: [Group; 8] = [
    Group::ClAndTe,
    Group::ContentLength,
    Group::TransferEncoding,
    Group::Chunks,
    Group::HeaderSyntax,
    Group::Host,
    Group::Version,
    Group::Garbage,
];

fn one(srv: &Server, wire: &[u8], want: u16) -> Result<(), String> {
    let mut c = srv.connect();
    // The server may answer and close before it has read everything.
    let _ = c.try_send(wire);
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
fn content_length_and_transfer_encoding_together_are_refused_and_closed() {
    check(Group::ClAndTe);
}

#[test]
fn several_or_invalid_content_lengths_are_refused_and_closed() {
    check(Group::ContentLength);
}

#[test]
fn transfer_encoding_not_ending_in_chunked_is_refused_and_closed() {
    check(Group::TransferEncoding);
}

#[test]
fn invalid_chunk_sizes_are_refused_and_closed() {
    check(Group::Chunks);
}

#[test]
fn malformed_header_syntax_is_refused_and_closed() {
    check(Group::HeaderSyntax);
}

#[test]
fn host_is_required_once_and_valid() {
    check(Group::Host);
}

#[test]
fn versions_other_than_1x_get_505() {
    check(Group::Version);
}

#[test]
fn garbage_gets_400() {
    check(Group::Garbage);
}

#[test]
fn every_smuggling_vector_is_sent() {
    for case in corpus::smuggling() {
        assert!(TESTED.contains(&case.group), "{}: group {:?} has no test here", case.name, case.group);
    }
}
