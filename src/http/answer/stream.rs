//! Streamed response bodies of unknown length: a handler (or a deferred
//! responder) turns its response into a stream and gets a [`Stream`], a
//! `Send` writer that any thread, or the loop itself, feeds.
//!
//! The bytes wait in the stream's pipe ([`super::pipe`], which also says
//! how they reach the socket and what backpressure the writer sees); the
//! writer here posts the notices that wake the loop.
//!
//! # The end
//!
//! [`Stream::end`] ends the body (the last chunk, or the close of an
//! HTTP/1.0 connection), after which the connection answers its next
//! request. A stream dropped without `end` is cut short: the connection
//! closes after what was queued, without the last chunk, so the client
//! sees a truncated body rather than a complete one. Once the connection
//! has gone, every write answers [`StreamError::Closed`].

use std::fmt;
use std::sync::Arc;

use super::pipe::{Pipe, StreamError};
use super::response::{Completion, Completions, Outcome, Response};

/// The queue capacity of a stream made by [`Response::stream`].
pub const STREAM_QUEUE: usize = 64 * 1024;

/// The writer of a streamed response body: `Send`, usable from any thread
/// or from the worker's loop. See [`Response::stream`].
///
/// Writes queue up to a capacity ([`STREAM_QUEUE`] by default) and
/// are sent as the client reads; a full queue answers
/// [`StreamError::Full`], never grows. [`Stream::end`] ends the body;
/// dropping the stream without it cuts the body short (the connection
/// closes without the final chunk).
///
/// A stream fed from a pool thread, waiting for room while the client reads
/// slowly (from the loop, use [`Stream::send`] and [`Stream::on_ready`]
/// instead, which never block):
///
/// ```no_run
/// use forkring::{Request, Response, Server};
///
/// fn main() -> std::io::Result<()> {
///     Server::builder().serve(|| |_req: &Request<'_>, res: &mut Response| {
///         res.header("Content-Type", "text/plain");
///         let stream = res.stream();
///         let queued = forkring::worker::spawn_blocking(move || {
///             for i in 0..1000 {
///                 if stream.is_draining() {
///                     break; // the worker is shutting down: end early
///                 }
///                 if stream.send_blocking(format!("line {i}\n").as_bytes()).is_err() {
///                     return; // the client has gone
///                 }
///             }
///             stream.end();
///         });
///         // A full pool dropped the job, and the stream with it: the
///         // connection closes without the last chunk.
///         let _ = queued;
///     })
/// }
/// ```
pub struct Stream {
    /// The bytes, shared with the connection.
    pipe: Arc<Pipe>,
    /// Where notices go (the worker's mailbox); `None` for a stream made
    /// outside a handler, whose pipe is closed from the start.
    queue: Option<Arc<Completions>>,
    /// The connection's token.
    token: u64,
    /// `end` was called: the drop does not abort.
    done: bool,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream").field("token", &self.token).finish_non_exhaustive()
    }
}

impl Stream {
    /// A stream whose notices go to `queue` for connection `token`
    /// (`None`: a stream closed from the start).
    pub(crate) fn new(queue: Option<Arc<Completions>>, token: u64, capacity: usize) -> Stream {
        let pipe = Arc::new(Pipe::new(capacity, queue.is_none()));
        Stream { pipe, queue, token, done: false }
    }

    /// The pipe the connection takes from.
    pub(crate) fn pipe(&self) -> &Arc<Pipe> {
        &self.pipe
    }

    /// Tells the loop that the pipe changed (the pipe calls it at most
    /// once per batch, under its lock).
    fn post(&self) -> impl FnOnce() + '_ {
        move || {
            if let Some(q) = &self.queue {
                q.push(Completion { token: self.token, seq: 0, outcome: Outcome::Stream(self.pipe.clone()) });
            }
        }
    }

    /// Queues `data` to be sent as the next piece of the body. Never
    /// blocks: [`StreamError::Full`] when the queue is at its capacity
    /// (nothing is queued; wait with [`Stream::on_ready`] or
    /// [`Stream::send_blocking`]), [`StreamError::Closed`] once the
    /// connection has gone.
    pub fn send(&self, data: &[u8]) -> Result<(), StreamError> {
        self.pipe.send(data, self.post())
    }

    /// Like [`Stream::send`], but waits while the queue is full. For a
    /// thread of its own (a [`crate::worker::spawn_blocking`] job): on the
    /// worker's loop it would wait for the loop itself, so there use
    /// [`Stream::send`] and [`Stream::on_ready`].
    pub fn send_blocking(&self, data: &[u8]) -> Result<(), StreamError> {
        self.pipe.send_blocking(data, self.post())
    }

    /// Runs `f` once on the worker's loop when the queue has drained to
    /// half its capacity, or when the connection closes (check
    /// [`Stream::is_closed`] there). Replaces a callback set before and not
    /// yet run. If there is room already, `f` runs on the loop's next turn.
    /// Returns false, dropping `f`, when the stream is closed already.
    pub fn on_ready(&self, f: impl FnOnce() + Send + 'static) -> bool {
        self.pipe.on_ready(f, self.post())
    }

    /// Bytes queued and not yet taken by the connection.
    pub fn queued(&self) -> usize {
        self.pipe.queued()
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.pipe.capacity()
    }

    /// Whether the connection has gone: writes answer
    /// [`StreamError::Closed`].
    pub fn is_closed(&self) -> bool {
        self.pipe.is_closed()
    }

    /// Whether the worker is draining (shutdown or reload): end the stream
    /// soon, or it is cut when the drain timeout passes.
    pub fn is_draining(&self) -> bool {
        self.pipe.is_draining()
    }

    /// Ends the body once what is queued is sent: the last chunk (or, for
    /// an HTTP/1.0 client, the close of the connection).
    pub fn end(mut self) {
        self.done = true;
        self.pipe.end(self.post());
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.pipe.abort(self.post());
    }
}

impl Response {
    /// Makes the body a stream of unknown length and returns its writer:
    /// sent with `Transfer-Encoding: chunked` to an HTTP/1.1 client, and
    /// ended by closing the connection for an HTTP/1.0 one. Whatever was in
    /// the body is dropped. The writer is `Send`: feed it from the loop (a
    /// [`crate::worker::every`] timer) or from any thread; see [`Stream`]
    /// for its backpressure and its end. The connection answers no later
    /// request before the stream ends.
    ///
    /// Outside a handler (a response made with [`Response::new`]) the
    /// stream returned is closed: use [`super::Responder::stream`] to
    /// stream a deferred answer.
    pub fn stream(&mut self) -> Stream {
        let (queue, token) = self.offered_queue();
        let stream = Stream::new(queue, token, STREAM_QUEUE);
        self.set_stream(stream.pipe().clone());
        stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_notice_per_batch_reaches_the_mailbox() {
        let q = Arc::new(Completions::new(|| {}));
        let s = Stream::new(Some(q.clone()), 7, 8);
        assert_eq!(s.send(b"0123"), Ok(()));
        assert_eq!(s.send(b"4567"), Ok(()));
        assert_eq!(s.send(b"8"), Err(StreamError::Full));
        let mut batch = Vec::new();
        q.take(&mut batch);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].token(), 7);
        assert!(matches!(&batch[0].outcome, Outcome::Stream(p) if Arc::ptr_eq(p, s.pipe())));
        // Dropping it unended is a notice too, once the loop took the last.
        let mut out = Vec::new();
        s.pipe().take(100, &mut out);
        batch.clear();
        drop(s);
        q.take(&mut batch);
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn a_stream_outside_a_handler_is_closed() {
        let s = Stream::new(None, 0, 8);
        assert_eq!(s.send(b"x"), Err(StreamError::Closed));
        assert!(s.is_closed());
        let mut res = Response::new();
        assert!(res.stream().is_closed(), "no handler offered a mailbox");
    }
}
