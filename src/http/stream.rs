//! Streamed response bodies of unknown length: a handler (or a deferred
//! responder) turns its response into a stream and gets a [`Stream`], a
//! `Send` writer that any thread, or the loop itself, feeds.
//!
//! # How bytes reach the socket
//!
//! The writer appends to the stream's queue (under its lock) and, when the
//! loop has not been told yet, pushes one notification on the worker's
//! completion queue, which wakes the loop the way a deferred responder
//! does (an eventfd write only when that queue was empty). The loop hands
//! the notification to the connection named by its token (the slab key,
//! generation included: a stream whose connection has gone finds nothing),
//! which checks that it is the stream it serves (`Arc::ptr_eq`) and moves
//! queued bytes into its output as chunks, as much as its output room
//! allows ([`STREAM_OUTPUT_ROOM`]). Every send that makes progress pulls
//! again. So a stream holds at most its queue's capacity plus the
//! connection's output room, whatever the writer does.
//!
//! # Backpressure the writer sees
//!
//! [`Stream::send`] never blocks: past the queue's capacity it answers
//! [`StreamError::Full`] and queues nothing. [`Stream::on_ready`] runs a
//! closure on the loop once the queue has drained to half (or the stream is
//! gone), so a writer on the loop (a timer) continues there;
//! [`Stream::send_blocking`] waits on a condition variable instead, for a
//! pool thread. Neither costs a thread per stream.
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
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::defer::{Completion, Completions, Outcome};

/// The queue capacity of a stream made by [`super::Response::stream`].
pub const STREAM_QUEUE: usize = 64 * 1024;

/// Output a streaming connection takes from its queue at most: framed
/// chunks not yet sent beyond this wait in the stream's queue.
pub(crate) const STREAM_OUTPUT_ROOM: usize = 64 * 1024;

/// Why a write to a [`Stream`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// The queue is at its capacity: wait ([`Stream::on_ready`],
    /// [`Stream::send_blocking`]) and write again. Nothing was queued.
    Full,
    /// The connection has gone (the client left, a timeout, the drain
    /// timeout), or the response has no body (`HEAD`): nothing written
    /// from now on reaches anyone.
    Closed,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamError::Full => "stream queue full",
            StreamError::Closed => "stream closed",
        })
    }
}

impl std::error::Error for StreamError {}

/// What the writer and the loop share.
pub(crate) struct Shared {
    /// The queue and the flags, under one lock.
    state: Mutex<State>,
    /// Signalled when the queue drains to half or the stream closes.
    room: Condvar,
    /// Where notifications go (the worker's completion queue); `None` for
    /// a stream made outside a handler, which is closed from the start.
    queue: Option<Arc<Completions>>,
    /// The connection's token.
    token: u64,
    /// Most bytes queued at once (a single larger write into an empty
    /// queue is taken whole, so that any write can make progress).
    capacity: usize,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("stream::Shared").field("token", &self.token).finish_non_exhaustive()
    }
}

/// The state under the lock.
#[derive(Default)]
struct State {
    /// Bytes written and not yet taken by the loop.
    buf: Vec<u8>,
    /// The writer called [`Stream::end`].
    ended: bool,
    /// The writer dropped the stream without ending it.
    aborted: bool,
    /// The connection is gone (or the body is not sent): writes fail.
    closed: bool,
    /// The worker drains: the writer should end soon.
    draining: bool,
    /// A notification is on its way to the loop and not yet taken.
    notified: bool,
    /// Runs on the loop when the queue drains to half, or on close.
    on_ready: Option<Box<dyn FnOnce() + Send>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the loop, once per batch of writes, that the stream changed.
    fn notify(self: &Arc<Self>, st: &mut State) {
        if st.notified || st.closed {
            return;
        }
        if let Some(q) = &self.queue {
            st.notified = true;
            q.push(Completion { token: self.token, seq: 0, outcome: Outcome::Stream(self.clone()) });
        }
    }

    /// The loop takes up to `max` queued bytes into `out` (appended).
    /// Returns what the writer's side says now, and the ready callback to
    /// run when the queue has drained to half.
    pub(crate) fn take(&self, max: usize, out: &mut Vec<u8>) -> Taken {
        let mut st = self.lock();
        st.notified = false;
        let n = st.buf.len().min(max);
        if n == st.buf.len() && out.is_empty() {
            // The usual case: everything, without copying.
            std::mem::swap(out, &mut st.buf);
        } else {
            out.extend_from_slice(&st.buf[..n]);
            st.buf.drain(..n);
        }
        let below_half = st.buf.len() <= self.capacity / 2;
        let ready = if below_half { st.on_ready.take() } else { None };
        if below_half && n > 0 {
            self.room.notify_all();
        }
        Taken { empty: st.buf.is_empty(), ended: st.ended, aborted: st.aborted, ready }
    }

    /// The connection is gone or sends no body: writes fail from now on.
    /// Returns the ready callback, which the loop runs so that a writer
    /// waiting for room learns of it.
    pub(crate) fn close(&self) -> Option<Box<dyn FnOnce() + Send>> {
        let mut st = self.lock();
        st.closed = true;
        st.buf = Vec::new();
        self.room.notify_all();
        st.on_ready.take()
    }

    /// The worker drains.
    pub(crate) fn set_draining(&self) {
        self.lock().draining = true;
    }
}

/// What the loop found when it took from a stream's queue.
pub(crate) struct Taken {
    /// Nothing is left in the queue.
    pub(crate) empty: bool,
    /// The writer ended the stream.
    pub(crate) ended: bool,
    /// The writer dropped it without ending it.
    pub(crate) aborted: bool,
    /// The ready callback, due now.
    pub(crate) ready: Option<Box<dyn FnOnce() + Send>>,
}

/// The writer of a streamed response body: `Send`, usable from any thread
/// or from the worker's loop. See [`super::Response::stream`].
///
/// Writes queue up to a capacity ([`STREAM_QUEUE`] by default) and
/// are sent as the client reads; a full queue answers
/// [`StreamError::Full`], never grows. [`Stream::end`] ends the body;
/// dropping the stream without it cuts the body short (the connection
/// closes without the final chunk).
pub struct Stream {
    shared: Arc<Shared>,
    /// `end` was called: the drop does not abort.
    done: bool,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream").field("token", &self.shared.token).finish_non_exhaustive()
    }
}

impl Stream {
    /// A stream whose notifications go to `queue` for connection `token`
    /// (`None`: a stream closed from the start).
    pub(crate) fn new(queue: Option<Arc<Completions>>, token: u64, capacity: usize) -> Stream {
        let closed = queue.is_none();
        let shared = Arc::new(Shared {
            state: Mutex::new(State { closed, ..State::default() }),
            room: Condvar::new(),
            queue,
            token,
            capacity: capacity.max(1),
        });
        Stream { shared, done: false }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Queues `data` to be sent as the next piece of the body. Never
    /// blocks: [`StreamError::Full`] when the queue is at its capacity
    /// (nothing is queued; wait with [`Stream::on_ready`] or
    /// [`Stream::send_blocking`]), [`StreamError::Closed`] once the
    /// connection has gone.
    pub fn send(&self, data: &[u8]) -> Result<(), StreamError> {
        let mut st = self.shared.lock();
        if st.closed {
            return Err(StreamError::Closed);
        }
        if data.is_empty() {
            return Ok(());
        }
        if !st.buf.is_empty() && st.buf.len() + data.len() > self.shared.capacity {
            return Err(StreamError::Full);
        }
        st.buf.extend_from_slice(data);
        self.shared.notify(&mut st);
        Ok(())
    }

    /// Like [`Stream::send`], but waits while the queue is full. For a
    /// thread of its own (a [`crate::worker::spawn_blocking`] job): on the
    /// worker's loop it would wait for the loop itself, so there use
    /// [`Stream::send`] and [`Stream::on_ready`].
    pub fn send_blocking(&self, data: &[u8]) -> Result<(), StreamError> {
        let mut st = self.shared.lock();
        loop {
            if st.closed {
                return Err(StreamError::Closed);
            }
            if data.is_empty() {
                return Ok(());
            }
            if st.buf.is_empty() || st.buf.len() + data.len() <= self.shared.capacity {
                st.buf.extend_from_slice(data);
                self.shared.notify(&mut st);
                return Ok(());
            }
            st = self.shared.room.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Runs `f` once on the worker's loop when the queue has drained to
    /// half its capacity, or when the connection closes (check
    /// [`Stream::is_closed`] there). Replaces a callback set before and not
    /// yet run. If there is room already, `f` runs on the loop's next turn.
    /// Returns false, dropping `f`, when the stream is closed already.
    pub fn on_ready(&self, f: impl FnOnce() + Send + 'static) -> bool {
        let mut st = self.shared.lock();
        if st.closed {
            return false;
        }
        st.on_ready = Some(Box::new(f));
        if st.buf.len() <= self.shared.capacity / 2 {
            // The loop takes the callback with its next take.
            self.shared.notify(&mut st);
        }
        true
    }

    /// Bytes queued and not yet taken by the connection.
    pub fn queued(&self) -> usize {
        self.shared.lock().buf.len()
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Whether the connection has gone: writes answer
    /// [`StreamError::Closed`].
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Whether the worker is draining (shutdown or reload): end the stream
    /// soon, or it is cut when the drain timeout passes.
    pub fn is_draining(&self) -> bool {
        self.shared.lock().draining
    }

    /// Ends the body once what is queued is sent: the last chunk (or, for
    /// an HTTP/1.0 client, the close of the connection).
    pub fn end(mut self) {
        self.done = true;
        let mut st = self.shared.lock();
        st.ended = true;
        self.shared.notify(&mut st);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.shared.lock();
        st.aborted = true;
        self.shared.notify(&mut st);
    }
}

/// Appends `data` to `out` as one chunk of a chunked body.
pub(crate) fn frame_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut hex = [0u8; 16];
    let mut i = hex.len();
    let mut n = data.len();
    loop {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body: the last chunk and an empty trailer.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_framed_in_hex() {
        let mut out = Vec::new();
        frame_chunk(&mut out, b"hello");
        frame_chunk(&mut out, &[b'x'; 26]);
        frame_chunk(&mut out, b"");
        assert_eq!(&out[..10], b"5\r\nhello\r\n");
        assert_eq!(&out[10..14], b"1a\r\n");
        assert_eq!(out.len(), 10 + 4 + 26 + 2);
    }

    #[test]
    fn a_full_queue_refuses_and_drains() {
        let q = Arc::new(Completions::new(|| {}));
        let s = Stream::new(Some(q.clone()), 7, 8);
        assert_eq!(s.send(b"0123"), Ok(()));
        assert_eq!(s.send(b"4567"), Ok(()));
        assert_eq!(s.send(b"8"), Err(StreamError::Full));
        // One notification for the batch.
        let mut batch = Vec::new();
        q.take(&mut batch);
        assert_eq!(batch.len(), 1);
        let mut out = Vec::new();
        let t = s.shared().take(5, &mut out);
        assert_eq!(out, b"01234");
        assert!(!t.empty && !t.ended);
        // A write larger than the capacity goes into an empty queue whole.
        let mut out = Vec::new();
        s.shared().take(100, &mut out);
        assert_eq!(s.send(&[1; 20]), Ok(()));
        s.shared().close();
        assert_eq!(s.send(b"x"), Err(StreamError::Closed));
        assert_eq!(s.send_blocking(b"x"), Err(StreamError::Closed));
    }

    #[test]
    fn a_stream_outside_a_handler_is_closed() {
        let s = Stream::new(None, 0, 8);
        assert_eq!(s.send(b"x"), Err(StreamError::Closed));
        assert!(s.is_closed());
    }
}
