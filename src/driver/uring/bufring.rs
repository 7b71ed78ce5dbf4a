//! The provided-buffer ring: receive buffers lent to the kernel, which
//! fills them with received bytes; the loop gives each back once the kernel
//! is done with it and its bytes are parsed. All of the driver's raw memory
//! handling is here.
//!
//! Two ways of lending, chosen at setup by what the kernel accepts:
//! - **incremental** (`IOU_PBUF_RING_INC`, Linux 6.12): the kernel fills
//!   the buffer at the ring's head a completion at a time, each taking only
//!   the bytes it received, and moves to the next buffer only when this one
//!   is full. A completion whose buffer the kernel keeps using carries
//!   `IORING_CQE_F_BUF_MORE`. A 200-byte request takes 200 bytes, so a few
//!   large buffers serve thousands of connections, and the memory touched
//!   follows the bytes received, not the number of receives.
//! - **whole** (older kernels): every completion takes a whole buffer.
//!
//! Either way the loop tracks, per buffer, how far the completions so far
//! have filled it, which is where the next completion's bytes start.

use std::io;
use std::mem;
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types;

/// One entry of a provided-buffer ring, laid out as the kernel's
/// `struct io_uring_buf`. The `resv` field of entry 0 is the ring's tail,
/// written by [`BufRing::publish`] only, so entries are written field by
/// field and never as a whole.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(mem::size_of::<RawBuf>() == mem::size_of::<types::BufRingEntry>());

/// Receive buffers lent to the kernel through a provided-buffer ring: the
/// kernel takes one per receive completion, the loop gives it back once the
/// bytes are parsed.
pub(super) struct BufRing {
    /// The ring of `count` entries (page-aligned, shared with the kernel).
    entries: *mut RawBuf,
    /// The ring's tail, inside entry 0.
    tail_ptr: *const AtomicU16,
    /// `count` buffers of `size` bytes, back to back.
    data: *mut u8,
    /// Number of buffers (and ring entries), a power of two.
    pub(super) count: u16,
    /// Bytes per buffer.
    pub(super) size: usize,
    /// Next tail to publish: entries before it are (or will be) the kernel's.
    tail: u16,
    /// Per buffer, the bytes completions have delivered into it since it
    /// was last put back: where the next completion's bytes start (always
    /// 0 when buffers are consumed whole).
    filled: Box<[u32]>,
    /// Whether the kernel consumes the buffers incrementally (set by the
    /// setup once the kernel has accepted the flag).
    pub(super) incremental: bool,
    /// Set when the kernel may still write into the buffers at drop: the
    /// memory is then left mapped.
    pub(super) leak: bool,
}

impl BufRing {
    pub(super) fn new(count: u16, size: usize) -> io::Result<BufRing> {
        debug_assert!(count.is_power_of_two() && count <= 32768);
        let entries = map_anon(count as usize * mem::size_of::<RawBuf>())?.cast::<RawBuf>();
        let data = match map_anon(count as usize * size) {
            Ok(d) => d,
            Err(e) => {
                // SAFETY: `entries` was mapped above with this length and is
                // not used again.
                unsafe { libc::munmap(entries.cast(), count as usize * mem::size_of::<RawBuf>()) };
                return Err(e);
            }
        };
        // SAFETY: `entries` points to a live, page-aligned mapping, so the
        // tail (a u16 inside entry 0) is in bounds and aligned; AtomicU16
        // has the layout of u16.
        let tail_ptr = unsafe { types::BufRingEntry::tail(entries.cast::<types::BufRingEntry>()) }.cast::<AtomicU16>();
        let filled = vec![0; count as usize].into_boxed_slice();
        let mut ring =
            BufRing { entries, tail_ptr, data, count, size, tail: 0, filled, incremental: false, leak: false };
        for bid in 0..count {
            ring.put(bid);
        }
        ring.publish();
        Ok(ring)
    }

    pub(super) fn ring_addr(&self) -> u64 {
        self.entries as u64
    }

    /// The `len` bytes a receive completion delivered into buffer `bid`:
    /// they start where the buffer's earlier completions ended. When the
    /// kernel is done with the buffer (`more` is false) it is put back
    /// (visible after `publish`) and its fill starts over; the returned bytes
    /// stay valid until the ring is next published, which the loop does
    /// only after they are parsed.
    ///
    /// # Safety
    ///
    /// This must be the completion that handed these bytes over, with its
    /// `len` (non-negative) and its `IORING_CQE_F_BUF_MORE` flag as `more`;
    /// each completion is passed once.
    pub(super) unsafe fn received(&mut self, bid: u16, len: usize, more: bool) -> &[u8] {
        let bid = bid & (self.count - 1);
        let start = self.filled[bid as usize] as usize;
        let len = len.min(self.size.saturating_sub(start));
        if more {
            self.filled[bid as usize] = (start + len) as u32;
        } else {
            self.put(bid);
        }
        // SAFETY: `start + len <= size`, so the range lies inside buffer
        // `bid` inside `data`. The kernel wrote these bytes before posting
        // the completion and writes only past them while it keeps the
        // buffer; a buffer put back is reused only after `publish`.
        unsafe { std::slice::from_raw_parts(self.data.add(bid as usize * self.size + start), len) }
    }

    /// A completion that delivered no bytes but named buffer `bid` (an
    /// error or end of stream): the buffer goes back unless the kernel keeps
    /// it.
    pub(super) fn returned(&mut self, bid: u16, more: bool) {
        if !more {
            self.put(bid & (self.count - 1));
        }
    }

    /// Gives buffer `bid` back to the kernel, empty (visible after
    /// `publish`).
    fn put(&mut self, bid: u16) {
        debug_assert!(bid < self.count);
        let bid = bid & (self.count - 1);
        self.filled[bid as usize] = 0;
        let slot = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `slot < count`, inside the ring mapping. The entry lies
        // beyond the published tail, so the kernel does not read it until
        // the next publish; `resv` (entry 0's tail) is not touched.
        unsafe {
            let e = self.entries.add(slot);
            ptr::addr_of_mut!((*e).addr).write(self.data.add(bid as usize * self.size) as u64);
            ptr::addr_of_mut!((*e).len).write(self.size as u32);
            ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every buffer put back so far visible to the kernel.
    pub(super) fn publish(&self) {
        // SAFETY: `tail_ptr` points into the live ring mapping (see `new`).
        // Release orders the entry writes of `put` before the new tail,
        // pairing with the kernel's acquire load of the tail.
        unsafe { (*self.tail_ptr).store(self.tail, Ordering::Release) };
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leak {
            return;
        }
        // SAFETY: both mappings were made in `new` with these lengths; the
        // ring that used them has been dropped (field order of `Ring`), and
        // nothing else points into them.
        unsafe {
            libc::munmap(self.entries.cast(), self.count as usize * mem::size_of::<RawBuf>());
            libc::munmap(self.data.cast(), self.count as usize * self.size);
        }
    }
}

/// A private anonymous read-write mapping of `len` bytes.
fn map_anon(len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh anonymous mapping touches no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}
