//! Reconcile (recompute reserved from live allocations) and the invariant
//! checks used by tests and `Engine.check_invariants`.

use super::*;

impl Engine {
    pub(super) fn reconcile<'a, S: Sink>(
        &mut self,
        region_name: &str,
        repair: bool,
        now: i64,
        sink: &mut S,
    ) -> Result<Outcome<'a>, CommandError> {
        let scope = if region_name.is_empty() {
            None
        } else {
            Some(
                self.state
                    .regions
                    .get(region_name)
                    .filter(|&r| self.state.region_row(r).is_some())
                    .ok_or_else(|| CommandError::region_not_found(region_name))?,
            )
        };
        let computed = live_reservations(&self.state);
        let st = &self.state;
        let mut rows: Vec<(SkuId, LocId)> = Vec::new();
        for (sku, _, entry) in st.skus.iter() {
            for c in &entry.cells {
                let region = st.location_row(c.loc).map(|r| r.region);
                if scope.is_none() || region == scope {
                    rows.push((sku, c.loc));
                }
            }
        }
        rows.sort_by(|a, b| {
            st.skus
                .name(a.0)
                .cmp(st.skus.name(b.0))
                .then_with(|| st.locations.name(a.1).cmp(st.locations.name(b.1)))
        });
        let mut report = ReconcileReport {
            rows_checked: rows.len() as i64,
            ..ReconcileReport::default()
        };
        for (sku, loc) in rows {
            let Some(cell) = self.state.skus.value(sku).cell(loc).copied() else {
                continue;
            };
            let want = computed.get(&(sku, loc)).copied().unwrap_or(0);
            if want == cell.reserved {
                continue;
            }
            report.drifts.push(Drift {
                sku,
                loc,
                recorded_reserved: cell.reserved,
                computed_reserved: want,
            });
            if repair && want <= cell.on_hand {
                let cell = self.write_stock(sku, loc, |c| c.reserved = want);
                sink.stock_event(&self.state, sku, &cell, StockReason::Reconciled, now);
                report.repaired = true;
            }
        }
        Ok(Outcome::Reconcile(report))
    }

    /// The first broken invariant, if any (I1 and backorder-queue consistency).
    pub fn check_invariants(&self) -> Result<(), String> {
        let st = &self.state;
        let computed = live_reservations(st);
        for (sku, name, entry) in st.skus.iter() {
            for c in &entry.cells {
                let loc = st.locations.name(c.loc);
                if c.reserved < 0 || c.reserved > c.on_hand {
                    return Err(format!(
                        "I1: stock {name}@{loc}: reserved {} outside 0..=on_hand {}",
                        c.reserved, c.on_hand
                    ));
                }
                let want = computed.get(&(sku, c.loc)).copied().unwrap_or(0);
                if want != c.reserved {
                    return Err(format!(
                        "I1: stock {name}@{loc}: reserved {} but live allocations sum to {want}",
                        c.reserved
                    ));
                }
            }
        }
        for (&(sku, loc), &want) in &computed {
            if want != 0 && st.skus.value(sku).cell(loc).is_none() {
                return Err(format!(
                    "I1: live allocations of {} at {} but no stock row",
                    st.skus.name(sku),
                    st.locations.name(loc)
                ));
            }
        }
        let mut queued = 0usize;
        for (&(region, sku), queue) in &st.queues {
            for (&(seq, line), key) in queue {
                queued += 1;
                let id = format_order_id(*key);
                let Some(o) = st.orders.get(key) else {
                    return Err(format!("queue: unknown order {id}"));
                };
                let ok = o.status == Status::Backordered
                    && o.region == region
                    && o.queue_seq == seq
                    && o.lines.get(line as usize).is_some_and(|l| l.sku == sku)
                    && o.backorders
                        .iter()
                        .any(|b| b.line == line && b.quantity > 0);
                if !ok {
                    return Err(format!("queue: entry of order {id} line {line} is stale"));
                }
            }
        }
        let mut expected_queued = 0usize;
        let mut expected_expiry = 0usize;
        // Live entries: the order is ALLOCATED with that expire time (the
        // index keeps stale entries until they are due, see `ExpiryIndex`).
        let mut live_expiry_entries = 0usize;
        let mut live_expiry: rustc_hash::FxHashSet<(i64, OrderKey)> = Default::default();
        for (at, key) in st.expiry.entries() {
            let live = st
                .orders
                .get(&key)
                .is_some_and(|o| o.status == Status::Allocated && o.expire_ms() == Some(at));
            if live {
                live_expiry_entries += 1;
                live_expiry.insert((at, key));
            }
        }
        for (key, o) in st.orders.iter() {
            let id = format_order_id(*key);
            if !o.is_canonical() {
                return Err(format!(
                    "order {id}: packed fields off their representation"
                ));
            }
            let mut filled = vec![0i64; o.lines.len()];
            for a in o.allocations() {
                match filled.get_mut(a.line as usize) {
                    Some(f) => *f += i64::from(a.quantity),
                    None => return Err(format!("order {id}: allocation of unknown line")),
                }
            }
            for b in &o.backorders {
                if let Some(f) = filled.get_mut(b.line as usize) {
                    *f += i64::from(b.quantity);
                }
            }
            match o.status {
                Status::Backordered => {
                    if o.backorders.is_empty() {
                        return Err(format!("order {id}: BACKORDERED without backorders"));
                    }
                    expected_queued += o.backorders.len();
                }
                Status::Allocated => {
                    if !o.backorders.is_empty() {
                        return Err(format!("order {id}: ALLOCATED with backorders"));
                    }
                    if let Some(at) = o.expire_ms() {
                        expected_expiry += 1;
                        if !live_expiry.contains(&(at, *key)) {
                            return Err(format!("order {id}: missing from the expiry index"));
                        }
                    }
                }
                _ => {}
            }
            if matches!(
                o.status,
                Status::Allocated | Status::Backordered | Status::Confirmed | Status::Shipped
            ) && filled
                .iter()
                .zip(&o.lines)
                .any(|(f, l)| *f != i64::from(l.quantity))
            {
                return Err(format!(
                    "order {id}: allocations plus backorders differ from the lines"
                ));
            }
        }
        if queued != expected_queued {
            return Err(format!(
                "queue: {queued} entries but {expected_queued} backordered lines"
            ));
        }
        if live_expiry_entries != expected_expiry {
            return Err(format!(
                "expiry index holds {live_expiry_entries} live entries, expected {expected_expiry}"
            ));
        }
        Ok(())
    }
}

/// Sum of the live orders' allocations per (sku, location).
pub fn live_reservations(st: &State) -> FxHashMap<(SkuId, LocId), i64> {
    let mut sums: FxHashMap<(SkuId, LocId), i64> = FxHashMap::default();
    for o in st.orders.values() {
        if !o.status.is_live() {
            continue;
        }
        for a in o.allocations() {
            if let Some(line) = o.lines.get(a.line as usize) {
                *sums.entry((line.sku, a.loc)).or_insert(0) += i64::from(a.quantity);
            }
        }
    }
    sums
}
