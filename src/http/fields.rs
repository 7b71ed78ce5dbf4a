//! What the fields of a request head mean for the connection: the
//! version, the body's framing (`Content-Length`, `Transfer-Encoding`), the
//! `Host` authority, `Connection` and `Expect`. Pure functions over parsed
//! bytes; the head parser (`conn/head.rs`) calls them once per head.

use super::request::Version;

/// How the body of a request is framed, from its headers.
pub(super) struct Framing {
    /// A `Content-Length`, when the body has one.
    pub(super) length: Option<u64>,
    /// `Transfer-Encoding` ends in `chunked`.
    pub(super) chunked: bool,
    /// The connection stays open after the response.
    pub(super) keep_alive: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub(super) expect_continue: bool,
}

/// 505 for a well-formed version other than 1.0 and 1.1, 400 otherwise;
/// `None` while the request line is cut short inside what may still become
/// a well-formed version (the answer must not depend on how reads split).
pub(super) fn version_status(buf: &[u8]) -> Option<u16> {
    const FORM: &[u8; 8] = b"HTTP/d.d";
    let line_end = buf.iter().position(|&b| b == b'\r' || b == b'\n');
    let line = &buf[..line_end.unwrap_or(buf.len())];
    // `method SP target SP version`: a third space means a broken line
    // (a space in the target), whatever follows the last one.
    if line.iter().filter(|&&b| b == b' ').count() != 2 {
        return Some(400);
    }
    let Some(sp) = line.iter().rposition(|&b| b == b' ') else {
        return Some(400);
    };
    let v = &line[sp + 1..];
    let fits =
        v.len() <= FORM.len() && v.iter().zip(FORM).all(|(&b, &f)| if f == b'd' { b.is_ascii_digit() } else { b == f });
    match (fits, line_end) {
        (false, _) => Some(400),
        (true, None) => None,
        (true, Some(_)) if v.len() == FORM.len() => Some(505),
        (true, Some(_)) => Some(400),
    }
}

/// Reads the framing-relevant headers, rejecting what RFC 9112 calls
/// faulty framing (request smuggling vectors) with 400, unknown transfer
/// codings with 501, and unknown expectations with 417.
pub(super) fn framing(headers: &[httparse::Header<'_>], version: Version) -> Result<Framing, u16> {
    let mut length: Option<u64> = None;
    let mut te_seen = false;
    let mut te_last_chunked = false;
    let mut te_unknown = false;
    // A registered coding other than `chunked`: this server does not
    // decode it, so the handler would get a body it cannot read.
    let mut te_undecoded = false;
    let mut hosts = 0;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    for h in headers {
        let name = h.name.as_bytes();
        // Five names matter here, of five lengths: most fields are none of
        // them, and the length tells at once.
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                if length.is_some() {
                    return Err(400);
                }
                length = Some(parse_length(h.value)?);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                te_seen = true;
                for coding in h.value.split(|&b| b == b',') {
                    let coding = trim(coding);
                    if te_last_chunked {
                        // `chunked` must be the final coding, applied once.
                        return Err(400);
                    }
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        te_last_chunked = true;
                    } else if coding.is_empty() {
                        return Err(400);
                    } else if coding.eq_ignore_ascii_case(b"gzip")
                        || coding.eq_ignore_ascii_case(b"x-gzip")
                        || coding.eq_ignore_ascii_case(b"deflate")
                        || coding.eq_ignore_ascii_case(b"compress")
                        || coding.eq_ignore_ascii_case(b"x-compress")
                    {
                        te_undecoded = true;
                    } else {
                        te_unknown = true;
                    }
                }
            }
            4 if name.eq_ignore_ascii_case(b"host") => {
                hosts += 1;
                if !valid_host(trim(h.value)) {
                    return Err(400);
                }
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in h.value.split(|&b| b == b',') {
                    let token = trim(token);
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive_token = true;
                    }
                }
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                if trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(417);
                }
            }
            _ => {}
        }
    }
    if te_seen {
        if te_unknown {
            return Err(501);
        }
        if !te_last_chunked || length.is_some() || version == Version::Http10 {
            return Err(400);
        }
        if te_undecoded {
            return Err(501);
        }
    }
    if hosts > 1 || (hosts == 0 && version == Version::Http11) {
        return Err(400);
    }
    let keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive_token && !close,
    };
    Ok(Framing { length, chunked: te_seen, keep_alive, expect_continue })
}

/// `Content-Length = 1*DIGIT`, nothing else: no sign, no list, no
/// whitespace inside, no overflow.
fn parse_length(value: &[u8]) -> Result<u64, u16> {
    let v = trim(value);
    if v.is_empty() || v.len() > 19 {
        return Err(400);
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return Err(400);
        }
        n = n * 10 + (b - b'0') as u64;
    }
    Ok(n)
}

/// `Host = uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2.2): a
/// reg-name (unreserved, sub-delims, percent-encoded; an IPv4 address is
/// one), or an IP-literal in brackets; the port all digits. Empty is valid:
/// it is what a client sends for a target without an authority.
fn valid_host(v: &[u8]) -> bool {
    let port = match v.strip_prefix(b"[") {
        Some(rest) => {
            let Some(close) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            if !valid_ip_literal(&rest[..close]) {
                return false;
            }
            &rest[close + 1..]
        }
        None => &v[reg_name_len(v, false)..],
    };
    match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// How many bytes at the front of `v` make a `reg-name = *( unreserved /
/// pct-encoded / sub-delims )`, with `:` too when `colon` (IPvFuture).
fn reg_name_len(v: &[u8], colon: bool) -> usize {
    let mut i = 0;
    loop {
        // The usual bytes (every byte of most hosts) in a tight loop.
        while i < v.len() && REG_NAME[v[i] as usize] {
            i += 1;
        }
        match v.get(i) {
            Some(b':') if colon => i += 1,
            Some(b'%') if v.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) => i += 3,
            _ => return i,
        }
    }
}

/// The bytes of a reg-name but `%` (unreserved and sub-delims), as a table:
/// every `Host` value is checked.
static REG_NAME: [bool; 256] = super::syntax::alnum_and(b"-._~!$&'()*+,;=");

/// The inside of `[...]`: an IPv6 address, or `IPvFuture = "v" 1*HEXDIG "."
/// 1*( unreserved / sub-delims / ":" )`.
fn valid_ip_literal(v: &[u8]) -> bool {
    if let Some(rest) = v.strip_prefix(b"v").or_else(|| v.strip_prefix(b"V")) {
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (ver, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !ver.is_empty()
            && ver.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && !tail.contains(&b'%')
            && reg_name_len(tail, true) == tail.len();
    }
    std::str::from_utf8(v).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |e| e + 1);
    &v[start..end]
}
