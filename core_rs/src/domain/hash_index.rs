//! A small open-addressing hash index (linear probing) from a 64-bit hash to
//! a `u32` value, whose buckets can be prefetched.
//!
//! The engine's state (SKUs, stock rows, orders) is far larger than the CPU
//! caches, so looking an order's SKUs up one after another costs a chain of
//! cache misses per line. Knowing where a lookup will land lets the engine
//! prefetch the buckets, then the entries, then the stock rows of the next
//! orders in stages (see `Engine::warm_window`), so those misses overlap.
//!
//! A slot is `tag << 32 | (value + 1)` (0 = empty) with `tag` the low half
//! of the hash; callers confirm a tag match with their own equality check.
//! The home bucket is taken from the tag too, so growing the table rehashes
//! from the slots alone, without reading the stored entries (for the order
//! index, that read is a cache miss per order).

#[derive(Debug, Clone, Default)]
pub struct HashIndex {
    slots: Vec<u64>,
    len: usize,
}

fn tag_of(hash: u64) -> u64 {
    hash & 0xffff_ffff
}

impl HashIndex {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Hints the CPU to load the bucket `hash` starts at.
    pub fn prefetch(&self, hash: u64) {
        if !self.slots.is_empty() {
            prefetch(&self.slots[tag_of(hash) as usize & self.mask()]);
        }
    }

    /// The value whose tag matches and for which `eq` holds.
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let tag = tag_of(hash);
        let mut pos = tag as usize & mask;
        loop {
            let slot = self.slots[pos];
            if slot == 0 {
                return None;
            }
            if slot >> 32 == tag {
                let value = (slot as u32).wrapping_sub(1);
                if eq(value) {
                    return Some(value);
                }
            }
            pos = (pos + 1) & mask;
        }
    }

    /// Inserts a value known to be absent.
    pub fn insert(&mut self, hash: u64, value: u32) {
        debug_assert!(value < u32::MAX);
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.place(hash, value);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, value: u32) {
        let mask = self.mask();
        self.place_slot(tag_of(hash) << 32 | u64::from(value + 1), mask);
    }

    /// Places an encoded slot at the first free position from its home.
    fn place_slot(&mut self, slot: u64, mask: usize) {
        let mut pos = (slot >> 32) as usize & mask;
        while self.slots[pos] != 0 {
            pos = (pos + 1) & mask;
        }
        self.slots[pos] = slot;
    }

    /// Grows now to hold `len` entries without growing again, and touches
    /// the table (see `OrderStore::reserve`).
    pub fn reserve(&mut self, len: usize) {
        while len * 2 > self.slots.len() {
            self.grow();
        }
        let mut touched = 0u64;
        for slot in self.slots.iter_mut().step_by(512) {
            // A write, so the page is really mapped (reading a zero page
            // would not fault it in).
            *slot = std::hint::black_box(*slot);
            touched |= *slot;
        }
        std::hint::black_box(touched);
    }

    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![0; capacity]);
        let mask = self.mask();
        for slot in old.into_iter().filter(|&s| s != 0) {
            self.place_slot(slot, mask);
        }
    }

    fn position(&self, hash: u64, value: u32) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let want = tag_of(hash) << 32 | u64::from(value + 1);
        let mut pos = tag_of(hash) as usize & mask;
        loop {
            match self.slots[pos] {
                0 => return None,
                s if s == want => return Some(pos),
                _ => pos = (pos + 1) & mask,
            }
        }
    }

    /// Changes the value stored for (`hash`, `old`) to `new`.
    pub fn replace(&mut self, hash: u64, old: u32, new: u32) -> bool {
        match self.position(hash, old) {
            Some(pos) => {
                self.slots[pos] = tag_of(hash) << 32 | u64::from(new + 1);
                true
            }
            None => false,
        }
    }

    /// Removes (`hash`, `value`), shifting the rest of its probe run back so
    /// that lookups never stop early (no tombstones).
    pub fn remove(&mut self, hash: u64, value: u32) -> bool {
        let Some(mut hole) = self.position(hash, value) else {
            return false;
        };
        let mask = self.mask();
        let mut pos = hole;
        loop {
            pos = (pos + 1) & mask;
            let slot = self.slots[pos];
            if slot == 0 {
                break;
            }
            let home = (slot >> 32) as usize & mask;
            // Move the entry back unless its home lies cyclically in (hole, pos].
            let stays = if hole <= pos {
                hole < home && home <= pos
            } else {
                hole < home || home <= pos
            };
            if !stays {
                self.slots[hole] = slot;
                hole = pos;
            }
        }
        self.slots[hole] = 0;
        self.len -= 1;
        true
    }
}

/// Prefetches the cache line holding `value` (a hint: never faults).
#[inline]
pub fn prefetch<T>(value: &T) {
    prefetch_address((value as *const T).cast());
}

/// The bytes of a cache line (x86_64 and most 64-bit CPUs).
pub const CACHE_LINE: usize = 64;

/// Prefetches the cache lines holding the first `lines * CACHE_LINE` bytes
/// of `values` (fewer if `values` is shorter).
#[inline]
pub fn prefetch_lines<T>(values: &[T], lines: usize) {
    let bytes = std::mem::size_of_val(values).min(lines * CACHE_LINE);
    let start = values.as_ptr().cast::<u8>();
    for offset in (0..bytes).step_by(CACHE_LINE) {
        prefetch_address(start.wrapping_add(offset));
    }
}

/// Prefetches the cache line holding `address` into the level-2 cache, not
/// the level-1 (`prefetcht1`). Only a hint: the address may be memory not
/// initialised (or not even mapped) yet.
///
/// For the warm-up (`Engine::warm_window`), whose data is read a window of
/// commands later: it prefetches ~200 lines per window of 16 orders. Into
/// the level-1 cache (`prefetcht0`, until step 25 in docs/engine.md)
/// those bursts held the level-1 cache's few outstanding-miss slots and
/// pushed out lines in use (the output being written, the order slots);
/// into the level-2 cache (1 MB here) they wait in its deeper miss queue,
/// and a read a window later costs a level-2 hit. Batches took ~11 % less
/// time provisioned and growing.
#[inline]
pub fn prefetch_address(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        // SAFETY: a prefetch is only a hint: it never faults and reads
        // nothing into the program, whatever the address. SSE is part of
        // the x86_64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(address.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = address;
    }
}

/// Prefetches the cache line holding `address` into the level-1 cache
/// (`prefetcht0`): for lines written within a few commands, as the slot of
/// an order about to be created ([`crate::domain::model::OrderStore::prefetch_slot_ahead`]),
/// where a level-2 copy would still cost a transfer at the store. Sending
/// those to level 2 as well was no faster provisioned and ~2 % slower growing.
#[inline]
pub fn prefetch_address_l1(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: as in `prefetch_address`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(address.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = address;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: u32) -> u64 {
        // Poor on purpose: collisions and long probe runs.
        u64::from(v % 7) | (u64::from(v % 3) << 32)
    }

    #[test]
    fn insert_find_replace_remove_with_collisions() {
        let mut index = HashIndex::default();
        for v in 0..200u32 {
            index.insert(h(v), v);
        }
        for v in 0..200u32 {
            assert_eq!(index.find(h(v), |x| x == v), Some(v));
        }
        assert_eq!(index.find(h(500), |x| x == 500), None);
        for v in (0..200u32).step_by(3) {
            assert!(index.remove(h(v), v));
        }
        for v in 0..200u32 {
            let expect = (v % 3 != 0).then_some(v);
            assert_eq!(index.find(h(v), |x| x == v), expect, "{v}");
        }
        assert!(index.replace(h(1), 1, 1001));
        assert_eq!(index.find(h(1), |x| x == 1001), Some(1001));
        assert_eq!(index.len(), 200 - 67);
    }
}
