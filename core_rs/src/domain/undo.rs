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

/// Appends the record `make` builds to an undo log, building it in the log's
/// own memory after the capacity check.
///
/// `log.push(Undo::…)` built the 48-byte record on the stack before the
/// check, with stores of 4, 8 and 16 bytes, and then copied it with 16-byte
/// loads that straddled those stores: such a load cannot take its bytes
/// from the store buffer and waits until the stores have retired. A time
/// profile of the standard replay put about 4 % of all samples on those
/// loads, after the stock-row and created-order records of `create`.
#[inline(always)]
pub fn push_undo(log: &mut Vec<Undo>, make: impl FnOnce() -> Undo) {
    log.reserve(1);
    let len = log.len();
    log.spare_capacity_mut()[0].write(make());
    // SAFETY: `reserve(1)` left room for one more record, and the slot at
    // `len` (the first spare one) was initialised just above.
    unsafe { log.set_len(len + 1) };
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Records land in order whether the log has spare room or must grow
    /// first (a full log, and one that never had memory).
    #[test]
    fn push_undo_appends_in_order_through_growth() {
        let mut log: Vec<Undo> = Vec::new();
        for i in 0..100u32 {
            if i % 7 == 0 {
                log.shrink_to_fit(); // len == capacity: the next push must grow.
            }
            push_undo(&mut log, || Undo::StockCreated(i, i + 1));
        }
        assert_eq!(log.len(), 100);
        for (i, op) in (0u32..).zip(&log) {
            assert!(matches!(op, Undo::StockCreated(s, l) if *s == i && *l == i + 1));
        }
    }
}
