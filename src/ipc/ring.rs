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

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::notify::Notifier;
use super::shm::{round_up, Region, Shm};
use super::sync::{fence, AtomicU32, AtomicU64, Ordering};
use crate::config::RingOptions;

/// Bytes before a frame's payload.
const HEADER: usize = crate::config::FRAME_HEADER;
const _: () = assert!(crate::config::MAX_RING_CAPACITY <= LEN_MASK as usize + 1);
/// Header bit: a committed message; the low bits are its length.
const MSG: u32 = 1 << 31;
/// Header bit: padding to the end of the data; the low bits are its length.
const PAD: u32 = 1 << 30;
/// The length bits of a header word.
const LEN_MASK: u32 = PAD - 1;
/// "FRKRING1": marks an initialised ring header.
const MAGIC: u64 = u64::from_le_bytes(*b"FRKRING1");
/// `claims` bit: a [`Producer`] exists for this generation.
const PRODUCER: u32 = 1;
/// `claims` bit: a [`Consumer`] exists for this generation.
const CONSUMER: u32 = 2;
/// `ctrl` bit: the ring refuses new messages.
const CLOSED: u64 = 1;

/// Bytes a frame of `len` payload bytes occupies.
const fn frame_len(len: usize) -> usize {
    HEADER + round_up(len, 8)
}

impl RingOptions {
    /// Bytes of shared memory a ring with these options occupies (header and
    /// data), to reserve with [`super::Layout::push`] at 128-byte alignment.
    pub fn region_len(&self) -> usize {
        std::mem::size_of::<RingHeader>() + self.capacity
    }
}

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
    /// producer was made.
    Closed,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full => "ring full",
            SendError::TooLarge => "message larger than the ring allows",
            SendError::Closed => "ring closed",
        })
    }
}

impl std::error::Error for SendError {}

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

/// One 128-byte line: two adjacent 64-byte lines, since the adjacent-line
/// prefetcher of x86 parts pulls lines in pairs.
#[repr(C, align(128))]
struct Line<T>(T);

/// The shared header of a ring, at the start of its region.
#[repr(C)]
struct RingHeader {
    /// Producer's line: free-running position after the last committed
    /// frame. Written only by the producer.
    tail: Line<AtomicU64>,
    /// Consumer's line: free-running position of the first frame not yet
    /// released. Written only by the consumer (and by `reset`).
    head: Line<AtomicU64>,
    /// The consumer's sleep count: odd while it is (about to be) asleep on
    /// its eventfd, a new odd number for every sleep. Written only by the
    /// consumer (and by `reset`).
    waiting: Line<AtomicU64>,
    /// Read-mostly line.
    meta: Line<Meta>,
}

/// Geometry and state that change only on init, close and reset.
#[repr(C)]
struct Meta {
    /// [`MAGIC`] once initialised.
    magic: AtomicU64,
    /// Data bytes (a power of two).
    capacity: AtomicU64,
    /// Largest message accepted.
    max_message: AtomicU64,
    /// `generation << 1 | CLOSED`.
    ctrl: AtomicU64,
    /// [`PRODUCER`] | [`CONSUMER`] bits claimed in this generation.
    claims: AtomicU32,
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
        let h = self.header();
        let tail = h.tail.0.load(Ordering::Acquire);
        Ok(Producer {
            ring: self.clone(),
            tail,
            head_cache: h.head.0.load(Ordering::Acquire),
            ctrl: h.meta.0.ctrl.load(Ordering::Acquire),
            unsignalled: false,
            woken: 0,
            wakes: 0,
            notifier: None,
            corrupt: false,
        })
    }

    /// The ring's consumer for this generation; one per generation in all
    /// processes together.
    pub fn consumer(&self) -> Result<Consumer, ClaimError> {
        self.claim(CONSUMER)?;
        let h = self.header();
        let head = h.head.0.load(Ordering::Acquire);
        // Start awake (even), whatever an earlier consumer left.
        let mut sleep_seq = h.waiting.0.load(Ordering::Relaxed);
        if sleep_seq & 1 == 1 {
            sleep_seq += 1;
            h.waiting.0.store(sleep_seq, Ordering::Relaxed);
        }
        Ok(Consumer {
            ring: self.clone(),
            head,
            published: head,
            sleep_seq,
            generation: h.meta.0.ctrl.load(Ordering::Acquire) >> 1,
            poisoned: None,
            notifier: None,
        })
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
    /// Eventfd writes made by [`Producer::notify_if_waiting`].
    wakes: u64,
    /// The consumer's eventfd, written when it sleeps.
    notifier: Option<Arc<Notifier>>,
    /// The consumer published a `head` no honest consumer could (past the
    /// tail, or more than a ring behind it): the producer sends nothing
    /// more.
    corrupt: bool,
}

impl Producer {
    /// Attaches the eventfd the consumer sleeps on.
    pub fn with_notifier(mut self, notifier: Arc<Notifier>) -> Producer {
        self.notifier = Some(notifier);
        self
    }

    /// The eventfd attached, if any.
    pub fn notifier(&self) -> Option<&Arc<Notifier>> {
        self.notifier.as_ref()
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
    /// consumer: call [`Producer::notify_if_waiting`] after a batch, or use
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

    /// [`Producer::try_send`], then [`Producer::notify_if_waiting`].
    pub fn send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        self.try_send(msg)?;
        self.notify_if_waiting();
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
            // word (in `Consumer::recv_up_to`): the payload written before
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
    /// ([`Producer::notify_if_waiting`] does both).
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
    pub fn notify_if_waiting(&mut self) -> bool {
        if !self.should_wake() {
            return false;
        }
        if let Some(n) = &self.notifier {
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
    notifier: Option<Arc<Notifier>>,
}

impl Consumer {
    /// Attaches the eventfd this consumer sleeps on.
    pub fn with_notifier(mut self, notifier: Arc<Notifier>) -> Consumer {
        self.notifier = Some(notifier);
        self
    }

    /// The eventfd attached, if any: register it with epoll or keep a read
    /// in flight on it in io_uring.
    pub fn notifier(&self) -> Option<&Arc<Notifier>> {
        self.notifier.as_ref()
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
            // `Producer::reserve`): the reads of the released frames happen
            // before the producer overwrites them.
            self.ring.header().head.0.store(self.head, Ordering::Release);
            self.published = self.head;
        }
    }

    /// Whether no committed message waits (a cheap check of one word).
    pub fn is_empty(&self) -> bool {
        let off = self.head as usize & (self.ring.opts.capacity - 1);
        // Pairs with the producer's commit, as in `recv_up_to`.
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
    /// polls [`Notifier::fd`] between [`Consumer::prepare_sleep`] and
    /// [`Consumer::after_wake`].
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        let notifier = self
            .notifier
            .clone()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "consumer has no notifier"))?;
        if !self.prepare_sleep() {
            return Ok(true);
        }
        let woke = notifier.wait(timeout);
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

/// The data area in shared memory.
#[cfg(not(all(loom, test)))]
#[derive(Clone, Copy)]
struct Buf {
    /// First data byte (128-byte aligned).
    ptr: std::ptr::NonNull<u8>,
    /// Data bytes, a power of two.
    cap: usize,
}

#[cfg(not(all(loom, test)))]
impl Buf {
    fn new(ptr: std::ptr::NonNull<u8>, cap: usize) -> Buf {
        Buf { ptr, cap }
    }

    /// The header word at offset `off` (a multiple of 8 below the capacity).
    #[inline]
    fn header(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off % 8 == 0 && off < self.cap);
        // SAFETY: `off` is in the data area and 8-aligned (so 4-aligned for
        // an `AtomicU32`, which has `u32`'s layout); the bytes are always
        // initialised. Frame boundaries move between laps, so these bytes
        // are payload at other times: the ring protocol orders every such
        // plain access before or after the atomic ones (through `head` and
        // the commits), so they never race.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU32>() }
    }

    /// Copies `src` to offset `off`.
    ///
    /// # Safety
    ///
    /// `[off, off + src.len())` lies in the data area and belongs to the
    /// caller (reserved free space).
    #[inline]
    unsafe fn write(&self, off: usize, src: &[u8]) {
        debug_assert!(off + src.len() <= self.cap);
        // SAFETY: the caller's contract; `src` is a private buffer, so the
        // ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(off), src.len()) };
    }

    /// Lends `[off, off + len)` to `fill` for writing.
    ///
    /// # Safety
    ///
    /// As for [`Buf::write`].
    #[inline]
    unsafe fn fill<R>(&self, off: usize, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        debug_assert!(off + len <= self.cap);
        // SAFETY: the caller's contract makes the range exclusively ours;
        // shared memory is zero-filled when mapped and only ever holds bytes
        // since, so it is initialised.
        fill(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(off), len) })
    }

    /// Lends `[off, off + len)` to `f` for reading.
    ///
    /// # Safety
    ///
    /// The range lies in the data area and holds a committed message the
    /// producer will not touch before the caller releases it.
    #[inline]
    unsafe fn read<R>(&self, off: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        debug_assert!(off + len <= self.cap);
        // SAFETY: the caller's contract; the bytes are initialised.
        f(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(off), len) })
    }

    /// Copies `[off, off + len)` into a new `Vec` without making a
    /// reference to the shared bytes (a hostile producer may be writing
    /// them: the copy is then garbage, never undefined behaviour here).
    ///
    /// # Safety
    ///
    /// The range lies in the data area.
    #[inline]
    unsafe fn copy_out(&self, off: usize, len: usize) -> Vec<u8> {
        debug_assert!(off + len <= self.cap);
        let mut v = Vec::with_capacity(len);
        // SAFETY: the source range is in the mapping (the caller's
        // contract) and the destination has room for `len` bytes; a byte
        // copy through raw pointers borrows nothing.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), v.as_mut_ptr(), len);
            v.set_len(len);
        }
        v
    }

    /// Appends `[off, off + len)` to `out`, as [`Buf::copy_out`] copies.
    ///
    /// # Safety
    ///
    /// The range lies in the data area.
    #[inline]
    unsafe fn append_to(&self, off: usize, len: usize, out: &mut Vec<u8>) {
        debug_assert!(off + len <= self.cap);
        out.reserve(len);
        let at = out.len();
        // SAFETY: as in `copy_out`; `reserve` made room for `len` more
        // bytes after the `at` initialised ones.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), out.as_mut_ptr().add(at), len);
            out.set_len(at + len);
        }
    }
}

/// The data area, modelled for `loom`: each 8-byte slot has its header word
/// (an atomic) and its payload bytes (a cell whose accesses `loom` checks for
/// races). In real memory the two overlap; the model keeps them apart, so a
/// header store racing a payload read would show up only through the
/// contents checks of the tests, not as a cell race.
#[cfg(all(loom, test))]
#[derive(Clone)]
struct Buf {
    /// The slots.
    slots: Arc<[Slot]>,
}

#[cfg(all(loom, test))]
struct Slot {
    /// The slot's first four bytes, when they are a frame header.
    word: AtomicU32,
    /// The slot's bytes, when they are payload.
    bytes: loom::cell::UnsafeCell<[u8; 8]>,
}

#[cfg(all(loom, test))]
impl Buf {
    fn new(_ptr: std::ptr::NonNull<u8>, cap: usize) -> Buf {
        let slots = (0..cap / 8)
            .map(|_| Slot { word: AtomicU32::new(0), bytes: loom::cell::UnsafeCell::new([0; 8]) })
            .collect();
        Buf { slots }
    }

    fn header(&self, off: usize) -> &AtomicU32 {
        &self.slots[off / 8].word
    }

    unsafe fn write(&self, off: usize, src: &[u8]) {
        for (i, chunk) in src.chunks(8).enumerate() {
            // SAFETY: loom checks the claim that the slot is ours.
            self.slots[off / 8 + i].bytes.with_mut(|p| unsafe { (&mut *p)[..chunk.len()].copy_from_slice(chunk) });
        }
    }

    unsafe fn fill<R>(&self, off: usize, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut tmp = vec![0u8; len];
        let r = fill(&mut tmp);
        // SAFETY: the caller's contract, as for `write`.
        unsafe { self.write(off, &tmp) };
        r
    }

    unsafe fn read<R>(&self, off: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let mut tmp = vec![0u8; len];
        for (i, chunk) in tmp.chunks_mut(8).enumerate() {
            // SAFETY: loom checks the claim that the producer does not write
            // the slot concurrently.
            self.slots[off / 8 + i].bytes.with(|p| unsafe { chunk.copy_from_slice(&(&*p)[..chunk.len()]) });
        }
        f(&tmp)
    }

    unsafe fn copy_out(&self, off: usize, len: usize) -> Vec<u8> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.read(off, len, |m| m.to_vec()) }
    }

    unsafe fn append_to(&self, off: usize, len: usize, out: &mut Vec<u8>) {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.read(off, len, |m| out.extend_from_slice(m)) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn ring(cap: usize, max: usize) -> (Producer, Consumer) {
        let r = Ring::new(RingOptions { capacity: cap, max_message: max }).unwrap();
        (r.producer().unwrap(), r.consumer().unwrap())
    }

    /// xorshift64: a seeded stream of pseudo-random numbers.
    fn rng(mut s: u64) -> impl FnMut() -> u64 {
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    fn payload(seq: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seq as usize * 31 + i * 7) as u8).collect()
    }

    #[test]
    fn impossible_head_from_a_hostile_consumer_marks_the_ring_corrupt() {
        // A consumer in another process writes `head`: one past the tail,
        // or more than a ring behind it, is corruption, never arithmetic
        // that overflows.
        for head in [u64::MAX, 1 << 40, 4096] {
            let (mut p, _c) = ring(256, 64);
            // Fill until the producer must look at `head`.
            while p.try_send(&[1; 40]).is_ok() {}
            p.ring.header().head.0.store(head, Ordering::Release);
            assert_eq!(p.try_send(&[2; 40]), Err(SendError::Closed), "head {head}");
            assert!(p.is_corrupt());
            assert_eq!(p.free_bytes(), 0);
            assert_eq!(p.try_send(b"x"), Err(SendError::Closed));
        }
    }

    #[test]
    fn a_reset_or_garbage_under_the_consumer_breaks_it_for_good() {
        let (mut p, mut c) = ring(256, 64);
        p.try_send(b"one").unwrap();
        assert!(!c.is_broken());
        // A hostile producer bumps the generation.
        let ctrl = &c.ring.header().meta.0.ctrl;
        ctrl.store(ctrl.load(Ordering::Relaxed) + 2, Ordering::Relaxed);
        assert!(c.is_broken());
        assert_eq!(c.recv_owned(10, |_| panic!("read from a reset ring")), Err(RecvError::Reset));
        let (_p, mut c) = ring(256, 64);
        c.ring.buf.header(0).store(MSG | 10_000, Ordering::Release);
        assert!(matches!(c.recv_owned(10, |_| panic!("delivered a corrupt frame")), Err(RecvError::Corrupt { .. })));
        assert!(c.is_broken());
    }

    #[test]
    fn owned_messages_are_copies() {
        let (mut p, mut c) = ring(256, 64);
        p.try_send(b"hello").unwrap();
        p.try_send(b"world").unwrap();
        let mut got = Vec::new();
        assert_eq!(c.recv_owned(1, |m| got.push(m)).unwrap(), 1);
        assert_eq!(c.recv_owned(10, |m| got.push(m)).unwrap(), 1);
        assert_eq!(got, [b"hello".to_vec(), b"world".to_vec()]);
    }

    #[test]
    fn a_batch_is_copied_into_one_buffer_with_its_ends() {
        let (mut p, mut c) = ring(256, 64);
        for m in [&b"one"[..], b"", b"three"] {
            p.try_send(m).unwrap();
        }
        let (mut out, mut ends) = (b"old".to_vec(), Vec::new());
        out.clear();
        assert_eq!(c.recv_into(2, &mut out, &mut ends).unwrap(), 2);
        assert_eq!(c.recv_into(10, &mut out, &mut ends).unwrap(), 1);
        assert_eq!(out, b"onethree");
        assert_eq!(ends, [3, 3, 8]);
        assert_eq!(c.recv_into(10, &mut out, &mut ends).unwrap(), 0);
    }

    #[test]
    fn options_are_checked() {
        assert!(RingOptions::default().validate().is_ok());
        assert!(RingOptions { capacity: 1000, max_message: 10 }.validate().is_err());
        assert!(RingOptions { capacity: 32, max_message: 0 }.validate().is_err());
        assert!(RingOptions { capacity: 1024, max_message: 512 }.validate().is_err());
        assert!(RingOptions { capacity: 1024, max_message: 496 }.validate().is_ok());
        assert_eq!(RingOptions::with_capacity(1000).capacity, 1024);
    }

    #[test]
    fn endpoints_are_claimed_once_per_generation() {
        let r = Ring::new(RingOptions::with_capacity(4096)).unwrap();
        let _p = r.producer().unwrap();
        let _c = r.consumer().unwrap();
        assert_eq!(r.producer().unwrap_err(), ClaimError);
        assert_eq!(r.consumer().unwrap_err(), ClaimError);
        // SAFETY: the endpoints are this test's own and idle.
        unsafe { r.reset() };
        assert!(r.producer().is_ok() && r.consumer().is_ok());
    }

    /// Random sends and receives against an oracle that tracks positions
    /// the simple way (a queue of frames with the padding before each):
    /// order, contents, and `Full` exactly when the frame does not fit.
    #[test]
    fn oracle_random_ops() {
        for seed in 1..40u64 {
            let cap = 256 << (seed % 4);
            let max = RingOptions::largest_message(cap);
            let (mut p, mut c) = ring(cap, max);
            let mut next = rng(seed * 0x9e37_79b9);
            // (message, padding before it)
            let mut oracle: VecDeque<(Vec<u8>, usize)> = VecDeque::new();
            let (mut tail, mut head) = (0usize, 0usize);
            let mut seq = 0u64;
            for _ in 0..5000 {
                if next() % 3 != 0 {
                    let len = (next() % (max as u64 + 1)) as usize;
                    let msg = payload(seq, len);
                    let off = tail % cap;
                    let pad = if off + frame_len(len) > cap { cap - off } else { 0 };
                    let fits = tail + pad + frame_len(len) + HEADER - head <= cap;
                    match p.try_send(&msg) {
                        Ok(()) => {
                            assert!(fits, "seed {seed}: overfilled");
                            tail += pad + frame_len(len);
                            oracle.push_back((msg, pad));
                            seq += 1;
                        }
                        Err(SendError::Full) => assert!(!fits, "seed {seed}: spurious Full"),
                        Err(e) => panic!("seed {seed}: {e}"),
                    }
                } else {
                    let want = (next() % 4) as usize;
                    let got = c
                        .recv_up_to(want, |m| {
                            let (msg, pad) = oracle.pop_front().unwrap();
                            assert_eq!(m, msg.as_slice());
                            head += pad + frame_len(msg.len());
                        })
                        .unwrap();
                    assert!(got <= want);
                    if got < want {
                        assert!(oracle.is_empty(), "seed {seed}: message missing");
                    }
                }
            }
            c.recv_batch(|m| assert_eq!(m, oracle.pop_front().unwrap().0.as_slice())).unwrap();
            assert!(oracle.is_empty());
            assert!(c.is_empty());
        }
    }

    #[test]
    fn full_then_drain_and_limits() {
        let (mut p, mut c) = ring(1024, 496);
        let msg = [7u8; 100];
        let mut sent = 0;
        while p.try_send(&msg).is_ok() {
            sent += 1;
        }
        assert_eq!(sent, (1024 - 8) / frame_len(100));
        assert_eq!(p.try_send(&msg), Err(SendError::Full));
        assert_eq!(p.try_send(&[0; 497]), Err(SendError::TooLarge));
        let mut buf = Vec::new();
        assert!(c.try_recv(&mut buf).unwrap());
        assert_eq!(buf, msg);
        // The tail is 16 bytes from the end: the next frame needs those as
        // padding, itself, and the next header: one released frame is not
        // enough, two are.
        assert_eq!(p.try_send(&msg), Err(SendError::Full));
        assert!(c.try_recv(&mut buf).unwrap());
        p.try_send(&msg).unwrap();
        assert_eq!(c.recv_batch(|m| assert_eq!(m, msg)).unwrap(), sent - 1);
        assert!(!c.try_recv(&mut buf).unwrap());
        // An empty ring takes the largest message wherever its tail is.
        for _ in 0..20 {
            p.try_send(&[1; 496]).unwrap();
            p.try_send(&[2; 3]).unwrap();
            assert_eq!(c.recv_batch(|_| ()).unwrap(), 2);
        }
    }

    #[test]
    fn in_place_and_empty_messages() {
        let (mut p, mut c) = ring(4096, 1000);
        p.try_send_with(5, |b| b.copy_from_slice(b"hello")).unwrap();
        p.try_send(b"").unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.try_send_with(3, |_| panic!("boom")).unwrap();
        }));
        assert!(r.is_err());
        let mut got = Vec::new();
        c.recv_batch(|m| got.push(m.to_vec())).unwrap();
        assert_eq!(got, vec![b"hello".to_vec(), vec![]]);
    }

    #[test]
    fn close_and_reset() {
        let r = Ring::new(RingOptions::with_capacity(4096)).unwrap();
        let (mut p, mut c) = (r.producer().unwrap(), r.consumer().unwrap());
        p.try_send(b"a").unwrap();
        r.close();
        assert_eq!(p.try_send(b"b"), Err(SendError::Closed));
        assert_eq!(c.recv_batch(|m| assert_eq!(m, b"a")).unwrap(), 1);
        p.try_send(b"lost on reset").ok();
        // SAFETY: the endpoints are this test's own and idle.
        unsafe { r.reset() };
        assert_eq!(r.generation(), 1);
        assert_eq!(p.try_send(b"c"), Err(SendError::Closed));
        assert_eq!(c.recv_batch(|_| ()), Err(RecvError::Reset));
        let (mut p, mut c) = (r.producer().unwrap(), r.consumer().unwrap());
        p.try_send(b"d").unwrap();
        assert_eq!(c.recv_batch(|m| assert_eq!(m, b"d")).unwrap(), 1);
    }

    #[test]
    fn corrupt_frames_poison_the_consumer() {
        let r = Ring::new(RingOptions::with_capacity(4096)).unwrap();
        let mut c = r.consumer().unwrap();
        r.buf.header(0).store(MSG | 5000, Ordering::Release);
        let e = c.recv_batch(|_| panic!("delivered a corrupt frame")).unwrap_err();
        assert_eq!(e, RecvError::Corrupt { position: 0, header: MSG | 5000 });
        assert_eq!(c.recv_batch(|_| ()), Err(e));
        r.buf.header(0).store(PAD | 8, Ordering::Release);
        let mut c2 = {
            // SAFETY: the endpoints are this test's own and idle.
            unsafe { r.reset() };
            r.buf.header(0).store(PAD | 8, Ordering::Release);
            r.consumer().unwrap()
        };
        assert!(matches!(c2.recv_batch(|_| ()), Err(RecvError::Corrupt { .. })));
    }

    #[test]
    fn wake_protocol_single_thread() {
        let (mut p, mut c) = ring(4096, 100);
        assert!(!p.should_wake(), "nothing sent");
        assert!(c.prepare_sleep(), "empty ring");
        p.try_send(b"x").unwrap();
        assert!(p.should_wake());
        p.try_send(b"y").unwrap();
        assert!(!p.should_wake(), "one wake-up per sleep");
        c.after_wake();
        assert!(!c.prepare_sleep(), "messages are waiting");
        p.try_send(b"z").unwrap();
        assert!(!p.should_wake(), "consumer is awake");
        assert_eq!(c.recv_batch(|_| ()).unwrap(), 3);
        // Every sleep gets its own wake-up, even without `after_wake`.
        assert!(c.prepare_sleep());
        assert!(c.prepare_sleep());
        p.try_send(b"w").unwrap();
        assert!(p.should_wake());
        assert!(!c.prepare_sleep());
        p.try_send(b"v").unwrap();
        assert!(!p.should_wake(), "consumer is awake");
    }
}

/// Model checks of the ring's protocols under every interleaving `loom`
/// explores (`RUSTFLAGS="--cfg loom" cargo test --release --lib ipc::`).
#[cfg(all(loom, test))]
mod loom_tests {
    use super::*;
    use loom::sync::{Condvar, Mutex};
    use loom::thread;

    /// A ring whose header sits in a mapping made once per test process (a
    /// model iteration makes fresh `loom` atomics in it; the data area is
    /// modelled on the heap anyway), so iterations cost no system call.
    fn pair(cap: usize, max: usize) -> (Producer, Consumer) {
        static SHM: std::sync::OnceLock<Arc<Shm>> = std::sync::OnceLock::new();
        let shm = SHM.get_or_init(|| Arc::new(Shm::anonymous(4096).unwrap())).clone();
        let opts = RingOptions { capacity: cap, max_message: max };
        // SAFETY: under loom each model run makes its rings afresh; the
        // previous run's endpoints are gone.
        let r = unsafe { Ring::init(shm, Region { offset: 0, len: opts.region_len() }, opts) }.unwrap();
        (r.producer().unwrap(), r.consumer().unwrap())
    }

    fn msg(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 16 + j) as u8).collect()
    }

    /// Index and commit protocol: in a 64-byte ring, three 24-byte frames
    /// (16-byte messages, the most it takes) make the producer see `Full`,
    /// then write a padding marker and wrap to offset 0. The consumer gets
    /// each message whole and in order, and `loom` finds no racing access to
    /// any slot.
    #[test]
    fn index_protocol() {
        loom::model(|| {
            let (mut p, mut c) = pair(64, 16);
            let t = thread::spawn(move || {
                for i in 0..3 {
                    let m = msg(i, 16);
                    loop {
                        match p.try_send(&m) {
                            Ok(()) => break,
                            Err(SendError::Full) => thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            });
            let mut i = 0;
            while i < 3 {
                let n = c
                    .recv_batch(|m| {
                        assert_eq!(m, msg(i, 16).as_slice());
                        i += 1;
                    })
                    .unwrap();
                if n == 0 {
                    thread::yield_now();
                }
            }
            t.join().unwrap();
            assert!(c.is_empty());
        });
    }

    /// Mixed sizes, including an empty message, with a wrap that pads only
    /// 8 bytes.
    #[test]
    fn index_protocol_mixed_sizes() {
        let sizes = [0usize, 8, 16, 3];
        loom::model(move || {
            let (mut p, mut c) = pair(64, 16);
            let t = thread::spawn(move || {
                for (i, &len) in sizes.iter().enumerate() {
                    while p.try_send(&msg(i, len)) == Err(SendError::Full) {
                        thread::yield_now();
                    }
                }
            });
            let mut i = 0;
            while i < sizes.len() {
                let n = c
                    .recv_batch(|m| {
                        assert_eq!(m, msg(i, sizes[i]).as_slice());
                        i += 1;
                    })
                    .unwrap();
                if n == 0 {
                    thread::yield_now();
                }
            }
            t.join().unwrap();
        });
    }

    /// A model eventfd: a counter under a lock.
    struct EventFd {
        count: Mutex<u64>,
        cv: Condvar,
    }

    impl EventFd {
        fn write(&self) {
            *self.count.lock().unwrap() += 1;
            self.cv.notify_one();
        }

        fn read_blocking(&self) {
            let mut n = self.count.lock().unwrap();
            while *n == 0 {
                n = self.cv.wait(n).unwrap();
            }
            *n = 0;
        }
    }

    /// Wake-up protocol: the consumer sleeps whenever it finds the ring
    /// empty; the producer writes the eventfd only if `should_wake`. A lost
    /// wake-up leaves the consumer blocked forever, which `loom` reports as a
    /// deadlock.
    #[test]
    fn no_lost_wakeup() {
        loom::model(|| {
            let (mut p, mut c) = pair(64, 8);
            let efd = std::sync::Arc::new(EventFd { count: Mutex::new(0), cv: Condvar::new() });
            let efd2 = efd.clone();
            let t = thread::spawn(move || {
                for i in 0..2u8 {
                    p.try_send(&[i]).unwrap();
                    if p.should_wake() {
                        efd2.write();
                    }
                }
            });
            let mut got = Vec::new();
            while got.len() < 2 {
                c.recv_batch(|m| got.push(m[0])).unwrap();
                if got.len() < 2 && c.prepare_sleep() {
                    efd.read_blocking();
                    c.after_wake();
                }
            }
            assert_eq!(got, [0, 1]);
            t.join().unwrap();
        });
    }

    /// The producer's `Full` answer is honest: once the consumer has
    /// released space, a retry succeeds (no message lost, none doubled).
    #[test]
    fn full_then_release() {
        loom::model(|| {
            let (mut p, mut c) = pair(64, 16);
            // Two 24-byte frames leave 16 bytes: a third does not fit.
            p.try_send(&[1; 16]).unwrap();
            p.try_send(&[2; 16]).unwrap();
            assert_eq!(p.try_send(&[3; 16]), Err(SendError::Full));
            let t = thread::spawn(move || {
                let mut seen = Vec::new();
                while seen.len() < 3 {
                    if c.recv_batch(|m| seen.push(m[0])).unwrap() == 0 {
                        thread::yield_now();
                    }
                }
                assert_eq!(seen, [1, 2, 3]);
            });
            while p.try_send(&[3; 16]) == Err(SendError::Full) {
                thread::yield_now();
            }
            t.join().unwrap();
        });
    }
}
