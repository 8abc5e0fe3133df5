//! Latency of dependent random reads, by working-set size: what a cache miss
//! costs on this machine, with and without transparent huge pages.
//!
//!     cargo run --release --example memory_latency
//!     MIMALLOC_ALLOW_THP=0 cargo run --release --example memory_latency
//!
//! Each size is one buffer from mimalloc (the engine's allocator, which asks
//! for huge pages unless `MIMALLOC_ALLOW_THP=0`), linked into one random
//! cycle of its cache lines and followed for a fixed number of steps: every
//! read depends on the one before, so nothing overlaps them.

use mimalloc::MiMalloc;
use std::time::Instant;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

const LINE_WORDS: usize = 8; // a 64-byte cache line of u64
const STEPS: usize = 2_000_000;
const SIZES_MB: [usize; 9] = [2, 8, 16, 32, 64, 128, 256, 512, 1024];

fn main() {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64: a fixed sequence, no dependency.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    println!("dependent random reads (one per cache line, {STEPS} steps)");
    for mb in SIZES_MB {
        let lines = (mb << 20) / 64;
        // A random cyclic order of the lines (Sattolo's shuffle).
        let mut order: Vec<usize> = (0..lines).collect();
        for i in (1..lines).rev() {
            let j = (next() % i as u64) as usize;
            order.swap(i, j);
        }
        let mut memory = vec![0u64; lines * LINE_WORDS];
        for (i, &line) in order.iter().enumerate() {
            memory[line * LINE_WORDS] = (order[(i + 1) % lines] * LINE_WORDS) as u64;
        }
        drop(order);
        let mut at = 0usize;
        let started = Instant::now();
        for _ in 0..STEPS {
            at = memory[at] as usize;
        }
        let ns = started.elapsed().as_nanos() as f64 / STEPS as f64;
        // `at` is printed so that the chase is not optimised away.
        println!(
            "  {mb:5} MB: {ns:6.1} ns per read (ended at line {})",
            at / LINE_WORDS
        );
    }
}
