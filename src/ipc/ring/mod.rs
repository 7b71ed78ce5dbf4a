//! A single-producer single-consumer ring of byte messages in shared memory.
//!
//! # Layout
//!
//! A ring region is a 512-byte [`RingHeader`] (four 128-byte lines: the
//! producer's `tail`, the consumer's `head`, the consumer's `waiting` word,
//! and read-mostly metadata) followed by `capacity` bytes of data, a power of
//! two. `head` and `tail` are free-running `u64` byte positions: the bytes in
//! use are `tail - head`, a position's offset in the data is `pos & (cap-1)`,
//! and neither ever wraps in practice (2⁶⁴ bytes).
//!
//! # Frames
//!
//! A message is one frame: an 8-byte header whose first four bytes are an
//! atomic `u32`, the payload, and padding to a multiple of 8. The header word
//! is `MSG | len` for a message, `PAD | skip` for the marker that sends the
//! consumer back to offset 0 (a frame never splits across the end), and `0`
//! for "nothing here yet". Messages are at most `capacity/2 - 16` bytes, so
//! an empty ring always has room for any message wherever its tail stands.
//!
//! # Commit protocol
//!
//! The header word is written last, with `Release`: it is the commit. The
//! consumer polls the header at its `head` (not the producer's `tail`), so a
//! busy-polling consumer touches only the cache line the next message lands
//! in, and a producer killed in the middle of a frame leaves that word `0`:
//! the consumer never sees a torn message.
//!
//! That needs one invariant: **the header word at the producer's tail is 0.**
//! A fresh or reset ring starts with a zero word at offset 0, and before the
//! producer commits a frame it zeroes the word where the next frame will
//! start (it reserves those 8 bytes with the frame, so they are free space).
//! The consumer reaches that position only after acquiring the commit, which
//! the zeroing precedes, so it never reads a stale header of an earlier lap.
//!
//! The producer caches `head` and loads it (`Acquire`) only when its cached
//! view says the frame does not fit; the consumer drains a batch and
//! publishes `head` once (`Release`), and at least every quarter ring in a
//! long batch. The producer also publishes `tail` (`Release`) after each
//! commit, for observers ([`Ring::pending_bytes`]); the consumer never needs
//! it, so that cache line stays with the producer.
//!
//! # Sleeping
//!
//! See [`Consumer::prepare_sleep`] and [`Producer::should_wake`]: before it
//! blocks on its eventfd the consumer stores a new odd number in `waiting`
//! (one per sleep; even means awake), and the producer writes the eventfd
//! only when it finds an odd number it has not woken yet. `waiting` has one
//! writer, the consumer: the producer only reads it, so a busy consumer's
//! line is never pulled away, and no read-modify-write is needed.
//!
//! # Where each part lives
//!
//! [`Ring`], here, formats, attaches, resets and closes a ring and hands
//! out its two ends; `format` holds the header's lines and the frame words;
//! `producer` and `consumer` the two ends, each atomic access commented
//! with the access it pairs with on the other side; `buf` the data area,
//! and the model of it that `loom` checks.

mod buf;
mod consumer;
mod format;
#[cfg(all(loom, test))]
mod loom_tests;
mod producer;
#[cfg(all(test, not(loom)))]
mod tests;

use std::fmt;
use std::io;
use std::sync::Arc;

use super::shm::{Region, Shm};
use super::sync::{AtomicU32, AtomicU64, Ordering};
use crate::config::RingOptions;
use buf::Buf;
use format::{Line, Meta, RingHeader, CLOSED, CONSUMER, MAGIC, PRODUCER};

pub use consumer::{Consumer, RecvError};
pub use producer::{Producer, SendError};

/// The endpoint asked for already exists in this generation of the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimError;

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ring endpoint already claimed in this generation")
    }
}

impl std::error::Error for ClaimError {}

impl From<ClaimError> for io::Error {
    fn from(e: ClaimError) -> io::Error {
        io::Error::new(io::ErrorKind::AlreadyExists, e)
    }
}

/// A ring in a region of a shared mapping.
///
/// The `Ring` itself is a handle for the one who owns the ring's lifecycle
/// (the master): reset, close, inspect. Messages go through the one
/// [`Producer`] and the one [`Consumer`] it hands out per generation.
#[derive(Clone)]
pub struct Ring {
    /// The mapping the ring lives in, kept mapped while any handle exists.
    shm: Arc<Shm>,
    /// The ring's header, inside `shm`.
    hdr: *const RingHeader,
    /// The ring's data area.
    buf: Buf,
    /// Geometry, as initialised.
    opts: RingOptions,
}

// SAFETY: every access `Ring` makes through its pointers is to atomics or to
// data bytes whose ownership the ring protocol hands between the one
// producer and the one consumer; the mapping outlives the handle (`Arc`).
unsafe impl Send for Ring {}
// SAFETY: `&Ring` methods touch only atomics.
unsafe impl Sync for Ring {}

impl Ring {
    /// A ring in a mapping of its own.
    pub fn new(opts: RingOptions) -> io::Result<Ring> {
        opts.validate()?;
        let shm = Arc::new(Shm::new(opts.region_len())?);
        let region = Region { offset: 0, len: opts.region_len() };
        // SAFETY: the mapping was made just above and nothing else has it.
        unsafe { Ring::init(shm, region, opts) }
    }

    /// Formats a ring in `region` of `shm` (128-byte aligned, at least
    /// [`RingOptions::region_len`] bytes). Whatever the region held before
    /// is forgotten.
    ///
    /// # Safety
    ///
    /// No thread or process may be using the region: no [`Ring`],
    /// [`Producer`] or [`Consumer`] on a ring there, and no other object
    /// placed in the same bytes. Formatting writes plain data over it.
    pub unsafe fn init(shm: Arc<Shm>, region: Region, opts: RingOptions) -> io::Result<Ring> {
        opts.validate()?;
        if region.len < opts.region_len() || region.offset % 128 != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "ring region too small or misaligned"));
        }
        let base = shm.region(region)?;
        let hdr = base.as_ptr().cast::<RingHeader>();
        let header = RingHeader {
            tail: Line(AtomicU64::new(0)),
            head: Line(AtomicU64::new(0)),
            waiting: Line(AtomicU64::new(0)),
            meta: Line(Meta {
                magic: AtomicU64::new(MAGIC),
                capacity: AtomicU64::new(opts.capacity as u64),
                max_message: AtomicU64::new(opts.max_message as u64),
                ctrl: AtomicU64::new(0),
                claims: AtomicU32::new(0),
            }),
        };
        // SAFETY: the region is in bounds (checked by `shm.region`), 128-byte
        // aligned (the mapping is page-aligned, the offset checked above),
        // large enough, and no one else uses it (the caller's promise).
        unsafe { hdr.write(header) };
        // SAFETY: the data area follows the header inside the region.
        let data = unsafe { base.add(std::mem::size_of::<RingHeader>()) };
        let ring = Ring { shm, hdr, buf: Buf::new(data, opts.capacity), opts };
        // The invariant: the header word at the tail (0) is 0.
        ring.buf.header(0).store(0, Ordering::Relaxed);
        Ok(ring)
    }

    /// Opens the ring that [`Ring::init`] formatted in `region` of `shm`,
    /// possibly in another process (a re-executed worker that mapped the
    /// memfd), reading its geometry from the header.
    pub fn attach(shm: Arc<Shm>, region: Region) -> io::Result<Ring> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("ring region: {what}"));
        if region.offset % 128 != 0 || region.len < std::mem::size_of::<RingHeader>() {
            return Err(bad("misaligned or too small"));
        }
        let base = shm.region(region)?;
        let hdr = base.as_ptr().cast::<RingHeader>();
        // SAFETY: in bounds, aligned, and formatted by `init` (checked by the
        // magic below before anything else is trusted).
        let meta = unsafe { &(*hdr).meta.0 };
        if meta.magic.load(Ordering::Acquire) != MAGIC {
            return Err(bad("not initialised"));
        }
        let opts = RingOptions {
            capacity: meta.capacity.load(Ordering::Relaxed) as usize,
            max_message: meta.max_message.load(Ordering::Relaxed) as usize,
        };
        opts.validate()?;
        if region.len < opts.region_len() {
            return Err(bad("smaller than its capacity"));
        }
        // SAFETY: the data area follows the header inside the region.
        let data = unsafe { base.add(std::mem::size_of::<RingHeader>()) };
        Ok(Ring { shm, hdr, buf: Buf::new(data, opts.capacity), opts })
    }

    fn header(&self) -> &RingHeader {
        // SAFETY: `hdr` points at an initialised header inside `self.shm`,
        // which this handle keeps mapped.
        unsafe { &*self.hdr }
    }

    /// The ring's geometry.
    pub fn options(&self) -> RingOptions {
        self.opts
    }

    /// The mapping the ring lives in.
    pub fn shm(&self) -> &Arc<Shm> {
        &self.shm
    }

    /// Resets the ring before a new producer or consumer process uses it
    /// (the master, before forking a replacement worker): empties it, clears
    /// `closed`, `waiting` and the claims, and bumps the generation. The
    /// old [`Producer`] and [`Consumer`] then fail with
    /// [`SendError::Closed`] / [`RecvError::Reset`].
    ///
    /// # Safety
    ///
    /// No thread or process may be inside a call on the old endpoints, or
    /// make one later (the old worker has been reaped, or the endpoints are
    /// this process's own and idle): a producer killed mid-frame is fine, a
    /// running one may write into the new generation's space while the new
    /// consumer reads it.
    pub unsafe fn reset(&self) {
        let h = self.header();
        // All plain stores: the caller guarantees no concurrent user, and the
        // processes that use the new generation are forked afterwards (fork
        // orders everything before it) or see the new `ctrl`, stored last
        // with `Release`, before they read anything else (`attach`).
        h.head.0.store(0, Ordering::Relaxed);
        h.tail.0.store(0, Ordering::Relaxed);
        h.waiting.0.store(0, Ordering::Relaxed);
        self.buf.header(0).store(0, Ordering::Relaxed);
        h.meta.0.claims.store(0, Ordering::Relaxed);
        let generation = (h.meta.0.ctrl.load(Ordering::Relaxed) >> 1) + 1;
        h.meta.0.ctrl.store(generation << 1, Ordering::Release);
    }

    /// Refuses further messages: the producer's next send returns
    /// [`SendError::Closed`]. Messages already committed stay readable.
    /// [`Ring::reset`] reopens.
    pub fn close(&self) {
        // `Release`, though nothing depends on it: a producer that reads the
        // flag late sends one more message, which the consumer still reads.
        self.header().meta.0.ctrl.fetch_or(CLOSED, Ordering::Release);
    }

    /// Whether [`Ring::close`] was called in this generation.
    pub fn is_closed(&self) -> bool {
        self.header().meta.0.ctrl.load(Ordering::Relaxed) & CLOSED != 0
    }

    /// Resets so far.
    pub fn generation(&self) -> u64 {
        self.header().meta.0.ctrl.load(Ordering::Relaxed) >> 1
    }

    /// Bytes committed and not yet released by the consumer, by the indices
    /// both sides last published (for monitoring; the consumer may be
    /// partway through a batch).
    pub fn pending_bytes(&self) -> u64 {
        let h = self.header();
        let head = h.head.0.load(Ordering::Acquire);
        h.tail.0.load(Ordering::Acquire).saturating_sub(head)
    }

    fn claim(&self, bit: u32) -> Result<(), ClaimError> {
        // `AcqRel` only to keep the claim ordered with the reset that cleared
        // it; the claim guards against misuse, not a data race.
        if self.header().meta.0.claims.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            return Err(ClaimError);
        }
        Ok(())
    }

    /// The ring's producer for this generation; one per generation in all
    /// processes together.
    pub fn producer(&self) -> Result<Producer, ClaimError> {
        self.claim(PRODUCER)?;
        Ok(Producer::new(self.clone()))
    }

    /// The ring's consumer for this generation; one per generation in all
    /// processes together.
    pub fn consumer(&self) -> Result<Consumer, ClaimError> {
        self.claim(CONSUMER)?;
        Ok(Consumer::new(self.clone()))
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.opts.capacity)
            .field("max_message", &self.opts.max_message)
            .field("generation", &self.generation())
            .field("closed", &self.is_closed())
            .field("pending_bytes", &self.pending_bytes())
            .finish()
    }
}
