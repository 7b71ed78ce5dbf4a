//! Deferred responses: a handler takes a [`Responder`] for the current
//! request and returns at once; the responder is completed later, from any
//! thread (a blocking-work pool, a client library's callback) or from the
//! loop (a worker timer).
//!
//! How a completion reaches the connection: [`Responder::send`] pushes the
//! response on the worker's [`Completions`] queue and calls the queue's
//! wake-up (the driver makes it write the loop's eventfd, once per batch:
//! only the push that finds the queue empty wakes). The loop takes the
//! batch each turn and hands each completion to the connection named by
//! its token (the driver's slab key, generation included, so a completion
//! for a connection that closed meanwhile, or whose slot now holds another
//! connection, finds nothing and is dropped) with its sequence number (a
//! completion that comes after the request was answered otherwise, by the
//! deadline's `504`, is dropped too).
//!
//! Order: while a request waits for its responder, the connection answers
//! no later request; pipelined requests wait in the input, so responses
//! leave in request order.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::response::Response;
use super::stream::{self, Stream, STREAM_QUEUE};

/// What a responder delivers.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The response.
    Done(Response),
    /// The responder was dropped unsent: `500`.
    Dropped,
    /// A paused request body may go on (a [`super::Resume`]); `seq` is
    /// then the body's number on the connection.
    Resume,
    /// A stream's writer wrote, ended, dropped the stream or asked for a
    /// ready callback: the connection serving it takes from its queue.
    Stream(Arc<stream::Shared>),
}

/// One completion: the connection's token, the deferred request's number,
/// and what to answer.
#[derive(Debug)]
pub struct Completion {
    /// The driver's token of the connection.
    pub(crate) token: u64,
    /// The number of the deferred request on that connection.
    pub(crate) seq: u64,
    /// The answer.
    pub(crate) outcome: Outcome,
}

/// The worker's queue of completed deferred responses.
pub(crate) struct Completions {
    /// Completions not taken by the loop yet.
    queue: Mutex<Vec<Completion>>,
    /// The queue may hold something: lets the loop skip the lock on the
    /// (usual) turn when nothing was completed.
    pending: AtomicBool,
    /// Wakes the loop (writes its eventfd); called by the push that finds
    /// the queue empty.
    wake: Box<dyn Fn() + Send + Sync>,
}

impl fmt::Debug for Completions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completions").finish_non_exhaustive()
    }
}

impl Completions {
    /// A queue whose pushes call `wake`.
    pub(crate) fn new(wake: impl Fn() + Send + Sync + 'static) -> Completions {
        Completions { queue: Mutex::new(Vec::new()), pending: AtomicBool::new(false), wake: Box::new(wake) }
    }

    pub(crate) fn push(&self, c: Completion) {
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
    pub(crate) fn take(&self, spare: &mut Vec<Completion>) {
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

/// Completes one deferred request: [`Responder::send`] with the response,
/// from any thread, once. Dropping it unsent answers `500`; completing a
/// request whose connection has gone, or that was answered `504` at its
/// deadline, does nothing.
pub struct Responder {
    /// Where the completion goes; `None` for a request refused at once
    /// (`503`, too many deferred requests): sending then does nothing.
    queue: Option<Arc<Completions>>,
    /// The connection's token.
    token: u64,
    /// The request's number on the connection.
    seq: u64,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder").field("token", &self.token).field("seq", &self.seq).finish_non_exhaustive()
    }
}

impl Completion {
    /// The token of the connection it is for (see [`super::Conn::set_token`]).
    pub fn token(&self) -> u64 {
        self.token
    }
}

impl Responder {
    pub(crate) fn new(queue: Option<Arc<Completions>>, token: u64, seq: u64) -> Responder {
        Responder { queue, token, seq }
    }

    /// Answers the request with `res` (the runtime frames it as it does a
    /// response made in the handler).
    pub fn send(mut self, res: Response) {
        if let Some(q) = self.queue.take() {
            q.push(Completion { token: self.token, seq: self.seq, outcome: Outcome::Done(res) });
        }
    }
}

impl Responder {
    /// Answers the request with `res`, whose body becomes a stream, and
    /// returns the stream's writer (see [`Response::stream`]). A request
    /// whose connection has gone meanwhile gets a stream that is closed.
    pub fn stream(mut self, mut res: Response) -> Stream {
        let stream = Stream::new(self.queue.clone(), self.token, STREAM_QUEUE);
        res.set_stream(stream.shared().clone());
        if let Some(q) = self.queue.take() {
            q.push(Completion { token: self.token, seq: self.seq, outcome: Outcome::Done(res) });
        }
        stream
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(q) = self.queue.take() {
            q.push(Completion { token: self.token, seq: self.seq, outcome: Outcome::Dropped });
        }
    }
}
