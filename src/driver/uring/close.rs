//! Letting connections go: closing one (its operations cancelled, its
//! slot freed once none is left in the kernel), closing one at once with
//! its FIN when nothing but its recv is in flight, freeing a slot, and
//! handing an upgraded connection over. Where it stops: whether a
//! connection closes, lingers or stays is the core's
//! ([`crate::driver::core::after_output`]).

use std::os::fd::{AsRawFd, IntoRawFd};

use super::conn::{FdClose, Splice};
use super::sqe;
use super::submit::Multishot;
use super::token::{Op, Token};
use super::Driver;
use crate::driver::core::{self, Phase};
use crate::driver::slab::Key;
use crate::http::Handler;

impl<H: Handler> Driver<'_, '_, H> {
    /// Closes connection `key`: its operations are cancelled, and the slot
    /// is freed once none is left in the kernel.
    pub(super) fn close(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.phase == Phase::Closing {
            return;
        }
        c.phase = Phase::Closing;
        let mut cancels = [None, None, None, None];
        if c.recv == Multishot::Armed {
            c.recv = Multishot::Cancelling;
            cancels[0] = Some(Token::new(Op::Recv, key));
        }
        if c.sending {
            cancels[1] = Some(Token::new(Op::Send, key));
        }
        match c.splice {
            Splice::In => cancels[2] = Some(Token::new(Op::SpliceIn, key)),
            Splice::Out => {
                cancels[2] = Some(Token::new(Op::PollOut, key));
                cancels[3] = Some(Token::new(Op::SpliceOut, key));
            }
            Splice::Off => {}
        }
        let busy = c.busy();
        for target in cancels.into_iter().flatten() {
            let r = self.io.cancel(target);
            self.check(r);
        }
        if busy {
            self.mark(key);
        } else {
            self.free(key);
        }
    }

    /// Closes connection `key`, whose output is all sent, at once: while its
    /// recv is in the kernel, a cancel of the recv and a close of the socket
    /// go in one submission (the socket is released when the recv lets go
    /// of it), with no system call of their own. Both run inline; a
    /// shutdown through the ring would not (the kernel always hands it to
    /// an io-wq worker thread, a thread switch per connection).
    pub(super) fn close_now(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.phase == Phase::Closing || c.recv != Multishot::Armed || c.sending || c.splice != Splice::Off {
            self.close(key);
            return;
        }
        let close = sqe::close(c.fd.as_raw_fd(), key);
        let r = self.io.cancel(Token::new(Op::Recv, key));
        // SAFETY: a close refers to no memory.
        let r = r.and_then(|()| unsafe { self.io.push(close) });
        if let Err(e) = r {
            self.fatal.get_or_insert(e);
            return;
        }
        c.recv = Multishot::Cancelling;
        c.phase = Phase::Closing;
        c.fd_close = FdClose::Ring;
        self.mark(key);
    }

    /// Frees connection `key`: nothing of it may be in the kernel any more.
    pub(super) fn free(&mut self, key: Key) {
        let Some(c) = self.conns.remove(key) else {
            return;
        };
        debug_assert!(!c.busy());
        if let Some(out) = c.out {
            self.core.sh.recycle(out.buf);
        }
        c.http.release(&mut self.core.sh);
        self.core.sh.count_close();
        if c.fd_close == FdClose::Closed {
            // The ring closed the descriptor; its number may already be
            // another socket's.
            let _ = c.fd.into_raw_fd();
        } else {
            drop(c.fd);
        }
    }

    /// Hands connection `key` over after its `101`: out of the slab, its
    /// socket (left open) to the handler's taker.
    pub(super) fn upgrade(&mut self, key: Key) {
        let Some(mut c) = self.conns.remove(key) else {
            return;
        };
        debug_assert!(!c.busy());
        let taken = c.http.take_upgrade();
        c.http.release(&mut self.core.sh);
        self.core.sh.count_close();
        if let Some((take, read, permit)) = taken {
            core::hand_over(c.fd, take, read, permit);
        }
    }
}
