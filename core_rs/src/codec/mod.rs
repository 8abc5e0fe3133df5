//! Wire format: EngineBatch in, EngineBatchResult out, snapshots and
//! restore from persisted rows.

pub mod decode;
pub mod encode;
pub mod pb;

use prost::Message;

use crate::domain::engine::{Engine, StateError};
use crate::domain::restore::{
    build_state, snapshot_order_keys, sorted_locations, sorted_regions, sorted_stock,
    AllocationRec, BackorderRec, LineRec, LocationRec, OrderRec, QueueOrder, RegionRec, StockRec,
};
pub use decode::DecodeError;
pub use encode::BatchOutput;
use encode::{put_int, put_message, write_location, write_order, write_region, write_stock_level};
use pb::orders::engine::v1 as epb;
use pb::orders::v1 as opb;

/// Decodes `batch`, applies it and encodes everything it produced.
pub fn apply(engine: &mut Engine, batch: &[u8]) -> Result<BatchOutput, DecodeError> {
    let mut storage = None;
    let decoded = decode::decode_batch(batch, &mut storage)?;
    let mut writer = encode::ResultWriter::with_capacity(batch.len(), decoded.commands.len());
    let seq = engine.apply(&decoded, &mut writer);
    Ok(writer.finish(seq))
}

/// The whole state as an `EngineSnapshot` (no batch may be pending).
pub fn snapshot(engine: &Engine) -> Result<Vec<u8>, StateError> {
    if engine.has_pending() {
        return Err(StateError(format!(
            "cannot snapshot with pending batches {:?}: commit or roll them back first",
            engine.pending()
        )));
    }
    let st = &engine.state;
    let mut out = Vec::new();
    let mut body = Vec::new();
    put_int(&mut out, 1, engine.batch_seq() as i64);
    for region in sorted_regions(st) {
        body.clear();
        write_region(&mut body, st, region);
        put_message(&mut out, 2, &body);
    }
    for loc in sorted_locations(st) {
        body.clear();
        write_location(&mut body, st, loc);
        put_message(&mut out, 3, &body);
    }
    for (sku, loc) in sorted_stock(st) {
        body.clear();
        write_stock_level(&mut body, st, sku, loc);
        put_message(&mut out, 4, &body);
    }
    for key in snapshot_order_keys(st) {
        if let Some(o) = st.orders.get(&key) {
            body.clear();
            write_order(&mut body, st, o);
            put_message(&mut out, 5, &body);
        }
    }
    Ok(out)
}

/// An engine holding exactly the state of `snapshot`.
pub fn from_snapshot(snapshot: &[u8]) -> Result<Engine, String> {
    let s = epb::EngineSnapshot::decode(snapshot)
        .map_err(|e| format!("invalid EngineSnapshot: {e}"))?;
    let orders = s
        .orders
        .into_iter()
        .map(order_rec)
        .collect::<Result<Vec<_>, _>>()?;
    let state = build_state(
        s.regions.into_iter().map(region_rec).collect(),
        s.locations.into_iter().map(location_rec).collect(),
        s.stock.into_iter().map(stock_rec).collect(),
        orders,
        QueueOrder::AsListed,
    )?;
    Ok(Engine::with_state(state, s.batch_seq))
}

/// An engine rebuilt from persisted rows (serialised Region, Location,
/// StockLevel and Order messages).
pub fn restore(
    regions: &[&[u8]],
    locations: &[&[u8]],
    stock: &[&[u8]],
    orders: &[&[u8]],
    batch_seq: u64,
) -> Result<Engine, String> {
    fn decode_all<M: Message + Default>(rows: &[&[u8]], what: &str) -> Result<Vec<M>, String> {
        rows.iter()
            .enumerate()
            .map(|(i, b)| M::decode(*b).map_err(|e| format!("{what}[{i}]: {e}")))
            .collect()
    }
    let regions: Vec<opb::Region> = decode_all(regions, "regions")?;
    let locations: Vec<opb::Location> = decode_all(locations, "locations")?;
    let stock: Vec<opb::StockLevel> = decode_all(stock, "stock")?;
    let orders: Vec<opb::Order> = decode_all(orders, "orders")?;
    let orders = orders
        .into_iter()
        .map(order_rec)
        .collect::<Result<Vec<_>, _>>()?;
    let state = build_state(
        regions.into_iter().map(region_rec).collect(),
        locations.into_iter().map(location_rec).collect(),
        stock.into_iter().map(stock_rec).collect(),
        orders,
        QueueOrder::ByCreateTime,
    )?;
    Ok(Engine::with_state(state, batch_seq))
}

fn region_rec(r: opb::Region) -> RegionRec {
    RegionRec {
        region: r.region,
        strategy: r.strategy,
        reservation_ttl_seconds: r.reservation_ttl_seconds,
    }
}

fn location_rec(l: opb::Location) -> LocationRec {
    LocationRec {
        location_id: l.location_id,
        region: l.region,
        priority: l.priority,
    }
}

fn stock_rec(s: opb::StockLevel) -> StockRec {
    StockRec {
        sku: s.sku,
        location_id: s.location_id,
        on_hand: s.on_hand,
        reserved: s.reserved,
        version: s.version,
    }
}

fn ms(t: Option<prost_types::Timestamp>, what: &str) -> Result<Option<i64>, String> {
    match t {
        None => Ok(None),
        Some(t) => t
            .seconds
            .checked_mul(1000)
            .and_then(|s| s.checked_add(i64::from(t.nanos) / 1_000_000))
            .map(Some)
            .ok_or_else(|| format!("{what}: timestamp out of range")),
    }
}

fn order_rec(o: opb::Order) -> Result<OrderRec, String> {
    let create_ms = ms(o.create_time, &o.order_id)?.unwrap_or(0);
    let update_ms = ms(o.update_time, &o.order_id)?.unwrap_or(0);
    let expire_ms = ms(o.expire_time, &o.order_id)?;
    Ok(OrderRec {
        lines: o
            .lines
            .into_iter()
            .map(|l| LineRec {
                sku: l.sku,
                quantity: l.quantity,
                unit_price_minor: l.unit_price_minor,
                currency: l.currency,
            })
            .collect(),
        allocations: o
            .allocations
            .into_iter()
            .map(|a| AllocationRec {
                line_index: a.line_index,
                sku: a.sku,
                location_id: a.location_id,
                quantity: a.quantity,
            })
            .collect(),
        backorders: o
            .backorders
            .into_iter()
            .map(|b| BackorderRec {
                line_index: b.line_index,
                sku: b.sku,
                quantity: b.quantity,
            })
            .collect(),
        order_id: o.order_id,
        client_id: o.client_id,
        request_id: o.request_id,
        customer_id: o.customer_id,
        region: o.region,
        policy: o.policy,
        status: o.status,
        version: o.version,
        total_minor: o.total_minor,
        currency: o.currency,
        create_ms,
        update_ms,
        expire_ms,
        status_reason: o.status_reason,
    })
}
