//! Reconciling: once completions (or the core's shared steps) have changed
//! a connection, it is marked, and before the next submit its operations
//! are brought in line with its state in one place: take and send what is
//! framed, move a file body on, close or linger when the core says so,
//! keep the recv armed while output is below the high-water mark, and hand
//! an upgraded connection over. Where it stops: the decisions are the
//! protocol state's and the core's; this file turns them into submissions.

use std::mem;
use std::os::fd::AsRawFd;

use super::conn::{Connection, Outgoing, Splice};
use super::file::splice_file;
use super::sqe;
use super::submit::Multishot;
use super::token::{Op, Token};
use super::Driver;
use crate::driver::core::{self, After, Phase};
use crate::driver::slab::Key;
use crate::http::{Handler, OUTPUT_HIGH_WATER};

impl<H: Handler> Driver<'_, '_, H> {
    /// Queues connection `key` for reconciling before the next submit.
    pub(super) fn mark(&mut self, key: Key) {
        if let Some(c) = self.conns.get_mut(key) {
            if !c.queued {
                c.queued = true;
                self.dirty.push(key);
            }
        }
    }

    /// Reconciles every connection marked since the last time.
    pub(super) fn reconcile_all(&mut self) {
        let mut dirty = mem::take(&mut self.dirty);
        for &key in &dirty {
            self.reconcile(key);
        }
        dirty.clear();
        // Reconciling queues nothing, so this keeps the list's allocation.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Brings one connection's operations in line with its state: send what
    /// is framed, close what is finished, read while output is below the
    /// high-water mark.
    fn reconcile(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.queued = false;
        if c.phase == Phase::Closing {
            if !c.busy() {
                self.free(key);
            }
            return;
        }
        let sh = &mut self.core.sh;
        if c.phase == Phase::Open {
            if !c.sending && c.out.is_none() && c.http.is_streaming() {
                // The last send is done: take more of the stream.
                c.http.refill(sh);
            }
            if !c.sending && c.out.is_none() && c.http.has_output() {
                c.out = Some(Outgoing { buf: c.http.take_output(), written: 0 });
            }
            if c.http.has_pending_input() {
                // Requests the protocol state held back for lack of output
                // room are answered once the output has been taken (a no-op
                // when all it holds is an incomplete head).
                c.http.resume(sh, &mut *self.handler);
                if !c.sending && c.out.is_none() && c.http.has_output() {
                    c.out = Some(Outgoing { buf: c.http.take_output(), written: 0 });
                }
            }
            if c.peer_eof && !c.eof_seen && (!c.http.has_pending_input() || c.http.output_len() < OUTPUT_HIGH_WATER) {
                // The peer's EOF reaches the protocol state only once every
                // complete request it sent has been answered: what is left
                // in it then is at most an incomplete head.
                c.eof_seen = true;
                c.http.on_eof(sh);
            }
            if !c.sending {
                if let Some(out) = &c.out {
                    // A file body follows the head: hold the head back for
                    // it, so that both leave in one segment; and the last
                    // output before a close, for the close's FIN.
                    let more = c.http.has_file() || last_send(c);
                    let send = sqe::send(c.fd.as_raw_fd(), &out.buf[out.written..], more, key);
                    // SAFETY: `out.buf` is owned by this connection, is not
                    // touched until the send's completion, and the slot is
                    // not freed while `sending` is set.
                    let r = unsafe { self.io.push(send) };
                    if let Err(e) = r {
                        self.fatal.get_or_insert(e);
                        return;
                    }
                    c.sending = true;
                }
            }
            if !c.sending && c.out.is_none() && c.splice == Splice::Off {
                if let Err(e) = splice_file(&mut self.io, key, c) {
                    log::warn!("file body: {e}; closing the connection");
                    self.close(key);
                    return;
                }
            }
            let pending = c.out.is_some() || c.http.has_output() || c.http.has_file() || c.splice != Splice::Off;
            match core::after_output(&c.http, pending, c.peer_eof) {
                After::Keep => {}
                After::Close => {
                    self.close_now(key);
                    return;
                }
                After::Linger => match core::linger(c.fd.as_raw_fd(), sh) {
                    Ok(until) => c.phase = Phase::Linger { until },
                    Err(_) => {
                        self.close(key);
                        return;
                    }
                },
            }
        }
        let want_recv = match c.phase {
            Phase::Open => !c.peer_eof && c.unsent() <= OUTPUT_HIGH_WATER && c.http.wants_input(sh),
            Phase::Linger { .. } => !c.peer_eof,
            Phase::Closing => false,
        };
        if let Phase::Linger { .. } = c.phase {
            if c.peer_eof {
                self.close(key);
                return;
            }
        }
        match (want_recv, c.recv) {
            (true, Multishot::Off) => {
                let recv = sqe::recv(c.fd.as_raw_fd(), key);
                // SAFETY: the recv writes only into provided buffers, which
                // stay mapped as long as the ring.
                match unsafe { self.io.push(recv) } {
                    Ok(()) => c.recv = Multishot::Armed,
                    Err(e) => {
                        self.fatal.get_or_insert(e);
                    }
                }
            }
            (false, Multishot::Armed) => match self.io.cancel(Token::new(Op::Recv, key)) {
                Ok(()) => c.recv = Multishot::Cancelling,
                Err(e) => {
                    self.fatal.get_or_insert(e);
                }
            },
            _ => {}
        }
        // An upgraded connection (its `101` framed, so no recv is wanted)
        // is handed over once the `101` is sent and its recv's last
        // completion is in: nothing of the loop's is then in flight on the
        // socket, and the bytes that recv brought were copied out of the
        // provided buffers into the protocol state's input.
        if c.phase == Phase::Open && c.http.upgrade_ready() && c.out.is_none() && !c.busy() {
            self.upgrade(key);
        }
    }
}

/// Whether the send about to be made of `c.out` is the connection's last
/// ([`core::last_output`]): once it is done, [`Driver::close_now`] closes
/// the socket.
fn last_send(c: &Connection) -> bool {
    !c.http.has_output() && c.splice == Splice::Off && core::last_output(&c.http, c.peer_eof)
}
