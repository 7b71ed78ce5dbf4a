//! The submission side of the ring: queueing entries (flushing to the
//! kernel when the queue is full), cancelling, and counting the operations
//! whose final completion has not arrived, which is what the exit waits
//! for. Where it stops: what each entry is, is [`super::sqe`]'s; when to
//! submit it is the loop's.

use std::io;

use io_uring::squeue;
use io_uring::{SubmissionQueue, Submitter};

use super::bufring::BufRing;
use super::sqe;
use super::token::Token;

/// The state of a multishot operation: a connection's recv, or the accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Multishot {
    /// Not in the kernel.
    Off,
    /// In the kernel, delivering completions.
    Armed,
    /// A cancel was submitted; the final completion has not arrived.
    Cancelling,
}

/// The submission side of the ring, and the count of operations whose final
/// completion has not arrived.
pub(super) struct Io<'r> {
    /// Enters the kernel.
    pub(super) submitter: Submitter<'r>,
    /// The submission queue.
    pub(super) sq: SubmissionQueue<'r>,
    /// The receive buffers.
    pub(super) bufs: &'r mut BufRing,
    /// Submissions whose last completion (one without `F_MORE`) is pending.
    pub(super) inflight: usize,
}

impl Io<'_> {
    /// Queues `entry`, flushing the queue to the kernel if it is full, and
    /// counts it in `inflight`.
    ///
    /// # Safety
    ///
    /// Any memory `entry` points to must stay valid and unmoved until the
    /// operation's final completion has been reaped.
    pub(super) unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.queue(&entry) }?;
        self.inflight += 1;
        Ok(())
    }

    /// Asks the kernel to cancel the operation submitted as `target`. A
    /// cancel that succeeds posts no completion (`CQE_SKIP_SUCCESS`); one
    /// that fails because the target already ended posts one that the loop
    /// ignores. Cancels are not counted in `inflight`: they refer to no
    /// memory.
    pub(super) fn cancel(&mut self, target: Token) -> io::Result<()> {
        let entry = sqe::cancel(target);
        // SAFETY: a cancel refers to no memory.
        unsafe { self.queue(&entry) }
    }

    /// Makes room for `n` entries in the submission queue, so that a link
    /// of `n` entries reaches the kernel in one submission, as a link must
    /// to hold.
    pub(super) fn reserve(&mut self, n: usize) -> io::Result<()> {
        if self.sq.capacity() - self.sq.len() < n {
            self.flush()?;
        }
        Ok(())
    }

    /// # Safety
    ///
    /// As for [`Io::push`].
    unsafe fn queue(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        for _ in 0..8 {
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.sq.push(entry) }.is_ok() {
                return Ok(());
            }
            self.flush()?;
        }
        Err(io::Error::other("io_uring submission queue stays full"))
    }

    /// Hands queued submissions (and returned buffers) to the kernel now.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.bufs.publish();
        self.sq.sync();
        let r = self.submitter.submit();
        self.sq.sync();
        entered(r)
    }
}

/// The result of an `io_uring_enter`: interrupted, busy (completions to
/// reap first) or out of resources for now is no error, the next turn
/// enters again.
pub(super) fn entered(r: io::Result<usize>) -> io::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)) => Ok(()),
        Err(e) => Err(e),
    }
}
