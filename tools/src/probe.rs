//! One-off requests that ask a server whether it serves: `GET path` on a
//! new connection, its status read with the test kit's strict reader.
//! Every harness uses them to learn that a server it started is up
//! (`/`, or a readiness route such as `/ready`) and that it still answers
//! after a fault.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use forkring_testkit::http;

/// Longest time one response may take in all, however it trickles in (each
/// single read is bounded by the stream's own timeout).
pub const RESPONSE_LIMIT: Duration = Duration::from_secs(30);

/// One `GET path` on a new connection (`Connection: close`); its status.
/// Each step (connect, write, each read) waits at most `timeout`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: stress\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    http::read_response(&mut s, &mut buf, false, RESPONSE_LIMIT)
        .map(|r| r.status)
        .map_err(|e| format!("{:?} {}", e.fail, e.detail))
}

/// One `GET /`; its status.
pub fn get_once(addr: SocketAddr, timeout: Duration) -> Result<u16, String> {
    get(addr, "/", timeout)
}

/// Waits at most `timeout` until `GET /` on `addr` answers 200.
pub fn wait_serving(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match get_once(addr, Duration::from_secs(1)) {
            Ok(200) => return Ok(()),
            Ok(s) => last = format!("status {s}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(last)
}

/// Splits `http://HOST:PORT/PATH` into the address and the path (`/` when
/// none is given). Only numeric addresses: the harnesses speak to
/// loopback and namespace addresses they chose.
pub fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: not an http:// URL"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    let addr = host.parse().map_err(|e| format!("{url}: {host}: {e}"))?;
    Ok((addr, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        let (a, p) = parse_url("http://127.0.0.1:8080/ready").unwrap();
        assert_eq!((a, p.as_str()), ("127.0.0.1:8080".parse().unwrap(), "/ready"));
        assert_eq!(parse_url("http://127.0.0.1:9").unwrap().1, "/");
        assert!(parse_url("127.0.0.1:9").is_err());
        assert!(parse_url("http://localhost:9/").is_err());
    }
}
