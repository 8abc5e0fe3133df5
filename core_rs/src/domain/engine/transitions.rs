//! Order transitions (confirm, ship, cancel, expiry) and serving the FIFO
//! backorder queues when stock is freed.

use super::*;

impl Engine {
    pub(super) fn find_order(&self, order_id: &str) -> Result<OrderKey, CommandError> {
        parse_order_id(order_id)
            .filter(|k| self.state.orders.contains_key(k))
            .ok_or_else(|| CommandError::order_not_found(order_id))
    }

    pub(super) fn check_transition(
        &self,
        key: OrderKey,
        verb: &str,
        legal: &[Status],
    ) -> Result<(), CommandError> {
        let status = self.state.orders.get(&key).map(|o| o.status);
        match status {
            Some(s) if legal.contains(&s) => Ok(()),
            Some(s) => Err(CommandError::new(
                CODE_FAILED_PRECONDITION,
                "ILLEGAL_TRANSITION",
                format!("cannot {verb} an order in status {}", s.name()),
            )),
            None => Err(CommandError::order_not_found(&format_order_id(key))),
        }
    }

    pub(super) fn emit_order<S: Sink>(&self, key: OrderKey, now: i64, sink: &mut S) {
        if let Some(order) = self.state.orders.get(&key) {
            sink.order_event(&self.state, order, now);
        }
    }

    pub(super) fn confirm<S: Sink>(
        &mut self,
        order_id: &str,
        now: i64,
        sink: &mut S,
    ) -> Result<(), CommandError> {
        let key = self.find_order(order_id)?;
        self.check_transition(key, "confirm", &[Status::Allocated])?;
        self.touch_order(key);
        // Its expiry entry goes stale (see `ExpiryIndex`).
        if let Some(o) = self.state.orders.get_mut(&key) {
            o.status = Status::Confirmed;
            o.set_expire_ms(None);
            o.version += 1;
            o.update_ms = now;
        }
        self.emit_order(key, now, sink);
        Ok(())
    }

    pub(super) fn ship<S: Sink>(
        &mut self,
        order_id: &str,
        now: i64,
        sink: &mut S,
    ) -> Result<(), CommandError> {
        let key = self.find_order(order_id)?;
        self.check_transition(key, "ship", &[Status::Confirmed])?;
        self.touch_order(key);
        let (allocations, skus) = self.allocations_with_skus(key);
        for (a, sku) in allocations.iter().zip(skus) {
            self.write_stock(sku, a.loc, |c| {
                c.on_hand -= i64::from(a.quantity);
                c.reserved -= i64::from(a.quantity);
            });
        }
        if let Some(o) = self.state.orders.get_mut(&key) {
            o.status = Status::Shipped;
            o.version += 1;
            o.update_ms = now;
        }
        self.emit_order(key, now, sink);
        Ok(())
    }

    pub(super) fn cancel<S: Sink>(
        &mut self,
        order_id: &str,
        reason: &str,
        now: i64,
        sink: &mut S,
    ) -> Result<(), CommandError> {
        let key = self.find_order(order_id)?;
        self.check_transition(
            key,
            "cancel",
            &[Status::Allocated, Status::Backordered, Status::Confirmed],
        )?;
        let reason = if reason.is_empty() {
            StatusReason::CancelledByClient
        } else {
            StatusReason::Custom(reason.into())
        };
        self.end_reservation(key, Status::Cancelled, reason, now, sink);
        Ok(())
    }

    /// Cancel or expiry: leave the queues (the expiry entry goes stale), release every
    /// allocation, emit the event, then serve backorders from what was freed.
    pub(super) fn end_reservation<S: Sink>(
        &mut self,
        key: OrderKey,
        status: Status,
        reason: StatusReason,
        now: i64,
        sink: &mut S,
    ) {
        self.touch_order(key);
        let Some(order) = self.state.orders.get(&key) else {
            return;
        };
        let (region, queue_seq) = (order.region, order.queue_seq);
        let queued: Vec<(u32, SkuId)> = order
            .backorders
            .iter()
            .map(|b| (b.line, order.lines[b.line as usize].sku))
            .collect();
        for (line, sku) in queued {
            self.queue_remove(region, sku, (queue_seq, line));
        }
        let (allocations, skus) = self.allocations_with_skus(key);
        for (a, &sku) in allocations.iter().zip(&skus) {
            self.write_stock(sku, a.loc, |c| c.reserved -= i64::from(a.quantity));
        }
        if let Some(o) = self.state.orders.get_mut(&key) {
            o.status = status;
            o.set_status_reason(reason);
            o.set_expire_ms(None);
            o.version += 1;
            o.update_ms = now;
        }
        self.emit_order(key, now, sink);
        for (a, sku) in allocations.iter().zip(skus) {
            self.serve_backorders(sku, a.loc, now, sink);
        }
    }

    pub(super) fn allocations_with_skus(&self, key: OrderKey) -> (Vec<Allocation>, Vec<SkuId>) {
        match self.state.orders.get(&key) {
            Some(o) => (
                o.allocations().collect(),
                o.allocations()
                    .map(|a| o.lines[a.line as usize].sku)
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        }
    }

    pub(super) fn expire<S: Sink>(&mut self, now: i64, sink: &mut S) -> i64 {
        let taken = self.state.expiry.take_due(now);
        // Only live entries (the order still ALLOCATED with this expire
        // time), in expiry order: by expire time, then order id.
        let mut due: Vec<(i64, OrderKey)> = taken
            .iter()
            .flat_map(|(at, keys)| keys.iter().map(move |k| (*at, *k)))
            .filter(|(at, key)| {
                self.state
                    .orders
                    .get(key)
                    .is_some_and(|o| o.status == Status::Allocated && o.expire_ms() == Some(*at))
            })
            .collect();
        due.sort_unstable();
        if !taken.is_empty() {
            self.log.undo.push(Undo::ExpiryTaken(taken));
        }
        let mut expired = 0;
        for (_, key) in due {
            let live = self
                .state
                .orders
                .get(&key)
                .is_some_and(|o| o.status == Status::Allocated);
            if !live {
                continue;
            }
            self.end_reservation(
                key,
                Status::Expired,
                StatusReason::ReservationExpired,
                now,
                sink,
            );
            expired += 1;
        }
        expired
    }

    /// Gives newly available stock of (sku, loc) to the region's FIFO queue
    /// of backordered lines for that SKU.
    pub(super) fn serve_backorders<S: Sink>(
        &mut self,
        sku: SkuId,
        loc: LocId,
        now: i64,
        sink: &mut S,
    ) {
        let Some(region) = self.state.location_row(loc).map(|r| r.region) else {
            return;
        };
        let mut served: Vec<OrderKey> = Vec::new();
        let mut cursor: Option<(u64, u32)> = None;
        loop {
            let available = self.state.skus.value(sku).available(loc);
            if available <= 0 {
                break;
            }
            let next = self.state.queues.get(&(region, sku)).and_then(|q| {
                let lower = cursor.map_or(Bound::Unbounded, Bound::Excluded);
                q.range((lower, Bound::Unbounded))
                    .next()
                    .map(|(&p, &k)| (p, k))
            });
            let Some((pos, key)) = next else {
                break;
            };
            cursor = Some(pos);
            let line = pos.1;
            let missing = self
                .state
                .orders
                .get(&key)
                .and_then(|o| o.backorders.iter().find(|b| b.line == line))
                .map_or(0, |b| b.quantity);
            if missing <= 0 {
                continue;
            }
            // At most `missing`, so it fits a Quantity.
            let take = missing.min(Quantity::try_from(available).unwrap_or(Quantity::MAX));
            self.touch_order(key);
            let mut complete = false;
            if let Some(o) = self.state.orders.get_mut(&key) {
                o.add_allocation(line, loc, take);
                if let Some(i) = o.backorders.iter().position(|b| b.line == line) {
                    o.backorders[i].quantity -= take;
                    if o.backorders[i].quantity == 0 {
                        o.backorders.remove(i);
                        complete = true;
                    }
                }
            }
            if complete {
                self.queue_remove(region, sku, pos);
            }
            self.write_stock(sku, loc, |c| c.reserved += i64::from(take));
            served.push(key);
        }
        let ttl_ms = self
            .state
            .region_row(region)
            .map_or(DEFAULT_RESERVATION_TTL_SECONDS * 1000, |r| {
                r.effective_ttl_ms()
            });
        for key in served {
            let mut expire_at = None;
            if let Some(o) = self.state.orders.get_mut(&key) {
                o.version += 1;
                o.update_ms = now;
                if o.backorders.is_empty() {
                    o.status = Status::Allocated;
                    expire_at = Some(now + ttl_ms);
                    o.set_expire_ms(expire_at);
                }
            }
            if let Some(at) = expire_at {
                self.expiry_add(at, key);
            }
            self.emit_order(key, now, sink);
        }
    }
}
