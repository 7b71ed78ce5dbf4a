//! Request bodies taken in pieces: what a handler can ask of a body before
//! any of it is read, and the flow control a reader has over it.
//!
//! When a request's head announces a body, the runtime asks the handler
//! what to do with it ([`super::Handler::on_head`]), before any of the body
//! is read and before a `100 Continue` is sent:
//!
//! - [`BodyPlan::Whole`] (the default): the body is collected, up to
//!   [`crate::Limits::max_body`], and [`super::Handler::handle`] sees it
//!   whole;
//! - [`BodyPlan::Stream`]: each piece goes to a [`BodyReader`] as it is
//!   received (de-chunked), then [`BodyReader::end`] answers the request;
//!   `max_body` does not apply, the reader decides;
//! - [`BodyPlan::Refuse`]: the response given is sent at once (say `401`,
//!   `413`, `417`), no `100 Continue` goes out, and the connection closes
//!   after it, so the body is never read.
//!
//! Flow control: a reader that cannot take more calls [`BodyFlow::pause`]
//! in [`BodyReader::data`]; the connection then delivers nothing more and
//! stops reading from its socket (the client's send blocks once the
//! kernel's buffers are full) until the returned [`Resume`] is used, from
//! any thread or from a worker timer. The wake-up is the one deferred
//! responses use: the resume goes on the worker's completion queue, which
//! writes the loop's eventfd.

use std::fmt;
use std::sync::Arc;

use super::answer::{Completion, Completions, Outcome, Response};
use super::request::Request;

/// What the runtime does with a request body, chosen in
/// [`Handler::on_head`](super::Handler::on_head) before any of it is read.
#[non_exhaustive]
pub enum BodyPlan {
    /// Collect it whole (up to [`crate::Limits::max_body`]) and call
    /// [`super::Handler::handle`]: the default.
    Whole,
    /// Hand it to this reader piece by piece.
    Stream(Box<dyn BodyReader>),
    /// Answer with this response before the body is sent, and close the
    /// connection after it.
    Refuse(Response),
}

impl fmt::Debug for BodyPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyPlan::Whole => f.write_str("Whole"),
            BodyPlan::Stream(_) => f.write_str("Stream(..)"),
            BodyPlan::Refuse(res) => f.debug_tuple("Refuse").field(&res.status_code()).finish(),
        }
    }
}

/// Takes a request body in pieces, on the worker's loop (it must not
/// block). Dropped unended when the connection closes before the body's
/// end (the client went away, a timeout, a framing error).
///
/// A reader that counts the bytes and refuses more than a megabyte; the
/// handler asks for it in [`Handler::on_head`](super::Handler::on_head):
///
/// ```
/// use forkring::{BodyFlow, BodyPlan, BodyReader, Handler, Request, Response};
///
/// struct Count(usize);
///
/// impl BodyReader for Count {
///     fn data(&mut self, piece: &[u8], flow: &mut BodyFlow<'_>) {
///         self.0 += piece.len();
///         if self.0 > 1 << 20 {
///             flow.stop(413); // answered `413`; the connection closes
///         }
///     }
///     fn end(&mut self, _req: &Request<'_>, res: &mut Response) {
///         res.body(format!("{} bytes\n", self.0));
///     }
/// }
///
/// struct Upload;
///
/// impl Handler for Upload {
///     fn on_head(&mut self, _req: &Request<'_>) -> BodyPlan {
///         BodyPlan::Stream(Box::new(Count(0)))
///     }
///     fn handle(&mut self, _req: &Request<'_>, res: &mut Response) {
///         res.body("no body\n");
///     }
/// }
/// # let _ = Upload;
/// ```
///
/// `examples/upload.rs` pauses and resumes a body ([`BodyFlow::pause`]).
pub trait BodyReader {
    /// The next piece of the body, de-chunked, in order (at most one
    /// read's worth). The piece is only borrowed: copy what must be kept.
    /// `flow` pauses the body or stops it.
    fn data(&mut self, piece: &[u8], flow: &mut BodyFlow<'_>);

    /// The body is complete: answer the request, as
    /// [`super::Handler::handle`] does (`res.defer()` works here too).
    /// `req` is the request's head; its [`Request::body`] is empty.
    fn end(&mut self, req: &Request<'_>, res: &mut Response);
}

/// What a [`BodyReader`] can do about the body while it takes a piece.
pub struct BodyFlow<'a> {
    /// Where a [`Resume`] sends itself.
    queue: Option<&'a Arc<Completions>>,
    /// The connection's token.
    token: u64,
    /// The body's number on the connection.
    seq: u64,
    /// The reader asked for no more until it resumes.
    paused: bool,
    /// The reader stopped the body with this status.
    stopped: Option<u16>,
}

impl fmt::Debug for BodyFlow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyFlow").field("paused", &self.paused).field("stopped", &self.stopped).finish()
    }
}

impl<'a> BodyFlow<'a> {
    pub(crate) fn new(queue: Option<&'a Arc<Completions>>, token: u64, seq: u64) -> BodyFlow<'a> {
        BodyFlow { queue, token, seq, paused: false, stopped: None }
    }

    /// Takes no more of the body until the returned [`Resume`] is used:
    /// the connection stops reading from its socket meanwhile. The pause
    /// counts as a pause in the body: it may last at most
    /// [`crate::Timeouts::idle`], then the connection closes.
    pub fn pause(&mut self) -> Resume {
        self.paused = true;
        Resume { queue: self.queue.cloned(), token: self.token, seq: self.seq }
    }

    /// Stops the body: the request is answered with `status` (an error
    /// page, say `413`) and the connection closes; the reader is dropped
    /// without its [`BodyReader::end`].
    pub fn stop(&mut self, status: u16) {
        self.stopped = Some(status);
    }

    pub(crate) fn paused(&self) -> bool {
        self.paused
    }

    pub(crate) fn stopped(&self) -> Option<u16> {
        self.stopped
    }
}

/// Lets a paused body go on ([`BodyFlow::pause`]). `Send`: use it from any
/// thread or from a worker timer. Dropping it resumes too, so a body
/// cannot stay paused by mistake; resuming a body whose connection has
/// gone does nothing.
pub struct Resume {
    /// Where the resume goes; `None` when there is no loop (tests).
    queue: Option<Arc<Completions>>,
    /// The connection's token.
    token: u64,
    /// The body's number on the connection.
    seq: u64,
}

impl fmt::Debug for Resume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resume").field("token", &self.token).field("seq", &self.seq).finish_non_exhaustive()
    }
}

impl Resume {
    /// Lets the body go on: the next piece arrives on the loop's next turn
    /// (or when the client sends it).
    pub fn resume(self) {
        // The work is in `Drop`.
    }
}

impl Drop for Resume {
    fn drop(&mut self) {
        if let Some(q) = self.queue.take() {
            q.push(Completion { token: self.token, seq: self.seq, outcome: Outcome::Resume });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_resumes_through_the_mailbox_even_when_dropped() {
        let q = Arc::new(Completions::new(|| {}));
        let mut flow = BodyFlow::new(Some(&q), 4, 2);
        assert!(!flow.paused());
        let resume = flow.pause();
        assert!(flow.paused());
        let mut batch = Vec::new();
        q.take(&mut batch);
        assert!(batch.is_empty(), "nothing is posted before the resume");
        drop(resume);
        q.take(&mut batch);
        assert!(matches!(&batch[..], [Completion { token: 4, seq: 2, outcome: Outcome::Resume }]));
    }

    #[test]
    fn a_stop_carries_its_status() {
        let mut flow = BodyFlow::new(None, 0, 1);
        flow.stop(413);
        assert_eq!(flow.stopped(), Some(413));
        // Without a loop, a resume goes nowhere.
        flow.pause().resume();
    }
}
