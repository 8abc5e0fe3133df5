//! Rebuilding a state from rows (persisted rows or a snapshot), and the
//! canonical listing order used by snapshots.

use rustc_hash::FxHashSet;

use super::ids::parse_order_id;
use super::limits::MAX_QUANTITY_PER_LINE;
use super::model::*;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegionRec {
    pub region: String,
    pub strategy: i32,
    pub reservation_ttl_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocationRec {
    pub location_id: String,
    pub region: String,
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StockRec {
    pub sku: String,
    pub location_id: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LineRec {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllocationRec {
    pub line_index: i32,
    pub sku: String,
    pub location_id: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackorderRec {
    pub line_index: i32,
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrderRec {
    pub order_id: String,
    pub client_id: String,
    pub request_id: String,
    pub customer_id: String,
    pub region: String,
    pub lines: Vec<LineRec>,
    pub policy: i32,
    pub status: i32,
    pub version: i64,
    pub allocations: Vec<AllocationRec>,
    pub backorders: Vec<BackorderRec>,
    pub total_minor: i64,
    pub currency: String,
    pub create_ms: i64,
    pub update_ms: i64,
    pub expire_ms: Option<i64>,
    pub status_reason: String,
}

/// How BACKORDERED orders are put back into the FIFO queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueOrder {
    /// Persisted rows do not store the queue order: (create_time, order_id).
    ByCreateTime,
    /// A snapshot lists backordered orders in queue order.
    AsListed,
}

/// Builds a state from rows. Errors name the first inconsistent row.
pub fn build_state(
    regions: Vec<RegionRec>,
    locations: Vec<LocationRec>,
    stock: Vec<StockRec>,
    orders: Vec<OrderRec>,
    queue_order: QueueOrder,
) -> Result<State, String> {
    let mut st = State::default();
    for r in regions {
        let id = st.regions.intern(&r.region);
        let entry = st.regions.value_mut(id);
        if entry.row.is_some() {
            return Err(format!("region {} listed twice", r.region));
        }
        entry.row = Some(RegionRow {
            strategy: r.strategy,
            ttl_seconds: r.reservation_ttl_seconds,
            touch: Touch::default(),
        });
    }
    let mut touched_regions = Vec::new();
    for l in locations {
        let region = st
            .regions
            .get(&l.region)
            .filter(|&r| st.region_row(r).is_some())
            .ok_or_else(|| format!("location {}: unknown region {}", l.location_id, l.region))?;
        let loc = st.locations.intern(&l.location_id);
        if st.locations.value(loc).is_some() {
            return Err(format!("location {} listed twice", l.location_id));
        }
        *st.locations.value_mut(loc) = Some(LocationRow {
            region,
            priority: l.priority,
            touch: Touch::default(),
        });
        st.regions.value_mut(region).ranked_locs.push(loc);
        touched_regions.push(region);
    }
    touched_regions.sort_unstable();
    touched_regions.dedup();
    for r in touched_regions {
        st.rank_region_locations(r);
    }
    for s in stock {
        let loc = st
            .locations
            .get(&s.location_id)
            .filter(|&l| st.location_row(l).is_some())
            .ok_or_else(|| format!("stock {}@{}: unknown location", s.sku, s.location_id))?;
        if s.on_hand < 0 || s.reserved < 0 || s.version < 0 {
            return Err(format!("stock {}@{}: negative value", s.sku, s.location_id));
        }
        let sku = st.skus.intern(&s.sku);
        let entry = st.skus.value_mut(sku);
        if entry.cell(loc).is_some() {
            return Err(format!("stock {}@{} listed twice", s.sku, s.location_id));
        }
        entry.cells.push(StockCell {
            on_hand: s.on_hand,
            reserved: s.reserved,
            version: s.version,
            touch: Touch::default(),
            loc,
        });
    }
    let mut backordered: Vec<(i64, OrderKey)> = Vec::new();
    for rec in orders {
        let order = build_order(&mut st, rec)?;
        if order.status == Status::Backordered {
            backordered.push((order.create_ms, order.key));
        }
        if order.status == Status::Allocated {
            if let Some(at) = order.expire_ms() {
                st.expiry.add(at, order.key);
            }
        }
        let key = order.key;
        if st.orders.insert(key, order).is_some() {
            return Err(format!(
                "order {} listed twice",
                super::ids::format_order_id(key)
            ));
        }
    }
    if queue_order == QueueOrder::ByCreateTime {
        // Order ids are fixed-width hex, so comparing keys compares ids.
        backordered.sort_unstable();
    }
    for (_, key) in backordered {
        st.next_queue_seq += 1;
        let seq = st.next_queue_seq;
        let Some(order) = st.orders.get_mut(&key) else {
            continue;
        };
        order.queue_seq = seq;
        let region = order.region;
        let entries: Vec<(SkuId, u32)> = order
            .backorders
            .iter()
            .map(|b| (order.lines[b.line as usize].sku, b.line))
            .collect();
        for (sku, line) in entries {
            st.queues
                .entry((region, sku))
                .or_default()
                .insert((seq, line), key);
        }
    }
    Ok(st)
}

fn build_order(st: &mut State, rec: OrderRec) -> Result<Order, String> {
    let id = rec.order_id.clone();
    let key = parse_order_id(&rec.order_id).ok_or_else(|| format!("order {id}: malformed id"))?;
    let status =
        Status::from_i32(rec.status).ok_or_else(|| format!("order {id}: unknown status"))?;
    let region = st
        .regions
        .get(&rec.region)
        .filter(|&r| st.region_row(r).is_some())
        .ok_or_else(|| format!("order {id}: unknown region {}", rec.region))?;
    if rec.lines.is_empty() {
        return Err(format!("order {id}: no lines"));
    }
    let quantity = |q: i64| -> Result<Quantity, String> {
        if (0..=MAX_QUANTITY_PER_LINE).contains(&q) {
            Ok(q as Quantity)
        } else {
            Err(format!("order {id}: quantity {q} out of range"))
        }
    };
    let currency = <[u8; 3]>::try_from(rec.currency.as_bytes())
        .map_err(|_| format!("order {id}: malformed currency"))?;
    let mut lines = Vec::with_capacity(rec.lines.len());
    let mut seen = FxHashSet::default();
    for l in &rec.lines {
        if l.currency != rec.currency {
            return Err(format!("order {id}: lines in several currencies"));
        }
        if !seen.insert(l.sku.as_str()) {
            return Err(format!("order {id}: duplicate sku {}", l.sku));
        }
        lines.push(Line {
            sku: st.skus.intern(&l.sku),
            quantity: quantity(l.quantity)?,
            unit_price_minor: l.unit_price_minor,
        });
    }
    let line_of = |index: i32, sku: &str| -> Result<u32, String> {
        let i = usize::try_from(index).map_err(|_| format!("order {id}: bad line index"))?;
        match rec.lines.get(i) {
            Some(l) if l.sku == sku => Ok(i as u32),
            _ => Err(format!("order {id}: line {index} is not sku {sku}")),
        }
    };
    let mut allocations = Vec::with_capacity(rec.allocations.len());
    for a in &rec.allocations {
        let line = line_of(a.line_index, &a.sku)?;
        let loc = st
            .locations
            .get(&a.location_id)
            .filter(|&l| st.location_row(l).is_some())
            .ok_or_else(|| format!("order {id}: unknown location {}", a.location_id))?;
        allocations.push(Allocation {
            line,
            loc,
            quantity: quantity(a.quantity)?,
        });
    }
    let mut backorders = Vec::with_capacity(rec.backorders.len());
    for b in &rec.backorders {
        let line = line_of(b.line_index, &b.sku)?;
        if b.quantity <= 0 {
            return Err(format!("order {id}: empty backorder"));
        }
        backorders.push(Backorder {
            line,
            quantity: quantity(b.quantity)?,
        });
    }
    let client = st.clients.intern(&rec.client_id);
    let status_reason = match rec.status_reason.as_str() {
        "" => StatusReason::None,
        "INSUFFICIENT_STOCK" => StatusReason::InsufficientStock,
        "CANCELLED_BY_CLIENT" => StatusReason::CancelledByClient,
        "RESERVATION_EXPIRED" => StatusReason::ReservationExpired,
        other => StatusReason::Custom(other.into()),
    };
    Ok(Order::new(OrderInit {
        key,
        client,
        text: OrderText::new(&rec.request_id, &rec.customer_id),
        region,
        lines: lines.into_iter().collect(),
        currency,
        policy: rec.policy,
        status,
        version: rec.version,
        allocations: &allocations,
        backorders: backorders.into_iter().collect(),
        total_minor: rec.total_minor,
        create_ms: rec.create_ms,
        update_ms: rec.update_ms,
        expire_ms: rec.expire_ms,
        status_reason,
        queue_seq: 0,
        touch: Touch::default(),
    }))
}

/// Orders in snapshot order: every order that is not BACKORDERED by order id,
/// then the BACKORDERED ones in queue order (so a snapshot keeps the FIFO).
pub fn snapshot_order_keys(st: &State) -> Vec<OrderKey> {
    let mut plain: Vec<OrderKey> = Vec::with_capacity(st.orders.len());
    let mut queued: Vec<(u64, OrderKey)> = Vec::new();
    for (key, o) in st.orders.iter() {
        if o.status == Status::Backordered {
            queued.push((o.queue_seq, *key));
        } else {
            plain.push(*key);
        }
    }
    plain.sort_unstable();
    queued.sort_unstable();
    plain.extend(queued.into_iter().map(|(_, k)| k));
    plain
}

/// Regions / locations / stock rows sorted by name(s).
pub fn sorted_regions(st: &State) -> Vec<RegionId> {
    let mut v: Vec<(&str, RegionId)> = st
        .regions
        .iter()
        .filter(|(_, _, e)| e.row.is_some())
        .map(|(i, n, _)| (n, i))
        .collect();
    v.sort_unstable();
    v.into_iter().map(|(_, i)| i).collect()
}

pub fn sorted_locations(st: &State) -> Vec<LocId> {
    let mut v: Vec<(&str, LocId)> = st
        .locations
        .iter()
        .filter(|(_, _, r)| r.is_some())
        .map(|(i, n, _)| (n, i))
        .collect();
    v.sort_unstable();
    v.into_iter().map(|(_, i)| i).collect()
}

pub fn sorted_stock(st: &State) -> Vec<(SkuId, LocId)> {
    let mut v: Vec<(&str, &str, SkuId, LocId)> = Vec::new();
    for (sku, name, entry) in st.skus.iter() {
        for c in &entry.cells {
            v.push((name, st.locations.name(c.loc), sku, c.loc));
        }
    }
    v.sort_unstable();
    v.into_iter().map(|(_, _, s, l)| (s, l)).collect()
}
