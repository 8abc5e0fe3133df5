//! The state machine: applies a batch of commands, one after another, and
//! keeps an undo log per pending batch (commit / rollback).
//!
//! This module holds the engine, the batch loop, the undo machinery and the
//! command dispatch; the rules live in the submodules:
//! [`create`] (idempotency, allocation, batch creates), [`validation`],
//! [`transitions`] (confirm, ship, cancel, expiry, serving backorders),
//! [`stock`] (stock, locations, regions) and [`reconcile`] (reconcile and
//! invariant checks).

mod create;
mod reconcile;
mod stock;
mod transitions;
mod validation;

pub use reconcile::live_reservations;
pub use validation::validate_create;

use std::ops::Bound;

use rustc_hash::FxHashMap;

use super::command::{Batch, Command, CommandIn, CreateIn, LineIn, LocationIn, RegionIn};
use super::error::{
    CommandError, Violations, CODE_ABORTED, CODE_ALREADY_EXISTS, CODE_FAILED_PRECONDITION,
};
use super::hash_index::prefetch_lines;
use super::ids::{
    format_order_id, is_active_currency, name_eq, name_hash, order_key, parse_order_id,
};
use super::limits::*;
use super::model::*;
use super::undo::{push_undo, BatchLog, Savepoint, Undo};

/// Receives what a batch produces while it is applied. The codec implements
/// it by encoding immediately, so an order is serialised once per change and
/// those bytes serve as event payload, response and persisted row.
pub trait Sink {
    /// `order` has just changed (its `version` is the event's).
    fn order_event(&mut self, state: &State, order: &Order, now_ms: i64);
    /// A SetStock / AdjustStock / reconcile repair changed this row.
    fn stock_event(
        &mut self,
        state: &State,
        sku: SkuId,
        cell: &StockCell,
        reason: StockReason,
        now_ms: i64,
    );
    /// The command is complete; `state` is the state right after it.
    fn command_done(&mut self, state: &State, outcome: Outcome<'_>);
    /// Opaque position for [`Sink::rollback_to`].
    fn mark(&self) -> usize;
    /// Forgets everything recorded after `mark` (ALL_OR_NOTHING abort).
    fn rollback_to(&mut self, mark: usize);
    /// The batch is complete: its changed rows are listed in `log`.
    fn batch_done(&mut self, state: &State, log: &BatchLog);
}

/// The answer of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The response is the order as carried by the command's first order event.
    OrderEvent,
    /// A replayed create: the order as it is now, nothing changed.
    Replay(OrderKey),
    BatchCreate(Vec<ItemResult<'a>>),
    Stock(SkuId, LocId),
    Location(LocId),
    Region(RegionId),
    Reconcile(ReconcileReport),
    Expired(i64),
    Error(CommandError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemResult<'a> {
    pub request_id: &'a str,
    pub result: Result<OrderKey, CommandError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub sku: SkuId,
    pub loc: LocId,
    pub recorded_reserved: i64,
    pub computed_reserved: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReconcileReport {
    pub rows_checked: i64,
    pub drifts: Vec<Drift>,
    pub repaired: bool,
}

/// Misuse of commit / rollback / snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError(pub String);

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

enum CreateOutcome {
    Fresh(OrderKey, Status),
    Replay(OrderKey),
    Failed(CommandError),
}

/// The allocation engine of one inventory partition.
#[derive(Debug, Default)]
pub struct Engine {
    pub state: State,
    batch_seq: u64,
    /// Touch epoch, see [`Touch`]: grows by one per batch and savepoint,
    /// never goes back (not even on rollback) and is only renumbered, with
    /// every touch, before it could wrap ([`Engine::renumber_epochs`]).
    epoch: u32,
    log: BatchLog,
    pending: Vec<BatchLog>,
    /// Emptied buffers of earlier batches, reused by the next one.
    spare: BatchLog,
    scratch_skus: Vec<SkuId>,
    scratch_plan: Vec<Allocation>,
    scratch_short: Vec<Backorder>,
    /// SKU of each line of the current batch, looked up ahead (see `warm_window`).
    line_skus: Vec<Option<SkuId>>,
    scratch_hashes: Vec<(usize, u64, Option<SkuId>)>,
    /// Lines of the window two ahead (stage 1 done) and of the window one
    /// ahead (stage 2 done), see [`Engine::warm_window`].
    warm_stage1: Vec<(usize, u64, Option<SkuId>)>,
    warm_stage2: Vec<(usize, u64, Option<SkuId>)>,
    /// Order key of each create of the current batch, computed when the
    /// warm-up prefetches its index bucket (so it is hashed once): by command
    /// index for CreateOrder, by [`Batch::creates`] index for the items of
    /// BatchCreateOrders.
    command_keys: Vec<Option<OrderKey>>,
    item_keys: Vec<Option<OrderKey>>,
    /// Client and region names recently resolved to their indexes.
    recent_clients: RecentNames,
    recent_regions: RecentNames,
}

/// A few names recently resolved by an interner, with their indexes: a
/// batch's commands nearly always come from a few clients and regions, and
/// comparing a short name is much cheaper than hashing it and probing the
/// interner. Indexes stay valid because names are never forgotten.
#[derive(Debug, Default)]
struct RecentNames {
    entries: Vec<(Box<str>, u32)>,
    /// The entry to replace when full (round robin).
    next: usize,
}

/// Names remembered by [`RecentNames`].
const RECENT_NAMES: usize = 8;

impl RecentNames {
    /// The first entry inline (nearly always the hit: one client and one
    /// region per batch), the others through a call.
    #[inline(always)]
    fn get(&self, name: &str) -> Option<u32> {
        match self.entries.first() {
            Some((first, id)) if name_eq(first, name) => Some(*id),
            _ => self.get_after_first(name),
        }
    }

    #[inline(never)]
    fn get_after_first(&self, name: &str) -> Option<u32> {
        self.entries
            .iter()
            .skip(1)
            .find(|(n, _)| name_eq(n, name))
            .map(|&(_, id)| id)
    }

    fn remember(&mut self, name: &str, id: u32) {
        if self.entries.len() < RECENT_NAMES {
            self.entries.push((name.into(), id));
        } else {
            self.entries[self.next] = (name.into(), id);
            self.next = (self.next + 1) % RECENT_NAMES;
        }
    }
}

/// Commands looked up ahead at a time (see [`Engine::warm_window`]).
const WARM_AHEAD: usize = 16;

/// Cache lines of a SKU's stock rows that the warm-up prefetches: two hold
/// the rows of its first two or three locations (rows are 40 bytes).
const WARM_ROW_LINES: usize = 2;

/// Creates ahead whose order slot a create prefetches: a few orders'
/// worth of work covers a memory access.
const SLOT_PREFETCH_AHEAD: usize = 8;

/// A batch starting at this touch epoch or later first renumbers every
/// touch ([`Engine::renumber_epochs`]). Half the range: a batch advances the
/// epoch by one plus one per savepoint (ALL_OR_NOTHING batch create), far
/// fewer than the 2^31 left.
const EPOCH_RENUMBER_AT: u32 = u32::MAX / 2;

impl Engine {
    pub fn new() -> Self {
        Self::default()
    }

    /// An engine over an existing state (restore); the next batch is `batch_seq + 1`.
    pub fn with_state(state: State, batch_seq: u64) -> Self {
        Engine {
            state,
            batch_seq,
            ..Self::default()
        }
    }

    /// Makes room for `orders` more orders and faults that memory in now
    /// (see [`OrderStore::reserve`]): a service sized for its open orders
    /// does this at start so that the hot path does not pay for fresh pages.
    pub fn reserve_orders(&mut self, orders: usize) {
        self.state.orders.reserve(orders);
    }

    /// See [`crate::domain::model::OrderStore::line_aligned_chunks`].
    pub fn line_aligned_order_chunks(&self) -> (usize, usize) {
        self.state.orders.line_aligned_chunks()
    }

    pub fn batch_seq(&self) -> u64 {
        self.batch_seq
    }

    pub fn pending(&self) -> Vec<u64> {
        self.pending.iter().map(|l| l.seq).collect()
    }

    /// Applies every command of `batch` in order and returns the batch's seq.
    pub fn apply<S: Sink>(&mut self, batch: &Batch<'_>, sink: &mut S) -> u64 {
        self.batch_seq += 1;
        if self.epoch >= EPOCH_RENUMBER_AT {
            self.renumber_epochs();
        }
        self.epoch += 1;
        // Reuse the buffers of earlier batches: growing fresh ones every
        // batch costs page faults on the hot path.
        let mut spare = std::mem::take(&mut self.spare);
        spare.seq = self.batch_seq;
        spare.first_epoch = self.epoch;
        spare.next_queue_seq_before = self.state.next_queue_seq;
        self.log = spare;
        self.line_skus.clear();
        self.line_skus.resize(batch.lines.len(), None);
        self.command_keys.clear();
        self.command_keys.resize(batch.commands.len(), None);
        self.item_keys.clear();
        self.item_keys.resize(batch.creates.len(), None);
        for (i, command) in batch.commands.iter().enumerate() {
            if i % WARM_AHEAD == 0 {
                self.warm_window(batch, i / WARM_AHEAD);
            }
            let outcome = self.apply_command(batch, i, command, sink);
            sink.command_done(&self.state, outcome);
        }
        sink.batch_done(&self.state, &self.log);
        let mut log = std::mem::take(&mut self.log);
        // Only the undo log is needed from now on; the rest is kept for the
        // next batch.
        self.spare.changed_orders = std::mem::take(&mut log.changed_orders);
        self.spare.changed_stock = std::mem::take(&mut log.changed_stock);
        self.spare.stock_values = std::mem::take(&mut log.stock_values);
        self.spare.changed_locations = std::mem::take(&mut log.changed_locations);
        self.spare.changed_regions = std::mem::take(&mut log.changed_regions);
        self.spare.clear();
        self.pending.push(log);
        self.batch_seq
    }

    /// Batches up to and including `seq` are durable: forget their undo logs.
    pub fn commit(&mut self, seq: u64) -> Result<(), StateError> {
        if !self.pending.iter().any(|l| l.seq == seq) {
            return Err(StateError(format!(
                "cannot commit batch {seq}: not pending (pending: {:?})",
                self.pending()
            )));
        }
        let keep = self
            .pending
            .iter()
            .position(|l| l.seq > seq)
            .unwrap_or(self.pending.len());
        for mut log in self.pending.drain(..keep) {
            if log.undo.capacity() > self.spare.undo.capacity() {
                log.undo.clear();
                self.spare.undo = log.undo;
            }
        }
        Ok(())
    }

    /// Undoes batch `seq` and every later pending batch, newest first.
    pub fn rollback(&mut self, seq: u64) -> Result<(), StateError> {
        if !self.pending.iter().any(|l| l.seq == seq) {
            return Err(StateError(format!(
                "cannot roll back batch {seq}: not pending (pending: {:?})",
                self.pending()
            )));
        }
        while let Some(log) = self.pending.pop() {
            let this = log.seq;
            for op in log.undo.into_iter().rev() {
                self.revert(op);
            }
            self.state.next_queue_seq = log.next_queue_seq_before;
            self.batch_seq = this - 1;
            if this == seq {
                break;
            }
        }
        Ok(())
    }

    /// Sets every touch epoch, in the state and in the undo images of the
    /// pending batches, to 0 and restarts the epoch at 0: between batches
    /// only "touched before the current batch" matters, which 0 keeps for
    /// every row (a rollback restores images whose epochs are 0 as well).
    /// Runs once per ~2^31 batches.
    fn renumber_epochs(&mut self) {
        fn reset(t: &mut Touch) {
            t.epoch = 0;
        }
        let st = &mut self.state;
        st.orders.values_mut().for_each(|o| reset(&mut o.touch));
        for sku in 0..st.skus.len() as u32 {
            st.skus
                .value_mut(sku)
                .cells
                .iter_mut()
                .for_each(|c| reset(&mut c.touch));
        }
        for loc in 0..st.locations.len() as u32 {
            if let Some(row) = st.locations.value_mut(loc) {
                reset(&mut row.touch);
            }
        }
        for region in 0..st.regions.len() as u32 {
            if let Some(row) = st.regions.value_mut(region).row.as_mut() {
                reset(&mut row.touch);
            }
        }
        for op in self.pending.iter_mut().flat_map(|log| log.undo.iter_mut()) {
            match op {
                Undo::Order(_, Some(order)) => reset(&mut order.touch),
                Undo::Stock(_, cell) => reset(&mut cell.touch),
                Undo::Location(_, Some(row)) => reset(&mut row.touch),
                Undo::Region(_, Some(row)) => reset(&mut row.touch),
                _ => {}
            }
        }
        self.epoch = 0;
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Looks up the SKUs, stock rows and order-index buckets of the coming
    /// commands, in stages of prefetches. The state is far larger than the
    /// caches; one order at a time, each lookup would be a chain of
    /// dependent cache misses (bucket → entry → stock rows). Here the
    /// stages run as a pipeline over windows of [`WARM_AHEAD`] commands:
    /// at the start of window k, stage 3 runs for window k + 1, stage 2 for
    /// window k + 2 and stage 1 for window k + 3, so every prefetch has a
    /// whole window of work to complete before its data is read.
    /// Only reads: a name not known yet is resolved when used.
    fn warm_window(&mut self, batch: &Batch<'_>, window: usize) {
        let n = batch.commands.len();
        let at = |k: usize| (k * WARM_AHEAD).min(n)..((k + 1) * WARM_AHEAD).min(n);
        let first = |k: usize| (k * WARM_AHEAD).min(n);
        let mut ready = std::mem::take(&mut self.warm_stage2);
        let mut next = std::mem::take(&mut self.warm_stage1);
        let mut fresh = std::mem::take(&mut self.scratch_hashes);
        if window == 0 {
            // Prime the pipeline: windows 0 and 1 (stages 1-3 and 1-2).
            self.warm_hash(batch, first(0), &batch.commands[at(0)], &mut ready);
            self.warm_candidates(&mut ready);
            self.warm_cells(batch, &ready);
            self.warm_orders(batch, at(0));
            self.warm_hash(batch, first(1), &batch.commands[at(1)], &mut ready);
            self.warm_candidates(&mut ready);
            self.warm_hash(batch, first(2), &batch.commands[at(2)], &mut next);
        }
        self.warm_cells(batch, &ready);
        self.warm_orders(batch, at(window + 1));
        self.warm_candidates(&mut next);
        self.warm_hash(
            batch,
            first(window + 3),
            &batch.commands[at(window + 3)],
            &mut fresh,
        );
        // Rotate: window k + 2 is now at stage 2, window k + 3 at stage 1.
        self.warm_stage2 = next;
        self.warm_stage1 = fresh;
        ready.clear();
        self.scratch_hashes = ready;
    }

    /// Stage 1: hash every SKU and order key (keeping the key for
    /// `create`, and for stage 3 to prefetch its bucket); prefetch the
    /// SKU's bucket.
    /// `first` is the index of `commands[0]` in the batch.
    fn warm_hash(
        &mut self,
        batch: &Batch<'_>,
        first: usize,
        commands: &[CommandIn<'_>],
        hashes: &mut Vec<(usize, u64, Option<SkuId>)>,
    ) {
        hashes.clear();
        for (index, c) in (first..).zip(commands) {
            let (creates, keys): (&[CreateIn<'_>], &mut [Option<OrderKey>]) = match &c.command {
                Command::Create(req) => (
                    std::slice::from_ref(req),
                    &mut self.command_keys[index..index + 1],
                ),
                Command::BatchCreate { requests, .. } => {
                    let items = requests.start as usize..requests.end as usize;
                    (&batch.creates[items.clone()], &mut self.item_keys[items])
                }
                _ => continue,
            };
            for (req, slot) in creates.iter().zip(keys) {
                let key = order_key(c.client_id, req.request_id);
                *slot = Some(key);
                for i in req.lines.start as usize..req.lines.end as usize {
                    let hash = name_hash(batch.lines[i].sku);
                    self.state.skus.prefetch_bucket(hash);
                    hashes.push((i, hash, None));
                }
            }
        }
    }

    /// Stage 3, for orders: prefetch the order-index bucket of each create
    /// among the commands in `range` (keys from stage 1). Prefetched at
    /// stage 1, three windows ahead, the bucket was still a miss when
    /// `create` probed it (the largest wait in `create`'s time profile);
    /// one window ahead, batches took ~8 % less time (docs/engine.md, step 26).
    fn warm_orders(&self, batch: &Batch<'_>, range: std::ops::Range<usize>) {
        for index in range {
            match &batch.commands[index].command {
                Command::Create(_) => {
                    if let Some(key) = &self.command_keys[index] {
                        self.state.orders.prefetch(key);
                    }
                }
                Command::BatchCreate { requests, .. } => {
                    for key in self.item_keys[requests.start as usize..requests.end as usize]
                        .iter()
                        .flatten()
                    {
                        self.state.orders.prefetch(key);
                    }
                }
                _ => {}
            }
        }
    }

    /// Stage 2: find the candidate entries, prefetch them.
    fn warm_candidates(&self, hashes: &mut [(usize, u64, Option<SkuId>)]) {
        for (_, hash, candidate) in hashes.iter_mut() {
            *candidate = self.state.skus.prefetch_candidate(*hash);
        }
    }

    /// Stage 3: confirm the names, prefetch the first [`WARM_ROW_LINES`]
    /// cache lines of each SKU's stock rows: the rows of the locations
    /// created first (usually the top priorities), which allocations read
    /// first. One line covered only the first row, and a location whose
    /// row was not prefetched is where `allocate` waited most once the top
    /// location ran short. Prefetching every row (five lines for eight
    /// locations) issued more prefetches than the CPU has slots for
    /// outstanding misses, and was slower in interleaved runs
    /// (docs/engine.md, Performance).
    fn warm_cells(&mut self, batch: &Batch<'_>, hashes: &[(usize, u64, Option<SkuId>)]) {
        for &(line, _, candidate) in hashes {
            let Some(sku) = candidate.filter(|&s| self.state.skus.is(s, batch.lines[line].sku))
            else {
                continue;
            };
            self.line_skus[line] = Some(sku);
            prefetch_lines(&self.state.skus.value(sku).cells, WARM_ROW_LINES);
        }
    }

    // ------------------------------------------------------------ undo

    fn revert(&mut self, op: Undo) {
        let st = &mut self.state;
        match op {
            Undo::Order(key, Some(prior)) => {
                st.orders.insert(key, *prior);
            }
            Undo::Order(key, None) => {
                st.orders.remove(&key);
            }
            Undo::Stock(sku, prior) => {
                let entry = st.skus.value_mut(sku);
                match entry.cell_mut(prior.loc) {
                    Some(cell) => *cell = prior,
                    None => entry.cells.push(prior),
                }
            }
            Undo::StockCreated(sku, loc) => {
                let entry = st.skus.value_mut(sku);
                if let Some(i) = entry.position(loc) {
                    entry.cells.remove(i);
                }
            }
            Undo::Location(loc, prior) => {
                let current_region = st.location_row(loc).map(|r| r.region);
                *st.locations.value_mut(loc) = prior;
                if let Some(r) = prior.map(|p| p.region) {
                    let ranked = &mut st.regions.value_mut(r).ranked_locs;
                    if !ranked.contains(&loc) {
                        ranked.push(loc);
                    }
                    st.rank_region_locations(r);
                }
                if let Some(r) = current_region {
                    st.rank_region_locations(r);
                }
            }
            Undo::Region(region, prior) => {
                st.regions.value_mut(region).row = prior;
            }
            Undo::ExpiryAdded(at, key) => st.expiry.remove_newest(at, key),
            Undo::Created(key, expire_at) => {
                if let Some(at) = expire_at {
                    st.expiry.remove_newest(at, key);
                }
                st.orders.remove(&key);
            }
            Undo::ExpiryTaken(due) => st.expiry.restore_due(due),
            Undo::QueueAdded(region, sku, pos) => {
                if let Some(q) = st.queues.get_mut(&(region, sku)) {
                    q.remove(&pos);
                }
            }
            Undo::QueueRemoved(region, sku, pos, key) => {
                st.queues.entry((region, sku)).or_default().insert(pos, key);
            }
        }
    }

    fn savepoint(&mut self) -> Savepoint {
        // A new epoch makes every row touched from here on record its
        // pre-savepoint image, even if the batch touched it before.
        self.epoch += 1;
        Savepoint {
            undo_len: self.log.undo.len(),
            changed_orders: self.log.changed_orders.len(),
            changed_stock: self.log.changed_stock.len(),
            changed_locations: self.log.changed_locations.len(),
            changed_regions: self.log.changed_regions.len(),
            next_queue_seq: self.state.next_queue_seq,
        }
    }

    fn revert_to(&mut self, sp: Savepoint) {
        while self.log.undo.len() > sp.undo_len {
            if let Some(op) = self.log.undo.pop() {
                self.revert(op);
            }
        }
        self.log.changed_orders.truncate(sp.changed_orders);
        self.log.changed_stock.truncate(sp.changed_stock);
        self.log.stock_values.truncate(sp.changed_stock);
        // Rows changed both before and after the savepoint are back to their
        // pre-savepoint values: refresh the recorded latest values.
        for (i, &(sku, loc)) in self.log.changed_stock.iter().enumerate() {
            if let Some(cell) = self.state.skus.value(sku).cell(loc) {
                self.log.stock_values[i] = *cell;
            }
        }
        self.log.changed_locations.truncate(sp.changed_locations);
        self.log.changed_regions.truncate(sp.changed_regions);
        self.state.next_queue_seq = sp.next_queue_seq;
    }

    /// Decides whether a row with touch `t` needs an undo image now, and
    /// where it sits in the changed list. Returns (record_undo, new touch,
    /// needs a new changed-list entry).
    fn touch_decision(&self, t: Touch, next_index: usize) -> (bool, Touch, bool) {
        if t.epoch == self.epoch {
            (false, t, false)
        } else if t.epoch >= self.log.first_epoch {
            (
                true,
                Touch {
                    epoch: self.epoch,
                    index: t.index,
                },
                false,
            )
        } else {
            (
                true,
                Touch {
                    epoch: self.epoch,
                    index: next_index as u32,
                },
                true,
            )
        }
    }

    fn touch_order(&mut self, key: OrderKey) {
        let Some(order) = self.state.orders.get(&key) else {
            return;
        };
        let (record, touch, push) = self.touch_decision(order.touch, self.log.changed_orders.len());
        if record {
            self.log
                .undo
                .push(Undo::Order(key, Some(Box::new(order.clone()))));
        }
        if push {
            self.log.changed_orders.push(key);
        }
        if let Some(order) = self.state.orders.get_mut(&key) {
            order.touch = touch;
        }
    }

    /// Changes one stock row (version + 1, created at 0 if missing) and
    /// returns it after the change. The first change since the batch start
    /// or the last savepoint records the row's undo image; the batch log
    /// keeps the row's latest value for the output rows. (The decision of
    /// [`Engine::touch_decision`], written against the row in place: this
    /// runs for every line of every created order.)
    fn write_stock(
        &mut self,
        sku: SkuId,
        loc: LocId,
        change: impl FnOnce(&mut StockCell),
    ) -> StockCell {
        write_stock_row(
            &mut self.state.skus,
            &mut self.log,
            self.epoch,
            sku,
            loc,
            change,
        )
    }

    fn touch_location(&mut self, loc: LocId) {
        let prior = *self.state.locations.value(loc);
        match prior {
            Some(row) => {
                let (record, touch, push) =
                    self.touch_decision(row.touch, self.log.changed_locations.len());
                if record {
                    self.log.undo.push(Undo::Location(loc, prior));
                }
                if push {
                    self.log.changed_locations.push(loc);
                }
                if let Some(r) = self.state.locations.value_mut(loc) {
                    r.touch = touch;
                }
            }
            None => {
                self.log.undo.push(Undo::Location(loc, None));
                self.log.changed_locations.push(loc);
            }
        }
    }

    fn touch_region(&mut self, region: RegionId) {
        let prior = self.state.regions.value(region).row;
        match prior {
            Some(row) => {
                let (record, touch, push) =
                    self.touch_decision(row.touch, self.log.changed_regions.len());
                if record {
                    self.log.undo.push(Undo::Region(region, prior));
                }
                if push {
                    self.log.changed_regions.push(region);
                }
                if let Some(r) = self.state.regions.value_mut(region).row.as_mut() {
                    r.touch = touch;
                }
            }
            None => {
                self.log.undo.push(Undo::Region(region, None));
                self.log.changed_regions.push(region);
            }
        }
    }

    /// Touch for a row created now (its changed-list index is the last one).
    fn fresh_touch(&self, list_len_after_push: usize) -> Touch {
        Touch {
            epoch: self.epoch,
            index: (list_len_after_push - 1) as u32,
        }
    }

    fn expiry_add(&mut self, at: i64, key: OrderKey) {
        self.state.expiry.add(at, key);
        self.log.undo.push(Undo::ExpiryAdded(at, key));
    }

    fn queue_add(&mut self, region: RegionId, sku: SkuId, pos: (u64, u32), key: OrderKey) {
        self.state
            .queues
            .entry((region, sku))
            .or_default()
            .insert(pos, key);
        self.log.undo.push(Undo::QueueAdded(region, sku, pos));
    }

    fn queue_remove(&mut self, region: RegionId, sku: SkuId, pos: (u64, u32)) {
        if let Some(q) = self.state.queues.get_mut(&(region, sku)) {
            if let Some(key) = q.remove(&pos) {
                self.log
                    .undo
                    .push(Undo::QueueRemoved(region, sku, pos, key));
            }
        }
    }

    // ------------------------------------------------------------ commands

    fn apply_command<'a, S: Sink>(
        &mut self,
        batch: &Batch<'a>,
        index: usize,
        command: &CommandIn<'a>,
        sink: &mut S,
    ) -> Outcome<'a> {
        let now = batch.now_ms;
        let client = command.client_id;
        let mut v = Violations::default();
        if command.command == Command::Malformed {
            // Nothing inside can be trusted, the client id included.
            v.add("request", "is not a valid protobuf message");
        } else if !command.client_id_checked {
            v.id("client_id", client, MAX_ID_LEN);
        }
        let result = match &command.command {
            Command::Malformed => v.into_result().map(|_| Outcome::OrderEvent),
            Command::Missing => {
                v.add("command", "is required");
                v.into_result().map(|_| Outcome::OrderEvent)
            }
            Command::Create(req) => {
                validate_create(&mut v, req, batch.lines_of(req));
                if let Err(e) = v.into_result() {
                    return Outcome::Error(e);
                }
                let key =
                    self.command_keys[index].unwrap_or_else(|| order_key(client, req.request_id));
                // Returned directly: the most frequent command skips the
                // Result below (a move of the whole outcome).
                return match self.create(batch, client, key, req, now, sink) {
                    CreateOutcome::Fresh(..) => Outcome::OrderEvent,
                    CreateOutcome::Replay(key) => Outcome::Replay(key),
                    CreateOutcome::Failed(e) => Outcome::Error(e),
                };
            }
            Command::BatchCreate {
                requests,
                error_policy,
            } => {
                let count = (requests.end - requests.start) as usize;
                if count > MAX_BATCH_CREATE {
                    v.add("requests", format!("at most {MAX_BATCH_CREATE} requests"));
                }
                if !(0..=2).contains(error_policy) {
                    v.add(
                        "error_policy",
                        format!("unknown error policy {error_policy}"),
                    );
                }
                match v.into_result() {
                    Err(e) => Err(e),
                    Ok(()) => {
                        let items = requests.start as usize..requests.end as usize;
                        Ok(self.batch_create(batch, client, items, *error_policy == 2, now, sink))
                    }
                }
            }
            Command::Cancel { order_id, reason } => {
                v.id("order_id", order_id, MAX_ID_LEN);
                if reason.len() > MAX_REASON_LEN {
                    v.add("reason", format!("must be at most {MAX_REASON_LEN} bytes"));
                }
                v.into_result()
                    .and_then(|_| self.cancel(order_id, reason, now, sink))
                    .map(|_| Outcome::OrderEvent)
            }
            Command::Confirm { order_id } => {
                v.id("order_id", order_id, MAX_ID_LEN);
                v.into_result()
                    .and_then(|_| self.confirm(order_id, now, sink))
                    .map(|_| Outcome::OrderEvent)
            }
            Command::Ship { order_id } => {
                v.id("order_id", order_id, MAX_ID_LEN);
                v.into_result()
                    .and_then(|_| self.ship(order_id, now, sink))
                    .map(|_| Outcome::OrderEvent)
            }
            Command::SetStock {
                sku,
                location_id,
                on_hand,
            } => {
                v.id("sku", sku, MAX_ID_LEN);
                v.id("location_id", location_id, MAX_ID_LEN);
                if !(0..=MAX_ON_HAND).contains(on_hand) {
                    v.add("on_hand", format!("must be between 0 and {MAX_ON_HAND}"));
                }
                v.into_result()
                    .and_then(|_| self.change_stock(sku, location_id, Some(*on_hand), 0, now, sink))
            }
            Command::AdjustStock {
                sku,
                location_id,
                delta,
            } => {
                v.id("sku", sku, MAX_ID_LEN);
                v.id("location_id", location_id, MAX_ID_LEN);
                if !(-MAX_ON_HAND..=MAX_ON_HAND).contains(delta) {
                    v.add(
                        "delta",
                        format!("must be between -{MAX_ON_HAND} and {MAX_ON_HAND}"),
                    );
                }
                v.into_result()
                    .and_then(|_| self.change_stock(sku, location_id, None, *delta, now, sink))
            }
            Command::UpsertLocation(location) => {
                match location {
                    None => v.add("location", "is required"),
                    Some(l) => {
                        v.id("location.location_id", l.location_id, MAX_ID_LEN);
                        v.id("location.region", l.region, MAX_REGION_LEN);
                        if !(0..=MAX_LOCATION_PRIORITY).contains(&l.priority) {
                            v.add(
                                "location.priority",
                                format!("must be between 0 and {MAX_LOCATION_PRIORITY}"),
                            );
                        }
                    }
                }
                match (v.into_result(), location) {
                    (Err(e), _) => Err(e),
                    (Ok(()), Some(l)) => self.upsert_location(l),
                    (Ok(()), None) => Err(CommandError::invalid(Vec::new())),
                }
            }
            Command::ConfigureRegion(region) => {
                match region {
                    None => v.add("region", "is required"),
                    Some(r) => {
                        v.id("region.region", r.region, MAX_REGION_LEN);
                        if !(0..=2).contains(&r.strategy) {
                            v.add(
                                "region.strategy",
                                format!("unknown allocation strategy {}", r.strategy),
                            );
                        }
                        if !(0..=MAX_RESERVATION_TTL_SECONDS).contains(&r.reservation_ttl_seconds) {
                            v.add(
                                "region.reservation_ttl_seconds",
                                format!("must be between 0 and {MAX_RESERVATION_TTL_SECONDS}"),
                            );
                        }
                    }
                }
                match (v.into_result(), region) {
                    (Err(e), _) => Err(e),
                    (Ok(()), Some(r)) => Ok(self.configure_region(r)),
                    (Ok(()), None) => Err(CommandError::invalid(Vec::new())),
                }
            }
            Command::Reconcile { region, repair } => {
                if !region.is_empty() {
                    v.id("region", region, MAX_REGION_LEN);
                }
                v.into_result()
                    .and_then(|_| self.reconcile(region, *repair, now, sink))
            }
            Command::ExpireReservations => v
                .into_result()
                .map(|_| Outcome::Expired(self.expire(now, sink))),
        };
        result.unwrap_or_else(Outcome::Error)
    }
}

/// [`Engine::write_stock`] over the fields it changes, so that a caller can
/// hold other fields of the engine (the create path's scratch plan) meanwhile.
#[inline(always)]
fn write_stock_row(
    skus: &mut crate::domain::ids::Interner<SkuEntry>,
    log: &mut BatchLog,
    epoch: u32,
    sku: SkuId,
    loc: LocId,
    change: impl FnOnce(&mut StockCell),
) -> StockCell {
    let first_epoch = log.first_epoch;
    let entry = skus.value_mut(sku);
    let position = entry.position(loc);
    let cells = &mut entry.cells;
    let (index, created) = match position {
        Some(i) => (i, false),
        None => {
            push_undo(&mut log.undo, || Undo::StockCreated(sku, loc));
            cells.push(StockCell {
                on_hand: 0,
                reserved: 0,
                version: 0,
                // Older than any batch: recorded below as new to this
                // batch, without an undo image (the record above).
                touch: Touch::default(),
                loc,
            });
            (cells.len() - 1, true)
        }
    };
    let cell = &mut cells[index];
    // The new row is built in registers and stored once. Changing the row in
    // place and then reading it back (`let after = *cell`) read 16 bytes
    // across the narrower stores just made, which the store buffer cannot
    // forward: the read waited for the stores to retire.
    let before = *cell;
    let mut after = before;
    let mut first_in_batch = false;
    if before.touch.epoch != epoch {
        if !created {
            push_undo(&mut log.undo, || Undo::Stock(sku, before));
        }
        if before.touch.epoch >= first_epoch {
            // Already in this batch's changed list.
            after.touch.epoch = epoch;
        } else {
            after.touch = Touch {
                epoch,
                index: log.changed_stock.len() as u32,
            };
            first_in_batch = true;
        }
    }
    change(&mut after);
    after.version += 1;
    *cell = after;
    if first_in_batch {
        log.changed_stock.push((sku, loc));
        log.stock_values.push(after);
    } else if let Some(v) = log.stock_values.get_mut(after.touch.index as usize) {
        *v = after;
    }
    after
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, pb};
    use pb::orders::engine::v1 as epb;
    use pb::orders::v1 as opb;
    use prost::Message;

    use epb::engine_command::Command as C;

    fn cmd(command: C) -> epb::EngineCommand {
        epb::EngineCommand {
            client_id: "client-a".to_owned(),
            command: Some(command),
        }
    }

    fn create_req(rid: &str, lines: &[(&str, i64)]) -> opb::CreateOrderRequest {
        opb::CreateOrderRequest {
            request_id: rid.to_owned(),
            customer_id: "cust-1".to_owned(),
            region: "eu".to_owned(),
            lines: lines
                .iter()
                .map(|&(sku, quantity)| opb::OrderLine {
                    sku: sku.to_owned(),
                    quantity,
                    unit_price_minor: 250,
                    currency: "EUR".to_owned(),
                })
                .collect(),
            policy: POLICY_BACKORDER,
        }
    }

    fn set_stock(sku: &str, loc: &str, on_hand: i64) -> epb::EngineCommand {
        cmd(C::SetStock(opb::SetStockRequest {
            sku: sku.to_owned(),
            location_id: loc.to_owned(),
            on_hand,
        }))
    }

    /// Applies `commands` as one batch; returns its seq and encoded result.
    fn apply(engine: &mut Engine, commands: Vec<epb::EngineCommand>) -> (u64, Vec<u8>) {
        let batch = epb::EngineBatch {
            now_unix_ms: 1_700_000_000_000,
            commands,
        };
        let out = codec::apply(engine, &batch.encode_to_vec()).expect("valid batch");
        (out.batch_seq, out.encode())
    }

    /// Batches that change the same stock rows and orders again and again,
    /// with an ALL_OR_NOTHING batch create (a savepoint) that aborts.
    fn workload(round: usize) -> Vec<epb::EngineCommand> {
        let rid = |n: usize| format!("r-{round}-{n}");
        vec![
            cmd(C::CreateOrder(create_req(
                &rid(0),
                &[("sku-a", 2), ("sku-b", 1)],
            ))),
            set_stock("sku-b", "wh-1", 3 + round as i64),
            cmd(C::BatchCreateOrders(opb::BatchCreateOrdersRequest {
                requests: vec![
                    create_req(&rid(1), &[("sku-a", 1)]),
                    create_req(&rid(2), &[("sku-b", 1_000)]),
                ],
                error_policy: 2,
            })),
            cmd(C::CreateOrder(create_req(
                &rid(3),
                &[("sku-a", 1), ("sku-c", 4)],
            ))),
            cmd(C::CancelOrder(opb::CancelOrderRequest {
                order_id: crate::domain::ids::format_order_id(order_key("client-a", &rid(0))),
                reason: String::new(),
            })),
        ]
    }

    #[test]
    fn recent_names_find_every_remembered_name_first_or_not() {
        let mut recent = RecentNames::default();
        let names: Vec<String> = (0..RECENT_NAMES + 3).map(|i| format!("n-{i}")).collect();
        for (id, name) in names.iter().enumerate() {
            assert_eq!(recent.get(name), None);
            recent.remember(name, id as u32);
            assert_eq!(recent.get(name), Some(id as u32));
        }
        // The last RECENT_NAMES names are kept (round robin), the first entry included.
        for (id, name) in names.iter().enumerate() {
            let kept = id >= names.len() - RECENT_NAMES;
            assert_eq!(recent.get(name), kept.then_some(id as u32), "{name}");
        }
        assert_eq!(recent.get("eu"), None);
    }

    #[test]
    fn renumbering_touch_epochs_changes_no_output_and_keeps_rollback_exact() {
        let setup = vec![
            cmd(C::ConfigureRegion(opb::ConfigureRegionRequest {
                region: Some(opb::Region {
                    region: "eu".to_owned(),
                    strategy: 1,
                    reservation_ttl_seconds: 0,
                }),
            })),
            cmd(C::UpsertLocation(opb::UpsertLocationRequest {
                location: Some(opb::Location {
                    location_id: "wh-1".to_owned(),
                    region: "eu".to_owned(),
                    priority: 0,
                }),
            })),
            set_stock("sku-a", "wh-1", 100),
            set_stock("sku-b", "wh-1", 5),
        ];
        let mut plain = Engine::new();
        let mut renumbered = Engine::new();
        for engine in [&mut plain, &mut renumbered] {
            let (seq, _) = apply(engine, setup.clone());
            engine.commit(seq).unwrap();
        }
        // The second batch below starts past the limit, with the first
        // one still pending.
        renumbered.epoch = EPOCH_RENUMBER_AT - 1;
        let mut seqs = Vec::new();
        for round in 0..4 {
            let (seq, expected) = apply(&mut plain, workload(round));
            let (_, got) = apply(&mut renumbered, workload(round));
            assert_eq!(got, expected, "round {round}");
            seqs.push(seq);
        }
        assert!(renumbered.epoch < 100, "renumbered: {}", renumbered.epoch);
        // Roll back across the renumbering, then replay: same again.
        for engine in [&mut plain, &mut renumbered] {
            engine.rollback(seqs[1]).unwrap();
            engine.commit(seqs[0]).unwrap();
        }
        assert_eq!(codec::snapshot(&renumbered), codec::snapshot(&plain));
        for round in 1..3 {
            let (seq, expected) = apply(&mut plain, workload(round));
            let (_, got) = apply(&mut renumbered, workload(round));
            assert_eq!(got, expected, "replayed round {round}");
            plain.commit(seq).unwrap();
            renumbered.commit(seq).unwrap();
        }
        assert_eq!(codec::snapshot(&renumbered), codec::snapshot(&plain));
        renumbered.check_invariants().unwrap();
    }
}
