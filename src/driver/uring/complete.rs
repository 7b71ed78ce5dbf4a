//! What a completion changes: each completion is dispatched by the
//! operation in its token, and a connection's recv, send and close
//! completions are applied to its state here, which then marks the
//! connection for reconciling. Where it stops: what to submit next is
//! [`super::reconcile`]'s; the completions of file splices, of the accept
//! and of the loop's own polls and timeout are handled in their rooms
//! ([`super::file`], [`super::accept`], [`super::wake`]).

use io_uring::cqueue;

use super::conn::FdClose;
use super::setup::errno;
use super::submit::Multishot;
use super::token::{Op, Token};
use super::Driver;
use crate::driver::core::Phase;
use crate::driver::slab::Key;
use crate::http::Handler;

impl<H: Handler> Driver<'_, '_, H> {
    /// Applies one completion.
    pub(super) fn complete(&mut self, cqe: cqueue::Entry) {
        let (res, flags, token) = (cqe.result(), cqe.flags(), Token(cqe.user_data()));
        if !cqueue::more(flags) && token.op() != Some(Op::Cancel) {
            self.io.inflight = self.io.inflight.saturating_sub(1);
        }
        match token.op() {
            Some(Op::Recv) => self.on_recv(token.key(&self.conns), res, flags),
            Some(Op::Send) => self.on_send(token.key(&self.conns), res),
            Some(Op::Accept) => self.on_accept(token.listener(), res, flags),
            Some(Op::Wake) => self.on_wake(res, flags),
            Some(Op::Timer) => self.on_timer(res),
            Some(Op::Inbox) => self.on_inbox(flags),
            Some(Op::Close) => self.on_close(token.key(&self.conns), res),
            Some(Op::SpliceIn) => self.on_splice_in(token.key(&self.conns), res),
            Some(Op::SpliceOut) => self.on_splice_out(token.key(&self.conns), res),
            Some(Op::Cancel | Op::Probe | Op::PollOut) | None => {}
        }
    }

    /// Bytes arrived on a connection (or its recv ended): they go to the
    /// protocol state straight from the provided buffer.
    fn on_recv(&mut self, key: Key, res: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        let more_in_buf = cqueue::buffer_more(flags);
        let Some(c) = self.conns.get_mut(key) else {
            if let Some(bid) = bid {
                // SAFETY: this completion's own buffer, length and flag.
                let _ = unsafe { self.io.bufs.received(bid, res.max(0) as usize, more_in_buf) };
            }
            return;
        };
        if !cqueue::more(flags) {
            c.recv = Multishot::Off;
        }
        if res > 0 {
            self.core.sh.count_bytes(res as usize, 0);
            if let Some(bid) = bid {
                // SAFETY: the kernel delivered `res` bytes into buffer `bid`
                // with this completion; they stay untouched until the ring
                // is published, after they are parsed.
                let data = unsafe { self.io.bufs.received(bid, res as usize, more_in_buf) };
                if c.phase == Phase::Open {
                    c.http.on_read(data, &mut self.core.sh, &mut *self.handler);
                }
            }
        } else {
            if let Some(bid) = bid {
                self.io.bufs.returned(bid, more_in_buf);
            }
            match -res {
                // The EOF is handed to the protocol state by `reconcile`,
                // after the requests it holds back.
                0 => c.peer_eof = true,
                // Every buffer was in use: they are back now, and the
                // reconcile below re-arms the recv.
                libc::ENOBUFS | libc::ECANCELED => {}
                e => {
                    log::debug!("recv: {}", errno(e));
                    c.peer_eof = true;
                    self.mark(key);
                    self.close(key);
                    return;
                }
            }
        }
        self.mark(key);
    }

    /// A connection's send completed: what it took is given back once all
    /// of it is sent.
    fn on_send(&mut self, key: Key, res: i32) {
        let Some(c) = self.conns.get_mut(key) else {
            debug_assert!(false, "send completion for a freed slot");
            return;
        };
        c.sending = false;
        let Some(out) = c.out.as_mut() else {
            return;
        };
        let sh = &mut self.core.sh;
        let mut failed = false;
        if res > 0 {
            sh.count_bytes(0, res as usize);
            out.written += res as usize;
            c.http.on_sent(sh);
            if out.remaining() == 0 {
                let done = c.out.take().map(|o| o.buf).unwrap_or_default();
                sh.recycle(done);
            }
        } else {
            if let Some(o) = c.out.take() {
                sh.recycle(o.buf);
            }
            // A send of a non-empty buffer that moves nothing is a failure
            // too: retrying it would spin.
            if res != -libc::ECANCELED {
                log::debug!("send: {}", errno(-res));
                failed = true;
            }
        }
        self.mark(key);
        if failed {
            self.close(key);
        }
    }

    /// The ring's close of a connection's socket completed.
    fn on_close(&mut self, key: Key, res: i32) {
        let Some(c) = self.conns.get_mut(key) else {
            debug_assert!(false, "close completion for a freed slot");
            return;
        };
        // A close that was never carried out leaves the descriptor to the
        // loop; otherwise it is released, as close(2) releases it even when
        // it reports an error.
        c.fd_close = if res == -libc::ECANCELED || res == -libc::EBADF { FdClose::Loop } else { FdClose::Closed };
        if res < 0 && c.fd_close == FdClose::Closed {
            log::debug!("close: {}", errno(-res));
        }
        self.mark(key);
    }
}
