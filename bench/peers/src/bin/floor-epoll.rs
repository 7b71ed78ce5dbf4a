//! The epoll floor: the least work a server can do to answer forkring's
//! `GET /` on this kernel the way forkring's epoll driver does it, so that
//! forkring's figures can be read as a ratio to it.
//!
//! Per worker process: one epoll instance; the listener and every
//! connection registered edge-triggered (connections for input, output and
//! peer hang-up, as forkring's); connections accepted with `accept4`
//! (non-blocking, close-on-exec) once per turn after the events, until it
//! would block; reads into one worker-wide 64 KiB buffer until one comes
//! back short; then one send of every answer owed, from a static buffer
//! ([`forkring_bench_peers::floor`]); a socket closed with `close` when the
//! peer ends, fails, or asked to close and has its answer.
//!
//! What it leaves out (the work forkring's figure includes and this one
//! does not): parsing, routing, a handler, per-connection output buffers,
//! timers and deadlines, the master's messages and the wake-up eventfds,
//! metrics, draining, lingering closes. It serves `GET /`-like requests
//! only: no bodies, so not the `post` or static workloads.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};

use forkring_bench_peers::floor::{self, Heads, Owed};
use forkring_bench_peers::{args, ready};

const NAME: &str = "floor-epoll";

/// The worker-wide receive buffer and the events per wait, as forkring's.
const READ_BUF: usize = 64 * 1024;
const EVENTS: usize = 1024;
/// The listener's token in the events (connections carry their descriptor).
const LISTENER: u64 = u64::MAX;
const CONN_INTEREST: u32 = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

/// A connection, found by its descriptor.
#[derive(Default)]
struct Conn {
    open: bool,
    /// The send buffer had no room at the last send: wait for `EPOLLOUT`.
    blocked: bool,
    heads: Heads,
    owed: Owed,
}

/// Runs a system call returning -1 on failure.
fn check(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

struct Worker {
    epoll: RawFd,
    listener: RawFd,
    conns: Vec<Conn>,
    buf: Box<[u8]>,
}

/// What a connection's turn ended with.
enum Next {
    Keep,
    Close,
}

impl Worker {
    fn accept(&mut self) -> io::Result<()> {
        loop {
            // SAFETY: no address is asked for.
            let r = unsafe {
                libc::accept4(
                    self.listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            let fd = match check(r as isize) {
                Ok(fd) => fd as RawFd,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors, or the connection died in the queue:
                // the next edge tries again.
                Err(_) => return Ok(()),
            };
            if self.conns.len() <= fd as usize {
                self.conns.resize_with(fd as usize + 1, Conn::default);
            }
            self.conns[fd as usize] = Conn { open: true, ..Conn::default() };
            let mut ev = libc::epoll_event { events: CONN_INTEREST, u64: fd as u64 };
            // SAFETY: `ev` is a valid event for the call's duration.
            check(unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) } as isize)?;
        }
    }

    /// Reads what `fd` has, then sends what it owes.
    fn drive(&mut self, fd: RawFd, events: u32) -> Next {
        let c = &mut self.conns[fd as usize];
        if events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
            loop {
                // SAFETY: `buf` is valid for writes of its length.
                let r = unsafe { libc::recv(fd, self.buf.as_mut_ptr().cast(), self.buf.len(), 0) };
                match check(r) {
                    Ok(0) => return Next::Close,
                    Ok(n) => {
                        let count = c.heads.count(&self.buf[..n]);
                        c.owed.add(&count);
                        // A short read emptied the socket: no recv to learn
                        // that it would block.
                        if n < self.buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Next::Close,
                }
            }
        }
        if events & libc::EPOLLOUT as u32 != 0 {
            c.blocked = false;
        }
        while !c.blocked && !c.owed.is_empty() {
            let (bytes, last) = c.owed.next();
            let flags = libc::MSG_NOSIGNAL | if last { libc::MSG_MORE } else { 0 };
            // SAFETY: `bytes` is valid for reads of its length.
            let r = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), flags) };
            match check(r) {
                Ok(n) => {
                    c.owed.sent(n);
                    c.blocked = n < bytes.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        if c.owed.is_empty() && c.owed.closing() {
            Next::Close
        } else {
            Next::Keep
        }
    }
}

fn worker(id: usize, listener: TcpListener) -> io::Result<()> {
    // SAFETY: plain flags.
    let epoll = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } as isize)? as RawFd;
    let mut w = Worker { epoll, listener: listener.as_raw_fd(), conns: Vec::new(), buf: vec![0; READ_BUF].into() };
    let mut ev = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLET) as u32, u64: LISTENER };
    // SAFETY: `ev` is a valid event for the call's duration.
    check(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, w.listener, &mut ev) } as isize)?;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    ready(NAME, id);
    // Accepting before the first wait: connections may already be queued.
    let mut accept = true;
    loop {
        if accept {
            w.accept()?;
        }
        // SAFETY: `events` is valid for writes of EVENTS entries.
        let n = match check(unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), EVENTS as i32, -1) } as isize) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        accept = false;
        for ev in &events[..n] {
            let (token, bits) = (ev.u64, ev.events);
            if token == LISTENER {
                accept = true;
                continue;
            }
            let fd = token as RawFd;
            if !w.conns[fd as usize].open {
                continue;
            }
            if let Next::Close = w.drive(fd, bits) {
                w.conns[fd as usize].open = false;
                // SAFETY: the descriptor is the connection's own, closed
                // once; closing it also takes it out of the epoll set.
                unsafe { libc::close(fd) };
            }
        }
    }
}

fn main() {
    let a = args(NAME);
    let _ = floor::answers();
    floor::run_processes(NAME, a.listen, a.workers, worker)
}
