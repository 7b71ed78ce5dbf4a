//! The writing end of a ring: reserving room for a frame, committing it,
//! and deciding whether the consumer needs its eventfd written. The
//! commit and wake-up protocols are written out in the ring's module doc;
//! each atomic access here names the consumer's access it pairs with.

use std::fmt;
use std::sync::Arc;

use super::format::{frame_len, HEADER, MSG, PAD};
use super::Ring;
use crate::ipc::sync::{fence, Ordering};
use crate::ipc::wake::WakeFd;

/// Why a message was not sent. Nothing was written in any case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// Not enough free space now: backpressure. Try again after the
    /// consumer has drained (nothing blocks, nothing is dropped).
    Full,
    /// The message exceeds the ring's `max_message`.
    TooLarge,
    /// The ring was closed, or reset for a new generation since this
    /// producer was made; from the master: the slot has no live worker, or
    /// its worker is draining.
    Closed,
    /// From the master: no slot has this index.
    NoSuchSlot,
    /// From a master's `Handle`: its master loop does not run (not started
    /// yet, or ended).
    NoMaster,
    /// From a master's `Handle`, called on the master loop itself (in an
    /// event or timer callback), where it would wait for itself: use the
    /// callback's `Ctl` there.
    OnLoop,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full => "ring full",
            SendError::TooLarge => "message larger than the ring allows",
            SendError::Closed => "ring closed",
            SendError::NoSuchSlot => "no such slot",
            SendError::NoMaster => "the master loop does not run",
            SendError::OnLoop => "a handle cannot wait for the master loop it runs on",
        })
    }
}

impl std::error::Error for SendError {}

/// Where a reserved frame goes.
#[derive(Clone, Copy)]
struct Reservation {
    /// Offset of the frame's header in the data.
    at: usize,
    /// Padding before it (to the end of the data), 0 if it does not wrap.
    pad: usize,
}

/// The writing end of a ring. One per ring per generation.
pub struct Producer {
    /// The ring written.
    ring: Ring,
    /// Position after the last committed frame; the header word here is 0.
    tail: u64,
    /// The consumer's `head` as last loaded: at most the real one.
    head_cache: u64,
    /// `ctrl` when this producer was made; any change means closed or reset.
    ctrl: u64,
    /// Whether a message was committed since the last [`Producer::should_wake`].
    unsignalled: bool,
    /// The consumer's sleep (odd `waiting` value) this producer last woke.
    woken: u64,
    /// Eventfd writes made by [`Producer::wake_if_waiting`].
    wakes: u64,
    /// The consumer's eventfd, written when it sleeps.
    wake_fd: Option<Arc<WakeFd>>,
    /// The consumer published a `head` no honest consumer could (past the
    /// tail, or more than a ring behind it): the producer sends nothing
    /// more.
    corrupt: bool,
}

impl Producer {
    /// The producer of `ring`'s current generation, which the caller has
    /// claimed.
    pub(super) fn new(ring: Ring) -> Producer {
        let h = ring.header();
        let tail = h.tail.0.load(Ordering::Acquire);
        let head_cache = h.head.0.load(Ordering::Acquire);
        let ctrl = h.meta.0.ctrl.load(Ordering::Acquire);
        Producer { ring, tail, head_cache, ctrl, unsignalled: false, woken: 0, wakes: 0, wake_fd: None, corrupt: false }
    }

    /// Attaches the eventfd the consumer sleeps on.
    pub fn with_wake_fd(mut self, wake_fd: Arc<WakeFd>) -> Producer {
        self.wake_fd = Some(wake_fd);
        self
    }

    /// The eventfd attached, if any.
    pub fn wake_fd(&self) -> Option<&Arc<WakeFd>> {
        self.wake_fd.as_ref()
    }

    /// The ring written.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Largest message accepted.
    pub fn max_message(&self) -> usize {
        self.ring.opts.max_message
    }

    /// Copies `msg` into the ring as one message, without waking the
    /// consumer: call [`Producer::wake_if_waiting`] after a batch, or use
    /// [`Producer::send`].
    #[inline]
    pub fn try_send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        let r = self.reserve(msg.len())?;
        // SAFETY: `reserve` granted `[at, at + frame_len(len))`: free space
        // that only this producer may touch until it commits.
        unsafe { self.ring.buf.write(r.at + HEADER, msg) };
        self.commit(r, msg.len());
        Ok(())
    }

    /// Writes a message of `len` bytes in place: `fill` gets the ring's own
    /// bytes (initialised, holding stale data) and must overwrite all of
    /// them. Nothing is committed if `fill` panics.
    #[inline]
    pub fn try_send_with<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> Result<R, SendError> {
        let r = self.reserve(len)?;
        // SAFETY: as in `try_send`.
        let out = unsafe { self.ring.buf.fill(r.at + HEADER, len, fill) };
        self.commit(r, len);
        Ok(out)
    }

    /// [`Producer::try_send`], then [`Producer::wake_if_waiting`].
    pub fn send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        self.try_send(msg)?;
        self.wake_if_waiting();
        Ok(())
    }

    /// Finds room for a frame of `len` bytes plus the next frame's header.
    #[inline]
    fn reserve(&mut self, len: usize) -> Result<Reservation, SendError> {
        if len > self.ring.opts.max_message {
            return Err(SendError::TooLarge);
        }
        // `Relaxed`: close and reset are advisory here. A send racing a close
        // lands in the ring and is read; a reset happens only when this
        // producer's process is gone (see `Ring::reset`).
        if self.corrupt || self.ring.header().meta.0.ctrl.load(Ordering::Relaxed) != self.ctrl {
            return Err(SendError::Closed);
        }
        let cap = self.ring.opts.capacity;
        let frame = frame_len(len);
        let off = self.tail as usize & (cap - 1);
        let (at, pad) = if off + frame > cap { (0, cap - off) } else { (off, 0) };
        // The frame, any padding before it, and the next frame's header word
        // (zeroed at commit) must all be free. `head_cache <= tail` holds
        // (checked on every load), so this cannot underflow.
        let need = (pad + frame + HEADER) as u64;
        if self.tail + need - self.head_cache > cap as u64 {
            self.load_head()?;
            if self.tail + need - self.head_cache > cap as u64 {
                return Err(SendError::Full);
            }
        }
        Ok(Reservation { at, pad })
    }

    /// Commits the frame written at `r`.
    #[inline]
    fn commit(&mut self, r: Reservation, len: usize) {
        let cap = self.ring.opts.capacity;
        let next = self.tail + (r.pad + frame_len(len)) as u64;
        let buf = &self.ring.buf;
        // Keep the invariant (the word at the tail is 0) for the next frame.
        // `Relaxed`: the commit below is `Release`, so a consumer that
        // acquires the commit sees this zero when it gets there, never the
        // header an earlier lap left.
        buf.header(next as usize & (cap - 1)).store(0, Ordering::Relaxed);
        let word = MSG | len as u32;
        if r.pad == 0 {
            // The commit. Pairs with the consumer's `Acquire` load of this
            // word (in `Consumer::take`): the payload written before
            // is visible to it once it sees the word.
            buf.header(r.at).store(word, Ordering::Release);
        } else {
            // Wrapping: the frame at offset 0 first, then the padding marker
            // at the old tail, which is the commit of both. `Relaxed` here,
            // since the consumer reads offset 0 only after acquiring the
            // marker, whose `Release` orders this store before it.
            buf.header(r.at).store(word, Ordering::Relaxed);
            let off = self.tail as usize & (cap - 1);
            // The commit: pairs with the consumer's `Acquire` load of the
            // marker, as above.
            buf.header(off).store(PAD | r.pad as u32, Ordering::Release);
        }
        self.tail = next;
        // For observers only (`Ring::pending_bytes`); the consumer follows
        // the headers. `Release` so an observer reading `tail` may then read
        // the frames before it.
        self.ring.header().tail.0.store(next, Ordering::Release);
        self.unsignalled = true;
    }

    /// Whether the consumer must be woken: true at most once per sleep of
    /// the consumer, and only if a message was committed since the last
    /// call. The caller then writes the eventfd
    /// ([`Producer::wake_if_waiting`] does both).
    #[inline]
    pub fn should_wake(&mut self) -> bool {
        if !std::mem::take(&mut self.unsignalled) {
            return false;
        }
        // Pairs with the `SeqCst` fence in `Consumer::prepare_sleep`. This
        // is the store-buffering pattern: here "commit a header, then read
        // `waiting`", there "store an odd `waiting`, then read the header".
        // With a `SeqCst` fence between the store and the load on both
        // sides, at least one side sees the other's store: either the
        // consumer finds the message and does not sleep, or the load below
        // finds the consumer's odd number and it gets its wake-up. Without
        // the fences both loads could read the old values (each store still
        // in its core's store buffer), the consumer would sleep on a message,
        // and nobody would wake it.
        fence(Ordering::SeqCst);
        // `Relaxed`: the fence orders it. While the consumer is awake this
        // reads a line nobody writes, so it costs a cache hit.
        let seq = self.ring.header().waiting.0.load(Ordering::Relaxed);
        // An odd number is a sleep; one we woke already needs no second
        // eventfd write (later sends before the consumer runs again skip the
        // syscall). A newer sleep has a new number.
        if seq & 1 == 1 && seq != self.woken {
            self.woken = seq;
            return true;
        }
        false
    }

    /// Writes the consumer's eventfd if it sleeps (or is about to) and a
    /// message was committed since the last call. Returns whether it wrote.
    /// No system call while the consumer is awake.
    #[inline]
    pub fn wake_if_waiting(&mut self) -> bool {
        if !self.should_wake() {
            return false;
        }
        if let Some(n) = &self.wake_fd {
            n.wake();
        }
        self.wakes += 1;
        true
    }

    /// Eventfd writes this producer made.
    pub fn wakes(&self) -> u64 {
        self.wakes
    }

    /// Bytes this producer may still write before it sees the ring full,
    /// by its cached view of the consumer's `head` (refreshed first); 0 once
    /// the ring is corrupt.
    pub fn free_bytes(&mut self) -> usize {
        if self.load_head().is_err() {
            return 0;
        }
        self.ring.opts.capacity - (self.tail - self.head_cache) as usize
    }

    /// Refreshes `head_cache` from the consumer's `head`, which the consumer
    /// (possibly another, untrusted process) writes: a value past the tail
    /// or more than a ring behind it marks the ring corrupt.
    fn load_head(&mut self) -> Result<(), SendError> {
        // Pairs with the consumer's `Release` store of `head` (in
        // `Consumer::publish`): every read it made of the frames before
        // `head` happened before this load returns, so they may be
        // overwritten.
        let head = self.ring.header().head.0.load(Ordering::Acquire);
        match self.tail.checked_sub(head) {
            Some(used) if used <= self.ring.opts.capacity as u64 && head >= self.head_cache => {
                self.head_cache = head;
                Ok(())
            }
            _ => {
                self.corrupt = true;
                Err(SendError::Closed)
            }
        }
    }

    /// Whether the consumer corrupted the ring's indices (see
    /// [`Producer::free_bytes`]); every send then answers `Closed`.
    pub fn is_corrupt(&self) -> bool {
        self.corrupt
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("tail", &self.tail)
            .field("head_cache", &self.head_cache)
            .field("wakes", &self.wakes)
            .field("ring", &self.ring)
            .finish()
    }
}
