//! The metrics listener: `GET /metrics` (the Prometheus text format),
//! `GET /ready` and `GET /live`, served by the master on its own loop.
//!
//! The master must never wait on a scraper, which may be slow or hostile,
//! and a balancer's health check must never wait behind one. So: the
//! sockets are non-blocking and sit in the master's epoll set; a request
//! head is at most [`MAX_REQUEST`] bytes and must arrive within
//! [`HEAD_TIMEOUT`]; at most [`MAX_CONNS`] connections are open at once,
//! and when they are, a new one takes the place of the oldest that has
//! not sent its request yet (it is closed), so idle connections cannot
//! keep a probe out; each connection has [`CONN_TIMEOUT`] in all, to send
//! its request and read its answer; at most [`ACCEPTS_PER_TURN`] accepts
//! per turn. So a flood of scrapes costs the master at most
//! [`ACCEPTS_PER_TURN`] + [`MAX_CONNS`] answers a turn, and the loop's other
//! work comes between turns. Every answer closes its connection. This is not the HTTP core: it reads one request
//! line and writes one fixed-form response.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::sys::epoll::{EpollEvent, EpollFlags};

use super::{Master, Token};
use crate::sys::context;

/// Largest request head read.
const MAX_REQUEST: usize = 4096;
/// Most scrape connections open at once.
pub(super) const MAX_CONNS: usize = 32;
/// Time a connection has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(1);
/// Time a connection has in all, to send its request and read the answer.
const CONN_TIMEOUT: Duration = Duration::from_secs(5);

/// Most connections accepted per loop turn.
const ACCEPTS_PER_TURN: usize = 16;

/// The listener and its connections.
#[derive(Debug)]
pub(super) struct Scrape {
    /// The listening socket (non-blocking).
    listener: TcpListener,
    /// Open connections, by index (the index is in their epoll token).
    conns: [Option<ScrapeConn>; MAX_CONNS],
}

/// One scraper's connection.
#[derive(Debug)]
struct ScrapeConn {
    /// The socket (non-blocking).
    stream: TcpStream,
    /// The request so far.
    input: Vec<u8>,
    /// The response, once the request is complete.
    output: Vec<u8>,
    /// Bytes of `output` sent.
    written: usize,
    /// When it was accepted: the oldest waiting connection makes room
    /// for a new one.
    opened: Instant,
    /// When the connection is closed: [`HEAD_TIMEOUT`] after it opened
    /// until its request is in, then [`CONN_TIMEOUT`] after it opened.
    deadline: Instant,
}

/// What to answer.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Ready,
    Live,
    NotFound,
    BadMethod,
    Bad,
}

/// Routes a complete request head (only its request line matters); the
/// bool says HEAD.
fn route(head: &[u8]) -> (Route, bool) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (Route::Bad, false);
    };
    if !version.starts_with(b"HTTP/1.") {
        return (Route::Bad, false);
    }
    let head_only = method == b"HEAD";
    if method != b"GET" && !head_only {
        return (Route::BadMethod, false);
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let r = match path {
        b"/metrics" => Route::Metrics,
        b"/ready" => Route::Ready,
        b"/live" | b"/healthz" => Route::Live,
        _ => Route::NotFound,
    };
    (r, head_only)
}

/// Whether `buf` holds a whole request head.
fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

/// A complete response that closes the connection.
fn response(status: &str, content_type: &str, body: &[u8], head_only: bool, extra: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Cache-Control: no-store\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

impl Scrape {
    /// Binds `addr` (host:port).
    pub(super) fn bind(addr: &str) -> io::Result<Scrape> {
        let sa = crate::listen::resolve(addr)?;
        let listener = TcpListener::bind(sa).map_err(|e| context(e, format_args!("metrics: bind {addr}")))?;
        listener.set_nonblocking(true)?;
        Ok(Scrape { listener, conns: Default::default() })
    }

    /// Serves on a listener handed over by the master this one replaces.
    pub(super) fn from_fd(fd: std::os::fd::OwnedFd) -> io::Result<Scrape> {
        let listener = TcpListener::from(fd);
        listener.set_nonblocking(true)?;
        Ok(Scrape { listener, conns: Default::default() })
    }

    /// The address it serves.
    pub(super) fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The listener's descriptor.
    pub(super) fn fd(&self) -> std::os::fd::RawFd {
        self.listener.as_raw_fd()
    }

    /// The connection open longest that has not sent its whole request.
    fn oldest_waiting(&self) -> Option<usize> {
        (0..MAX_CONNS)
            .filter_map(|i| self.conns[i].as_ref().filter(|c| c.output.is_empty()).map(|c| (c.opened, i)))
            .min()
            .map(|(_, i)| i)
    }

    /// The earliest connection deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.conns.iter().flatten().map(|c| c.deadline).min()
    }
}

impl Master<'_> {
    /// The metrics listener is readable: takes in a bounded number of
    /// connections.
    pub(super) fn scrape_accept(&mut self) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(scrape) = &mut self.scrape else { return };
            let stream = match scrape.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::ConnectionAborted => {
                    continue
                }
                Err(e) => {
                    // Out of descriptors, say: the next turn tries again.
                    log::debug!("metrics: accept: {e}");
                    return;
                }
            };
            let i = match scrape.conns.iter().position(Option::is_none) {
                Some(i) => i,
                // Full: the oldest connection still waiting for its request
                // makes room; when every one is being answered, the new
                // one is closed at once (dropped).
                None => match scrape.oldest_waiting() {
                    Some(i) => {
                        log::debug!("metrics: {MAX_CONNS} connections open; closing the oldest idle one");
                        self.scrape_close(i);
                        i
                    }
                    None => {
                        log::debug!("metrics: {MAX_CONNS} connections answering; closing a new one");
                        continue;
                    }
                },
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let ev = EpollEvent::new(EpollFlags::EPOLLIN, Token::Scrape(i).encode());
            if self.epoll.add(stream.as_fd(), ev).is_err() {
                continue;
            }
            let now = Instant::now();
            let conn = ScrapeConn {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                opened: now,
                deadline: now + HEAD_TIMEOUT,
            };
            if let Some(scrape) = &mut self.scrape {
                scrape.conns[i] = Some(conn);
            }
        }
    }

    /// Scrape connection `i` is readable or writable.
    pub(super) fn scrape_io(&mut self, i: usize) {
        let Some(conn) = self.scrape.as_mut().and_then(|s| s.conns.get_mut(i)).and_then(Option::as_mut) else { return };
        if conn.output.is_empty() {
            let mut buf = [0u8; 1024];
            loop {
                match conn.stream.read(&mut buf) {
                    Ok(0) => return self.scrape_close(i),
                    Ok(n) => {
                        let room = MAX_REQUEST - conn.input.len();
                        conn.input.extend_from_slice(&buf[..n.min(room)]);
                        if head_complete(&conn.input) || conn.input.len() >= MAX_REQUEST {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return self.scrape_close(i),
                }
            }
            let output = if head_complete(&conn.input) {
                let (r, head_only) = route(&conn.input);
                self.scrape_answer(r, head_only)
            } else {
                response("431 Request Header Fields Too Large", "text/plain", b"request too large\n", false, "")
            };
            let Some(conn) = self.scrape.as_mut().and_then(|s| s.conns[i].as_mut()) else { return };
            conn.output = output;
            conn.input = Vec::new();
            conn.deadline = conn.opened + CONN_TIMEOUT;
            let ev = EpollEvent::new(EpollFlags::EPOLLOUT, Token::Scrape(i).encode());
            let mut ev = ev;
            if self.epoll.modify(conn.stream.as_fd(), &mut ev).is_err() {
                return self.scrape_close(i);
            }
        }
        let Some(conn) = self.scrape.as_mut().and_then(|s| s.conns[i].as_mut()) else { return };
        while conn.written < conn.output.len() {
            match conn.stream.write(&conn.output[conn.written..]) {
                Ok(0) => return self.scrape_close(i),
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.scrape_close(i),
            }
        }
        self.scrape_close(i);
    }

    /// The response to a request.
    fn scrape_answer(&mut self, r: Route, head_only: bool) -> Vec<u8> {
        match r {
            Route::Metrics => {
                let text = self.metrics().to_prometheus();
                response("200 OK", "text/plain; version=0.0.4; charset=utf-8", text.as_bytes(), head_only, "")
            }
            Route::Ready => {
                if self.metrics_cluster_ready() {
                    response("200 OK", "text/plain", b"ready\n", head_only, "")
                } else {
                    response("503 Service Unavailable", "text/plain", b"not ready\n", head_only, "")
                }
            }
            Route::Live => response("200 OK", "text/plain", b"live\n", head_only, ""),
            Route::NotFound => response("404 Not Found", "text/plain", b"not found\n", head_only, ""),
            Route::BadMethod => {
                response("405 Method Not Allowed", "text/plain", b"method not allowed\n", false, "Allow: GET, HEAD\r\n")
            }
            Route::Bad => response("400 Bad Request", "text/plain", b"bad request\n", false, ""),
        }
    }

    /// Closes scrape connection `i`.
    fn scrape_close(&mut self, i: usize) {
        if let Some(conn) = self.scrape.as_mut().and_then(|s| s.conns.get_mut(i)).and_then(Option::take) {
            let _ = self.epoll.delete(conn.stream.as_fd());
        }
    }

    /// Closes the scrape connections whose time is up.
    pub(super) fn scrape_expire(&mut self, now: Instant) {
        let expired: Vec<usize> = match &self.scrape {
            Some(s) => (0..MAX_CONNS).filter(|&i| s.conns[i].as_ref().is_some_and(|c| c.deadline <= now)).collect(),
            None => return,
        };
        for i in expired {
            log::debug!("metrics: a connection timed out");
            self.scrape_close(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), (Route::Metrics, false));
        assert_eq!(route(b"HEAD /ready?x=1 HTTP/1.0\r\n\r\n"), (Route::Ready, true));
        assert_eq!(route(b"GET /live HTTP/1.1\n\n"), (Route::Live, false));
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n").0, Route::BadMethod);
        assert_eq!(route(b"GET /x HTTP/1.1\r\n\r\n").0, Route::NotFound);
        assert_eq!(route(b"GET /metrics\r\n\r\n").0, Route::Bad);
        assert_eq!(route(b"\x00\xff garbage\r\n\r\n").0, Route::Bad);
        assert!(head_complete(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!head_complete(b"GET / HTTP/1.1\r\n"));
    }
}
