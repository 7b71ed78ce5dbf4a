//! Connection states indexed by a [`Key`]: a slot index and that slot's
//! generation, so an event or completion that arrives for an earlier
//! occupant of a slot is recognised and ignored. Freed slots are reused
//! (most recently freed first), so the table grows only to the peak number
//! of connections and steady-state accept and close allocate nothing.

/// Bits of a slot's generation that a key carries.
pub(crate) const GEN_BITS: u32 = 24;
/// Mask of the generation bits.
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

/// A slot and the generation of its occupant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key {
    /// Index into the table.
    pub(crate) idx: u32,
    /// The slot's generation when the key was made (24 bits, wrapping).
    pub(crate) gen: u32,
}

impl Key {
    /// Packs the key into 56 bits: generation above the index.
    pub(crate) fn pack(self) -> u64 {
        ((self.gen & GEN_MASK) as u64) << 32 | self.idx as u64
    }

    /// The key [`Key::pack`] packed (bits above 56 are ignored).
    pub(crate) fn unpack(v: u64) -> Key {
        Key { idx: v as u32, gen: (v >> 32) as u32 & GEN_MASK }
    }
}

/// One slot of the table.
#[derive(Debug)]
struct Slot<T> {
    /// Incremented (mod 2^24) whenever the slot is freed.
    gen: u32,
    /// The occupant.
    value: Option<T>,
}

/// The table.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    /// Slots, occupied or free.
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

    /// Stores `value` and returns its key.
    pub(crate) fn insert(&mut self, value: T) -> Key {
        self.live += 1;
        if let Some(idx) = self.free.pop() {
            let slot = &mut self.slots[idx as usize];
            slot.value = Some(value);
            return Key { idx, gen: slot.gen };
        }
        self.slots.push(Slot { gen: 0, value: Some(value) });
        Key { idx: (self.slots.len() - 1) as u32, gen: 0 }
    }

    /// The occupant `key` refers to, if it is still the same one.
    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let slot = self.slots.get_mut(key.idx as usize)?;
        if slot.gen != key.gen & GEN_MASK {
            return None;
        }
        slot.value.as_mut()
    }

    /// The occupant of slot `idx`, with its current key.
    pub(crate) fn at(&mut self, idx: u32) -> Option<(Key, &mut T)> {
        let slot = self.slots.get_mut(idx as usize)?;
        let gen = slot.gen;
        slot.value.as_mut().map(|v| (Key { idx, gen }, v))
    }

    /// Removes the occupant `key` refers to, if it is still the same one;
    /// the slot's generation moves on.
    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        let slot = self.slots.get_mut(key.idx as usize)?;
        if slot.gen != key.gen & GEN_MASK {
            return None;
        }
        let value = slot.value.take()?;
        slot.gen = slot.gen.wrapping_add(1) & GEN_MASK;
        self.free.push(key.idx);
        self.live -= 1;
        Some(value)
    }

    /// Every occupant, with its key.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (Key, &mut T)> {
        self.slots.iter_mut().enumerate().filter_map(|(idx, slot)| {
            let gen = slot.gen;
            slot.value.as_mut().map(|v| (Key { idx: idx as u32, gen }, v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_miss_and_slots_are_reused() {
        let mut s = Slab::default();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_eq!(s.len(), 2);
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None);
        let c = s.insert("c");
        assert_eq!(c.idx, a.idx, "the freed slot is reused");
        assert_ne!(c.gen, a.gen);
        assert_eq!(s.get_mut(a), None, "a key of the earlier occupant misses");
        assert_eq!(s.get_mut(c).copied(), Some("c"));
        assert_eq!(s.get_mut(b).copied(), Some("b"));
        assert_eq!(Key::unpack(c.pack()), c);
        assert_eq!(s.iter_mut().count(), 2);
    }

    #[test]
    fn generations_wrap_within_their_bits() {
        let mut s = Slab::default();
        let mut k = s.insert(0u8);
        for _ in 0..(1 << GEN_BITS) + 3 {
            s.remove(k);
            k = s.insert(0);
            assert!(k.gen <= GEN_MASK);
            assert_eq!(Key::unpack(k.pack()), k);
        }
    }
}
