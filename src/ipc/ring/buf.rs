//! The ring's data area: raw bytes in the shared mapping, handed between
//! the two ends by the ring protocol, with its header words read and
//! written as atomics in place. Under `cfg(loom)` (in tests) a twin of the
//! same interface models the area with cells whose accesses `loom` checks
//! for races.

use crate::ipc::sync::AtomicU32;
#[cfg(all(loom, test))]
use std::sync::Arc;

/// The data area in shared memory.
#[cfg(not(all(loom, test)))]
#[derive(Clone, Copy)]
pub(super) struct Buf {
    /// First data byte (128-byte aligned).
    ptr: std::ptr::NonNull<u8>,
    /// Data bytes, a power of two.
    cap: usize,
}

#[cfg(not(all(loom, test)))]
impl Buf {
    pub(super) fn new(ptr: std::ptr::NonNull<u8>, cap: usize) -> Buf {
        Buf { ptr, cap }
    }

    /// The header word at offset `off` (a multiple of 8 below the capacity).
    #[inline]
    pub(super) fn header(&self, off: usize) -> &AtomicU32 {
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
    pub(super) unsafe fn write(&self, off: usize, src: &[u8]) {
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
    pub(super) unsafe fn fill<R>(&self, off: usize, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
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
    pub(super) unsafe fn read<R>(&self, off: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
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
    pub(super) unsafe fn copy_out(&self, off: usize, len: usize) -> Vec<u8> {
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
    pub(super) unsafe fn append_to(&self, off: usize, len: usize, out: &mut Vec<u8>) {
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
pub(super) struct Buf {
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
    pub(super) fn new(_ptr: std::ptr::NonNull<u8>, cap: usize) -> Buf {
        let slots = (0..cap / 8)
            .map(|_| Slot { word: AtomicU32::new(0), bytes: loom::cell::UnsafeCell::new([0; 8]) })
            .collect();
        Buf { slots }
    }

    pub(super) fn header(&self, off: usize) -> &AtomicU32 {
        &self.slots[off / 8].word
    }

    pub(super) unsafe fn write(&self, off: usize, src: &[u8]) {
        for (i, chunk) in src.chunks(8).enumerate() {
            // SAFETY: loom checks the claim that the slot is ours.
            self.slots[off / 8 + i].bytes.with_mut(|p| unsafe { (&mut *p)[..chunk.len()].copy_from_slice(chunk) });
        }
    }

    pub(super) unsafe fn fill<R>(&self, off: usize, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut tmp = vec![0u8; len];
        let r = fill(&mut tmp);
        // SAFETY: the caller's contract, as for `write`.
        unsafe { self.write(off, &tmp) };
        r
    }

    pub(super) unsafe fn read<R>(&self, off: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let mut tmp = vec![0u8; len];
        for (i, chunk) in tmp.chunks_mut(8).enumerate() {
            // SAFETY: loom checks the claim that the producer does not write
            // the slot concurrently.
            self.slots[off / 8 + i].bytes.with(|p| unsafe { chunk.copy_from_slice(&(&*p)[..chunk.len()]) });
        }
        f(&tmp)
    }

    pub(super) unsafe fn copy_out(&self, off: usize, len: usize) -> Vec<u8> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.read(off, len, |m| m.to_vec()) }
    }

    pub(super) unsafe fn append_to(&self, off: usize, len: usize, out: &mut Vec<u8>) {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.read(off, len, |m| out.extend_from_slice(m)) }
    }
}
