//! The per-batch undo log. Every mutation of the state records how to revert
//! it, so a pending batch can be rolled back exactly (pipelined commits), and
//! an ALL_OR_NOTHING batch create can be reverted to a savepoint.

use super::model::{LocId, LocationRow, Order, OrderKey, RegionId, RegionRow, SkuId, StockCell};

/// 48 bytes: the log gets a few records per created order.
#[derive(Debug, Clone)]
pub enum Undo {
    /// The order as it was before its first change since the last savepoint
    /// (`None`: it did not exist).
    Order(OrderKey, Option<Box<Order>>),
    /// The stock row (its location is in it) before its first change.
    Stock(SkuId, StockCell),
    /// The stock row was created (at 0).
    StockCreated(SkuId, LocId),
    Location(LocId, Option<LocationRow>),
    Region(RegionId, Option<RegionRow>),
    ExpiryAdded(i64, OrderKey),
    /// A created order: remove it, and its expiry entry if it has an expire
    /// time (one record for the two, written for every created order).
    Created(OrderKey, Option<i64>),
    /// Buckets taken from the expiry index by `ExpireReservations`.
    ExpiryTaken(Vec<(i64, Vec<OrderKey>)>),
    QueueAdded(RegionId, SkuId, (u64, u32)),
    QueueRemoved(RegionId, SkuId, (u64, u32), OrderKey),
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Undo>() == 48);

/// What one batch changed: its undo log and the rows it touched, in
/// first-touch order.
#[derive(Debug, Clone, Default)]
pub struct BatchLog {
    pub seq: u64,
    /// Touch epoch of the batch's start: rows touched at this epoch or later
    /// are already in the changed lists.
    pub first_epoch: u32,
    pub undo: Vec<Undo>,
    pub next_queue_seq_before: u64,
    pub changed_orders: Vec<OrderKey>,
    pub changed_stock: Vec<(SkuId, LocId)>,
    /// Latest value of each row of `changed_stock` (same index).
    pub stock_values: Vec<StockCell>,
    pub changed_locations: Vec<LocId>,
    pub changed_regions: Vec<RegionId>,
}

impl BatchLog {
    /// Empties every list, keeping the allocations.
    pub fn clear(&mut self) {
        self.undo.clear();
        self.changed_orders.clear();
        self.changed_stock.clear();
        self.stock_values.clear();
        self.changed_locations.clear();
        self.changed_regions.clear();
    }
}

/// A point inside a batch to which it can be reverted.
#[derive(Debug, Clone, Copy)]
pub struct Savepoint {
    pub undo_len: usize,
    pub changed_orders: usize,
    pub changed_stock: usize,
    pub changed_locations: usize,
    pub changed_regions: usize,
    pub next_queue_seq: u64,
}
