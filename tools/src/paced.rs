//! A client at a fixed request rate: what the slowloris scenario calls a
//! normal client. wrk measures at saturation, where its p99 is the queue of
//! its own closed loop (a request waits for the one before it on its
//! connection, and a stall of either side's CPU shows as latency); a normal
//! client asks when it needs to, whatever the server is doing.
//!
//! One thread, `conns` keep-alive connections, `GET /`. Request `n` is due
//! at `start + n / rate` and goes out on connection `n % conns`, behind any
//! answer that connection still owes (pipelined, not held back). Its
//! latency is counted from that due time to its answer's last byte, so a
//! server that stalls is charged for every request it delays, not only the
//! first (no coordinated omission).
//!
//! The thread polls instead of sleeping, and so keeps its CPU busy: on a VM
//! a CPU that sleeps between requests takes tens of microseconds to wake,
//! which the figure would charge to the server (in three rounds of the
//! slowloris scenario at 5,000 requests/s, quiet and attacked, both
//! servers: medians of 128–162 µs sleeping on a `timerfd`, 60–86 µs
//! polling).
//!
//! Every answer is checked (status 200, the body the harness expects);
//! anything else, a request that cannot be written, an answer missing a
//! second after the last request was due, or a connection that fails counts
//! as an error. Bounded: the run ends `dur` plus that second after it
//! starts, whatever comes.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::load::{Histogram, HELLO};
use crate::procs;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: stress\r\n\r\n";
/// How long answers may lag behind the last due time.
const DRAIN: Duration = Duration::from_secs(1);

/// What a paced run measured.
#[derive(Clone, Default)]
pub struct Paced {
    /// Latency from each request's due time to its answer, in µs.
    pub latency: Histogram,
    /// Requests due.
    pub due: u64,
    /// Requests answered with 200 and the expected body.
    pub ok: u64,
    /// Everything else (see the module's text).
    pub errors: u64,
}

/// Sends `rate` requests a second to `addr` over `conns` connections for
/// `dur`, from a thread pinned to `cpu` if given.
pub fn run(addr: SocketAddr, conns: usize, rate: u32, dur: Duration, cpu: Option<usize>) -> Result<Paced, String> {
    std::thread::Builder::new()
        .name("paced".into())
        .spawn(move || {
            if let Some(cpu) = cpu {
                procs::pin_to(cpu).map_err(|e| format!("pin the paced client to CPU {cpu}: {e}"))?;
            }
            drive(addr, conns.max(1), rate.max(1), dur)
        })
        .map_err(|e| format!("start the paced client: {e}"))?
        .join()
        .map_err(|_| "the paced client panicked".to_owned())?
}

/// One keep-alive connection and the due times of the answers it owes.
struct Conn {
    stream: TcpStream,
    owed: VecDeque<Instant>,
    buf: Vec<u8>,
    broken: bool,
}

fn drive(addr: SocketAddr, conns: usize, rate: u32, dur: Duration) -> Result<Paced, String> {
    let ep = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut cs = Vec::with_capacity(conns);
    for i in 0..conns {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        ep.add(stream.as_raw_fd(), i).map_err(|e| format!("epoll_ctl: {e}"))?;
        cs.push(Conn { stream, owed: VecDeque::new(), buf: Vec::with_capacity(4096), broken: false });
    }
    let period = Duration::from_secs(1) / rate;
    let total = (dur.as_secs_f64() * f64::from(rate)) as u64;
    let mut out = Paced::default();
    let start = Instant::now();
    let end = start + dur + DRAIN;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    loop {
        let now = Instant::now();
        if now >= end || (out.due >= total && cs.iter().all(|c| c.owed.is_empty())) {
            break;
        }
        // Every request due by now goes out, each stamped with its own due
        // time.
        while out.due < total {
            let due = start + period * (out.due as u32 + 1);
            if due > now {
                break;
            }
            let c = &mut cs[out.due as usize % conns];
            out.due += 1;
            if c.broken || !matches!(c.stream.write(REQUEST), Ok(k) if k == REQUEST.len()) {
                // A partial write would leave the connection out of step:
                // it is retired with what it owes.
                retire(c, &ep, &mut out);
                out.errors += 1;
                continue;
            }
            c.owed.push_back(due);
        }
        let n = ep.poll(&mut events).map_err(|e| format!("epoll_wait: {e}"))?;
        for ev in &events[..n] {
            let c = &mut cs[ev.u64 as usize];
            if read_answers(c, &mut out).is_err() {
                retire(c, &ep, &mut out);
            }
        }
    }
    out.errors += cs.iter().map(|c| c.owed.len() as u64).sum::<u64>();
    out.errors += total - out.due;
    Ok(out)
}

/// Counts what `c` owes as failed and takes it out of use.
fn retire(c: &mut Conn, ep: &Epoll, out: &mut Paced) {
    out.errors += c.owed.len() as u64;
    c.owed.clear();
    if !c.broken {
        c.broken = true;
        ep.remove(c.stream.as_raw_fd());
    }
}

/// Reads what `c` has and counts every whole answer in it. An error means
/// the connection is of no further use.
fn read_answers(c: &mut Conn, out: &mut Paced) -> Result<(), ()> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => return Err(()),
            Ok(k) => c.buf.extend_from_slice(&chunk[..k]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    let now = Instant::now();
    while let Some(end) = answer_end(&c.buf)? {
        let good = c.buf.starts_with(b"HTTP/1.1 200 ") && c.buf[..end].ends_with(HELLO);
        c.buf.drain(..end);
        let Some(due) = c.owed.pop_front() else { return Err(()) };
        if good {
            out.ok += 1;
            out.latency.record(now.saturating_duration_since(due));
        } else {
            out.errors += 1;
        }
    }
    Ok(())
}

/// Where the first whole answer in `buf` ends, if one is there: a head and
/// a `Content-Length` body (the servers under test frame `GET /` so).
fn answer_end(buf: &[u8]) -> Result<Option<usize>, ()> {
    let Some(head_end) = forkring_testkit::http::find(buf, b"\r\n\r\n").map(|i| i + 4) else {
        return if buf.len() > forkring_testkit::http::HEAD_LIMIT { Err(()) } else { Ok(None) };
    };
    let resp = forkring_testkit::http::parse_head(&buf[..head_end - 4]).map_err(|_| ())?;
    let len: usize = resp.header("Content-Length").and_then(|v| v.parse().ok()).ok_or(())?;
    Ok((buf.len() >= head_end + len).then_some(head_end + len))
}

struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is new and owned by nothing else.
        Ok(Epoll { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn add(&self, fd: RawFd, token: usize) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token as u64 };
        // SAFETY: registers a live descriptor; `ev` is a local.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn remove(&self, fd: RawFd) {
        // SAFETY: deregisters a descriptor; a null event is allowed for DEL.
        unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    /// What is ready now, without waiting.
    fn poll(&self, events: &mut [libc::epoll_event]) -> io::Result<usize> {
        loop {
            // SAFETY: `events` has room for its length.
            let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server on 127.0.0.1 answering every `GET /` on every connection
    /// with `answer`, one thread per connection, until the client leaves.
    fn serve(answer: &'static [u8], conns: usize) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for _ in 0..conns {
                let Ok((mut s, _)) = l.accept() else { return };
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                std::thread::spawn(move || {
                    let mut pending = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(k @ 1..) = s.read(&mut chunk) {
                        pending.extend_from_slice(&chunk[..k]);
                        while let Some(i) = forkring_testkit::http::find(&pending, b"\r\n\r\n") {
                            pending.drain(..i + 4);
                            if s.write_all(answer).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn every_due_request_is_answered_and_timed() {
        let addr = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!", 3);
        let r = run(addr, 3, 1000, Duration::from_millis(300), None).unwrap();
        assert_eq!((r.due, r.ok, r.errors), (300, 300, 0));
        assert!(r.latency.quantile(1.0) > 0);
    }

    #[test]
    fn wrong_answers_and_missing_ones_are_errors() {
        let addr = serve(b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\nHello, World!", 2);
        let r = run(addr, 2, 1000, Duration::from_millis(100), None).unwrap();
        assert_eq!((r.due, r.ok, r.errors), (100, 0, 100));
        // A server that never answers: every request is still due, and
        // failed once the drain second is over.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let t0 = Instant::now();
        let r = run(silent.local_addr().unwrap(), 2, 1000, Duration::from_millis(100), None).unwrap();
        assert_eq!((r.due, r.ok, r.errors), (100, 0, 100));
        assert!(t0.elapsed() < Duration::from_secs(3), "bounded by the drain second");
    }

    #[test]
    fn answers_are_split_at_their_length() {
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";
        let mut two = one.to_vec();
        two.extend_from_slice(one);
        assert_eq!(answer_end(&two), Ok(Some(one.len())));
        assert_eq!(answer_end(&one[..one.len() - 1]), Ok(None));
        assert_eq!(answer_end(b"HTTP/1.1 200 OK\r\n"), Ok(None));
        assert_eq!(answer_end(b"HTTP/1.1 200 OK\r\n\r\n"), Err(()), "no Content-Length");
    }
}
