//! The sans-io HTTP/1.1 core driven with byte slices: a table of requests
//! with the exact status lines they must get and whether the connection
//! closes, each also fed split at every byte boundary and byte by byte; then
//! the behaviours a table row cannot express (100-continue, HEAD framing,
//! handler failures, accessors, timers).

use std::time::Duration;

use forkring::internals::{Conn, WorkerState};
use forkring::{Limits, Request, Response, Timeouts, Version};

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// Small limits so that every limit is reachable with short inputs.
const LIMITS: Limits = Limits::DEFAULT.with_max_head(1024).with_max_headers(16).with_max_target(128).with_max_body(64);

/// One handler call, as the handler saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    method: String,
    target: String,
    body: Vec<u8>,
}

/// Routes on the path; the default answer echoes the request-target.
#[derive(Default)]
struct App {
    calls: Vec<Call>,
}

impl forkring::Handler for App {
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) {
        self.calls.push(Call {
            method: req.method().to_owned(),
            target: req.target().to_owned(),
            body: req.body().to_vec(),
        });
        if req.method() == "HEAD" {
            // Lets the response parser know that no body follows.
            res.header("X-Head", "1");
        }
        match req.path() {
            "/panic" => {
                quiet_deliberate_panics();
                panic!("{}", DELIBERATE_PANIC)
            }
            "/bad-header-value" => {
                res.header("X-Bad", "a\r\nInjected: 1");
            }
            "/bad-header-name" => {
                res.header("Bad Name", "v");
            }
            "/reserved" => {
                res.header("Content-Length", "3");
            }
            "/204" => {
                res.status(204).body("must not be sent");
            }
            "/304" => {
                res.status(304).body("must not be sent");
            }
            "/close" => {
                res.header("Connection", "close");
            }
            _ => {}
        }
        if !matches!(req.path(), "/204" | "/304") {
            res.header("Content-Type", "text/plain");
            res.body(req.target());
        }
    }
}

/// The message of the handler's deliberate panic.
const DELIBERATE_PANIC: &str = "handler panics on purpose";

/// Keeps the deliberate handler panic out of the test output; every other
/// panic still reaches the default hook.
fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info.payload().downcast_ref::<String>().map(String::as_str);
            if msg != Some(DELIBERATE_PANIC) {
                default(info);
            }
        }));
    });
}

/// What a connection produced from some input.
#[derive(Debug)]
struct Run {
    out: Vec<u8>,
    closing: bool,
    calls: Vec<Call>,
}

fn shared(limits: Limits) -> WorkerState {
    let mut sh = WorkerState::new(limits, Timeouts::default());
    sh.tick();
    sh
}

/// Feeds `parts` to a fresh connection, one `on_read` each.
fn feed_parts(parts: &[&[u8]], limits: Limits) -> Run {
    let mut sh = shared(limits);
    let mut conn = Conn::new(&sh);
    let mut app = App::default();
    for part in parts {
        conn.on_read(part, &mut sh, &mut app);
    }
    let run = Run { out: conn.output().to_vec(), closing: conn.is_closing(), calls: app.calls };
    conn.release(&mut sh);
    run
}

fn feed(input: &[u8], limits: Limits) -> Run {
    feed_parts(&[input], limits)
}

fn feed_bytewise(input: &[u8], limits: Limits) -> Run {
    let parts: Vec<&[u8]> = input.chunks(1).collect();
    feed_parts(&parts, limits)
}

/// The output with every `Date` value replaced, so that runs straddling a
/// second compare equal.
fn normalized(out: &[u8]) -> Vec<u8> {
    let mut res = Vec::with_capacity(out.len());
    let mut i = 0;
    while i < out.len() {
        if out[i..].starts_with(b"\r\nDate: ") && out.len() >= i + 8 + 29 {
            res.extend_from_slice(b"\r\nDate: <date>");
            i += 8 + 29;
        } else {
            res.push(out[i]);
            i += 1;
        }
    }
    res
}

/// One parsed response.
#[derive(Debug)]
struct Resp {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn status(&self) -> u16 {
        self.status_line[9..12].parse().unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        let mut found = self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = found.next().map(|(_, v)| v.as_str());
        assert!(found.next().is_none(), "header {name} repeated in {self:?}");
        first
    }
}

/// Whether `v` is an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn is_imf_fixdate(v: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let b = v.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 29
        && DAYS.contains(&&v[0..3])
        && &v[3..5] == ", "
        && digits(5..7)
        && b[7] == b' '
        && MONTHS.contains(&&v[8..11])
        && b[11] == b' '
        && digits(12..16)
        && b[16] == b' '
        && digits(17..19)
        && b[19] == b':'
        && digits(20..22)
        && b[22] == b':'
        && digits(23..25)
        && &v[25..] == " GMT"
        && v[5..7].parse::<u32>().is_ok_and(|d| (1..=31).contains(&d))
        && v[17..19].parse::<u32>().is_ok_and(|h| h < 24)
        && v[20..22].parse::<u32>().is_ok_and(|m| m < 60)
        && v[23..25].parse::<u32>().is_ok_and(|s| s < 61)
}

/// Splits a response stream, checking the framing of every response on the
/// way: status line form, one `Date` in IMF-fixdate form, `Content-Length`
/// exactly when a body may follow, no `Transfer-Encoding`. A response that
/// carries `X-Head` answers a HEAD request and has no body.
fn parse_responses(mut out: &[u8]) -> Vec<Resp> {
    let mut resps = Vec::new();
    while !out.is_empty() {
        let head_end = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("unterminated response head: {:?}", String::from_utf8_lossy(out)));
        let head = std::str::from_utf8(&out[..head_end]).expect("response head is UTF-8");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap().to_owned();
        let sb = status_line.as_bytes();
        assert!(
            status_line.starts_with("HTTP/1.1 ")
                && sb.len() >= 13
                && sb[9..12].iter().all(u8::is_ascii_digit)
                && sb[12] == b' ',
            "bad status line {status_line:?}"
        );
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap_or_else(|| panic!("bad header line {l:?}"));
                assert!(!n.is_empty() && !n.contains(' '), "bad header name {n:?}");
                (n.to_owned(), v.to_owned())
            })
            .collect();
        let mut resp = Resp { status_line, headers, body: Vec::new() };
        let status = resp.status();
        // RFC 9110 §6.6.1: a final response carries the date; 1xx need not.
        if status >= 200 {
            let date = resp.header("Date").unwrap_or_else(|| panic!("no Date in {resp:?}"));
            assert!(is_imf_fixdate(date), "Date {date:?} is not an IMF-fixdate");
        }
        assert!(resp.header("Transfer-Encoding").is_none());
        let bodyless = status < 200 || status == 204 || status == 304;
        let len = resp.header("Content-Length").map(|v| v.parse::<usize>().expect("Content-Length is a number"));
        if bodyless {
            assert_eq!(len, None, "{status} must not carry Content-Length");
        } else {
            assert!(len.is_some(), "no Content-Length in {resp:?}");
        }
        out = &out[head_end + 4..];
        if !bodyless && resp.header("X-Head").is_none() {
            let len = len.unwrap();
            assert!(out.len() >= len, "body shorter than its Content-Length in {resp:?}");
            resp.body = out[..len].to_vec();
            out = &out[len..];
        }
        resps.push(resp);
    }
    resps
}

fn status_lines(out: &[u8]) -> Vec<String> {
    parse_responses(out).into_iter().map(|r| r.status_line).collect()
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

const OK: &str = "HTTP/1.1 200 OK";
const CONTINUE: &str = "HTTP/1.1 100 Continue";
const NO_CONTENT: &str = "HTTP/1.1 204 No Content";
const NOT_MODIFIED: &str = "HTTP/1.1 304 Not Modified";
const BAD: &str = "HTTP/1.1 400 Bad Request";
const TOO_LARGE: &str = "HTTP/1.1 413 Content Too Large";
const URI_TOO_LONG: &str = "HTTP/1.1 414 URI Too Long";
const EXPECTATION: &str = "HTTP/1.1 417 Expectation Failed";
const FIELDS_TOO_LARGE: &str = "HTTP/1.1 431 Request Header Fields Too Large";
const SERVER_ERROR: &str = "HTTP/1.1 500 Internal Server Error";
const NOT_IMPLEMENTED: &str = "HTTP/1.1 501 Not Implemented";
const BAD_VERSION: &str = "HTTP/1.1 505 HTTP Version Not Supported";

const KEEP: bool = false;
const CLOSE: bool = true;

struct Case {
    name: &'static str,
    input: Vec<u8>,
    /// The status line of every response, in order.
    statuses: &'static [&'static str],
    /// Whether the connection must be closing afterwards.
    closes: bool,
    /// The handler calls, as (target, body).
    calls: Vec<(&'static str, &'static [u8])>,
}

fn case(
    name: &'static str,
    input: impl AsRef<[u8]>,
    statuses: &'static [&'static str],
    closes: bool,
    calls: &[(&'static str, &'static [u8])],
) -> Case {
    Case { name, input: input.as_ref().to_vec(), statuses, closes, calls: calls.to_vec() }
}

/// A rejected request: one error response, no handler call, closed.
fn reject(name: &'static str, input: impl AsRef<[u8]>, status: &'static [&'static str]) -> Case {
    case(name, input, status, CLOSE, &[])
}

const GET: &str = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

fn post_chunked(chunks: &str) -> String {
    format!("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}")
}

fn get_with(header_lines: &str) -> String {
    format!("GET / HTTP/1.1\r\n{header_lines}\r\n")
}

fn cases() -> Vec<Case> {
    let big_value = "v".repeat(1100);
    let many_headers: String = (0..16).map(|i| format!("X-{i}: {i}\r\n")).collect();
    let fifteen_headers: String = (0..15).map(|i| format!("X-{i}: {i}\r\n")).collect();
    let target_at_limit = format!("/{}", "t".repeat(127));
    let target_over_limit = format!("/{}", "t".repeat(128));
    vec![
        // Connection management.
        case("1.1 keeps alive", GET, &[OK], KEEP, &[("/", b"")]),
        case("1.0 closes", "GET / HTTP/1.0\r\n\r\n", &[OK], CLOSE, &[("/", b"")]),
        case("1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &[OK], KEEP, &[("/", b"")]),
        case(
            "1.0 keep-alive twice",
            "GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            &[OK, OK],
            KEEP,
            &[("/a", b""), ("/b", b"")],
        ),
        case("1.0 keep-alive then close token", "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", &[OK], CLOSE, &[("/", b"")]),
        case("1.1 Connection: close", "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &[OK], CLOSE, &[("/", b"")]),
        case("1.1 Connection: CLOSE in a list", "GET / HTTP/1.1\r\nHost: x\r\nConnection: foo , CLOSE\r\n\r\n", &[OK], CLOSE, &[("/", b"")]),
        case(
            "nothing read after Connection: close",
            format!("GET /1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n{GET}"),
            &[OK],
            CLOSE,
            &[("/1", b"")],
        ),
        case("handler asks to close", format!("GET /close HTTP/1.1\r\nHost: x\r\n\r\n{GET}"), &[OK], CLOSE, &[("/close", b"")]),
        case("empty lines before a request", format!("\r\n\r\n{GET}"), &[OK], KEEP, &[("/", b"")]),
        case("three pipelined", format!("{GET}{GET}{GET}"), &[OK, OK, OK], KEEP, &[("/", b""), ("/", b""), ("/", b"")]),
        case("absolute-form target", "GET http://x/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n", &[OK], KEEP, &[("http://x/abs?q=1", b"")]),
        case("1.0 needs no Host", "GET / HTTP/1.0\r\n\r\n", &[OK], CLOSE, &[("/", b"")]),
        case("OWS around header values", "GET / HTTP/1.1\r\nHost:  \tx \t\r\n\r\n", &[OK], KEEP, &[("/", b"")]),
        case("Host forms", "GET / HTTP/1.1\r\nHost: a.b-c_d~e!$&'()*+,;=%41:8080\r\n\r\n", &[OK], KEEP, &[("/", b"")]),
        case("Host IPv4 with port", "GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n", &[OK], KEEP, &[("/", b"")]),
        case("Host IPv6 literal", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n", &[OK], KEEP, &[("/", b"")]),
        case("Host IPv6 with IPv4 tail", "GET / HTTP/1.1\r\nHost: [::ffff:1.2.3.4]\r\n\r\n", &[OK], KEEP, &[("/", b"")]),
        case("Host IPvFuture", "GET / HTTP/1.1\r\nHost: [v1.a:b]\r\n\r\n", &[OK], KEEP, &[("/", b"")]),
        case("Host empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n", &[OK], KEEP, &[("/", b"")]),
        case("Host with an empty port", "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", &[OK], KEEP, &[("/", b"")]),
        case("HEAD", format!("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n{GET}"), &[OK, OK], KEEP, &[("/h", b""), ("/", b"")]),
        // Bodies.
        case(
            "Content-Length body",
            format!("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello{GET}"),
            &[OK, OK],
            KEEP,
            &[("/p", b"hello"), ("/", b"")],
        ),
        case(
            "Content-Length with OWS",
            "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length:  3 \r\n\r\nabc",
            &[OK],
            KEEP,
            &[("/p", b"abc")],
        ),
        case("Content-Length: 0", "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &[OK], KEEP, &[("/p", b"")]),
        case(
            "chunked with extensions and trailers",
            post_chunked("5;name=val\r\nhello\r\n6;a;b=\"q;x\"\r\n world\r\n0;end\r\nX-Trailer: t\r\nY: 2\r\n\r\n") + GET,
            &[OK, OK],
            KEEP,
            &[("/c", b"hello world"), ("/", b"")],
        ),
        case(
            "chunked, upper-case hex, coding name in any case",
            "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
            &[OK],
            KEEP,
            &[("/c", b"0123456789")],
        ),
        case("chunked, empty", post_chunked("0\r\n\r\n"), &[OK], KEEP, &[("/c", b"")]),
        // Limits.
        case(
            "body at the limit",
            format!("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 64\r\n\r\n{}", "b".repeat(64)),
            &[OK],
            KEEP,
            &[("/p", &[b'b'; 64])],
        ),
        reject("declared body over the limit", "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n", &[TOO_LARGE]),
        reject(
            "declared body over the limit, body sent",
            format!("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n{}", "b".repeat(65)),
            &[TOO_LARGE],
        ),
        reject(
            "huge declared body",
            "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999999999999999\r\n\r\n",
            &[TOO_LARGE],
        ),
        case(
            "chunked body at the limit",
            post_chunked(&format!("28\r\n{}\r\n18\r\n{}\r\n0\r\n\r\n", "a".repeat(40), "b".repeat(24))),
            &[OK],
            KEEP,
            &[("/c", b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbbbbbbbbb")],
        ),
        reject(
            "chunked body over the limit",
            post_chunked(&format!("28\r\n{}\r\n19\r\n{}\r\n0\r\n\r\n", "a".repeat(40), "b".repeat(25))),
            &[TOO_LARGE],
        ),
        reject("chunk size over the limit", post_chunked("fffffffffffffff\r\n"), &[TOO_LARGE]),
        reject("head over max_head", get_with(&format!("Host: x\r\nX-Big: {big_value}\r\n")), &[FIELDS_TOO_LARGE]),
        reject("partial head over max_head", format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big_value}"), &[FIELDS_TOO_LARGE]),
        case("headers at the limit", get_with(&format!("Host: x\r\n{fifteen_headers}")), &[OK], KEEP, &[("/", b"")]),
        reject("too many headers", get_with(&format!("Host: x\r\n{many_headers}")), &[FIELDS_TOO_LARGE]),
        case(
            "target at the limit",
            format!("GET {target_at_limit} HTTP/1.1\r\nHost: x\r\n\r\n"),
            &[OK],
            KEEP,
            &[(Box::leak(target_at_limit.clone().into_boxed_str()), b"")],
        ),
        reject("target over the limit", format!("GET {target_over_limit} HTTP/1.1\r\nHost: x\r\n\r\n"), &[URI_TOO_LONG]),
        reject("target over the limit, partial line", format!("GET /{}", "t".repeat(300)), &[URI_TOO_LONG]),
        reject(
            "target over the limit, partial head",
            format!("GET {target_over_limit} HTTP/1.1\r\nHost: x\r\nX-Big: {big_value}"),
            &[URI_TOO_LONG],
        ),
        case(
            "a long method is not a long target",
            format!("{} / HTTP/1.1\r\nHost: x\r\n\r\n", "M".repeat(300)),
            &[OK],
            KEEP,
            &[("/", b"")],
        ),
        // RFC 9112 framing: request smuggling vectors.
        reject("Content-Length and Transfer-Encoding", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &[BAD]),
        reject("Transfer-Encoding and Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", &[BAD]),
        reject("two equal Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", &[BAD]),
        reject("two different Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", &[BAD]),
        reject("Content-Length +5", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", &[BAD]),
        reject("Content-Length -1", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", &[BAD]),
        reject("Content-Length 0x5", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello", &[BAD]),
        reject("Content-Length list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello", &[BAD]),
        reject("Content-Length with inner space", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\nhello world!", &[BAD]),
        reject("Content-Length empty", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", &[BAD]),
        reject("Content-Length overflow", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", &[BAD]),
        reject("Transfer-Encoding gzip alone", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", &[BAD]),
        reject("Transfer-Encoding unknown", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo\r\n\r\n", &[NOT_IMPLEMENTED]),
        reject("Transfer-Encoding unknown before chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n", &[NOT_IMPLEMENTED]),
        reject("Transfer-Encoding chunked, gzip", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", &[BAD]),
        reject("Transfer-Encoding chunked twice", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &[BAD]),
        // This server decodes no coding but `chunked`; the handler must not
        // get a compressed body presented as the body (RFC 9112 §6.1).
        reject("Transfer-Encoding gzip, chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", &[NOT_IMPLEMENTED]),
        reject("Transfer-Encoding identity", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", &[NOT_IMPLEMENTED]),
        reject("Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &[BAD]),
        reject("space before the colon in Transfer-Encoding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", &[BAD]),
        reject("chunk size zz", post_chunked("zz\r\nhello\r\n0\r\n\r\n"), &[BAD]),
        reject("chunk size -1", post_chunked("-1\r\n"), &[BAD]),
        reject("chunk size 0x5", post_chunked("0x5\r\nhello\r\n0\r\n\r\n"), &[BAD]),
        reject("chunk size overflow", post_chunked("1ffffffffffffffff\r\nhello\r\n0\r\n\r\n"), &[BAD]),
        reject("chunk size missing", post_chunked("\r\nhello\r\n0\r\n\r\n"), &[BAD]),
        reject("chunk data longer than its size", post_chunked("5\r\nhelloXX\r\n0\r\n\r\n"), &[BAD]),
        reject("bare LF after chunk size", post_chunked("5\nhello\r\n0\r\n\r\n"), &[BAD]),
        reject("bare LF after chunk data", post_chunked("5\r\nhello\n0\r\n\r\n"), &[BAD]),
        reject("control byte in chunk extension", post_chunked("5;a\x01\r\nhello\r\n0\r\n\r\n"), &[BAD]),
        // RFC 9112 §7.1.1: an extension is a name (a token), then maybe a value.
        reject("chunk extension without a name", post_chunked("5;\r\nhello\r\n0\r\n\r\n"), &[BAD]),
        reject("chunk extension of spaces", post_chunked("5; \r\nhello\r\n0\r\n\r\n"), &[BAD]),
        reject("chunk extension value without a name", post_chunked("5;=x\r\nhello\r\n0\r\n\r\n"), &[BAD]),
        reject("chunk extension after an empty one", post_chunked("5;;a\r\nhello\r\n0\r\n\r\n"), &[BAD]),
        reject("chunk extension name with a space", post_chunked("5;a b\r\nhello\r\n0\r\n\r\n"), &[BAD]),
        reject("chunk extension with an empty value", post_chunked("5;a=\r\nhello\r\n0\r\n\r\n"), &[BAD]),
        reject("chunk extension quote not closed", post_chunked("5;a=\"b\r\nhello\r\n0\r\n\r\n"), &[BAD]),
        reject("last chunk extension without a name", post_chunked("5\r\nhello\r\n0;\r\n\r\n"), &[BAD]),
        case(
            "chunk extensions with whitespace and quoted values",
            post_chunked("5 ; a = b ;c=\"x \\\" y\"\t\r\nhello\r\n0\r\n\r\n"),
            &[OK],
            KEEP,
            &[("/c", b"hello")],
        ),
        reject("obs-fold in trailers", post_chunked("0\r\nX: 1\r\n folded\r\n\r\n"), &[BAD]),
        reject("space between header name and colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", &[BAD]),
        reject("tab between header name and colon", "GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", &[BAD]),
        reject("obs-fold with space", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", &[BAD]),
        reject("obs-fold with tab", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", &[BAD]),
        reject("obs-fold before the first header", "GET / HTTP/1.1\r\n Host: x\r\n\r\n", &[BAD]),
        reject("NUL in a header value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", &[BAD]),
        reject("\\x01 in a header value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", &[BAD]),
        reject("DEL in a header value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", &[BAD]),
        reject("bare CR in a header value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", &[BAD]),
        reject("bare CR ending a header line", "GET / HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n", &[BAD]),
        reject("header without a colon", "GET / HTTP/1.1\r\nHost: x\r\nX-A\r\n\r\n", &[BAD]),
        reject("empty header name", "GET / HTTP/1.1\r\nHost: x\r\n: x\r\n\r\n", &[BAD]),
        reject("HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", &[BAD]),
        // RFC 9112 §3.2: a Host that is not `uri-host [ ":" port ]`.
        reject("Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", &[BAD]),
        reject("Host with a path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", &[BAD]),
        reject("Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", &[BAD]),
        reject("Host with a query", "GET / HTTP/1.1\r\nHost: a?b\r\n\r\n", &[BAD]),
        reject("Host port not digits", "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", &[BAD]),
        reject("Host with two ports", "GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", &[BAD]),
        reject("Host IPv6 without brackets", "GET / HTTP/1.1\r\nHost: ::1\r\n\r\n", &[BAD]),
        reject("Host bracket not closed", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", &[BAD]),
        reject("Host bad IPv6", "GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n", &[BAD]),
        reject("Host IPv6 zone", "GET / HTTP/1.1\r\nHost: [fe80::1%eth0]\r\n\r\n", &[BAD]),
        reject("Host bad IPvFuture", "GET / HTTP/1.1\r\nHost: [v.x]\r\n\r\n", &[BAD]),
        reject("Host bytes after the bracket", "GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", &[BAD]),
        reject("Host bad percent-encoding", "GET / HTTP/1.1\r\nHost: a%2g\r\n\r\n", &[BAD]),
        reject("Host with UTF-8", "GET / HTTP/1.1\r\nHost: \u{e9}\r\n\r\n", &[BAD]),
        reject("Host with a quote", "GET / HTTP/1.1\r\nHost: \"a\"\r\n\r\n", &[BAD]),
        reject("HTTP/1.0 with a bad Host", "GET / HTTP/1.0\r\nHost: a b\r\n\r\n", &[BAD]),
        // Raw bytes above 0x7F in the request-target.
        reject("UTF-8 in the target", "GET /\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n", &[BAD]),
        reject("raw byte 0xff in the target", b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n", &[BAD]),
        reject("UTF-8 in the target, partial line", "GET /a\u{e9}", &[BAD]),
        // RFC 9112 §2.2: every line of a head ends in CRLF.
        reject("bare LF line endings in the head", "GET / HTTP/1.1\nHost: x\n\n", &[BAD]),
        reject("bare LF after the request line", "GET / HTTP/1.1\nHost: x\r\n\r\n", &[BAD]),
        reject("bare LF after a field", "GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", &[BAD]),
        reject("bare LF ending the head", "GET / HTTP/1.1\r\nHost: x\r\n\n", &[BAD]),
        reject("bare LF before the request line", format!("\n{GET}"), &[BAD]),
        reject("bare LF after an empty line", format!("\r\n\n{GET}"), &[BAD]),
        reject("bare LF in the target", "GET /a\nb HTTP/1.1\r\nHost: x\r\n\r\n", &[BAD]),
        reject("bare LF after a field, head unfinished", "GET / HTTP/1.1\r\nHost: x\nX: y", &[BAD]),
        reject(
            "bare LF hiding a Content-Length",
            "POST /p HTTP/1.1\r\nHost: x\r\nX: y\nContent-Length: 3\r\n\r\nabc",
            &[BAD],
        ),
        case(
            "bare LF after a request is the next head's",
            format!("{GET}\n"),
            &[OK, BAD],
            CLOSE,
            &[("/", b"")],
        ),
        reject("two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &[BAD]),
        reject("unknown expectation", "POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx", &[EXPECTATION]),
        reject("HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", &[BAD_VERSION]),
        reject("HTTP/3.0", "GET / HTTP/3.0\r\nHost: x\r\n\r\n", &[BAD_VERSION]),
        reject("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &[BAD_VERSION]),
        reject("lower-case version", "GET / http/1.1\r\nHost: x\r\n\r\n", &[BAD]),
        reject("version missing", "GET /\r\nHost: x\r\n\r\n", &[BAD]),
        reject("two spaces after the method", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", &[BAD]),
        reject("TLS client hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x5a\x5b", &[BAD]),
        reject("random text", "hello world, this is not HTTP\r\n\r\n", &[BAD]),
        reject("a response instead of a request", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &[BAD]),
        reject("NUL bytes", b"\0\0\0\0\r\n\r\n", &[BAD]),
        // A body is never parsed as a request.
        case(
            "Content-Length body holding a request",
            "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 31\r\n\r\nGET /evil HTTP/1.1\r\nHost: x\r\n\r\n",
            &[OK],
            KEEP,
            &[("/p", b"GET /evil HTTP/1.1\r\nHost: x\r\n\r\n")],
        ),
        case(
            "chunked body holding a request",
            post_chunked("1f\r\nGET /evil HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n"),
            &[OK],
            KEEP,
            &[("/c", b"GET /evil HTTP/1.1\r\nHost: x\r\n\r\n")],
        ),
        case(
            "rejected framing never exposes its body",
            "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 31\r\nTransfer-Encoding: chunked\r\n\r\nGET /evil HTTP/1.1\r\nHost: x\r\n\r\n",
            &[BAD],
            CLOSE,
            &[],
        ),
        case(
            "413 never exposes its body",
            format!("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nGET /evil HTTP/1.1\r\nHost: x\r\n\r\n{}", "z".repeat(71)),
            &[TOO_LARGE],
            CLOSE,
            &[],
        ),
        // What the handler answers.
        case("handler panics", format!("GET /panic HTTP/1.1\r\nHost: x\r\n\r\n{GET}"), &[SERVER_ERROR], CLOSE, &[("/panic", b"")]),
        case(
            "handler sets a header value with CRLF",
            format!("GET /bad-header-value HTTP/1.1\r\nHost: x\r\n\r\n{GET}"),
            &[SERVER_ERROR, OK],
            KEEP,
            &[("/bad-header-value", b""), ("/", b"")],
        ),
        case(
            "handler sets an invalid header name",
            "GET /bad-header-name HTTP/1.1\r\nHost: x\r\n\r\n",
            &[SERVER_ERROR],
            KEEP,
            &[("/bad-header-name", b"")],
        ),
        case(
            "handler sets Content-Length",
            "GET /reserved HTTP/1.1\r\nHost: x\r\n\r\n",
            &[SERVER_ERROR],
            KEEP,
            &[("/reserved", b"")],
        ),
        case("204", format!("GET /204 HTTP/1.1\r\nHost: x\r\n\r\n{GET}"), &[NO_CONTENT, OK], KEEP, &[("/204", b""), ("/", b"")]),
        case("304", format!("GET /304 HTTP/1.1\r\nHost: x\r\n\r\n{GET}"), &[NOT_MODIFIED, OK], KEEP, &[("/304", b""), ("/", b"")]),
    ]
}

/// Checks one run against its row; returns what is wrong.
fn check(c: &Case, run: &Run, how: &str) -> Option<String> {
    let name = c.name;
    let resps = std::panic::catch_unwind(|| parse_responses(&run.out));
    let Ok(resps) = resps else {
        return Some(format!("{name} ({how}): malformed output {:?}", String::from_utf8_lossy(&run.out)));
    };
    let statuses: Vec<&str> = resps.iter().map(|r| r.status_line.as_str()).collect();
    if statuses != c.statuses {
        return Some(format!("{name} ({how}): status lines {statuses:?}, want {:?}", c.statuses));
    }
    if run.closing != c.closes {
        return Some(format!("{name} ({how}): closing is {}, want {}", run.closing, c.closes));
    }
    let calls: Vec<(&str, &[u8])> = run.calls.iter().map(|k| (k.target.as_str(), k.body.as_slice())).collect();
    if calls != c.calls {
        return Some(format!("{name} ({how}): handler calls {calls:?}, want {:?}", c.calls));
    }
    if c.closes && resps.last().and_then(|r| r.header("Connection")) != Some("close") {
        return Some(format!("{name} ({how}): last response lacks Connection: close"));
    }
    None
}

/// Runs `f` over every row and reports every row that fails.
fn for_each_case(f: impl Fn(&Case) -> Option<String>) {
    let failures: Vec<String> = cases().iter().filter_map(f).collect();
    assert!(failures.is_empty(), "{} rows failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_table_case_holds_when_fed_whole() {
    for_each_case(|c| check(c, &feed(&c.input, LIMITS), "whole"));
}

#[test]
fn every_table_case_holds_when_split_in_two_anywhere() {
    for_each_case(|c| {
        let whole = feed(&c.input, LIMITS);
        for at in 0..=c.input.len() {
            let (a, b) = c.input.split_at(at);
            let run = feed_parts(&[a, b], LIMITS);
            if let Some(e) = check(c, &run, &format!("split at {at}")) {
                return Some(e);
            }
            if normalized(&run.out) != normalized(&whole.out) {
                return Some(format!("{} split at {at}: output differs from the whole feed", c.name));
            }
        }
        None
    });
}

#[test]
fn every_table_case_holds_when_fed_byte_by_byte() {
    for_each_case(|c| {
        let whole = feed(&c.input, LIMITS);
        let run = feed_bytewise(&c.input, LIMITS);
        check(c, &run, "byte by byte").or_else(|| {
            (normalized(&run.out) != normalized(&whole.out))
                .then(|| format!("{} byte by byte: output differs from the whole feed", c.name))
        })
    });
}

// ---------------------------------------------------------------------------
// Behaviours beyond one table row
// ---------------------------------------------------------------------------

fn pipelined_32() -> Vec<u8> {
    let mut input = Vec::new();
    for i in 0..32 {
        input.extend_from_slice(format!("GET /req/{i}?n={i} HTTP/1.1\r\nHost: x\r\nX-N: {i}\r\n\r\n").as_bytes());
    }
    input
}

#[test]
fn thirty_two_pipelined_requests_are_answered_in_order() {
    let input = pipelined_32();
    let run = feed(&input, Limits::default());
    let resps = parse_responses(&run.out);
    assert_eq!(resps.len(), 32);
    for (i, r) in resps.iter().enumerate() {
        assert_eq!(r.status_line, OK);
        assert_eq!(r.body, format!("/req/{i}?n={i}").as_bytes());
        assert_eq!(r.header("Connection"), None);
    }
    assert!(!run.closing);
    assert_eq!(run.calls.len(), 32);

    let bytewise = feed_bytewise(&input, Limits::default());
    assert_eq!(normalized(&bytewise.out), normalized(&run.out));
    for at in (0..=input.len()).step_by(7) {
        let (a, b) = input.split_at(at);
        let split = feed_parts(&[a, b], Limits::default());
        assert_eq!(normalized(&split.out), normalized(&run.out), "split at {at}");
    }
}

#[test]
fn pipelined_mixed_bodies_get_the_same_answers_however_split() {
    let input = [
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        "HEAD /b HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n",
        "\r\n",
        "GET /d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "GET /e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /never HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    .concat();
    let input = input.as_bytes();
    let whole = feed(input, LIMITS);
    let bodies: Vec<(&str, &[u8])> = whole.calls.iter().map(|c| (c.target.as_str(), c.body.as_slice())).collect();
    assert_eq!(bodies, [("/a", &b"abc"[..]), ("/b", b""), ("/c", b"de"), ("/d", b""), ("/e", b"")]);
    assert_eq!(status_lines(&whole.out), [OK; 5]);
    assert!(whole.closing);
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        let run = feed_parts(&[a, b], LIMITS);
        assert_eq!(normalized(&run.out), normalized(&whole.out), "split at {at}");
        assert_eq!(run.calls, whole.calls);
    }
    for at in 0..input.len() {
        for len in [1, 2, 5, 13] {
            let end = (at + len).min(input.len());
            let run = feed_parts(&[&input[..at], &input[at..end], &input[end..]], LIMITS);
            assert_eq!(normalized(&run.out), normalized(&whole.out), "split at {at} and {end}");
        }
    }
    assert_eq!(normalized(&feed_bytewise(input, LIMITS).out), normalized(&whole.out));
}

#[test]
fn head_response_has_length_and_no_body() {
    let run = feed(format!("HEAD /four HTTP/1.1\r\nHost: x\r\n\r\n{GET}").as_bytes(), LIMITS);
    let text = String::from_utf8(run.out.clone()).unwrap();
    let (first, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"));
    // The length a GET would have had: the body is the target.
    assert!(first.contains("\r\nContent-Length: 5\r\n"), "{first}");
    // The next bytes are the next response, not a body.
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert_eq!(run.calls[0].method, "HEAD");
}

#[test]
fn responses_carry_close_or_keep_alive_where_the_default_does_not_hold() {
    let r = parse_responses(&feed(GET.as_bytes(), LIMITS).out);
    assert_eq!(r[0].header("Connection"), None);
    let r = parse_responses(&feed(b"GET / HTTP/1.0\r\n\r\n", LIMITS).out);
    assert_eq!(r[0].header("Connection"), Some("close"));
    let r = parse_responses(&feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", LIMITS).out);
    assert_eq!(r[0].header("Connection"), Some("keep-alive"));
    let r = parse_responses(&feed(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", LIMITS).out);
    assert_eq!(r[0].header("Connection"), Some("close"));
    // Error responses close too.
    let r = parse_responses(&feed(b"GET / HTTP/1.1\r\n\r\n", LIMITS).out);
    assert_eq!(r[0].header("Connection"), Some("close"));
}

#[test]
fn a_100_continue_is_sent_before_the_body() {
    let head = b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    let mut sh = shared(LIMITS);
    let mut conn = Conn::new(&sh);
    let mut app = App::default();
    conn.on_read(head, &mut sh, &mut app);
    assert_eq!(conn.output(), b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(app.calls.is_empty());
    let n = conn.output().len();
    conn.consume_output(n, &mut sh);
    conn.on_read(b"hel", &mut sh, &mut app);
    assert!(!conn.has_output());
    conn.on_read(b"lo", &mut sh, &mut app);
    let resps = parse_responses(conn.output());
    assert_eq!(resps.len(), 1);
    assert_eq!(resps[0].status_line, OK);
    assert_eq!(app.calls[0].body, b"hello");
    assert!(!conn.is_closing());
}

#[test]
fn a_100_continue_and_the_response_share_one_output() {
    let head = b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n";
    let run = feed_parts(&[head, b"3\r\nabc\r\n0\r\n\r\n"], LIMITS);
    assert_eq!(status_lines(&run.out), [CONTINUE, OK]);
    assert_eq!(run.calls[0].body, b"abc");
}

#[test]
fn no_100_continue_is_sent_when_the_body_is_refused() {
    let head = b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 65\r\n\r\n";
    let run = feed(head, LIMITS);
    assert_eq!(status_lines(&run.out), [TOO_LARGE]);
    assert!(run.closing);
}

#[test]
fn expect_100_continue_is_ignored_for_http_1_0() {
    let head = b"POST /up HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    let run = feed_parts(&[head, b"ok"], LIMITS);
    assert_eq!(status_lines(&run.out), [OK]);
}

#[test]
fn the_body_limit_is_answered_before_any_body_byte() {
    let mut sh = shared(LIMITS);
    let mut conn = Conn::new(&sh);
    let mut app = App::default();
    conn.on_read(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n", &mut sh, &mut app);
    assert_eq!(status_lines(conn.output()), [TOO_LARGE]);
    assert!(conn.is_closing());
    // Whatever arrives afterwards is ignored.
    let before = conn.output().to_vec();
    conn.on_read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut app);
    assert_eq!(conn.output(), &before[..]);
    assert!(app.calls.is_empty());
}

#[test]
fn the_chunked_limit_is_answered_when_the_size_line_ends() {
    let mut sh = shared(LIMITS);
    let mut conn = Conn::new(&sh);
    let mut app = App::default();
    conn.on_read(post_chunked("").as_bytes(), &mut sh, &mut app);
    assert!(!conn.has_output());
    conn.on_read(b"41\r\n", &mut sh, &mut app);
    assert_eq!(status_lines(conn.output()), [TOO_LARGE]);
    assert!(conn.is_closing());
}

#[test]
fn default_limits_hold_at_their_edges() {
    let l = Limits::default();
    let target = format!("/{}", "a".repeat(l.max_target - 1));
    let run = feed(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(), l);
    assert_eq!(status_lines(&run.out), [OK]);
    let target = format!("/{}", "a".repeat(l.max_target));
    let run = feed(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(), l);
    assert_eq!(status_lines(&run.out), [URI_TOO_LONG]);

    let headers: String = (0..l.max_headers - 1).map(|i| format!("X-{i}: v\r\n")).collect();
    let run = feed(get_with(&format!("Host: x\r\n{headers}")).as_bytes(), l);
    assert_eq!(status_lines(&run.out), [OK]);
    let headers: String = (0..l.max_headers).map(|i| format!("X-{i}: v\r\n")).collect();
    let run = feed(get_with(&format!("Host: x\r\n{headers}")).as_bytes(), l);
    assert_eq!(status_lines(&run.out), [FIELDS_TOO_LARGE]);

    let head = |fill: usize| get_with(&format!("Host: x\r\nX: {}\r\n", "f".repeat(fill)));
    let base = head(0).len();
    let run = feed(head(l.max_head - base).as_bytes(), l);
    assert_eq!(status_lines(&run.out), [OK]);
    let run = feed(head(l.max_head - base + 1).as_bytes(), l);
    assert_eq!(status_lines(&run.out), [FIELDS_TOO_LARGE]);

    let run = feed(format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", l.max_body + 1).as_bytes(), l);
    assert_eq!(status_lines(&run.out), [TOO_LARGE]);
}

#[test]
fn handler_panic_answers_500_and_closes() {
    let run = feed(b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n", LIMITS);
    let r = parse_responses(&run.out);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status_line, SERVER_ERROR);
    assert_eq!(r[0].header("Connection"), Some("close"));
    assert!(run.closing);
}

#[test]
fn handler_header_injection_never_reaches_the_wire() {
    let run = feed(b"GET /bad-header-value HTTP/1.1\r\nHost: x\r\n\r\n", LIMITS);
    let r = parse_responses(&run.out);
    assert_eq!(r[0].status_line, SERVER_ERROR);
    assert!(r[0].header("Injected").is_none());
    assert!(!String::from_utf8_lossy(&run.out).contains("Injected"));
}

#[test]
fn bodyless_statuses_carry_no_length_and_no_body() {
    for path in ["/204", "/304"] {
        let run = feed(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(), LIMITS);
        let text = String::from_utf8(run.out).unwrap();
        assert!(text.ends_with("\r\n\r\n"), "{text:?}");
        assert!(!text.contains("Content-Length"), "{text:?}");
        assert!(!text.contains("must not be sent"), "{text:?}");
    }
}

#[test]
fn date_header_is_an_imf_fixdate() {
    let run = feed(GET.as_bytes(), LIMITS);
    let r = parse_responses(&run.out);
    let date = r[0].header("Date").unwrap();
    assert!(is_imf_fixdate(date), "{date}");
    // The error path carries it too.
    let run = feed(b"garbage\r\n\r\n", LIMITS);
    assert!(is_imf_fixdate(parse_responses(&run.out)[0].header("Date").unwrap()));
    assert!(!is_imf_fixdate("Sun, 06 Nov 1994 08:49:37 UTC"));
    assert!(!is_imf_fixdate("Sunday, 06-Nov-94 08:49:37 GMT"));
}

#[test]
fn custom_headers_and_status_are_sent_and_reserved_headers_refused() {
    let mut sh = shared(LIMITS);
    let mut conn = Conn::new(&sh);
    let mut h = |_: &Request<'_>, res: &mut Response| {
        res.status(201).header("X-One", "1").header("Content-Type", "application/json").body("{}");
        assert_eq!(res.status_code(), 201);
        assert_eq!(res.try_header("X Bad", "v").err(), Some(forkring::InvalidHeader::Name));
        assert_eq!(res.try_header("X-Bad", "\0").err(), Some(forkring::InvalidHeader::Value));
        assert_eq!(res.try_header("date", "today").err(), Some(forkring::InvalidHeader::Reserved));
        assert_eq!(res.try_header("Transfer-Encoding", "chunked").err(), Some(forkring::InvalidHeader::Reserved));
    };
    conn.on_read(GET.as_bytes(), &mut sh, &mut h);
    let r = parse_responses(conn.output());
    assert_eq!(r[0].status_line, "HTTP/1.1 201 Created");
    assert_eq!(r[0].header("X-One"), Some("1"));
    assert_eq!(r[0].header("Content-Type"), Some("application/json"));
    assert_eq!(r[0].header("Content-Length"), Some("2"));
    assert_eq!(r[0].body, b"{}");
}

/// A final response needs a final status: 1xx is interim (a client would
/// wait for another response, and take the next request's answer for this
/// one) and codes from 600 on are invalid (RFC 9110 §15).
#[test]
fn non_final_or_invalid_status_becomes_500() {
    for code in [0, 42, 100, 101, 103, 199, 600, 999, 1000] {
        let mut sh = shared(LIMITS);
        let mut conn = Conn::new(&sh);
        let mut h = |_: &Request<'_>, res: &mut Response| {
            res.status(code).body("x");
        };
        conn.on_read(format!("{GET}{GET}").as_bytes(), &mut sh, &mut h);
        assert_eq!(status_lines(conn.output()), [SERVER_ERROR, SERVER_ERROR], "status {code}");
    }
    for (code, line) in [(200, OK), (299, "HTTP/1.1 299 "), (418, "HTTP/1.1 418 "), (599, "HTTP/1.1 599 ")] {
        let mut sh = shared(LIMITS);
        let mut conn = Conn::new(&sh);
        let mut h = |_: &Request<'_>, res: &mut Response| {
            res.status(code);
        };
        conn.on_read(GET.as_bytes(), &mut sh, &mut h);
        assert_eq!(status_lines(conn.output()), [line], "status {code}");
    }
}

// ---------------------------------------------------------------------------
// Request accessors
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Seen {
    method: String,
    target: String,
    path: String,
    query: Option<String>,
    version: Option<Version>,
    keep_alive: bool,
    content_type: Option<Vec<u8>>,
    all_x: Vec<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn seen(input: &[u8]) -> Vec<Seen> {
    let mut sh = shared(Limits::default());
    let mut conn = Conn::new(&sh);
    let mut all = Vec::new();
    let mut h = |req: &Request<'_>, _: &mut Response| {
        all.push(Seen {
            method: req.method().to_owned(),
            target: req.target().to_owned(),
            path: req.path().to_owned(),
            query: req.query().map(str::to_owned),
            version: Some(req.version()),
            keep_alive: req.keep_alive(),
            content_type: req.header("CONTENT-type").map(<[u8]>::to_vec),
            all_x: req.headers().get_all("x-multi").map(<[u8]>::to_vec).collect(),
            headers: req.headers().iter().map(|(n, v)| (n.to_owned(), v.to_vec())).collect(),
            body: req.body().to_vec(),
        });
    };
    conn.on_read(input, &mut sh, &mut h);
    all
}

#[test]
fn request_accessors_return_what_the_head_and_body_say() {
    let s = seen(
        b"PUT /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\nX-Multi: 1\r\nx-multi: 2\r\nContent-Length: 2\r\n\r\nhi",
    );
    let s = &s[0];
    assert_eq!(s.method, "PUT");
    assert_eq!(s.target, "/a/b?x=1&y=2");
    assert_eq!(s.path, "/a/b");
    assert_eq!(s.query.as_deref(), Some("x=1&y=2"));
    assert_eq!(s.version, Some(Version::Http11));
    assert!(s.keep_alive);
    assert_eq!(s.content_type.as_deref(), Some(&b"text/plain"[..]));
    assert_eq!(s.all_x, [b"1".to_vec(), b"2".to_vec()]);
    let names: Vec<&str> = s.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Host", "Content-Type", "X-Multi", "x-multi", "Content-Length"]);
    assert_eq!(s.headers[0].1, b"example.com");
    assert_eq!(s.body, b"hi");
}

#[test]
fn every_request_target_form_splits_into_path_and_query() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("/", "/", None),
        ("/p", "/p", None),
        ("/p?", "/p", Some("")),
        ("/p?a=1?b=2", "/p", Some("a=1?b=2")),
        ("/p?next=http://x/y", "/p", Some("next=http://x/y")),
        ("/a://b", "/a://b", None),
        ("http://example.com/abs/p?q=1", "/abs/p", Some("q=1")),
        ("http://example.com", "/", None),
        ("https://example.com:8443/", "/", None),
        ("http://example.com?x=/y", "/", Some("x=/y")),
        ("*", "*", None),
    ];
    for &(target, path, query) in cases {
        let method = if target == "*" { "OPTIONS" } else { "GET" };
        let s = seen(format!("{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(s.len(), 1, "{target}");
        assert_eq!(s[0].target, target);
        assert_eq!(s[0].path, path, "path of {target}");
        assert_eq!(s[0].query.as_deref(), query, "query of {target}");
    }
}

#[test]
fn request_version_and_keep_alive_follow_the_head() {
    let s = seen(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(s[0].version, Some(Version::Http10));
    assert!(!s[0].keep_alive);
    let s = seen(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(s[0].keep_alive);
    let s = seen(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(!s[0].keep_alive);
    // A body delivered across reads sees the same accessors.
    let mut sh = shared(Limits::default());
    let mut conn = Conn::new(&sh);
    let mut got = None;
    let mut h = |req: &Request<'_>, _: &mut Response| {
        got =
            Some((req.path().to_owned(), req.header("x-a").map(<[u8]>::to_vec), req.body().to_vec(), req.keep_alive()));
    };
    conn.on_read(
        b"POST /late?q HTTP/1.1\r\nHost: x\r\nX-A: b\r\nConnection: close\r\nContent-Length: 4\r\n\r\nab",
        &mut sh,
        &mut h,
    );
    conn.on_read(b"cd", &mut sh, &mut h);
    assert_eq!(got, Some(("/late".to_owned(), Some(b"b".to_vec()), b"abcd".to_vec(), false)));
}

// ---------------------------------------------------------------------------
// Output, end of input, draining and timers
// ---------------------------------------------------------------------------

#[test]
fn output_is_consumed_in_pieces() {
    let mut sh = shared(LIMITS);
    let mut conn = Conn::new(&sh);
    let mut app = App::default();
    conn.on_read(format!("{GET}{GET}").as_bytes(), &mut sh, &mut app);
    let all = conn.output().to_vec();
    assert_eq!(conn.output_len(), all.len());
    conn.consume_output(10, &mut sh);
    assert_eq!(conn.output(), &all[10..]);
    // More requests while part of the output is unsent append behind it.
    conn.on_read(GET.as_bytes(), &mut sh, &mut app);
    assert!(conn.output().starts_with(&all[10..]));
    assert_eq!(status_lines(&conn.output()[all.len() - 10..]), [OK]);
    let n = conn.output_len();
    conn.consume_output(n, &mut sh);
    assert!(!conn.has_output());
    assert!(conn.is_idle());
    conn.on_read(GET.as_bytes(), &mut sh, &mut app);
    let taken = conn.take_output();
    assert_eq!(status_lines(&taken), [OK]);
    assert!(!conn.has_output());
    sh.recycle(taken);
    conn.on_sent(&sh);
    assert!(conn.is_idle());
}

#[test]
fn eof_mid_request_gets_no_answer() {
    for cut in [&b"GET / HTTP/1.1\r\nHo"[..], b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc"] {
        let mut sh = shared(LIMITS);
        let mut conn = Conn::new(&sh);
        let mut app = App::default();
        conn.on_read(cut, &mut sh, &mut app);
        conn.on_eof(&mut sh);
        assert!(conn.is_closing());
        assert!(!conn.has_output());
        conn.on_read(b"more", &mut sh, &mut app);
        assert!(!conn.has_output());
        assert!(app.calls.is_empty());
    }
}

#[test]
fn eof_keeps_output_already_framed() {
    let mut sh = shared(LIMITS);
    let mut conn = Conn::new(&sh);
    let mut app = App::default();
    conn.on_read(GET.as_bytes(), &mut sh, &mut app);
    conn.on_eof(&mut sh);
    assert!(conn.is_closing());
    assert_eq!(status_lines(conn.output()), [OK]);
}

#[test]
fn draining_closes_after_the_current_response() {
    let mut sh = shared(LIMITS);
    let mut conn = Conn::new(&sh);
    let mut app = App::default();
    conn.on_read(GET.as_bytes(), &mut sh, &mut app);
    assert!(!conn.is_closing());
    sh.set_draining();
    assert!(sh.draining());
    conn.on_read(format!("{GET}{GET}").as_bytes(), &mut sh, &mut app);
    let r = parse_responses(conn.output());
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].header("Connection"), Some("close"));
    assert!(conn.is_closing());
    assert_eq!(app.calls.len(), 2);
}

#[test]
fn deadlines_follow_the_request_cycle() {
    let timeouts = Timeouts::DEFAULT.with_header(Duration::from_millis(100)).with_idle(Duration::from_millis(5000));
    let mut sh = WorkerState::new(LIMITS, timeouts);
    sh.tick();
    let now = sh.now_ms();
    let mut conn = Conn::new(&sh);
    let mut app = App::default();
    // A new connection must send its head within the header timeout.
    assert_eq!(conn.deadline(), now + 100);
    // Bytes of an incomplete head do not extend it (slowloris).
    conn.on_read(b"GET / HT", &mut sh, &mut app);
    assert_eq!(conn.deadline(), now + 100);
    conn.on_read(b"TP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut app);
    // Between requests: the idle timeout.
    assert_eq!(conn.deadline(), sh.now_ms() + 5000);
    let n = conn.output_len();
    conn.consume_output(n, &mut sh);
    assert_eq!(conn.deadline(), sh.now_ms() + 5000);
    // The next partial head starts the header timer again.
    conn.on_read(b"GET /", &mut sh, &mut app);
    assert_eq!(conn.deadline(), sh.now_ms() + 100);
}

#[test]
fn empty_lines_never_restart_or_extend_the_header_timer() {
    let timeouts = Timeouts::DEFAULT.with_header(Duration::from_millis(100)).with_idle(Duration::from_millis(5000));
    let mut sh = WorkerState::new(LIMITS, timeouts);
    sh.tick();
    let start = sh.now_ms();
    let mut conn = Conn::new(&sh);
    let mut app = App::default();
    // Before any request: empty lines are no progress towards one.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(3));
        sh.tick();
        conn.on_read(b"\r\n", &mut sh, &mut app);
        assert_eq!(conn.deadline(), start + 100, "an empty line moved the first header deadline");
    }
    conn.on_read(b"\r", &mut sh, &mut app);
    assert_eq!(conn.deadline(), start + 100);
    conn.on_read(format!("\n{GET}").as_bytes(), &mut sh, &mut app);
    assert_eq!(conn.deadline(), sh.now_ms() + 5000, "an answered request moves to the idle wait");
    let n = conn.output_len();
    conn.consume_output(n, &mut sh);
    // After a response, an empty line starts the header timer, and later
    // ones (or the output draining) do not extend it.
    std::thread::sleep(Duration::from_millis(3));
    sh.tick();
    let first = sh.now_ms();
    conn.on_read(b"\r\n", &mut sh, &mut app);
    assert_eq!(conn.deadline(), first + 100);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(3));
        sh.tick();
        conn.on_read(b"\r\n", &mut sh, &mut app);
        conn.on_sent(&sh);
        assert_eq!(conn.deadline(), first + 100, "an empty line extended the header deadline");
    }
    assert_eq!(app.calls.len(), 1);
}

#[test]
fn draining_shortens_the_idle_wait_only() {
    use forkring::internals::DRAIN_IDLE_GRACE_MS;
    let timeouts = Timeouts::DEFAULT.with_header(Duration::from_millis(1000)).with_idle(Duration::from_millis(60_000));
    let mut sh = WorkerState::new(LIMITS, timeouts);
    sh.tick();
    let mut app = App::default();
    let mut idle = Conn::new(&sh);
    idle.on_read(GET.as_bytes(), &mut sh, &mut app);
    let n = idle.output_len();
    idle.consume_output(n, &mut sh);
    assert!(idle.is_idle());
    let mut busy = Conn::new(&sh);
    busy.on_read(b"GET / HTTP/1.1\r\nHo", &mut sh, &mut app);
    let busy_deadline = busy.deadline();

    sh.set_draining();
    idle.start_drain(&sh);
    busy.start_drain(&sh);
    assert!(idle.deadline() <= sh.now_ms() + DRAIN_IDLE_GRACE_MS);
    assert_eq!(busy.deadline(), busy_deadline, "a request in flight keeps its header deadline");
    busy.on_read(b"st: x\r\n\r\n", &mut sh, &mut app);
    let r = parse_responses(busy.output());
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].header("Connection"), Some("close"));
    assert!(busy.is_closing());
}

#[test]
fn unbounded_body_limit_is_usable() {
    let limits = Limits::DEFAULT.with_max_body(usize::MAX);
    for input in [
        post_chunked("5\r\nhello\r\n0\r\n\r\n"),
        "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_owned(),
    ] {
        let (head, body) = input.split_at(input.find("\r\n\r\n").unwrap() + 4);
        let run = feed_parts(&[head.as_bytes(), body.as_bytes()], limits);
        assert_eq!(status_lines(&run.out), [OK]);
        assert_eq!(run.calls[0].body, b"hello");
    }
}

#[test]
fn unbounded_timeouts_never_expire() {
    const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
    let timeouts = Timeouts::DEFAULT.with_header(Duration::MAX).with_idle(Duration::MAX).with_drain(Duration::MAX);
    let mut sh = WorkerState::new(LIMITS, timeouts);
    std::thread::sleep(Duration::from_millis(2));
    sh.tick();
    let mut conn = Conn::new(&sh);
    let mut app = App::default();
    assert!(conn.deadline() > sh.now_ms() + YEAR_MS);
    conn.on_read(b"GET / HT", &mut sh, &mut app);
    assert!(conn.deadline() > sh.now_ms() + YEAR_MS);
    conn.on_read(b"TP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut app);
    assert!(conn.deadline() > sh.now_ms() + YEAR_MS);
    let n = conn.output_len();
    conn.consume_output(n, &mut sh);
    assert!(conn.deadline() > sh.now_ms() + YEAR_MS);
}

#[test]
fn pipelined_requests_wait_while_the_output_is_above_the_high_water_mark() {
    use forkring::internals::OUTPUT_HIGH_WATER;
    const BODY: usize = 64 * 1024;
    const N: usize = 100;
    let mut sh = shared(Limits::default());
    let mut conn = Conn::new(&sh);
    let mut calls = 0usize;
    let mut handler = |_: &Request<'_>, res: &mut Response| {
        calls += 1;
        res.body_mut().resize(BODY, b'x');
    };
    let wire = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(N);
    conn.on_read(&wire, &mut sh, &mut handler);
    // One read of small requests must not turn into N large responses.
    assert!(conn.output_len() < OUTPUT_HIGH_WATER + BODY + 1024, "output {}", conn.output_len());
    assert!(conn.has_pending_input());
    let mut received = 0usize;
    let mut rounds = 0;
    while conn.has_output() {
        rounds += 1;
        assert!(rounds < 10 * N, "no progress");
        let n = conn.output_len();
        received += n;
        conn.consume_output(n, &mut sh);
        conn.resume(&mut sh, &mut handler);
        assert!(conn.output_len() < OUTPUT_HIGH_WATER + BODY + 1024);
    }
    assert!(!conn.has_pending_input());
    assert_eq!(calls, N);
    assert!(received > N * BODY);
}

#[test]
fn a_bare_cr_before_the_request_line_is_refused() {
    let run = feed(b"\rHEAD / HTTP/1.0\r\n\r\n", Limits::default());
    assert_eq!(status_lines(&run.out), ["HTTP/1.1 400 Bad Request"]);
    assert!(run.closing);
    // Empty lines before it are fine, if they end in CRLF.
    let run = feed(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", Limits::default());
    assert_eq!(status_lines(&run.out), ["HTTP/1.1 200 OK"]);
    let run = feed(b"\r\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", Limits::default());
    assert_eq!(status_lines(&run.out), ["HTTP/1.1 400 Bad Request"]);
}

#[test]
fn buffered_bodies_share_one_budget_per_worker() {
    // Bodies of up to 800 bytes, 1000 bytes of budget for the whole worker.
    let limits = LIMITS.with_max_body(800).with_max_buffered_bodies(1000);
    let mut sh = shared(limits);
    let mut app = App::default();
    let head = |len: usize| format!("POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n");
    // A's body is on its way: what has arrived is charged, not what was
    // declared.
    let mut a = Conn::new(&sh);
    a.on_read(format!("{}{}", head(800), "a".repeat(100)).as_bytes(), &mut sh, &mut app);
    assert!(!a.has_output());
    // B declares as much: a declared length is no memory, so B may send.
    let mut b = Conn::new(&sh);
    b.on_read(head(800).as_bytes(), &mut sh, &mut app);
    assert!(!b.has_output(), "no 503 for a promise");
    b.on_read("b".repeat(700).as_bytes(), &mut sh, &mut app);
    assert!(!b.has_output(), "700 bytes fit beside A's 100");
    // A's next 300 bytes would take the worker past its budget: 503 at
    // that read, close.
    a.on_read("a".repeat(300).as_bytes(), &mut sh, &mut app);
    assert_eq!(status_lines(a.output()), ["HTTP/1.1 503 Service Unavailable"]);
    assert!(a.is_closing());
    a.release(&mut sh);
    // A chunked body is charged as it arrives, and refused when it runs out.
    let mut c = Conn::new(&sh);
    c.on_read(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", &mut sh, &mut app);
    c.on_read(format!("12c\r\n{}\r\n", "c".repeat(300)).as_bytes(), &mut sh, &mut app);
    assert!(!c.has_output(), "300 bytes fit beside B's 700: A's share came back");
    c.on_read(format!("c8\r\n{}\r\n", "c".repeat(200)).as_bytes(), &mut sh, &mut app);
    assert_eq!(status_lines(c.output()), ["HTTP/1.1 503 Service Unavailable"]);
    c.release(&mut sh);
    // B finishes: answered, and its share comes back for the next upload.
    b.on_read("b".repeat(100).as_bytes(), &mut sh, &mut app);
    assert_eq!(status_lines(b.output()), ["HTTP/1.1 200 OK"]);
    let mut d = Conn::new(&sh);
    d.on_read(format!("{}{}", head(800), "d".repeat(799)).as_bytes(), &mut sh, &mut app);
    assert!(!d.has_output(), "the budget was given back");
    // A connection that closes mid-body gives its share back too.
    d.release(&mut sh);
    let mut e = Conn::new(&sh);
    e.on_read(format!("{}{}", head(800), "e".repeat(800)).as_bytes(), &mut sh, &mut app);
    assert_eq!(status_lines(e.output()), ["HTTP/1.1 200 OK"], "a whole body in one read needs no budget");
    let mut f = Conn::new(&sh);
    f.on_read(format!("{}{}", head(800), "f".repeat(799)).as_bytes(), &mut sh, &mut app);
    assert!(!f.has_output(), "D's share came back when it closed");
    for c in [b, e, f] {
        c.release(&mut sh);
    }
}

/// Defers `/later` (keeping the responder), answers the rest at once.
#[derive(Default)]
struct Deferring {
    responders: Vec<forkring::Responder>,
}

impl forkring::Handler for Deferring {
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) {
        if req.path() == "/later" {
            self.responders.push(res.defer());
        } else {
            res.body(req.path());
        }
    }
}

fn answered(res: &str) -> Response {
    let mut r = Response::new();
    r.body(res);
    r
}

/// Takes the completions queued in `sh` and hands each to `conn`.
fn deliver(conn: &mut Conn, sh: &mut WorkerState, app: &mut Deferring) -> usize {
    let mut batch = Vec::new();
    sh.take_completions(&mut batch);
    batch.into_iter().map(|c| conn.complete(c, sh, app) as usize).sum()
}

#[test]
fn deferred_responses_keep_pipelined_order() {
    let mut sh = shared(LIMITS);
    let mut app = Deferring::default();
    let mut conn = Conn::new(&sh);
    conn.set_token(7);
    conn.on_read(
        b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /later HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n",
        &mut sh,
        &mut app,
    );
    // /a is answered; /b waits behind the deferred /later.
    assert_eq!(status_lines(conn.output()), ["HTTP/1.1 200 OK"]);
    assert!(!conn.is_closing());
    let r = app.responders.pop().unwrap();
    // Completed from another thread.
    std::thread::spawn(move || r.send(answered("late"))).join().unwrap();
    assert_eq!(deliver(&mut conn, &mut sh, &mut app), 1);
    let bodies: Vec<Vec<u8>> = parse_responses(conn.output()).into_iter().map(|r| r.body).collect();
    assert_eq!(bodies, [b"/a".to_vec(), b"late".to_vec(), b"/b".to_vec()]);
    conn.release(&mut sh);
}

#[test]
fn deferred_responses_are_capped_timed_and_answered_when_dropped() {
    let limits = LIMITS.with_max_deferred(1);
    let timeouts = Timeouts::DEFAULT.with_deferred(Duration::from_millis(100));
    let mut sh = WorkerState::new(limits, timeouts);
    sh.tick();
    let mut app = Deferring::default();
    let later = b"GET /later HTTP/1.1\r\nHost: t\r\n\r\n";
    // One deferred request fills the worker's cap: the next gets 503 at
    // once, and its responder does nothing.
    let mut a = Conn::new(&sh);
    a.set_token(1);
    a.on_read(later, &mut sh, &mut app);
    assert!(!a.has_output());
    let mut b = Conn::new(&sh);
    b.set_token(2);
    b.on_read(later, &mut sh, &mut app);
    assert_eq!(status_lines(b.output()), ["HTTP/1.1 503 Service Unavailable"]);
    app.responders.pop().unwrap().send(answered("ignored"));
    assert_eq!(deliver(&mut b, &mut sh, &mut app), 0);
    // A dropped responder answers 500 (the cap's place is given back).
    drop(app.responders.pop());
    assert_eq!(deliver(&mut a, &mut sh, &mut app), 1);
    assert_eq!(status_lines(a.output()), ["HTTP/1.1 500 Internal Server Error"]);
    let mut c = Conn::new(&sh);
    c.set_token(3);
    c.on_read(later, &mut sh, &mut app);
    assert!(!c.has_output(), "the cap was given back");
    // Its deadline passes: 504, and the connection closes; the late
    // completion is stale.
    assert!(c.deadline() <= sh.now_ms() + 100);
    assert!(!c.on_deadline(&mut sh));
    assert_eq!(status_lines(c.output()), ["HTTP/1.1 504 Gateway Timeout"]);
    assert!(c.is_closing());
    app.responders.pop().unwrap().send(answered("too late"));
    assert_eq!(deliver(&mut c, &mut sh, &mut app), 0);
    // A connection that goes away while it waits gives its place back.
    let mut d = Conn::new(&sh);
    d.set_token(4);
    d.on_read(later, &mut sh, &mut app);
    assert!(!d.has_output());
    d.release(&mut sh);
    let mut e = Conn::new(&sh);
    e.set_token(5);
    e.on_read(later, &mut sh, &mut app);
    assert!(!e.has_output(), "the closed connection gave its place back");
    for conn in [a, b, c, e] {
        conn.release(&mut sh);
    }
}

#[test]
fn a_drain_lets_a_deferred_request_finish() {
    let mut sh = shared(LIMITS);
    let mut app = Deferring::default();
    let mut conn = Conn::new(&sh);
    conn.set_token(9);
    conn.on_read(b"GET /later HTTP/1.1\r\nHost: t\r\n\r\n", &mut sh, &mut app);
    let waiting_until = conn.deadline();
    // Draining cuts idle connections short; one waiting on its answer is
    // busy, and keeps its deadline.
    sh.set_draining();
    conn.start_drain(&sh);
    assert_eq!(conn.deadline(), waiting_until);
    app.responders.pop().unwrap().send(answered("finished"));
    assert_eq!(deliver(&mut conn, &mut sh, &mut app), 1);
    let r = &parse_responses(conn.output())[0];
    assert_eq!(r.body, b"finished");
    assert!(conn.is_closing(), "answered with Connection: close while draining");
    conn.release(&mut sh);
}

/// Whether a closing connection may still have client input unread, after
/// `parts` are read one `on_read` each.
fn unread_after(parts: &[&[u8]], limits: Limits) -> (bool, bool) {
    let mut sh = shared(limits);
    let mut conn = Conn::new(&sh);
    let mut app = App::default();
    for part in parts {
        conn.on_read(part, &mut sh, &mut app);
    }
    let r = (conn.is_closing(), conn.may_have_unread_input());
    conn.release(&mut sh);
    r
}

#[test]
fn a_close_after_a_complete_request_leaves_nothing_unread_and_anything_else_may() {
    let close = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".as_slice();
    let next = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".as_slice();
    let d = Limits::default();
    assert_eq!(unread_after(&[close], d), (true, false), "Connection: close alone");
    assert_eq!(unread_after(&close.chunks(1).collect::<Vec<_>>(), d), (true, false), "byte by byte");
    assert_eq!(unread_after(&[b"GET / HTTP/1.0\r\n\r\n"], d), (true, false), "HTTP/1.0");
    assert_eq!(unread_after(&[b"GET /close HTTP/1.1\r\nHost: t\r\n\r\n"], d), (true, false), "the handler closes");
    assert_eq!(unread_after(&[next, close], d), (true, false), "after a keep-alive one, in two reads");
    assert_eq!(unread_after(&[&[next, close].concat()], d), (true, false), "after a keep-alive one, in one read");
    assert_eq!(unread_after(&[&[close, next].concat()], d), (true, true), "a request after it, same read");
    assert_eq!(unread_after(&[close, next], d), (true, true), "a request after it, next read");
    assert_eq!(unread_after(&[close, b"x"], d), (true, true), "one byte after it");
    assert_eq!(unread_after(&[b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"], d), (true, true), "a refused head");
    let big = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nxx".as_slice();
    assert_eq!(unread_after(&[big], Limits::default().with_max_body(1024)), (true, true), "413 before the body");
    assert_eq!(unread_after(&[next], d), (false, false), "keep-alive");
}
