//! Connection states indexed by a [`Key`]: a slot index and that slot's
//! generation, so an event or completion that arrives for an earlier
//! occupant of a slot is recognised and ignored. Freed slots are reused
//! (most recently freed first), so the table grows only to the peak number
//! of connections and steady-state accept and close allocate nothing.
//!
//! # Why a key cannot alias
//!
//! A key is one `u64`: the slot's index in its low [`IDX_BITS`] bits, the
//! slot's generation in the [`GEN_BITS`] above. The packed key is the
//! connection's token, which responders, streams and body resumes carry
//! across threads and back to the loop, so a late one must never match a
//! later occupant of the same slot.
//!
//! - 24 index bits: 16,777,216 connections in one worker at once, above
//!   what its descriptors allow (Linux's default ceiling on a process's
//!   open files, `fs.nr_open`, is 2^20).
//! - 40 generation bits: a slot's generation moves on at each free, so
//!   only reusing one slot 2^40 times could bring a generation back. With
//!   the most recently freed slot reused first, a worker that holds one
//!   connection at a time puts every connection on the same slot. At one
//!   new connection per microsecond on that worker (a rate no core
//!   reaches: accepting and closing one TCP connection costs the kernel
//!   several microseconds), 2^40 µs is 12.7 days; at a busy worker's
//!   100,000 a second, 127 days.
//! - And it never comes back: a slot whose generation reaches its last
//!   value is retired instead (left empty, never handed out again), so no
//!   key is ever issued twice, at any rate, for any lifetime. A retirement
//!   costs one empty slot per 2^40 connections; the index space, 2^24
//!   slots of 2^40 generations each, outlasts 500,000 years at one
//!   connection per microsecond.
//!
//! A backend that carries fewer bits in the kernel (io_uring's user data
//! holds an operation too) finds its connection with
//! [`Slab::key_by_low_gen`]: its operations never outlive their slot's
//! occupant, so a shorter generation suffices there.

/// Bits of a key that name the slot.
pub(crate) const IDX_BITS: u32 = 24;
/// Bits of a key that hold the slot's generation.
pub(crate) const GEN_BITS: u32 = 64 - IDX_BITS;
/// Mask of the index bits.
const IDX_MASK: u64 = (1 << IDX_BITS) - 1;
/// Most slots a table holds.
const MAX_SLOTS: usize = 1 << IDX_BITS;
/// The generation no key carries: a slot that reaches it is retired.
const GEN_LAST: u64 = (1 << GEN_BITS) - 1;
/// Every packed key is below this (no key carries [`GEN_LAST`]): the
/// values from here up are free for a backend's own tokens.
pub(crate) const KEYS_END: u64 = GEN_LAST << IDX_BITS;

/// A slot and the generation of its occupant, packed as the slot's index
/// below its generation (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key(u64);

impl Key {
    /// The key of slot `idx` at generation `gen`.
    pub(crate) fn new(idx: u32, gen: u64) -> Key {
        debug_assert!(u64::from(idx) <= IDX_MASK && gen < GEN_LAST);
        Key(gen << IDX_BITS | (u64::from(idx) & IDX_MASK))
    }

    /// Index into the table.
    #[inline]
    pub(crate) fn idx(self) -> u32 {
        (self.0 & IDX_MASK) as u32
    }

    /// The slot's generation when the key was made.
    #[inline]
    pub(crate) fn gen(self) -> u64 {
        self.0 >> IDX_BITS
    }

    /// The key as one `u64`: the connection's token.
    #[inline]
    pub(crate) fn pack(self) -> u64 {
        self.0
    }

    /// The key [`Key::pack`] packed.
    #[inline]
    pub(crate) fn unpack(v: u64) -> Key {
        Key(v)
    }
}

/// One slot of the table.
#[derive(Debug)]
struct Slot<T> {
    /// Incremented whenever the slot is freed; at [`GEN_LAST`] the slot is
    /// retired.
    gen: u64,
    /// The occupant.
    value: Option<T>,
}

/// The table.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    /// Slots, occupied, free or retired.
    slots: Vec<Slot<T>>,
    /// Free slot indices, most recently freed last.
    free: Vec<u32>,
    /// Occupied slots.
    live: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { slots: Vec::new(), free: Vec::new(), live: 0 }
    }
}

impl<T> Slab<T> {
    /// Occupied slots.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// One past the highest index ever used.
    pub(crate) fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Stores `value` and returns its key; `None` (and `value` dropped)
    /// when all [`MAX_SLOTS`] slots are taken.
    pub(crate) fn insert(&mut self, value: T) -> Option<Key> {
        if let Some(idx) = self.free.pop() {
            let slot = &mut self.slots[idx as usize];
            slot.value = Some(value);
            self.live += 1;
            return Some(Key::new(idx, slot.gen));
        }
        if self.slots.len() == MAX_SLOTS {
            return None;
        }
        self.slots.push(Slot { gen: 0, value: Some(value) });
        self.live += 1;
        Some(Key::new((self.slots.len() - 1) as u32, 0))
    }

    /// The occupant `key` refers to, if it is still the same one.
    #[inline]
    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let slot = self.slots.get_mut(key.idx() as usize)?;
        if slot.gen != key.gen() {
            return None;
        }
        slot.value.as_mut()
    }

    /// The key of slot `idx`'s occupant if the low `bits` bits of its
    /// generation are `low`; otherwise a key that matches no occupant.
    #[inline]
    pub(crate) fn key_by_low_gen(&self, idx: u32, low: u64, bits: u32) -> Key {
        debug_assert!(bits < GEN_BITS);
        let mask = (1u64 << bits) - 1;
        match self.slots.get(idx as usize) {
            Some(slot) if slot.value.is_some() && slot.gen & mask == low => Key::new(idx, slot.gen),
            // The slot's generation differs from `low`, or the slot is
            // empty: either way no occupant has this key.
            _ => Key::new(idx & IDX_MASK as u32, low & mask),
        }
    }

    /// The occupant of slot `idx`, with its current key.
    pub(crate) fn at(&mut self, idx: u32) -> Option<(Key, &mut T)> {
        let slot = self.slots.get_mut(idx as usize)?;
        let gen = slot.gen;
        slot.value.as_mut().map(|v| (Key::new(idx, gen), v))
    }

    /// Removes the occupant `key` refers to, if it is still the same one;
    /// the slot's generation moves on, and a slot that has used its last
    /// generation is retired instead of freed.
    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        let slot = self.slots.get_mut(key.idx() as usize)?;
        if slot.gen != key.gen() {
            return None;
        }
        let value = slot.value.take()?;
        slot.gen += 1;
        if slot.gen < GEN_LAST {
            self.free.push(key.idx());
        }
        self.live -= 1;
        Some(value)
    }

    /// Every occupant, with its key.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (Key, &mut T)> {
        self.slots.iter_mut().enumerate().filter_map(|(idx, slot)| {
            let gen = slot.gen;
            slot.value.as_mut().map(|v| (Key::new(idx as u32, gen), v))
        })
    }

    /// Moves free slot `idx` on to generation `gen`, as if it had been
    /// reused that many times: tests reach generations no test could make
    /// one connection at a time.
    #[cfg(test)]
    pub(crate) fn age(&mut self, idx: u32, gen: u64) {
        let slot = &mut self.slots[idx as usize];
        assert!(slot.value.is_none() && gen < GEN_LAST);
        slot.gen = gen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_miss_and_slots_are_reused() {
        let mut s = Slab::default();
        let a = s.insert("a").unwrap();
        let b = s.insert("b").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None);
        let c = s.insert("c").unwrap();
        assert_eq!(c.idx(), a.idx(), "the freed slot is reused");
        assert_ne!(c.gen(), a.gen());
        assert_eq!(s.get_mut(a), None, "a key of the earlier occupant misses");
        assert_eq!(s.get_mut(c).copied(), Some("c"));
        assert_eq!(s.get_mut(b).copied(), Some("b"));
        assert_eq!(Key::unpack(c.pack()), c);
        assert_eq!(s.iter_mut().count(), 2);
    }

    #[test]
    fn a_token_of_any_earlier_occupant_never_matches() {
        let mut s = Slab::default();
        let mut tokens = Vec::new();
        for i in 0..10_000u32 {
            let k = s.insert(i).unwrap();
            assert_eq!(k.idx(), 0, "one connection at a time: always the same slot");
            tokens.push(k.pack());
            if i < 9_999 {
                s.remove(k);
            }
        }
        let (last, stale) = tokens.split_last().unwrap();
        assert_eq!(s.get_mut(Key::unpack(*last)).copied(), Some(9_999));
        for &t in stale {
            assert_eq!(s.get_mut(Key::unpack(t)), None);
            assert!(s.remove(Key::unpack(t)).is_none());
            assert_ne!(t, *last);
        }
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn the_old_24_bit_wrap_no_longer_aliases() {
        let mut s = Slab::default();
        let first = s.insert("first").unwrap();
        assert_eq!(first.gen(), 0);
        s.remove(first);
        // The slot has been reused 2^24 - 1 times; one more reuse is where
        // a 24-bit generation came back to 0.
        s.age(first.idx(), (1 << 24) - 1);
        let before = s.insert("before the wrap").unwrap();
        s.remove(before);
        let after = s.insert("after the wrap").unwrap();
        assert_eq!(after.idx(), first.idx());
        assert_eq!(after.gen(), 1 << 24);
        assert_eq!(after.gen() & ((1 << 24) - 1), first.gen(), "24 bits would have aliased here");
        assert_ne!(after.pack(), first.pack());
        assert_eq!(s.get_mut(Key::unpack(first.pack())), None, "the first occupant's token misses");
        assert_eq!(s.get_mut(Key::unpack(before.pack())), None);
        assert_eq!(s.get_mut(Key::unpack(after.pack())).copied(), Some("after the wrap"));
        // And at every multiple of 2^24 up the generation range.
        for n in [2u64, 3, 1 << 8, 1 << 15, (1 << 16) - 1] {
            let gen = n << 24;
            assert_ne!(Key::new(first.idx(), gen).pack(), first.pack());
            assert_eq!(Key::unpack(Key::new(first.idx(), gen).pack()).gen(), gen);
        }
    }

    #[test]
    fn a_slot_at_its_last_generation_is_retired_not_wrapped() {
        let mut s = Slab::default();
        let k = s.insert(1).unwrap();
        s.remove(k);
        s.age(k.idx(), GEN_LAST - 1);
        let last = s.insert(2).unwrap();
        assert_eq!(last.gen(), GEN_LAST - 1);
        assert!(last.pack() < KEYS_END);
        assert_eq!(s.remove(last), Some(2));
        let next = s.insert(3).unwrap();
        assert_ne!(next.idx(), last.idx(), "the retired slot is never handed out again");
        assert_eq!(s.get_mut(last), None);
        assert_eq!(s.get_mut(Key::new(last.idx(), 0)), None);
        assert!(s.at(last.idx()).is_none());
        assert_eq!((s.len(), s.capacity()), (1, 2));
    }

    #[test]
    fn keys_round_trip_over_the_whole_range() {
        for (idx, gen) in [(0, 0), (1, 1), (IDX_MASK as u32, 0), (0, GEN_LAST - 1), (IDX_MASK as u32, GEN_LAST - 1)] {
            let k = Key::new(idx, gen);
            assert_eq!((k.idx(), k.gen()), (idx, gen));
            assert_eq!(Key::unpack(k.pack()), k);
            assert!(k.pack() < KEYS_END);
        }
    }

    #[test]
    fn a_shorter_generation_finds_only_the_current_occupant() {
        let mut s = Slab::default();
        let a = s.insert('a').unwrap();
        s.remove(a);
        s.age(a.idx(), (1 << 32) - 1);
        let b = s.insert('b').unwrap();
        let low = |k: Key| k.gen() & 0xffff_ffff;
        assert_eq!(s.key_by_low_gen(b.idx(), low(b), 32), b);
        s.remove(b);
        let c = s.insert('c').unwrap();
        assert_eq!(c.gen(), 1 << 32);
        assert_eq!(s.key_by_low_gen(c.idx(), low(c), 32), c);
        // `b`'s low bits name no occupant now, nor do `a`'s (equal to
        // `c`'s only in bits a 32-bit field does not hold).
        let stale = s.key_by_low_gen(b.idx(), low(b), 32);
        assert_eq!(s.get_mut(stale), None);
        // Within 32 bits, generations 0 and 2^32 are one: why an operation
        // in the kernel must never outlive its slot's occupant.
        assert_eq!(s.key_by_low_gen(a.idx(), low(a), 32), c);
        assert_eq!(s.get_mut(s.key_by_low_gen(7, 0, 32)), None, "a slot never used");
    }
}
