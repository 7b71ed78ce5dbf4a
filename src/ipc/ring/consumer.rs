//! The reading end of a ring: walking the committed frames (checking each
//! header word, since the producer may be another, untrusted process),
//! releasing their space, and announcing a sleep. The protocols are written
//! out in the ring's module doc; each atomic access here names the
//! producer's access it pairs with.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::buf::Buf;
use super::format::{frame_len, HEADER, LEN_MASK, MSG, PAD};
use super::Ring;
use crate::ipc::sync::{fence, Ordering};
use crate::ipc::wake::WakeFd;

/// Why messages could not be received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvError {
    /// The ring holds a frame no correct producer writes (a length over the
    /// limit, padding that does not reach the end): the producer's process
    /// damaged it. Nothing more is read from this ring until it is reset.
    Corrupt {
        /// Free-running position of the bad frame.
        position: u64,
        /// The header word found there.
        header: u32,
    },
    /// The ring was reset for a new generation since this consumer was made.
    Reset,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Corrupt { position, header } => {
                write!(f, "corrupt ring frame at position {position} (header {header:#010x})")
            }
            RecvError::Reset => f.write_str("ring reset for a new generation"),
        }
    }
}

impl std::error::Error for RecvError {}

/// The reading end of a ring. One per ring per generation.
pub struct Consumer {
    /// The ring read.
    ring: Ring,
    /// Position of the next frame to read.
    head: u64,
    /// `head` as last stored to the shared header.
    published: u64,
    /// The ring's generation when this consumer was made.
    generation: u64,
    /// The value this consumer last stored in `waiting`: odd while it sleeps.
    sleep_seq: u64,
    /// Set once a corrupt frame was found.
    poisoned: Option<RecvError>,
    /// The eventfd this consumer sleeps on.
    wake_fd: Option<Arc<WakeFd>>,
}

impl Consumer {
    /// The consumer of `ring`'s current generation, which the caller has
    /// claimed.
    pub(super) fn new(ring: Ring) -> Consumer {
        let h = ring.header();
        let head = h.head.0.load(Ordering::Acquire);
        // Start awake (even), whatever an earlier consumer left.
        let mut sleep_seq = h.waiting.0.load(Ordering::Relaxed);
        if sleep_seq & 1 == 1 {
            sleep_seq += 1;
            h.waiting.0.store(sleep_seq, Ordering::Relaxed);
        }
        let generation = h.meta.0.ctrl.load(Ordering::Acquire) >> 1;
        Consumer { ring, head, published: head, sleep_seq, generation, poisoned: None, wake_fd: None }
    }

    /// Attaches the eventfd this consumer sleeps on.
    pub fn with_wake_fd(mut self, wake_fd: Arc<WakeFd>) -> Consumer {
        self.wake_fd = Some(wake_fd);
        self
    }

    /// The eventfd attached, if any: register it with epoll or keep a read
    /// in flight on it in io_uring.
    pub fn wake_fd(&self) -> Option<&Arc<WakeFd>> {
        self.wake_fd.as_ref()
    }

    /// The ring read.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Hands every committed message to `f`, in order, then releases their
    /// space with one store of `head`. Returns how many were read. A batch
    /// stops after one ring's worth of bytes, so a fast producer cannot keep
    /// the caller here forever.
    ///
    /// The slice points into shared memory and is valid only during the call.
    pub fn recv_batch(&mut self, f: impl FnMut(&[u8])) -> Result<usize, RecvError> {
        self.recv_up_to(usize::MAX, f)
    }

    /// [`Consumer::recv_batch`], reading at most `max` messages.
    pub fn recv_up_to(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> Result<usize, RecvError> {
        self.take(max, |buf, off, len| {
            // SAFETY: `take` hands out only a committed frame's payload,
            // checked to lie inside the data; it stays put until `head` is
            // published past it, after this returns.
            unsafe { buf.read(off, len, &mut f) }
        })
    }

    /// Reads at most `max` messages, each copied out of shared memory into
    /// a `Vec` before `f` sees it: for a consumer whose producer is not
    /// trusted (the master reading a worker), which must never hold a
    /// reference into memory another process may be writing.
    pub fn recv_owned(&mut self, max: usize, mut f: impl FnMut(Vec<u8>)) -> Result<usize, RecvError> {
        self.take(max, |buf, off, len| {
            // SAFETY: as in `recv_up_to`; the bytes are copied, not borrowed.
            f(unsafe { buf.copy_out(off, len) })
        })
    }

    /// Reads at most `max` messages, appending each one's bytes to `out`
    /// (copied out of shared memory, never borrowed: for a consumer whose
    /// producer is not trusted) and its end offset in `out` to `ends`. One
    /// buffer for a whole batch, reused from turn to turn: no allocation
    /// per message.
    pub fn recv_into(&mut self, max: usize, out: &mut Vec<u8>, ends: &mut Vec<usize>) -> Result<usize, RecvError> {
        self.take(max, |buf, off, len| {
            // SAFETY: as in `recv_up_to`; the bytes are copied, not borrowed.
            unsafe { buf.append_to(off, len, out) };
            ends.push(out.len());
        })
    }

    /// Whether the ring was found corrupt or reset under this consumer: it
    /// reads nothing more.
    pub fn is_broken(&self) -> bool {
        self.poisoned.is_some() || self.ring.generation() != self.generation
    }

    /// The frame walk of the receive calls: validates every header word,
    /// hands each message's payload to `take` as (data, offset, length),
    /// and publishes `head` at least every quarter ring and at the end.
    fn take(&mut self, max: usize, mut take: impl FnMut(&Buf, usize, usize)) -> Result<usize, RecvError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        if self.ring.generation() != self.generation {
            return Err(RecvError::Reset);
        }
        let cap = self.ring.opts.capacity;
        let max_message = self.ring.opts.max_message;
        let start = self.head;
        let mut n = 0;
        while n < max && self.head - start < cap as u64 {
            let off = self.head as usize & (cap - 1);
            // Pairs with the producer's `Release` store of this word (in
            // `Producer::commit`): once it reads non-zero, the frame's
            // payload (or, for a marker, the header at offset 0) is visible.
            let word = self.ring.buf.header(off).load(Ordering::Acquire);
            if word == 0 {
                break;
            }
            let len = (word & LEN_MASK) as usize;
            if word & (MSG | PAD) == MSG && len <= max_message && off + frame_len(len) <= cap {
                self.head += frame_len(len) as u64;
                // The producer committed `len` bytes after this header,
                // checked to lie inside the data; they stay put until `head`
                // is published past them, after `take` returns.
                take(&self.ring.buf, off + HEADER, len);
                n += 1;
            } else if word & (MSG | PAD) == PAD && len == cap - off {
                self.head += len as u64;
            } else {
                let e = RecvError::Corrupt { position: self.head, header: word };
                self.poisoned = Some(e);
                self.publish();
                return Err(e);
            }
            if self.head - self.published >= (cap / 4) as u64 {
                self.publish();
            }
        }
        self.publish();
        Ok(n)
    }

    /// Reads one message into `buf` (cleared first). Returns whether there
    /// was one.
    pub fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<bool, RecvError> {
        buf.clear();
        Ok(self.recv_up_to(1, |m| buf.extend_from_slice(m))? == 1)
    }

    /// Releases the space of every frame read.
    #[inline]
    fn publish(&mut self) {
        if self.head != self.published {
            // Pairs with the producer's `Acquire` load of `head` (in
            // `Producer::load_head`, which `reserve` calls when its cached
            // view is full): the reads of the released frames happen before
            // the producer overwrites them.
            self.ring.header().head.0.store(self.head, Ordering::Release);
            self.published = self.head;
        }
    }

    /// Whether no committed message waits (a cheap check of one word).
    pub fn is_empty(&self) -> bool {
        let off = self.head as usize & (self.ring.opts.capacity - 1);
        // Pairs with the producer's commit, as in `take`.
        self.ring.buf.header(off).load(Ordering::Acquire) == 0
    }

    /// Announces that this consumer is going to sleep on its eventfd, then
    /// checks the ring once more. Returns true if the ring is really empty:
    /// the caller may block until the eventfd is readable, then must call
    /// [`Consumer::after_wake`]. Returns false if a message arrived: the
    /// caller reads it instead of sleeping (this consumer is awake again).
    pub fn prepare_sleep(&mut self) -> bool {
        // The next odd number: a sleep the producer has not woken yet.
        self.sleep_seq = (self.sleep_seq | 1) + 2;
        let waiting = &self.ring.header().waiting.0;
        // `Relaxed`: the fence below orders it.
        waiting.store(self.sleep_seq, Ordering::Relaxed);
        // Pairs with the `SeqCst` fence in `Producer::should_wake`; see the
        // paragraph there. Either the load below sees the producer's commit,
        // or the producer's load of `waiting` sees the number stored above.
        fence(Ordering::SeqCst);
        if self.is_empty() {
            return true;
        }
        self.after_wake();
        false
    }

    /// Marks this consumer awake after a sleep (whether the producer woke it
    /// or something else did). The caller then reads the ring.
    pub fn after_wake(&mut self) {
        if self.sleep_seq & 1 == 1 {
            self.sleep_seq += 1;
            // `Relaxed`: while the number is even the producer skips the
            // eventfd, which is right, since this consumer checks the ring
            // before it sleeps again (`prepare_sleep`).
            self.ring.header().waiting.0.store(self.sleep_seq, Ordering::Relaxed);
        }
    }

    /// Blocks until a message is there, the eventfd is written, or
    /// `timeout` passes (`None`: no limit). Returns false on timeout. For a
    /// consumer that has nothing else to wait for; an event loop instead
    /// polls [`WakeFd::fd`] between [`Consumer::prepare_sleep`] and
    /// [`Consumer::after_wake`].
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        let wake_fd = self
            .wake_fd
            .clone()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "consumer has no wake-up eventfd"))?;
        if !self.prepare_sleep() {
            return Ok(true);
        }
        let woke = wake_fd.wait(timeout);
        self.after_wake();
        woke
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("head", &self.head)
            .field("published", &self.published)
            .field("generation", &self.generation)
            .field("poisoned", &self.poisoned)
            .field("ring", &self.ring)
            .finish()
    }
}
