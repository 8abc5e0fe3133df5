//! Creates: idempotent replays, order-id collisions, allocation (one
//! location, then line by line), backorders, and BatchCreateOrders.

use super::*;

impl Engine {
    pub(super) fn batch_create<'a, S: Sink>(
        &mut self,
        batch: &Batch<'a>,
        client: &str,
        item_range: std::ops::Range<usize>,
        all_or_nothing: bool,
        now: i64,
        sink: &mut S,
    ) -> Outcome<'a> {
        let items = &batch.creates[item_range.clone()];
        let savepoint = all_or_nothing.then(|| (self.savepoint(), sink.mark()));
        let mut outcomes = Vec::with_capacity(items.len());
        for (item, index) in items.iter().zip(item_range) {
            let mut v = Violations::default();
            validate_create(&mut v, item, batch.lines_of(item));
            let outcome = match v.into_result() {
                Err(e) => CreateOutcome::Failed(e),
                Ok(()) => {
                    let key =
                        self.item_keys[index].unwrap_or_else(|| order_key(client, item.request_id));
                    self.create(batch, client, key, item, now, sink)
                }
            };
            outcomes.push(outcome);
        }
        let failed = all_or_nothing
            && outcomes.iter().any(|o| {
                matches!(
                    o,
                    CreateOutcome::Failed(_) | CreateOutcome::Fresh(_, Status::Rejected)
                )
            });
        if let (true, Some((sp, mark))) = (failed, savepoint) {
            self.revert_to(sp);
            sink.rollback_to(mark);
        }
        let results = items
            .iter()
            .zip(outcomes)
            .map(|(item, outcome)| {
                let result = match outcome {
                    CreateOutcome::Failed(e) => Err(e),
                    CreateOutcome::Fresh(_, Status::Rejected) if failed => Err(CommandError::new(
                        CODE_FAILED_PRECONDITION,
                        "INSUFFICIENT_STOCK",
                        "insufficient stock".to_owned(),
                    )),
                    _ if failed => Err(CommandError::new(
                        CODE_ABORTED,
                        "BATCH_ABORTED",
                        "not applied: another request of the batch failed".to_owned(),
                    )),
                    CreateOutcome::Fresh(key, _) | CreateOutcome::Replay(key) => Ok(key),
                };
                ItemResult {
                    request_id: item.request_id,
                    result,
                }
            })
            .collect();
        Outcome::BatchCreate(results)
    }

    /// A validated create: replay, collision, region check, allocation.
    pub(super) fn create<S: Sink>(
        &mut self,
        batch: &Batch<'_>,
        client: &str,
        key: OrderKey,
        req: &CreateIn<'_>,
        now: i64,
        sink: &mut S,
    ) -> CreateOutcome {
        let lines = batch.lines_of(req);
        if let Some(existing) = self.state.orders.get(&key) {
            let st = &self.state;
            if st.clients.name(existing.client) != client || existing.request_id() != req.request_id
            {
                return CreateOutcome::Failed(CommandError::new(
                    CODE_ALREADY_EXISTS,
                    "ORDER_ID_COLLISION",
                    format!(
                        "order id {} is already used by another request",
                        format_order_id(key)
                    ),
                ));
            }
            return match first_body_difference(st, existing, req, lines) {
                None => CreateOutcome::Replay(key),
                Some(field) => CreateOutcome::Failed(CommandError::new(
                    CODE_ALREADY_EXISTS,
                    "REQUEST_ID_REUSED",
                    format!(
                        "request_id {} was already used with a different {field}",
                        req.request_id
                    ),
                )),
            };
        }
        let Some(region) = self
            .region_index(req.region)
            .filter(|&r| self.state.region_row(r).is_some())
        else {
            return CreateOutcome::Failed(CommandError::region_not_found(req.region));
        };
        self.state.orders.prefetch_slot_ahead(SLOT_PREFETCH_AHEAD);
        let first_line = req.lines.start as usize;
        let (status, whole_at) =
            self.allocate(region, lines, first_line, effective_policy(req.policy));
        let region_row = self.state.region_row(region).copied();
        let ttl_ms = region_row.map_or(DEFAULT_RESERVATION_TTL_SECONDS * 1000, |r| {
            r.effective_ttl_ms()
        });

        // Reserve the plan (empty unless ALLOCATED / BACKORDERED). The
        // scratch buffers are borrowed beside the fields written, not taken
        // out and put back (a store of each buffer twice per order).
        let skus = &self.scratch_skus;
        for a in &self.scratch_plan {
            let sku = skus[a.line as usize];
            write_stock_row(
                &mut self.state.skus,
                &mut self.log,
                self.epoch,
                sku,
                a.loc,
                |c| c.reserved += i64::from(a.quantity),
            );
        }

        let client_id = self.client_index(client);
        let text = OrderText::new(req.request_id, req.customer_id);
        let total: i64 = lines.iter().map(|l| l.quantity * l.unit_price_minor).sum();
        let currency = <[u8; 3]>::try_from(lines[0].currency.as_bytes()).unwrap_or(*b"XXX");
        let queue_seq = if status == Status::Backordered {
            self.state.next_queue_seq += 1;
            self.state.next_queue_seq
        } else {
            0
        };
        let backorders: ThinVec<Backorder> = if status == Status::Backordered {
            ThinVec::from(self.scratch_short.as_slice())
        } else {
            ThinVec::new()
        };
        self.log.changed_orders.push(key);
        let touch = self.fresh_touch(self.log.changed_orders.len());
        let expire_ms = (status == Status::Allocated).then_some(now + ttl_ms);
        if let Some(at) = expire_ms {
            self.state.expiry.add(at, key);
        }
        push_undo(&mut self.log.undo, || Undo::Created(key, expire_ms));
        if status == Status::Backordered {
            for i in 0..self.scratch_short.len() {
                let line = self.scratch_short[i].line;
                let sku = self.scratch_skus[line as usize];
                self.queue_add(region, sku, (queue_seq, line), key);
            }
        }
        // Absent: looked up at the top of this function. Built in its slot.
        // The order's fields, built here rather than through `Order::new`:
        // its argument struct was copied on the way (about 60 instructions
        // per order). The allocations are whole when `allocate` chose one
        // location; a plan line by line may happen to be whole too (kept
        // in the one representation of whole allocations, see `Order`).
        let whole_at = whole_at.or_else(|| {
            whole_location_of(
                lines.iter().map(|l| to_quantity(l.quantity)),
                &self.scratch_plan,
            )
        });
        let listed = match whole_at {
            None if !self.scratch_plan.is_empty() => ThinVec::from(self.scratch_plan.as_slice()),
            _ => ThinVec::new(),
        };
        let slot = self.state.orders.insert_new_with(key, || Order {
            key,
            client: client_id,
            text,
            region,
            // Filled in the slot below.
            lines: OrderLines::new(),
            currency,
            policy: req.policy,
            status,
            version: 1,
            backorders,
            total_minor: total,
            create_ms: now,
            update_ms: now,
            queue_seq,
            touch,
            listed,
            whole_loc: whole_at.unwrap_or(0),
            whole: whole_at.is_some(),
            expire_at: expire_ms.unwrap_or(0),
            has_expire: expire_ms.is_some(),
            reason: if status == Status::Rejected {
                ReasonCode::InsufficientStock
            } else {
                ReasonCode::None
            },
            reason_text: None,
        });
        // The lines are written straight into the slot. Collected first and
        // moved in with the order, they were copied through the stack with
        // 16-byte loads over the narrower stores that built them, which the
        // store buffer cannot forward (a stall per order in a time profile).
        let lines_in_slot = &mut self.state.orders.at_mut(slot).lines;
        lines_in_slot.extend(lines.iter().zip(&self.scratch_skus).map(|(l, s)| Line {
            sku: *s,
            quantity: to_quantity(l.quantity),
            unit_price_minor: l.unit_price_minor,
        }));
        debug_assert!(self.state.orders.at(slot).is_canonical());
        sink.order_event(&self.state, self.state.orders.at(slot), now);
        CreateOutcome::Fresh(key, status)
    }

    /// `clients.intern(client)`, through the recent names (inline: nearly
    /// always a hit, and the call cost as much as the lookup).
    #[inline(always)]
    fn client_index(&mut self, client: &str) -> ClientId {
        match self.recent_clients.get(client) {
            Some(id) => id,
            None => self.client_index_miss(client),
        }
    }

    #[cold]
    #[inline(never)]
    fn client_index_miss(&mut self, client: &str) -> ClientId {
        let id = self.state.clients.intern(client);
        self.recent_clients.remember(client, id);
        id
    }

    /// `regions.get(region)`, through the recent names (inline, as above).
    #[inline(always)]
    fn region_index(&mut self, region: &str) -> Option<RegionId> {
        match self.recent_regions.get(region) {
            Some(id) => Some(id),
            None => self.region_index_miss(region),
        }
    }

    #[cold]
    #[inline(never)]
    fn region_index_miss(&mut self, region: &str) -> Option<RegionId> {
        let id = self.state.regions.get(region)?;
        self.recent_regions.remember(region, id);
        Some(id)
    }

    /// Decides the allocation of a new order without changing anything:
    /// leaves the plan in `scratch_plan` (and the shortfalls of a
    /// BACKORDERED order in `scratch_short`) and returns the status, with
    /// the location when the plan is every line whole at one location.
    pub(super) fn allocate(
        &mut self,
        region: RegionId,
        lines: &[LineIn<'_>],
        first_line: usize,
        policy: i32,
    ) -> (Status, Option<LocId>) {
        // Interned up front: the order stores its SKUs whatever the outcome.
        let skus = &mut self.scratch_skus;
        skus.clear();
        for (i, line) in lines.iter().enumerate() {
            let known = self.line_skus.get(first_line + i).copied().flatten();
            skus.push(match known {
                Some(id) => id,
                None => self.state.skus.intern(line.sku),
            });
        }
        let st = &self.state;
        let plan = &mut self.scratch_plan;
        plan.clear();
        self.scratch_short.clear();
        let available = |sku: SkuId, loc: LocId| -> i64 { st.skus.value(sku).available(loc) };
        let entry = st.regions.value(region);
        let most_available = entry
            .row
            .is_some_and(|r| r.strategy == STRATEGY_MOST_AVAILABLE);

        // 1. One location that fills every line.
        let mut chosen: Option<(LocId, i64)> = None;
        for &loc in &entry.ranked_locs {
            let mut sum: i64 = 0;
            let mut fills = true;
            for (line, &sku) in lines.iter().zip(skus.iter()) {
                let a = available(sku, loc);
                if a < line.quantity {
                    fills = false;
                    break;
                }
                sum = sum.saturating_add(a);
            }
            if !fills {
                continue;
            }
            if !most_available {
                chosen = Some((loc, sum));
                break;
            }
            if chosen.map_or(true, |(_, best)| sum > best) {
                chosen = Some((loc, sum));
            }
        }
        if let Some((loc, _)) = chosen {
            plan.extend(lines.iter().enumerate().map(|(i, l)| Allocation {
                line: i as u32,
                loc,
                quantity: to_quantity(l.quantity),
            }));
            return (Status::Allocated, Some(loc));
        }
        if policy != POLICY_SPLIT && policy != POLICY_BACKORDER {
            return (Status::Rejected, None);
        }

        // 2. Line by line across locations by priority.
        for (i, (line, &sku)) in lines.iter().zip(skus.iter()).enumerate() {
            let mut remaining = line.quantity;
            for &loc in &entry.ranked_locs {
                if remaining == 0 {
                    break;
                }
                let a = available(sku, loc);
                if a <= 0 {
                    continue;
                }
                let take = remaining.min(a);
                plan.push(Allocation {
                    line: i as u32,
                    loc,
                    quantity: to_quantity(take),
                });
                remaining -= take;
            }
            if remaining > 0 {
                self.scratch_short.push(Backorder {
                    line: i as u32,
                    quantity: to_quantity(remaining),
                });
            }
        }
        let status = if self.scratch_short.is_empty() {
            Status::Allocated
        } else if policy == POLICY_BACKORDER {
            Status::Backordered
        } else {
            plan.clear();
            Status::Rejected
        };
        (status, None)
    }
}

/// A validated quantity (1..=MAX_QUANTITY_PER_LINE, or a part of one) in
/// its stored width; validation runs first, so the clamp never changes it.
fn to_quantity(v: i64) -> Quantity {
    v.clamp(0, i64::from(Quantity::MAX)) as Quantity
}

/// The first body field in which a replayed create differs from the stored
/// order, in the order customer_id, region, lines, policy.
fn first_body_difference(
    st: &State,
    order: &Order,
    req: &CreateIn<'_>,
    lines: &[LineIn<'_>],
) -> Option<&'static str> {
    if order.customer_id() != req.customer_id {
        return Some("customer_id");
    }
    if st.regions.name(order.region) != req.region {
        return Some("region");
    }
    let same_lines = order.lines.len() == lines.len()
        && order.lines.iter().zip(lines).all(|(a, b)| {
            st.skus.name(a.sku) == b.sku
                && i64::from(a.quantity) == b.quantity
                && a.unit_price_minor == b.unit_price_minor
                && order.currency_str() == b.currency
        });
    if !same_lines {
        return Some("lines");
    }
    if order.effective_policy() != effective_policy(req.policy) {
        return Some("policy");
    }
    None
}
