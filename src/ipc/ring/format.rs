//! The ring's format in shared memory: the header's four 128-byte lines,
//! the words that mark frames, and the geometry a ring's options give it.
//! What the words mean to each side is written in the ring's module doc.

use std::io;

use crate::config::RingOptions;
use crate::ipc::shm::round_up;
use crate::ipc::sync::{AtomicU32, AtomicU64};

/// Bytes before a frame's payload: the header word and 4 bytes that keep
/// payloads 8-aligned.
pub(super) const HEADER: usize = 8;
/// Smallest ring capacity accepted.
const MIN_CAPACITY: usize = 64;
/// Largest ring capacity accepted: a padding length must fit in the frame
/// word's length bits.
const MAX_CAPACITY: usize = 1 << 30;
const _: () = assert!(MAX_CAPACITY <= LEN_MASK as usize + 1);
/// Header bit: a committed message; the low bits are its length.
pub(super) const MSG: u32 = 1 << 31;
/// Header bit: padding to the end of the data; the low bits are its length.
pub(super) const PAD: u32 = 1 << 30;
/// The length bits of a header word.
pub(super) const LEN_MASK: u32 = PAD - 1;
/// "FRKRING1": marks an initialised ring header.
pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"FRKRING1");
/// `claims` bit: a [`Producer`](super::Producer) exists for this generation.
pub(super) const PRODUCER: u32 = 1;
/// `claims` bit: a [`Consumer`](super::Consumer) exists for this generation.
pub(super) const CONSUMER: u32 = 2;
/// `ctrl` bit: the ring refuses new messages.
pub(super) const CLOSED: u64 = 1;

/// Bytes a frame of `len` payload bytes occupies.
pub(super) const fn frame_len(len: usize) -> usize {
    HEADER + round_up(len, 8)
}

impl RingOptions {
    /// Options with `capacity` bytes of message data and messages up to
    /// `max_message` bytes (checked when the ring is made).
    pub fn new(capacity: usize, max_message: usize) -> RingOptions {
        RingOptions { capacity, max_message }
    }

    /// Options with the given capacity (rounded up to a power of two) and
    /// the largest message it allows.
    pub fn with_capacity(capacity: usize) -> RingOptions {
        let capacity = capacity.max(MIN_CAPACITY).next_power_of_two();
        RingOptions { capacity, max_message: Self::largest_message(capacity) }
    }

    /// The largest `max_message` a ring of `capacity` bytes allows.
    pub const fn largest_message(capacity: usize) -> usize {
        capacity / 2 - 2 * HEADER
    }

    /// Checks the options.
    pub fn validate(&self) -> io::Result<()> {
        let bad = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if !self.capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&self.capacity) {
            return bad(format!("ring capacity {} is not a power of two in 64..=2^30", self.capacity));
        }
        if self.max_message > Self::largest_message(self.capacity) {
            return bad(format!(
                "ring max_message {} exceeds capacity/2 - 16 = {}",
                self.max_message,
                Self::largest_message(self.capacity)
            ));
        }
        Ok(())
    }

    /// Bytes of shared memory a ring with these options occupies (header and
    /// data), to reserve with [`crate::ipc::Layout::push`] at 128-byte
    /// alignment.
    pub(crate) fn region_len(&self) -> usize {
        std::mem::size_of::<RingHeader>() + self.capacity
    }
}

/// One 128-byte line: two adjacent 64-byte lines, since the adjacent-line
/// prefetcher of x86 parts pulls lines in pairs.
#[repr(C, align(128))]
pub(super) struct Line<T>(pub(super) T);

/// The shared header of a ring, at the start of its region.
#[repr(C)]
pub(super) struct RingHeader {
    /// Producer's line: free-running position after the last committed
    /// frame. Written only by the producer.
    pub(super) tail: Line<AtomicU64>,
    /// Consumer's line: free-running position of the first frame not yet
    /// released. Written only by the consumer (and by `reset`).
    pub(super) head: Line<AtomicU64>,
    /// The consumer's sleep count: odd while it is (about to be) asleep on
    /// its eventfd, a new odd number for every sleep. Written only by the
    /// consumer (and by `reset`).
    pub(super) waiting: Line<AtomicU64>,
    /// Read-mostly line.
    pub(super) meta: Line<Meta>,
}

/// Geometry and state that change only on init, close and reset.
#[repr(C)]
pub(super) struct Meta {
    /// [`MAGIC`] once initialised.
    pub(super) magic: AtomicU64,
    /// Data bytes (a power of two).
    pub(super) capacity: AtomicU64,
    /// Largest message accepted.
    pub(super) max_message: AtomicU64,
    /// `generation << 1 | CLOSED`.
    pub(super) ctrl: AtomicU64,
    /// [`PRODUCER`] | [`CONSUMER`] bits claimed in this generation.
    pub(super) claims: AtomicU32,
}
