//! The response-stream oracle: what must hold for the output of one
//! connection of the sans-io HTTP core, whatever bytes it was fed and
//! however they were cut into reads.
//!
//! - the output is a well-framed stream of HTTP/1.1 responses: a status
//!   line, `Name: value` fields, one `Date` on every final response, one
//!   `Content-Length` (none on 1xx, 204, 304), never chunked;
//! - every handler call gets exactly one response, in call order; a
//!   response the core makes itself (an error) comes last, says
//!   `Connection: close`, and the connection is closing;
//! - nothing follows a `Connection: close` response;
//! - the handler is never called more often than the input holds head
//!   terminators (`\n\n` or `\n\r\n`), so a body is never read as heads.
//!
//! The handler that drives the core marks each response with the header
//! [`CALL_HEADER`] (its call number, from 1) and, for a HEAD request,
//! [`HEAD_HEADER`] (its body is not sent); that is how the oracle tells the
//! handler's responses from the core's.
//!
//! Where it stops: it judges bytes and counts. Feeding a
//! `forkring::http::Conn` and recording the handler's calls is done by the
//! fuzz target and the property tests, which own the handler; comparing two
//! runs' calls is theirs too.

/// Header carrying the handler call number a response answers.
pub const CALL_HEADER: &str = "X-Call";
/// Header marking the answer to a HEAD request (its body is not sent).
pub const HEAD_HEADER: &str = "X-Head";

/// One handler call, as the handler saw the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Request method.
    pub method: String,
    /// Request target, as sent.
    pub target: String,
    /// Header fields in order, values as bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The de-framed body.
    pub body: Vec<u8>,
}

/// What one connection did with some input.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Every byte of output, whether consumed along the way or left over.
    pub out: Vec<u8>,
    /// Whether the connection was closing once the input was fed.
    pub closing: bool,
    /// The handler calls, in order.
    pub calls: Vec<Call>,
}

/// One response, as far as the oracle cares.
#[derive(Clone, Copy, Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// The [`CALL_HEADER`] number: this response came from the handler.
    pub call: Option<usize>,
    /// Whether it said `Connection: close`.
    pub close: bool,
}

/// Splits the output into responses, checking each one's framing; panics
/// on anything malformed.
pub fn parse_output(mut out: &[u8]) -> Vec<Resp> {
    let mut resps = Vec::new();
    while !out.is_empty() {
        let end = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("unterminated response head in {:?}", String::from_utf8_lossy(out)));
        let head = std::str::from_utf8(&out[..end]).expect("response head is UTF-8");
        let mut lines = head.split("\r\n");
        let line = lines.next().unwrap_or_default();
        assert!(
            line.starts_with("HTTP/1.1 ") && line.len() >= 13 && line.as_bytes()[12] == b' ',
            "status line {line:?}"
        );
        let status: u16 = line[9..12].parse().expect("numeric status");
        let mut length = None;
        let mut resp = Resp { status, call: None, close: false };
        let mut head_only = false;
        let mut dates = 0;
        for l in lines {
            let (name, value) = l.split_once(": ").unwrap_or_else(|| panic!("header line {l:?}"));
            assert!(!name.is_empty() && !name.contains([' ', '\t']), "header name {name:?}");
            assert!(!value.contains(['\r', '\n', '\0']), "header value {value:?}");
            match name {
                "Content-Length" => {
                    assert!(length.is_none(), "two Content-Length");
                    length = Some(value.parse::<usize>().expect("numeric Content-Length"));
                }
                "Date" => dates += 1,
                CALL_HEADER => resp.call = Some(value.parse().expect("numeric call number")),
                HEAD_HEADER => head_only = true,
                "Connection" => {
                    assert!(value == "close" || value == "keep-alive", "Connection: {value}");
                    resp.close = value == "close";
                }
                "Transfer-Encoding" => panic!("responses are never chunked"),
                _ => {}
            }
        }
        out = &out[end + 4..];
        let bodyless = status < 200 || status == 204 || status == 304;
        if status >= 200 {
            assert_eq!(dates, 1, "one Date header");
        }
        if bodyless {
            assert_eq!(length, None, "{status} with Content-Length");
        } else {
            let len = length.unwrap_or_else(|| panic!("{status} without Content-Length"));
            if !head_only {
                assert!(out.len() >= len, "body cut short");
                out = &out[len..];
            }
        }
        resps.push(resp);
    }
    resps
}

/// Positions where a head may end (`\n\n` or `\n\r\n`): no request can reach
/// the handler without one, and no two requests share one.
pub fn head_ends(input: &[u8]) -> usize {
    (0..input.len())
        .filter(|&i| input[i] == b'\n' && (input[i + 1..].starts_with(b"\n") || input[i + 1..].starts_with(b"\r\n")))
        .count()
}

/// Asserts the invariants every run holds, whatever the input.
pub fn check_run(run: &Run, input: &[u8]) {
    let resps = parse_output(&run.out);
    let mut next_call = 1;
    for (i, r) in resps.iter().enumerate() {
        match r.call {
            Some(n) => {
                // Handler responses come in call order, one per call.
                assert_eq!(n, next_call, "response {i} answers call {n}, expected {next_call}");
                next_call += 1;
            }
            None if r.status == 100 => {}
            None => {
                // An error from the core ends the connection.
                assert!(r.status >= 400, "core status {}", r.status);
                assert!(r.close, "error response without Connection: close");
                assert_eq!(i, resps.len() - 1, "output after an error response");
                assert!(run.closing, "error response but the connection reads on");
            }
        }
        if r.close {
            assert_eq!(i, resps.len() - 1, "output after Connection: close");
            assert!(run.closing, "Connection: close but the connection reads on");
        }
    }
    assert_eq!(next_call - 1, run.calls.len(), "every call has one response");
    assert!(run.calls.len() <= head_ends(input), "more handler calls than head terminators");
}

/// The output without interim `100 Continue` responses, whose presence
/// depends on whether the body arrived with its head; and with the `Date`
/// values masked. Two runs of the same requests compare equal this way.
pub fn comparable(out: &[u8]) -> Vec<u8> {
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut res = Vec::with_capacity(out.len());
    let mut i = 0;
    while i < out.len() {
        if out[i..].starts_with(CONTINUE) {
            i += CONTINUE.len();
        } else if out[i..].starts_with(b"\r\nDate: ") && out.len() >= i + 8 + 29 {
            res.extend_from_slice(b"\r\nDate: -");
            i += 8 + 29;
        } else {
            res.push(out[i]);
            i += 1;
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::catch_unwind;

    const DATE: &str = "Date: Thu, 01 Jan 1970 00:00:00 GMT";

    fn call() -> Call {
        Call { method: "GET".into(), target: "/".into(), headers: Vec::new(), body: Vec::new() }
    }

    fn ok(n: usize, body: &str) -> String {
        format!("HTTP/1.1 200 OK\r\n{DATE}\r\n{CALL_HEADER}: {n}\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    }

    const INPUT: &[u8] = b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n";

    #[test]
    fn a_good_stream_passes() {
        let out = format!("{}{}", ok(1, "a"), ok(2, "bc"));
        let run = Run { out: out.into_bytes(), closing: false, calls: vec![call(), call()] };
        check_run(&run, INPUT);
        let err = format!("HTTP/1.1 400 Bad Request\r\n{DATE}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        let run = Run { out: format!("{}{err}", ok(1, "")).into_bytes(), closing: true, calls: vec![call()] };
        check_run(&run, INPUT);
        assert_eq!(comparable(run.out.as_slice()).windows(8).filter(|w| w == b"Date: -\r").count(), 2);
    }

    #[test]
    fn bad_streams_fail() {
        let bad = |out: String, closing: bool, calls: usize| {
            let run = Run { out: out.into_bytes(), closing, calls: vec![call(); calls] };
            catch_unwind(|| check_run(&run, INPUT)).is_err()
        };
        assert!(bad(format!("{}{}", ok(2, ""), ok(1, "")), false, 2), "out of order");
        assert!(bad(ok(1, ""), false, 2), "a call without a response");
        assert!(bad(format!("{}{}{}", ok(1, ""), ok(2, ""), ok(3, "")), false, 3), "more calls than heads");
        assert!(bad(ok(1, "").replace(DATE, "X: y"), false, 1), "no Date");
        let whole = ok(1, "abc");
        assert!(bad(whole[..whole.len() - 2].to_owned(), false, 1), "body cut short");
        let err = format!("HTTP/1.1 400 Bad Request\r\n{DATE}\r\nContent-Length: 0\r\n\r\n");
        assert!(bad(err.clone(), true, 0), "error without close");
        let err = err.replace("Content-Length", "Connection: close\r\nContent-Length");
        assert!(bad(err.clone(), false, 0), "error but reads on");
        assert!(bad(format!("{err}{}", ok(1, "")), true, 1), "output after an error");
        assert!(bad(ok(1, "").replace("Content-Length: 0", "Transfer-Encoding: chunked"), false, 1), "chunked");
    }

    #[test]
    fn head_terminators_are_counted() {
        assert_eq!(head_ends(b"a\n\nb\n\r\nc\r\n"), 2);
        assert_eq!(head_ends(b""), 0);
    }
}
