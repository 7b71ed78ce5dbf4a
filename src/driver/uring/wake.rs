//! What wakes the loop besides its connections: the multishot polls on
//! the link's wake-up eventfd (the drain flag, deferred answers) and on
//! the eventfd of the ring from the master, and one timeout for the core's
//! next wake-up (the sweep, the end of an accept pause or of the drain, a
//! worker timer). Kept armed here, with what their completions change.
//! Where it stops: what the loop does once awake is the loop's.

use std::io;
use std::time::Duration;

use io_uring::cqueue;
use io_uring::types::Timespec;

use super::setup::errno;
use super::sqe;
use super::token::{Op, Token};
use super::Driver;
use crate::http::Handler;

impl<H: Handler> Driver<'_, '_, H> {
    /// Keeps the link's polls and a timeout for the core's next wake-up in
    /// the kernel.
    pub(super) fn arm_background(&mut self) {
        let link = self.core.link;
        if !self.wake_armed {
            let poll = sqe::poll_in(link.wake_fd(), Op::Wake);
            // SAFETY: a poll refers to no memory.
            let r = unsafe { self.io.push(poll) };
            self.check(r);
            self.wake_armed = true;
        }
        if let (false, Some(fd)) = (self.inbox_armed, link.inbox_fd()) {
            let poll = sqe::poll_in(fd, Op::Inbox);
            // SAFETY: a poll refers to no memory.
            let r = unsafe { self.io.push(poll) };
            self.check(r);
            self.inbox_armed = true;
        }
        let due = self.core.next_wake();
        if self.timer_armed {
            // The core wants to wake earlier (the drain began, accepting
            // paused): the timeout ends, and is armed again when its
            // completion is in.
            if due < self.timer_due && !self.timer_cancelling {
                let r = self.io.cancel(Token::of(Op::Timer));
                self.check(r);
                self.timer_cancelling = true;
            }
            return;
        }
        let after = due.saturating_sub(self.core.sh.now_ms()).max(1);
        *self.timer_ts = Timespec::from(Duration::from_millis(after));
        let timer = sqe::timeout(&self.timer_ts);
        // SAFETY: the timespec is boxed and lives as long as the driver,
        // which outlives every submission (see `finish`); the kernel copies
        // it at submission.
        let r = unsafe { self.io.push(timer) };
        self.check(r);
        self.timer_armed = true;
        self.timer_due = due;
    }

    /// The wake-up eventfd fired: the drain may have begun.
    pub(super) fn on_wake(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.wake_armed = false;
        }
        if res < 0 && res != -libc::ECANCELED {
            self.fatal.get_or_insert(io::Error::other(format!("poll on the control eventfd: {}", errno(-res))));
            return;
        }
        self.core.link.ack();
        if self.core.link.draining() {
            self.start_drain();
        }
    }

    /// The eventfd of the ring from the master fired.
    pub(super) fn on_inbox(&mut self, flags: u32) {
        if !cqueue::more(flags) {
            self.inbox_armed = false;
        }
        // The eventfd is level-triggered for poll: reset it; the messages
        // are delivered once per loop turn.
        self.core.link.ack_inbox();
    }

    /// The timeout ended (or was cancelled): the next turn arms another.
    pub(super) fn on_timer(&mut self, res: i32) {
        self.timer_armed = false;
        self.timer_cancelling = false;
        if res < 0 && res != -libc::ETIME && res != -libc::ECANCELED {
            self.fatal.get_or_insert(io::Error::other(format!("sweep timer: {}", errno(-res))));
        }
    }
}
