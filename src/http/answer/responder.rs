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

use super::live::Live;
use super::response::{Claim, Completion, Completions, Outcome, Response};
use super::stream::{Stream, STREAM_QUEUE};

/// Completes one deferred request: [`Responder::send`] with the response,
/// from any thread, once. Dropping it unsent answers `500`; completing a
/// request whose connection has gone, or that was answered `504` at its
/// deadline, does nothing ([`Responder::is_live`] says which).
///
/// ```no_run
/// use std::time::Duration;
/// use forkring::{Request, Response, Server};
///
/// fn main() -> std::io::Result<()> {
///     Server::builder().serve(|| |req: &Request<'_>, res: &mut Response| {
///         if req.path() != "/later" {
///             res.body("now\n");
///             return;
///         }
///         // The loop goes on serving other connections meanwhile.
///         let responder = res.defer();
///         forkring::worker::after(Duration::from_millis(50), move || {
///             let mut res = Response::new();
///             res.body("later\n");
///             responder.send(res);
///         });
///     })
/// }
/// ```
pub struct Responder {
    /// Where the completion goes; `None` for a request refused at once
    /// (`503`, too many deferred requests): sending then does nothing.
    queue: Option<Arc<Completions>>,
    /// The connection's word that says which deferred request it waits on;
    /// `None` with `queue`.
    live: Option<Live>,
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
    /// A responder that does nothing (its request is answered otherwise).
    fn inert() -> Responder {
        Responder { queue: None, live: None, token: 0, seq: 0 }
    }

    /// Whether the request this responder answers still waits for it: its
    /// connection is open and it was not answered otherwise (`504` at its
    /// deadline, `503` at once past [`crate::Limits::max_deferred`]).
    /// Work for a request that no longer waits can be skipped: its answer
    /// would go nowhere.
    ///
    /// A `true` may be out of date by the time it is used (the connection
    /// may close an instant later); sending then does nothing, as always
    /// for a request that no longer waits. A `false` stays `false`.
    pub fn is_live(&self) -> bool {
        self.live.as_ref().is_some_and(|l| l.is(self.seq))
    }

    /// Posts `outcome` for the request, unless it no longer waits.
    fn post(&mut self, outcome: Outcome) {
        if let Some(q) = self.queue.take() {
            if self.is_live() {
                q.push(Completion { token: self.token, seq: self.seq, outcome });
            }
        }
    }

    /// Answers the request with `res` (the runtime frames it as it does a
    /// response made in the handler).
    pub fn send(mut self, res: Response) {
        self.post(Outcome::Done(res));
    }

    /// Answers the request with `res`, whose body becomes a stream, and
    /// returns the stream's writer (see [`Response::stream`]). A request
    /// whose connection has gone meanwhile gets a stream that is closed.
    pub fn stream(mut self, mut res: Response) -> Stream {
        let stream = Stream::new(self.queue.clone(), self.token, STREAM_QUEUE);
        res.set_stream(stream.pipe().clone());
        // Posted even when the request no longer waits: the connection's
        // loop then drops the response, which closes the stream.
        if let Some(q) = self.queue.take() {
            q.push(Completion { token: self.token, seq: self.seq, outcome: Outcome::Done(res) });
        }
        stream
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.post(Outcome::Dropped);
    }
}

/// Why [`Response::try_defer`] gave no [`Responder`]. The handler's
/// response is then sent as the handler fills it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refused {
    /// The worker already waits on [`crate::Limits::max_deferred`]
    /// deferred requests: answer now (say, `503` with `Retry-After`).
    TooManyDeferred,
    /// Not a response a handler is filling in for a request (one made with
    /// [`Response::new`], or sent through a responder): nothing waits.
    NotInHandler,
    /// The request's responder was taken already.
    AlreadyDeferred,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::TooManyDeferred => "too many deferred requests",
            Refused::NotInHandler => "not a response to a request being handled",
            Refused::AlreadyDeferred => "the request was deferred already",
        })
    }
}

impl std::error::Error for Refused {}

impl Response {
    /// Answers later: returns the [`Responder`] for this request, to be
    /// completed from any thread or from the worker's loop (a
    /// [`crate::worker::after`] timer). What the handler put in `self` is
    /// dropped. The connection answers no later request before this one,
    /// so pipelined responses keep their order.
    ///
    /// The request gets `503` at once when the worker already waits on
    /// [`crate::Limits::max_deferred`] responders (the responder returned
    /// then does nothing, and its [`Responder::is_live`] is false from the
    /// start), `504` when [`crate::Timeouts::deferred`] passes first, and
    /// `500` when the responder is dropped unsent. Outside a handler, or
    /// called twice, it returns a responder that does nothing.
    ///
    /// [`Response::try_defer`] says when the request was refused, and
    /// [`Response::blocking`] is the short way to answer from the worker's
    /// blocking pool: it also answers `503` when the pool is full and skips
    /// the work of a client that has gone.
    pub fn defer(&mut self) -> Responder {
        match self.claim_deferral() {
            Claim::Granted(queue, token, seq, live) => Responder { queue: Some(queue), live: Some(live), token, seq },
            Claim::NoRoom => {
                self.refuse_deferral();
                Responder::inert()
            }
            Claim::NotOffered | Claim::Taken => Responder::inert(),
        }
    }

    /// Answers later, as [`Response::defer`], or says why not: past
    /// [`crate::Limits::max_deferred`] this returns
    /// [`Refused::TooManyDeferred`] and the request is answered with what
    /// the handler puts in `self` (nothing was started for it, and nothing
    /// need be).
    ///
    /// ```no_run
    /// use forkring::{Request, Response, Server};
    ///
    /// Server::builder().serve(|| |_: &Request<'_>, res: &mut Response| {
    ///     match res.try_defer() {
    ///         Ok(responder) => {
    ///             forkring::worker::after(std::time::Duration::from_millis(50), move || {
    ///                 let mut res = Response::new();
    ///                 res.body("later\n");
    ///                 responder.send(res);
    ///             });
    ///         }
    ///         Err(refused) => {
    ///             res.status(503).header("Retry-After", "1").body(format!("{refused}\n"));
    ///         }
    ///     }
    /// })
    /// # ;
    /// ```
    pub fn try_defer(&mut self) -> Result<Responder, Refused> {
        match self.claim_deferral() {
            Claim::Granted(queue, token, seq, live) => {
                Ok(Responder { queue: Some(queue), live: Some(live), token, seq })
            }
            Claim::NoRoom => Err(Refused::TooManyDeferred),
            Claim::NotOffered => Err(Refused::NotInHandler),
            Claim::Taken => Err(Refused::AlreadyDeferred),
        }
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
