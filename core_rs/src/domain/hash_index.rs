//! A small open-addressing hash index (linear probing) from a 64-bit hash to
//! a `u32` value, whose buckets can be prefetched.
//!
//! The engine's state (SKUs, stock rows, orders) is far larger than the CPU
//! caches, so looking an order's SKUs up one after another costs a chain of
//! cache misses per line. Knowing where a lookup will land lets the engine
//! prefetch the buckets, then the entries, then the stock rows of the next
//! orders in stages (see `Engine::warm`), so those misses overlap.
//!
//! A slot is `tag << 32 | (value + 1)` (0 = empty) with `tag` the high half
//! of the hash; callers confirm a tag match with their own equality check.

#[derive(Debug, Clone, Default)]
pub struct HashIndex {
    slots: Vec<u64>,
    len: usize,
}

fn tag_of(hash: u64) -> u64 {
    hash >> 32
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
            prefetch(&self.slots[hash as usize & self.mask()]);
        }
    }

    /// The value whose tag matches and for which `eq` holds.
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let tag = tag_of(hash);
        let mut pos = hash as usize & mask;
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

    /// Inserts a value known to be absent. `hash_of` gives the hash of a
    /// stored value (needed when the table grows).
    pub fn insert(&mut self, hash: u64, value: u32, hash_of: impl Fn(u32) -> u64) {
        debug_assert!(value < u32::MAX);
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow(&hash_of);
        }
        self.place(hash, value);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, value: u32) {
        let mask = self.mask();
        let mut pos = hash as usize & mask;
        while self.slots[pos] != 0 {
            pos = (pos + 1) & mask;
        }
        self.slots[pos] = tag_of(hash) << 32 | u64::from(value + 1);
    }

    fn grow(&mut self, hash_of: &impl Fn(u32) -> u64) {
        let capacity = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![0; capacity]);
        for slot in old.into_iter().filter(|&s| s != 0) {
            let value = (slot as u32).wrapping_sub(1);
            self.place(hash_of(value), value);
        }
    }

    fn position(&self, hash: u64, value: u32) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let want = tag_of(hash) << 32 | u64::from(value + 1);
        let mut pos = hash as usize & mask;
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
    pub fn remove(&mut self, hash: u64, value: u32, hash_of: impl Fn(u32) -> u64) -> bool {
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
            let home = hash_of((slot as u32).wrapping_sub(1)) as usize & mask;
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
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is only a hint and never faults; the pointer
        // comes from a reference, so it is valid anyway. SSE is part of the
        // x86_64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = value;
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
            index.insert(h(v), v, h);
        }
        for v in 0..200u32 {
            assert_eq!(index.find(h(v), |x| x == v), Some(v));
        }
        assert_eq!(index.find(h(500), |x| x == 500), None);
        for v in (0..200u32).step_by(3) {
            assert!(index.remove(h(v), v, h));
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
