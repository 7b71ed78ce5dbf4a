//! Leaving the ring clean: when the loop ends (drained, failed, or
//! unwinding from a panic) whatever is still in the kernel is cancelled
//! and waited for, boundedly, before any memory it could touch is freed;
//! what the kernel does not give back in time is leaked instead. Then
//! every connection left is let go.

use std::mem;
use std::time::{Duration, Instant};

use io_uring::cqueue;
use io_uring::types::{CancelBuilder, SubmitArgs, Timespec};
use io_uring::CompletionQueue;

use super::token::{Op, Token};
use super::Driver;
use crate::driver::slab::Key;
use crate::http::Handler;

/// How long the worker waits for cancelled operations when it exits.
const EXIT_WAIT: Duration = Duration::from_secs(2);

impl<H: Handler> Driver<'_, '_, H> {
    /// Cancels whatever is still in the kernel, waits (boundedly) for it to
    /// finish, and closes every connection left. If the kernel does not
    /// confirm, the memory it could still touch is leaked rather than freed.
    pub(super) fn finish(&mut self, cq: &mut CompletionQueue<'_>) {
        if self.io.inflight > 0 {
            let _ = self.io.flush();
            if let Err(e) = self.io.submitter.register_sync_cancel(Some(Timespec::new().sec(1)), CancelBuilder::any()) {
                if e.raw_os_error() != Some(libc::ENOENT) {
                    log::debug!("io_uring: cancel on exit: {e}");
                }
            }
            let start = Instant::now();
            let wait = Timespec::new().nsec(10_000_000);
            while self.io.inflight > 0 && start.elapsed() < EXIT_WAIT {
                let args = SubmitArgs::new().timespec(&wait);
                match self.io.submitter.submit_with_args(1, &args) {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
                    Err(_) => break,
                }
                cq.sync();
                for cqe in cq.by_ref() {
                    let token = Token(cqe.user_data());
                    if !cqueue::more(cqe.flags()) && token.op() != Some(Op::Cancel) {
                        self.io.inflight = self.io.inflight.saturating_sub(1);
                    }
                    if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                        // SAFETY: this completion's own buffer, length and
                        // flag; the bytes are not looked at.
                        let _ = unsafe {
                            self.io.bufs.received(bid, cqe.result().max(0) as usize, cqueue::buffer_more(cqe.flags()))
                        };
                    }
                    if token.op() == Some(Op::Send) {
                        if let Some(c) = self.conns.get_mut(token.key(&self.conns)) {
                            c.sending = false;
                        }
                    }
                }
                cq.sync();
            }
        }
        let leak = self.io.inflight > 0;
        if leak {
            log::warn!("io_uring: {} operations still in the kernel at exit", self.io.inflight);
            self.io.bufs.leak = true;
        }
        let keys: Vec<Key> = self.conns.iter_mut().map(|(k, _)| k).collect();
        for key in keys {
            let Some(c) = self.conns.remove(key) else {
                continue;
            };
            match c.out {
                Some(out) if c.sending => mem::forget(out.buf),
                Some(out) => self.core.sh.recycle(out.buf),
                None => {}
            }
            c.http.release(&mut self.core.sh);
        }
    }
}
