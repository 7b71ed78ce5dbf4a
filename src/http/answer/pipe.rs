//! The pipe of a streamed body: the bytes a [`super::Stream`]'s writer
//! queued and the loop has not taken yet, with the flags both sides see.
//!
//! # How bytes reach the socket
//!
//! The writer appends to the pipe (under its lock) and, when the loop has
//! not been told yet, posts one notice to the worker's mailbox, which wakes
//! the loop the way a deferred responder does (an eventfd write only when
//! the mailbox was empty). The writer's handle does the posting: the pipe
//! only says when a notice is due, so it names no mailbox. The loop hands
//! the notice to the connection named by its token (the slab key,
//! generation included: a stream whose connection has gone finds nothing),
//! which checks that it is the pipe it serves (`Arc::ptr_eq`) and moves
//! queued bytes into its output as chunks, as much as its output room
//! allows ([`STREAM_OUTPUT_ROOM`]). Every send that makes progress pulls
//! again. So a stream holds at most its pipe's capacity plus the
//! connection's output room, whatever the writer does.
//!
//! # Backpressure the writer sees
//!
//! A send never blocks: past the capacity it answers [`StreamError::Full`]
//! and queues nothing. A ready callback runs on the loop once the pipe has
//! drained to half (or the stream is gone), so a writer on the loop (a
//! timer) continues there; a blocking send waits on a condition variable
//! instead, for a pool thread. Neither costs a thread per stream.

use std::fmt;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Output a streaming connection takes from its pipe at most: framed
/// chunks not yet sent beyond this wait in the pipe.
pub(crate) const STREAM_OUTPUT_ROOM: usize = 64 * 1024;

/// Why a write to a [`super::Stream`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// The queue is at its capacity: wait ([`super::Stream::on_ready`],
    /// [`super::Stream::send_blocking`]) and write again. Nothing was
    /// queued.
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

/// A callback the loop runs when the pipe has room again.
pub(crate) type Ready = Box<dyn FnOnce() + Send>;

/// What the writer and the loop share. Public only as a parameter of
/// [`super::Completion`]: it is not exported, and nothing of it can be
/// used outside the crate.
pub struct Pipe {
    /// The queue and the flags, under one lock.
    state: Mutex<State>,
    /// Signalled when the queue drains to half or the pipe closes.
    room: Condvar,
    /// Most bytes queued at once (a single larger write into an empty
    /// queue is taken whole, so that any write can make progress).
    capacity: usize,
}

impl fmt::Debug for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipe").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

/// The state under the lock.
#[derive(Default)]
struct State {
    /// Bytes written and not yet taken by the loop.
    buf: Vec<u8>,
    /// The writer ended the stream.
    ended: bool,
    /// The writer dropped the stream without ending it.
    aborted: bool,
    /// The connection is gone (or the body is not sent): writes fail.
    closed: bool,
    /// The worker drains: the writer should end soon.
    draining: bool,
    /// A notice is on its way to the loop and not yet taken.
    notified: bool,
    /// Runs on the loop when the queue drains to half, or on close.
    on_ready: Option<Ready>,
}

impl State {
    /// Calls `post` (which tells the loop) unless a notice is on its way
    /// already or nobody is listening: once per batch of writes.
    fn notify(&mut self, post: impl FnOnce()) {
        if self.notified || self.closed {
            return;
        }
        self.notified = true;
        post();
    }
}

/// What the loop found when it took from a pipe.
pub(crate) struct Taken {
    /// Nothing is left in the queue.
    pub(crate) empty: bool,
    /// The writer ended the stream.
    pub(crate) ended: bool,
    /// The writer dropped it without ending it.
    pub(crate) aborted: bool,
    /// The ready callback, due now.
    pub(crate) ready: Option<Ready>,
}

/// The writer's side. Every method that may change what the loop sees
/// takes `post`, which tells the loop; it is called under the pipe's lock,
/// at most once per batch.
impl Pipe {
    /// A pipe of `capacity` bytes; `closed` when nobody will ever take
    /// from it (a stream made outside a handler).
    pub(super) fn new(capacity: usize, closed: bool) -> Pipe {
        Pipe {
            state: Mutex::new(State { closed, ..State::default() }),
            room: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `data`, or says why not; never blocks.
    pub(super) fn send(&self, data: &[u8], post: impl FnOnce()) -> Result<(), StreamError> {
        let mut st = self.lock();
        if st.closed {
            return Err(StreamError::Closed);
        }
        if data.is_empty() {
            return Ok(());
        }
        if !st.buf.is_empty() && st.buf.len() + data.len() > self.capacity {
            return Err(StreamError::Full);
        }
        st.buf.extend_from_slice(data);
        st.notify(post);
        Ok(())
    }

    /// Queues `data`, waiting while the queue is full.
    pub(super) fn send_blocking(&self, data: &[u8], post: impl FnOnce()) -> Result<(), StreamError> {
        let mut st = self.lock();
        loop {
            if st.closed {
                return Err(StreamError::Closed);
            }
            if data.is_empty() {
                return Ok(());
            }
            if st.buf.is_empty() || st.buf.len() + data.len() <= self.capacity {
                st.buf.extend_from_slice(data);
                st.notify(post);
                return Ok(());
            }
            st = self.room.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Sets the ready callback (replacing one not yet run); false, dropping
    /// `f`, when the pipe is closed. With room already, the loop runs it on
    /// its next take.
    pub(super) fn on_ready(&self, f: impl FnOnce() + Send + 'static, post: impl FnOnce()) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        st.on_ready = Some(Box::new(f));
        if st.buf.len() <= self.capacity / 2 {
            st.notify(post);
        }
        true
    }

    /// The writer ended the stream.
    pub(super) fn end(&self, post: impl FnOnce()) {
        let mut st = self.lock();
        st.ended = true;
        st.notify(post);
    }

    /// The writer dropped the stream without ending it.
    pub(super) fn abort(&self, post: impl FnOnce()) {
        let mut st = self.lock();
        st.aborted = true;
        st.notify(post);
    }

    /// Bytes queued and not yet taken.
    pub(super) fn queued(&self) -> usize {
        self.lock().buf.len()
    }

    /// The capacity.
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether writes fail from now on.
    pub(super) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Whether the worker drains.
    pub(super) fn is_draining(&self) -> bool {
        self.lock().draining
    }
}

/// The loop's side.
impl Pipe {
    /// Takes up to `max` queued bytes into `out` (appended). Returns what
    /// the writer's side says now, and the ready callback to run when the
    /// queue has drained to half.
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
    pub(crate) fn close(&self) -> Option<Ready> {
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
    use std::cell::Cell;

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
    fn a_full_pipe_refuses_and_drains() {
        let p = Pipe::new(8, false);
        let posts = Cell::new(0);
        let post = || posts.set(posts.get() + 1);
        assert_eq!(p.send(b"0123", post), Ok(()));
        assert_eq!(p.send(b"4567", post), Ok(()));
        assert_eq!(p.send(b"8", post), Err(StreamError::Full));
        assert_eq!(posts.get(), 1, "one notice for the batch");
        let mut out = Vec::new();
        let t = p.take(5, &mut out);
        assert_eq!(out, b"01234");
        assert!(!t.empty && !t.ended);
        // A write larger than the capacity goes into an empty pipe whole.
        let mut out = Vec::new();
        p.take(100, &mut out);
        assert_eq!(p.send(&[1; 20], post), Ok(()));
        assert_eq!(posts.get(), 2, "a take re-arms the notice");
        p.close();
        assert_eq!(p.send(b"x", post), Err(StreamError::Closed));
        assert_eq!(p.send_blocking(b"x", post), Err(StreamError::Closed));
        assert_eq!(posts.get(), 2, "a closed pipe tells nobody");
    }

    #[test]
    fn the_ready_callback_runs_once_there_is_room() {
        let p = Pipe::new(8, false);
        assert_eq!(p.send(b"0123456", || {}), Ok(()));
        assert!(p.on_ready(|| {}, || {}));
        let mut out = Vec::new();
        assert!(p.take(1, &mut out).ready.is_none(), "still above half");
        assert!(p.take(2, &mut out).ready.is_some(), "drained to half");
        assert!(p.close().is_none(), "taken already");
        assert!(!p.on_ready(|| {}, || {}), "closed");
    }
}
