//! Deferred responses: a handler takes a [`Responder`] for the current
//! request and returns at once; the responder is completed later, from any
//! thread (a blocking-work pool, a client library's callback) or from the
//! loop (a worker timer). The completion travels through the worker's
//! mailbox ([`crate::http::mailbox`] says how).
//!
//! Order: while a request waits for its responder, the connection answers
//! no later request; pipelined requests wait in the input, so responses
//! leave in request order.

use std::fmt;
use std::sync::Arc;

use super::response::{Completion, Completions, Outcome, Response};
use super::stream::{Stream, STREAM_QUEUE};

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

    /// Answers the request with `res`, whose body becomes a stream, and
    /// returns the stream's writer (see [`Response::stream`]). A request
    /// whose connection has gone meanwhile gets a stream that is closed.
    pub fn stream(mut self, mut res: Response) -> Stream {
        let stream = Stream::new(self.queue.clone(), self.token, STREAM_QUEUE);
        res.set_stream(stream.pipe().clone());
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

impl Response {
    /// Answers later: returns the [`Responder`] for this request, to be
    /// completed from any thread (say, with work given to
    /// [`crate::worker::spawn_blocking`]) or from the worker's loop (a
    /// [`crate::worker::after`] timer). What the handler put in `self` is
    /// dropped. The connection answers no later request before this one,
    /// so pipelined responses keep their order.
    ///
    /// The request gets `503` at once when the worker already waits on
    /// [`crate::Limits::max_deferred`] responders (the responder returned
    /// then does nothing), `504` when [`crate::Timeouts::deferred`] passes
    /// first, and `500` when the responder is dropped unsent. Outside a
    /// handler, or called twice, it returns a responder that does nothing.
    pub fn defer(&mut self) -> Responder {
        let (queue, token, seq) = self.claim_deferral();
        Responder::new(queue, token, seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(room: bool) -> (Arc<Completions>, Response) {
        let q = Arc::new(Completions::new(|| {}));
        let mut res = Response::new();
        res.set_queue(q.clone());
        res.offer_deferral(room, 9, 3);
        (q, res)
    }

    #[test]
    fn a_responder_delivers_once_and_a_dropped_one_answers_500() {
        let (q, mut res) = offered(true);
        let r = res.defer();
        assert!(res.take_deferred(), "the handler deferred");
        let mut answer = Response::new();
        answer.status(201);
        r.send(answer);
        let mut batch = Vec::new();
        q.take(&mut batch);
        assert!(
            matches!(&batch[..], [Completion { token: 9, seq: 3, outcome: Outcome::Done(r) }] if r.status_code() == 201)
        );

        let (q, mut res) = offered(true);
        drop(res.defer());
        let mut batch = Vec::new();
        q.take(&mut batch);
        assert!(matches!(&batch[..], [Completion { seq: 3, outcome: Outcome::Dropped, .. }]));
    }

    #[test]
    fn without_room_or_outside_a_handler_a_responder_does_nothing() {
        let (q, mut res) = offered(false);
        res.defer().send(Response::new());
        assert!(res.take_deferred(), "deferred, to be answered 503");
        let mut batch = Vec::new();
        q.take(&mut batch);
        assert!(batch.is_empty());
        let mut plain = Response::new();
        drop(plain.defer());
        assert!(!plain.take_deferred(), "nothing was offered");
    }
}
