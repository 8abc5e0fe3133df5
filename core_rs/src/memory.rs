//! Hints to the operating system about how the engine uses its memory. They
//! change how fast memory is mapped, never what the engine computes.

/// Asks the kernel to back `v`'s whole allocation with ordinary (4 KB) pages
/// instead of transparent huge pages, for memory that is filled in order and
/// seldom read at random: the order store's chunks.
///
/// mimalloc asks for huge pages (`MADV_HUGEPAGE`) on all its memory, which
/// suits the tables read at random (fewer TLB misses), but on the
/// development VM a fresh huge page cost about twice what the same bytes in
/// small pages did to fault in (`bench/vm_memory.py`), and the order store
/// is most of the fresh memory a growing engine takes (docs/engine.md,
/// Performance). Only the whole pages inside the allocation are advised:
/// the bytes at its edges may share a page with other allocations. Errors
/// are ignored: this is a hint, and on other systems nothing is done.
pub fn prefer_small_pages<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let bytes = v.capacity() * std::mem::size_of::<T>();
        let start = v.as_ptr() as usize;
        let first = start.next_multiple_of(PAGE);
        let end = (start + bytes) / PAGE * PAGE;
        if end > first {
            // SAFETY: madvise only changes how the kernel backs the pages
            // [first, end), which lie inside `v`'s allocation; MADV_NOHUGEPAGE
            // never changes their contents.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    end - first,
                    libc::MADV_NOHUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = v;
    }
}

#[cfg(all(test, target_os = "linux"))]
pub(crate) mod tests {
    use super::*;

    /// Whether this kernel has transparent huge pages at all.
    pub(crate) fn kernel_has_huge_pages() -> bool {
        std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists()
    }

    /// Whether the kernel was told not to use huge pages for the page holding
    /// `address` (the `nh` flag of its mapping in /proc/self/smaps).
    pub(crate) fn marked_for_small_pages(address: usize) -> bool {
        let flags = vm_flags_at(address).expect("the address's mapping in smaps");
        flags.split_whitespace().any(|f| f == "nh")
    }

    /// The `VmFlags` of the mapping that holds `address`, from /proc/self/smaps.
    fn vm_flags_at(address: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&address);
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return Some(flags.to_string());
                }
            }
        }
        None
    }

    /// The advice reaches the kernel: the pages inside the allocation are
    /// marked "no huge pages" (`nh`), and the contents are untouched. (A
    /// kernel built without transparent huge pages refuses the advice, and
    /// has nothing to mark: there only the contents are checked.)
    #[test]
    fn a_large_allocation_is_marked_for_small_pages() {
        let mut v: Vec<u64> = Vec::with_capacity(1 << 20); // 8 MB
        v.extend(0..1000);
        prefer_small_pages(&v);
        assert!(v.iter().copied().eq(0..1000));
        if !kernel_has_huge_pages() {
            return;
        }
        let inner = (v.as_ptr() as usize).next_multiple_of(4096) + 4096;
        assert!(marked_for_small_pages(inner));
    }

    /// Allocations smaller than a page, and empty ones, are left alone.
    #[test]
    fn small_and_empty_allocations_are_fine() {
        prefer_small_pages(&Vec::<u8>::new());
        prefer_small_pages(&vec![1u8; 100]);
    }
}
