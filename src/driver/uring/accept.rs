//! Taking connections in: a multishot accept per listener kept in the
//! kernel while the core allows accepting (and cancelled when it does
//! not), their completions, and a new connection's place in the table. Where it stops:
//! whether to accept, and what an accept error means, is the core's
//! ([`crate::driver::core::AcceptError`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::conn::Connection;
use super::sqe;
use super::submit::Multishot;
use super::token::Token;
use super::Driver;
use crate::driver::core::AcceptError;
use crate::http::{Conn, Handler};

/// Below this many free connection slots, connections are accepted one
/// submission at a time: a multishot accept takes every connection queued
/// in the backlog at once, which could overshoot `max_connections`.
const ACCEPT_MULTISHOT_HEADROOM: usize = 256;

impl<H: Handler> Driver<'_, '_, H> {
    /// Keeps an accept in the kernel on every listener while the core
    /// allows accepting, and cancels them when the core no longer does.
    pub(super) fn reconcile_accept(&mut self) {
        let live = self.conns.len();
        let want = self.core.may_accept(live);
        for index in 0..self.accept.len() {
            match (want, self.accept[index]) {
                (true, Multishot::Off) => {
                    let Some(Some(listener)) = self.core.listeners.get(index) else { continue };
                    let headroom = self.core.config.max_connections.saturating_sub(live);
                    let accept = sqe::accept(listener.as_raw_fd(), index, headroom > ACCEPT_MULTISHOT_HEADROOM);
                    // SAFETY: an accept that asks for no peer address refers
                    // to no memory.
                    let r = unsafe { self.io.push(accept) };
                    if r.is_ok() {
                        self.accept[index] = Multishot::Armed;
                    }
                    self.check(r);
                }
                (false, Multishot::Armed) => {
                    let r = self.io.cancel(Token::accept(index));
                    if r.is_ok() {
                        self.accept[index] = Multishot::Cancelling;
                    }
                    self.check(r);
                }
                _ => {}
            }
        }
    }

    /// An accept on listener `index` completed: a connection, or an error
    /// for the core's policy (an unusable listener starts the drain).
    pub(super) fn on_accept(&mut self, index: usize, res: i32, flags: u32) {
        if !io_uring::cqueue::more(flags) {
            if let Some(a) = self.accept.get_mut(index) {
                *a = Multishot::Off;
            }
        }
        if res >= 0 {
            self.core.on_accepted();
            // SAFETY: the kernel just installed this descriptor for us and
            // nothing else owns it.
            self.add(unsafe { OwnedFd::from_raw_fd(res) });
            return;
        }
        if -res == libc::ECANCELED {
            return;
        }
        if self.core.on_accept_error(-res) == AcceptError::Unusable {
            self.start_drain();
        }
    }

    /// Takes in a connection just accepted (a draining worker drains it at
    /// once).
    pub(super) fn add(&mut self, fd: OwnedFd) {
        self.core.sh.count_accept();
        let mut http = Conn::new(&self.core.sh);
        if self.core.draining() {
            http.start_drain(&self.core.sh);
        }
        let Some(key) = self.conns.insert(Connection::new(fd, http)) else {
            log::warn!("connection table full; closing a new connection");
            self.core.sh.count_close();
            return;
        };
        if let Some(c) = self.conns.get_mut(key) {
            c.http.set_token(key.pack());
            c.http.set_socket(c.fd.as_raw_fd());
        }
        self.mark(key);
    }
}
