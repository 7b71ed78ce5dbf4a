//! What the two floor servers (`floor-uring`, `floor-epoll`) share: the
//! fixed answers, the request counter, the bytes a connection still owes,
//! and the worker processes.
//!
//! A floor server does the system-call work forkring does for `GET /` and
//! nothing else: it counts complete request heads (`\r\n\r\n`) without
//! parsing them and answers each with the bytes forkring's demo answers
//! `GET /` with (same headers, same sizes; the `Date` is fixed at start).
//! Its figures are what any server on this kernel pays to move these bytes;
//! forkring's figure divided by it is what forkring's own work costs.
//!
//! What it leaves out, on purpose: method, target and header parsing (a
//! `Connection: close` is recognised only as wrk and the bench's probes
//! spell it, at the start of a header line inside one receive), bodies,
//! routes other than the one answer, timeouts, limits, logging, the date's
//! refresh. It must not be used for anything but measuring.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::process::exit;

use socket2::SockRef;

use crate::reuseport_listener;

/// The answer to a request that keeps the connection: forkring's answer to
/// `GET /`, byte for byte in length (115 bytes).
pub const KEEP: &[u8] =
    b"HTTP/1.1 200 OK\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!";

/// The answer to a request that asks to close: as forkring's (134 bytes).
pub const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nContent-Length: 13\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\nHello, World!";

/// How many [`KEEP`] answers one send can carry: more than the complete
/// heads of the shortest request (`GET / HTTP/1.1\r\n\r\n`, 18 bytes) that
/// fit in one 8 KiB receive.
const COPIES: usize = 512;

/// [`KEEP`] repeated [`COPIES`] times: every send of keep-alive answers is
/// a slice of it, so no connection holds an output buffer.
pub fn answers() -> &'static [u8] {
    static ANSWERS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ANSWERS.get_or_init(|| KEEP.repeat(COPIES))
}

const TERMINATOR: &[u8; 4] = b"\r\n\r\n";
/// A header that asks to close, as wrk and the bench's probes send it.
const CLOSE_HEADER: &[u8] = b"Connection: close\r\n";

/// Counts complete request heads in a stream of receives: the bytes of a
/// `\r\n\r\n` matched so far carry over from one receive to the next.
#[derive(Debug, Default)]
pub struct Heads {
    /// Bytes of the terminator matched at the end of the last receive.
    matched: usize,
}

/// What one receive brought.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Count {
    /// Complete heads that keep the connection.
    pub keep: usize,
    /// Whether a complete head asked to close; nothing after it counts.
    pub close: bool,
}

impl Heads {
    /// Counts the heads that `bytes` completes.
    pub fn count(&mut self, bytes: &[u8]) -> Count {
        let mut count = Count::default();
        let mut asks_close = false;
        for (i, &b) in bytes.iter().enumerate() {
            if b == TERMINATOR[self.matched] {
                self.matched += 1;
                if self.matched == 2 && bytes[i + 1..].starts_with(CLOSE_HEADER) {
                    asks_close = true;
                } else if self.matched == TERMINATOR.len() {
                    self.matched = 0;
                    if asks_close {
                        count.close = true;
                        return count;
                    }
                    count.keep += 1;
                }
            } else {
                self.matched = usize::from(b == b'\r');
            }
        }
        count
    }
}

/// The answer bytes a connection owes and has not yet handed to a send:
/// a run of [`KEEP`] answers, then [`CLOSE`] if a request asked to close.
#[derive(Debug, Default)]
pub struct Owed {
    /// Bytes of keep-alive answers owed.
    keep: usize,
    /// Where in [`KEEP`] the next owed byte is.
    phase: usize,
    /// Bytes of the [`CLOSE`] answer owed after them (0 or from its end).
    close: usize,
    /// Whether the connection closes once everything is sent.
    closing: bool,
}

impl Owed {
    /// Adds the answers to what `count` found.
    pub fn add(&mut self, count: &Count) {
        if self.closing {
            return;
        }
        self.keep += count.keep * KEEP.len();
        if count.close {
            self.close = CLOSE.len();
            self.closing = true;
        }
    }

    /// The bytes to send next (empty when nothing is owed), and whether they
    /// are the last before the connection closes.
    pub fn next(&self) -> (&'static [u8], bool) {
        if self.keep > 0 {
            let all = answers();
            let n = self.keep.min(all.len() - self.phase);
            (&all[self.phase..self.phase + n], false)
        } else {
            (&CLOSE[CLOSE.len() - self.close..], self.close > 0)
        }
    }

    /// Takes `n` bytes of what [`Owed::next`] returned as sent.
    pub fn sent(&mut self, n: usize) {
        if self.keep > 0 {
            debug_assert!(n <= self.keep);
            self.keep -= n;
            self.phase = (self.phase + n) % KEEP.len();
        } else {
            debug_assert!(n <= self.close);
            self.close -= n;
        }
    }

    /// Whether nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.keep == 0 && self.close == 0
    }

    /// Whether the connection closes once [`Owed::is_empty`].
    pub fn closing(&self) -> bool {
        self.closing
    }
}

/// A floor worker's listening socket: as the other peers', with
/// `TCP_NODELAY` set for the connections to inherit, as forkring's.
pub fn listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let l = reuseport_listener(addr)?;
    SockRef::from(&l).set_nodelay(true)?;
    Ok(l)
}

/// Runs `worker` in `workers` processes, each with its own listening socket
/// bound before it forks, as forkring's workers have; the parent only waits
/// and exits when a worker does (taking the others with it).
pub fn run_processes(
    name: &str,
    addr: SocketAddr,
    workers: usize,
    worker: fn(usize, TcpListener) -> io::Result<()>,
) -> ! {
    let fail = |why: String| -> ! {
        eprintln!("{name}: {why}");
        exit(1)
    };
    let parent = std::process::id();
    for id in 0..workers {
        let l = listener(addr).unwrap_or_else(|e| fail(format!("listen {addr}: {e}")));
        // SAFETY: the parent has started no thread, so the child inherits a
        // consistent single-threaded process.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            fail(format!("fork: {}", io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and
            // touches no memory of ours.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            // SAFETY: getppid has no preconditions.
            if unsafe { libc::getppid() } as u32 != parent {
                exit(1);
            }
            match worker(id, l) {
                Ok(()) => exit(0),
                Err(e) => fail(format!("worker {id}: {e}")),
            }
        }
        drop(l);
    }
    let mut status = 0;
    // SAFETY: `status` is a valid place for waitpid to write to.
    unsafe { libc::waitpid(-1, &mut status, 0) };
    fail("a worker process exited".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_forkring_in_length() {
        assert_eq!(KEEP.len(), 115);
        assert_eq!(CLOSE.len(), 134);
    }

    #[test]
    fn heads_are_counted_across_receives() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let stream: Vec<u8> = req.repeat(5);
        for cut in 0..stream.len() {
            let mut h = Heads::default();
            let a = h.count(&stream[..cut]);
            let b = h.count(&stream[cut..]);
            assert_eq!(a.keep + b.keep, 5, "cut at {cut}");
        }
        let mut h = Heads::default();
        assert_eq!(h.count(b"\r\r\n\r\n\r\n\r\n").keep, 2);
    }

    #[test]
    fn a_close_ends_the_count() {
        let mut h = Heads::default();
        let c = h.count(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(c, Count { keep: 1, close: true });
    }

    #[test]
    fn owed_bytes_follow_the_answers() {
        let mut o = Owed::default();
        o.add(&Count { keep: 600, close: true });
        let mut out = Vec::new();
        let mut last = false;
        while !o.is_empty() {
            let (b, l) = o.next();
            // Short sends of 1000 bytes at most.
            let n = b.len().min(1000);
            out.extend_from_slice(&b[..n]);
            last = l;
            o.sent(n);
        }
        let mut want = KEEP.repeat(600);
        want.extend_from_slice(CLOSE);
        assert_eq!(out, want);
        assert!(last && o.closing());
    }
}
