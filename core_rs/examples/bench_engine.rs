//! Engine throughput and memory benchmark (a benchmark, not a test).
//!
//!     cargo run --release --example bench_engine [-- ORDERS]
//!     BENCH_REPLAY=DIR cargo run --release --example bench_engine [-- ORDERS]
//!
//! BENCH_REPLAY runs the standard workload of `make bench-core` instead,
//! from the batches `bench/core_bench.py --dump-batches DIR` wrote (ORDERS
//! then limits how many are timed).
//!
//! Workload (deterministic, splitmix64 seed 42): one PRIORITY region with 8
//! locations, 100,000 SKUs stocked at every location, then batches of 4,096
//! CreateOrder commands of 2–4 lines (~3); 5% of the orders include one of 8
//! hot SKUs. Batches are serialised up front; the timed part is
//! decode + apply + encode (codec::apply) and commit, per batch.
//! Memory is measured by a counting global allocator.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use _engine::codec::{self, pb};
use _engine::domain::engine::{Engine, Outcome, Sink};
use _engine::domain::model::{Order, SkuId, State, StockCell, StockReason};
use _engine::domain::undo::BatchLog;
use pb::orders::engine::v1 as epb;
use pb::orders::v1 as opb;
use prost::Message;

#[cfg_attr(feature = "python", allow(dead_code))]
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicIsize = AtomicIsize::new(0);
static ALLOCATED_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to mimalloc (the allocator the Python module uses) and
// only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

// With feature "python" the library installs mimalloc itself (and the
// counters stay at zero).
#[cfg(not(feature = "python"))]
#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// (user, system) CPU seconds of this process. The machine may be shared, so
/// wall time alone understates single-core speed; system time is almost all
/// page faults (the kernel zeroing fresh memory for the growing state), which
/// on this VM cost far more than on bare metal.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of /proc/PID/stat (utime, stime), 100 ticks per second.
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// A sink that records nothing: isolates decode + apply from encoding.
struct NullSink;

impl Sink for NullSink {
    fn order_event(&mut self, _: &State, _: &Order, _: i64) {}
    fn stock_event(&mut self, _: &State, _: SkuId, _: &StockCell, _: StockReason, _: i64) {}
    fn command_done(&mut self, _: &State, _: Outcome<'_>) {}
    fn mark(&self) -> usize {
        0
    }
    fn rollback_to(&mut self, _: usize) {}
    fn batch_done(&mut self, _: &State, _: &BatchLog) {}
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SKUS_DEFAULT: usize = 100_000;
const LOCATIONS: usize = 8;
const HOT_SKUS: u64 = 8;
const BATCH: usize = 4_096;

fn command(command: epb::engine_command::Command) -> epb::EngineCommand {
    epb::EngineCommand {
        client_id: "bench-client".to_owned(),
        command: Some(command),
    }
}

fn apply_all(engine: &mut Engine, commands: Vec<epb::EngineCommand>, now: i64) {
    for chunk in commands.chunks(BATCH) {
        let batch = epb::EngineBatch {
            now_unix_ms: now,
            commands: chunk.to_vec(),
        };
        let out = codec::apply(engine, &batch.encode_to_vec()).expect("batch");
        engine.commit(out.batch_seq).expect("commit");
    }
}

/// The timed call, kept out of line so that profilers can isolate it
/// (`valgrind --tool=callgrind --toggle-collect=bench_engine::timed_apply`).
#[inline(never)]
fn timed_apply(engine: &mut Engine, batch: &[u8]) -> codec::BatchOutput {
    codec::apply(engine, batch).expect("batch")
}

/// What the timed part runs: the engine after setup, the encoded order
/// batches, and what the report needs to know about them.
struct Workload {
    engine: Engine,
    batches: Vec<Vec<u8>>,
    orders: usize,
    lines_total: usize,
    stock_rows: usize,
    /// Live bytes before setup and after the stock was loaded.
    base: isize,
    after_stock: isize,
}

impl Workload {
    /// Counts the orders and lines of `batches` (CreateOrder commands).
    fn new(
        engine: Engine,
        batches: Vec<Vec<u8>>,
        stock_rows: usize,
        base: isize,
        after_stock: isize,
    ) -> Self {
        let (mut orders, mut lines_total) = (0, 0);
        for b in &batches {
            let batch = epb::EngineBatch::decode(b.as_slice()).expect("timed batch");
            for c in batch.commands {
                if let Some(epb::engine_command::Command::CreateOrder(req)) = c.command {
                    orders += 1;
                    lines_total += req.lines.len();
                }
            }
        }
        Workload {
            engine,
            batches,
            orders,
            lines_total,
            stock_rows,
            base,
            after_stock,
        }
    }
}

/// The built-in synthetic workload (see the top of the file).
fn synthetic(orders: usize) -> Workload {
    let sku_count: usize = std::env::var("BENCH_SKUS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SKUS_DEFAULT);
    let mut rng = SplitMix64(42);
    let now = 1_700_000_000_000;
    use epb::engine_command::Command as C;

    let t0 = Instant::now();
    let base = live();
    let mut engine = Engine::new();
    let mut setup = vec![command(C::ConfigureRegion(opb::ConfigureRegionRequest {
        region: Some(opb::Region {
            region: "eu".into(),
            strategy: 1,
            reservation_ttl_seconds: 0,
        }),
    }))];
    for l in 0..LOCATIONS {
        setup.push(command(C::UpsertLocation(opb::UpsertLocationRequest {
            location: Some(opb::Location {
                location_id: format!("wh-{l}"),
                region: "eu".into(),
                priority: l as i32,
            }),
        })));
    }
    apply_all(&mut engine, setup, now);
    let mut stock = Vec::with_capacity(sku_count * LOCATIONS);
    for s in 0..sku_count {
        for l in 0..LOCATIONS {
            // Plenty for the cold SKUs; hot SKUs run out during the run.
            let on_hand = if (s as u64) < HOT_SKUS { 20_000 } else { 1_000 };
            stock.push(command(C::SetStock(opb::SetStockRequest {
                sku: format!("sku-{s:06}"),
                location_id: format!("wh-{l}"),
                on_hand,
            })));
        }
    }
    apply_all(&mut engine, stock, now);
    let after_stock = live();
    eprintln!("setup: {:.2} s", t0.elapsed().as_secs_f64());
    let stock_rows = sku_count * LOCATIONS;

    // Build the order batches (not timed).
    let mut batches: Vec<Vec<u8>> = Vec::new();
    let mut n = 0usize;
    while n < orders {
        let mut commands = Vec::with_capacity(BATCH);
        for _ in 0..BATCH.min(orders - n) {
            let line_count = 2 + rng.below(3) as usize;
            let mut skus: Vec<u64> = Vec::with_capacity(line_count);
            if rng.below(100) < 5 {
                skus.push(rng.below(HOT_SKUS));
            }
            while skus.len() < line_count {
                let s = HOT_SKUS + rng.below(sku_count as u64 - HOT_SKUS);
                if !skus.contains(&s) {
                    skus.push(s);
                }
            }
            commands.push(command(C::CreateOrder(opb::CreateOrderRequest {
                request_id: format!("req-{n:08}"),
                customer_id: format!("cust-{}", rng.below(50_000)),
                region: "eu".into(),
                lines: skus
                    .iter()
                    .map(|s| opb::OrderLine {
                        sku: format!("sku-{s:06}"),
                        quantity: 1 + rng.below(3) as i64,
                        unit_price_minor: 100 + rng.below(10_000) as i64,
                        currency: "EUR".into(),
                    })
                    .collect(),
                policy: 0,
            })));
            n += 1;
        }
        batches.push(
            epb::EngineBatch {
                now_unix_ms: now + batches.len() as i64,
                commands,
            }
            .encode_to_vec(),
        );
    }
    Workload::new(engine, batches, stock_rows, base, after_stock)
}

/// Reads batches written by `bench/core_bench.py --dump-batches DIR`: each
/// batch after its length (4 bytes, little-endian).
fn read_framed(path: &std::path::Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut batches = Vec::new();
    let mut rest = data.as_slice();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        assert!(len <= tail.len(), "{}: truncated batch", path.display());
        batches.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    batches
}

/// The standard workload of `make bench-core`, replayed from its dumped
/// batches (BENCH_REPLAY=DIR): setup applied and committed, timed batches
/// counted (orders and lines) but not yet applied. With `max_orders`, only
/// the batches that reach it (for profilers, which run far slower).
fn replay(dir: &std::path::Path, max_orders: Option<usize>) -> Workload {
    let base = live();
    let mut engine = Engine::new();
    for b in read_framed(&dir.join("setup.bin")) {
        let out = codec::apply(&mut engine, &b).expect("setup batch");
        engine.commit(out.batch_seq).expect("commit");
    }
    let after_stock = live();
    let mut batches = read_framed(&dir.join("timed.bin"));
    if let Some(max) = max_orders {
        batches.truncate(max.div_ceil(BATCH));
    }
    let stock_rows = engine
        .state
        .skus
        .iter()
        .map(|(_, _, s)| s.cells.len())
        .sum();
    Workload::new(engine, batches, stock_rows, base, after_stock)
}

fn main() {
    let t0 = Instant::now();
    let orders_arg: Option<usize> = std::env::args().nth(1).and_then(|a| a.parse().ok());
    let Workload {
        mut engine,
        batches,
        orders,
        lines_total,
        stock_rows,
        base,
        after_stock,
    } = match std::env::var_os("BENCH_REPLAY") {
        Some(dir) => replay(std::path::Path::new(&dir), orders_arg),
        None => synthetic(orders_arg.unwrap_or(1_048_576)),
    };
    eprintln!("built batches: {:.2} s", t0.elapsed().as_secs_f64());
    let input_bytes: usize = batches.iter().map(Vec::len).sum();

    let before_orders = live() - input_bytes as isize;
    // BENCH_RESERVE=1: fault the order store's memory in before timing (as a
    // service sized for its open orders would at start); counted in MEMORY.
    if std::env::var_os("BENCH_RESERVE").is_some() {
        let t = Instant::now();
        engine.reserve_orders(orders);
        eprintln!(
            "reserved {orders} orders: {:.2} s",
            t.elapsed().as_secs_f64()
        );
    }
    let mut output_bytes = 0usize;
    let mut events = 0usize;
    if std::env::var_os("BENCH_DECODE_ONLY").is_some() {
        let t = Instant::now();
        let mut commands = 0;
        for b in &batches {
            let mut storage = None;
            commands += codec::decode::decode_batch(b, &mut storage)
                .expect("decode")
                .commands
                .len();
        }
        let e = t.elapsed().as_secs_f64();
        println!(
            "decode only: {:.0} ns/order ({commands})",
            e * 1e9 / orders as f64
        );
    }
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    let allocated_before = ALLOCATED_BYTES.load(Ordering::Relaxed);
    let cpu_started = cpu_seconds();
    let started = Instant::now();
    let verbose = std::env::var_os("BENCH_VERBOSE").is_some();
    // Decode and apply without encoding anything (the engine's own share).
    let null_sink = std::env::var_os("BENCH_NULL_SINK").is_some();
    // The fastest batch approximates an uncontended core on a shared machine.
    let mut best_batch_ns_per_line = f64::MAX;
    // The median batch is what interleaved A/B runs compare: on a shared VM
    // the mean moves with whatever else ran, the median far less.
    let mut batch_seconds: Vec<f64> = Vec::with_capacity(batches.len());
    for b in &batches {
        let t = Instant::now();
        if null_sink {
            let mut storage = None;
            let decoded = codec::decode::decode_batch(b, &mut storage).expect("decode");
            let seq = engine.apply(&decoded, &mut NullSink);
            let took = t.elapsed();
            engine.commit(seq).expect("commit");
            best_batch_ns_per_line =
                best_batch_ns_per_line.min(took.as_nanos() as f64 / (3 * BATCH) as f64);
            continue;
        }
        let out = timed_apply(&mut engine, b);
        let took = t.elapsed();
        batch_seconds.push(took.as_secs_f64());
        if verbose {
            eprintln!("batch {}: {:?}", out.batch_seq, took);
        }
        output_bytes += out.arena.len();
        events += out.events.len();
        engine.commit(out.batch_seq).expect("commit");
        best_batch_ns_per_line =
            best_batch_ns_per_line.min(took.as_nanos() as f64 / (3 * BATCH) as f64);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_ended = cpu_seconds();
    let (user, system) = (cpu_ended.0 - cpu_started.0, cpu_ended.1 - cpu_started.1);
    let cpu = user + system;
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before;
    let allocated = ALLOCATED_BYTES.load(Ordering::Relaxed) - allocated_before;
    drop(batches);
    let after_orders = live();
    if std::env::var_os("BENCH_CHECK").is_some() {
        engine.check_invariants().expect("invariants");
    }

    let stats_live = engine
        .state
        .orders
        .values()
        .filter(|o| o.status.is_live())
        .count();
    println!("orders: {orders} ({stats_live} live), lines: {lines_total}, batches of {BATCH}");
    println!(
        "allocations per order: {:.1} ({:.0} bytes)",
        allocations as f64 / orders as f64,
        allocated as f64 / orders as f64
    );
    println!(
        "events: {events}, output arena: {:.1} MiB",
        output_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "apply (decode + allocate + encode + commit): {:.3} s = {:.0} ns/order",
        elapsed,
        elapsed * 1e9 / orders as f64
    );
    println!(
        "THROUGHPUT: {:.2} M order lines/s wall-clock, {:.2} M order lines/s per CPU second ({:.3} s CPU)",
        lines_total as f64 / elapsed / 1e6,
        lines_total as f64 / cpu / 1e6,
        cpu
    );
    println!(
        "CPU: {:.3} s user ({:.2} M order lines/s per user-mode CPU second), {:.3} s system (page faults)",
        user,
        lines_total as f64 / user / 1e6,
        system
    );
    println!(
        "BEST BATCH: {:.2} M order lines/s (fastest single batch, ~3 lines/order)",
        1e3 / best_batch_ns_per_line
    );
    if !batch_seconds.is_empty() {
        batch_seconds.sort_by(f64::total_cmp);
        println!(
            "MEDIAN BATCH: {:.3} ms ({} batches)",
            batch_seconds[batch_seconds.len() / 2] * 1e3,
            batch_seconds.len()
        );
    }
    println!(
        "MEMORY: {:.1} bytes per stock row ({} rows, incl. SKU/location names and indexes)",
        (after_stock - base) as f64 / stock_rows as f64,
        stock_rows
    );
    println!(
        "MEMORY: {:.1} bytes per order (~{:.1} lines/order, incl. the order index and expiry index)",
        (after_orders - before_orders) as f64 / orders as f64,
        lines_total as f64 / orders as f64
    );
    // 256-byte orders span four cache lines only if their chunk starts on one
    // (docs/engine.md, step 24): that is up to the allocator.
    let (aligned, chunks) = engine.line_aligned_order_chunks();
    println!("ORDER STORE: {aligned} of {chunks} chunks start on a cache line");
}
