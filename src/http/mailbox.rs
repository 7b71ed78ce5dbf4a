//! The worker loop's mailbox: what other threads (and the loop's own
//! timers) hand to the loop for one of its connections. A deferred
//! response's [`super::Responder`], a paused body's [`super::Resume`] and a
//! stream's writer ([`super::Stream`]) all post here.
//!
//! How a completion reaches the connection: a poster pushes it on the
//! worker's [`Completions`] and, when that push finds the queue empty,
//! calls the queue's wake-up (the driver makes it write the loop's
//! eventfd: one write per batch). The loop takes the batch each turn
//! ([`Completions::take`]) and hands each completion to the connection
//! named by its token (the driver's slab key, generation included, so a
//! completion for a connection that closed meanwhile, or whose slot now
//! holds another connection, finds nothing and is dropped) with its
//! sequence number (a completion that comes after its request was
//! answered otherwise, by the deadline's `504`, is dropped too).
//!
//! Where it stops: it carries completions and knows nothing of what they
//! hold. The answer (`R`, a [`super::Response`]) and a stream's pipe (`S`)
//! are type parameters, so that this module names nothing above it; the
//! runtime's instances are named once, beside the response.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What a completion delivers: `R` is the answer, `S` a stream's handle.
#[derive(Debug)]
pub(crate) enum Outcome<R, S> {
    /// The deferred request's answer.
    Done(R),
    /// The responder was dropped unsent: `500`.
    Dropped,
    /// A paused request body may go on; the completion's `seq` is then the
    /// body's number on the connection.
    Resume,
    /// A stream's writer wrote, ended, dropped the stream or asked for a
    /// ready callback: the connection serving that stream takes from it.
    Stream(S),
}

/// One completion: the connection's token, the number of what it
/// completes on that connection, and the outcome.
#[derive(Debug)]
pub struct Completion<R, S> {
    /// The driver's token of the connection.
    pub(crate) token: u64,
    /// The number of the deferred request (or of the paused body) on that
    /// connection; 0 for a stream's notice.
    pub(crate) seq: u64,
    /// What happened.
    pub(crate) outcome: Outcome<R, S>,
}

impl<R, S> Completion<R, S> {
    /// The token of the connection it is for (see
    /// [`super::Conn::set_token`]).
    pub fn token(&self) -> u64 {
        self.token
    }
}

/// The worker's queue of completions.
pub(crate) struct Completions<R, S> {
    /// Completions not taken by the loop yet.
    queue: Mutex<Vec<Completion<R, S>>>,
    /// The queue may hold something: lets the loop skip the lock on the
    /// (usual) turn when nothing was completed.
    pending: AtomicBool,
    /// Wakes the loop (writes its eventfd); called by the push that finds
    /// the queue empty.
    wake: Box<dyn Fn() + Send + Sync>,
}

impl<R, S> fmt::Debug for Completions<R, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completions").finish_non_exhaustive()
    }
}

impl<R, S> Completions<R, S> {
    /// A queue whose pushes call `wake`.
    pub(crate) fn new(wake: impl Fn() + Send + Sync + 'static) -> Completions<R, S> {
        Completions { queue: Mutex::new(Vec::new()), pending: AtomicBool::new(false), wake: Box::new(wake) }
    }

    /// Queues `c`; wakes the loop when the queue was empty.
    pub(crate) fn push(&self, c: Completion<R, S>) {
        let was_empty = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.push(c);
            // Under the lock: the loop's `take` clears it under the lock
            // too, so it never misses this push.
            self.pending.store(true, Ordering::Release);
            q.len() == 1
        };
        if was_empty {
            (self.wake)();
        }
    }

    /// Takes every completion queued so far, swapping in `spare` (an empty
    /// vector kept between turns, so that a turn allocates nothing).
    pub(crate) fn take(&self, spare: &mut Vec<Completion<R, S>>) {
        // Pairs with the `Release` store in `push`: a push that made it
        // true is seen here, or the next turn's check sees it (the push
        // also writes the loop's eventfd, so that turn comes).
        if !self.pending.load(Ordering::Acquire) {
            return;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.pending.store(false, Ordering::Relaxed);
        std::mem::swap(&mut *q, spare);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    type Queue = Completions<&'static str, ()>;

    #[test]
    fn only_the_push_into_an_empty_queue_wakes() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let q: Queue = Completions::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        });
        let mut batch = Vec::new();
        q.take(&mut batch);
        assert!(batch.is_empty(), "nothing pushed, nothing taken");
        q.push(Completion { token: 1, seq: 1, outcome: Outcome::Done("a") });
        q.push(Completion { token: 2, seq: 1, outcome: Outcome::Dropped });
        assert_eq!(wakes.load(Ordering::Relaxed), 1, "one wake-up per batch");
        q.take(&mut batch);
        assert_eq!(batch.iter().map(Completion::token).collect::<Vec<_>>(), [1, 2], "in push order");
        batch.clear();
        q.push(Completion { token: 3, seq: 0, outcome: Outcome::Resume });
        assert_eq!(wakes.load(Ordering::Relaxed), 2, "an emptied queue wakes again");
        q.take(&mut batch);
        assert!(matches!(batch[..], [Completion { token: 3, outcome: Outcome::Resume, .. }]));
    }
}
