//! Test helpers: build EngineBatch messages with prost, apply them through
//! the codec, decode the results with prost, and check on every batch that
//! the hand-written encoder produced canonical prost bytes.
#![allow(dead_code)]

use _engine::codec::{self, pb};
use _engine::domain::engine::Engine;
use pb::orders::engine::v1 as epb;
use pb::orders::v1 as opb;
use prost::Message;

pub use epb::command_result::Response;
pub use epb::engine_command::Command as C;

pub const CLIENT: &str = "client-a";

pub struct Harness {
    pub engine: Engine,
    pub now: i64,
    pub last: Option<codec::BatchOutput>,
}

/// Asserts that `bytes` decode as `M` and that prost re-encodes them identically.
pub fn canonical<M: Message + Default>(bytes: &[u8]) -> M {
    let m = M::decode(bytes).expect("decodes");
    assert_eq!(m.encode_to_vec(), bytes, "not canonical prost encoding");
    m
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        Harness {
            engine: Engine::new(),
            now: 1_700_000_000_000,
            last: None,
        }
    }

    /// Applies one batch, leaves it pending, checks the encodings.
    pub fn apply(&mut self, commands: Vec<epb::EngineCommand>) -> epb::EngineBatchResult {
        let batch = epb::EngineBatch {
            now_unix_ms: self.now,
            commands,
        };
        let out = codec::apply(&mut self.engine, &batch.encode_to_vec()).expect("valid batch");
        let result: epb::EngineBatchResult = canonical(&out.encode());
        // Every piece handed to Python is canonical and agrees with the whole.
        for (i, r) in out.responses.iter().enumerate() {
            let bytes = out.bytes(&r.payload);
            let cr = &result.results[i];
            assert_eq!(cr.code, r.code);
            if r.code != 0 {
                let _: opb::OrderError = canonical(bytes);
            } else {
                match &cr.response {
                    Some(Response::Order(o)) => assert_eq!(o.encode_to_vec(), bytes),
                    Some(Response::Stock(s)) => assert_eq!(s.encode_to_vec(), bytes),
                    Some(Response::BatchCreateOrders(b)) => assert_eq!(b.encode_to_vec(), bytes),
                    Some(Response::Location(l)) => assert_eq!(l.encode_to_vec(), bytes),
                    Some(Response::Region(g)) => assert_eq!(g.encode_to_vec(), bytes),
                    Some(Response::Reconcile(x)) => assert_eq!(x.encode_to_vec(), bytes),
                    Some(Response::ExpireReservations(x)) => assert_eq!(x.encode_to_vec(), bytes),
                    None => panic!("code 0 without response"),
                }
            }
        }
        for row in &out.order_rows {
            let o: opb::Order = canonical(out.bytes(&row.order));
            assert_eq!(out.text(&row.order_id), o.order_id);
            assert_eq!(out.text(&row.customer_id), o.customer_id);
            assert_eq!(row.status, o.status);
            assert_eq!(row.version, o.version);
        }
        for e in &out.events {
            let payload = out.bytes(&e.payload);
            if e.subject.starts_with("orders.v1.") {
                let ev: opb::OrderEvent = canonical(payload);
                assert_eq!(ev.event_id, out.text(&e.event_id));
                let o = ev.order.expect("order");
                assert_eq!(ev.event_id, format!("{}:{}", o.order_id, o.version));
                assert_eq!(e.subject, format!("orders.v1.{}", status_word(o.status)));
                assert_eq!(ev.r#type, o.status);
            } else {
                assert_eq!(e.subject, "inventory.v1.stock_changed");
                let ev: opb::StockEvent = canonical(payload);
                assert_eq!(ev.event_id, out.text(&e.event_id));
                let l = ev.level.expect("level");
                assert_eq!(
                    ev.event_id,
                    format!("stock:{}@{}:{}", l.sku, l.location_id, l.version)
                );
            }
        }
        let journal: epb::JournalEntry = canonical(&out.journal());
        assert_eq!(journal.events, result.events);
        // The journal is also the redo log: every changed row except orders
        // (whose final state is in their last event).
        assert_eq!(journal.changed_stock, result.changed_stock);
        assert_eq!(journal.changed_locations, result.changed_locations);
        assert_eq!(journal.changed_regions, result.changed_regions);
        self.last = Some(out);
        result
    }

    /// Applies and commits one batch.
    pub fn run(&mut self, commands: Vec<epb::EngineCommand>) -> epb::EngineBatchResult {
        let r = self.apply(commands);
        self.engine.commit(r.batch_seq).expect("commit");
        self.engine.check_invariants().expect("invariants");
        r
    }

    pub fn one(&mut self, command: epb::EngineCommand) -> epb::CommandResult {
        self.run(vec![command]).results.remove(0)
    }

    pub fn ok_order(&mut self, command: epb::EngineCommand) -> opb::Order {
        let r = self.one(command);
        match r.response {
            Some(Response::Order(o)) if r.code == 0 => o,
            _ => panic!("expected an order, got {r:?}"),
        }
    }

    pub fn err(&mut self, command: epb::EngineCommand) -> opb::OrderError {
        let r = self.one(command);
        assert_ne!(r.code, 0, "expected an error, got {r:?}");
        r.error.expect("error")
    }

    pub fn snapshot(&self) -> Vec<u8> {
        codec::snapshot(&self.engine).expect("snapshot")
    }

    pub fn stock(&mut self, sku: &str, loc: &str) -> (i64, i64) {
        let snap: epb::EngineSnapshot = canonical(&self.snapshot());
        snap.stock
            .iter()
            .find(|s| s.sku == sku && s.location_id == loc)
            .map_or((0, 0), |s| (s.on_hand, s.reserved))
    }

    /// Region `r` (PRIORITY), locations `loc` with priorities, stock per (sku, loc).
    pub fn setup(
        &mut self,
        region: &str,
        strategy: i32,
        locs: &[(&str, i32)],
        stock: &[(&str, &str, i64)],
    ) {
        let mut cmds = vec![configure_region(region, strategy, 0)];
        for (l, p) in locs {
            cmds.push(upsert_location(l, region, *p));
        }
        for (sku, l, n) in stock {
            cmds.push(set_stock(sku, l, *n));
        }
        let r = self.run(cmds);
        for c in &r.results {
            assert_eq!(c.code, 0, "{c:?}");
        }
    }
}

pub fn status_word(s: i32) -> &'static str {
    match s {
        1 => "allocated",
        2 => "backordered",
        3 => "rejected",
        4 => "confirmed",
        5 => "shipped",
        6 => "cancelled",
        7 => "expired",
        _ => "?",
    }
}

pub fn cmd(command: C) -> epb::EngineCommand {
    epb::EngineCommand {
        client_id: CLIENT.to_owned(),
        command: Some(command),
    }
}

pub fn line(sku: &str, quantity: i64) -> opb::OrderLine {
    opb::OrderLine {
        sku: sku.to_owned(),
        quantity,
        unit_price_minor: 250,
        currency: "EUR".to_owned(),
    }
}

pub fn create_req(
    rid: &str,
    region: &str,
    lines: &[(&str, i64)],
    policy: i32,
) -> opb::CreateOrderRequest {
    opb::CreateOrderRequest {
        request_id: rid.to_owned(),
        customer_id: "cust-1".to_owned(),
        region: region.to_owned(),
        lines: lines.iter().map(|(s, q)| line(s, *q)).collect(),
        policy,
    }
}

pub fn create(rid: &str, region: &str, lines: &[(&str, i64)], policy: i32) -> epb::EngineCommand {
    cmd(C::CreateOrder(create_req(rid, region, lines, policy)))
}

pub fn batch_create(reqs: Vec<opb::CreateOrderRequest>, error_policy: i32) -> epb::EngineCommand {
    cmd(C::BatchCreateOrders(opb::BatchCreateOrdersRequest {
        requests: reqs,
        error_policy,
    }))
}

pub fn configure_region(region: &str, strategy: i32, ttl: i64) -> epb::EngineCommand {
    cmd(C::ConfigureRegion(opb::ConfigureRegionRequest {
        region: Some(opb::Region {
            region: region.to_owned(),
            strategy,
            reservation_ttl_seconds: ttl,
        }),
    }))
}

pub fn upsert_location(id: &str, region: &str, priority: i32) -> epb::EngineCommand {
    cmd(C::UpsertLocation(opb::UpsertLocationRequest {
        location: Some(opb::Location {
            location_id: id.to_owned(),
            region: region.to_owned(),
            priority,
        }),
    }))
}

pub fn set_stock(sku: &str, loc: &str, on_hand: i64) -> epb::EngineCommand {
    cmd(C::SetStock(opb::SetStockRequest {
        sku: sku.to_owned(),
        location_id: loc.to_owned(),
        on_hand,
    }))
}

pub fn adjust_stock(sku: &str, loc: &str, delta: i64) -> epb::EngineCommand {
    cmd(C::AdjustStock(opb::AdjustStockRequest {
        sku: sku.to_owned(),
        location_id: loc.to_owned(),
        delta,
    }))
}

pub fn cancel(order_id: &str, reason: &str) -> epb::EngineCommand {
    cmd(C::CancelOrder(opb::CancelOrderRequest {
        order_id: order_id.to_owned(),
        reason: reason.to_owned(),
    }))
}

pub fn confirm(order_id: &str) -> epb::EngineCommand {
    cmd(C::ConfirmOrder(opb::ConfirmOrderRequest {
        order_id: order_id.to_owned(),
    }))
}

pub fn ship(order_id: &str) -> epb::EngineCommand {
    cmd(C::ShipOrder(opb::ShipOrderRequest {
        order_id: order_id.to_owned(),
    }))
}

pub fn expire() -> epb::EngineCommand {
    cmd(C::ExpireReservations(epb::ExpireReservations {}))
}

pub fn reconcile(region: &str, repair: bool) -> epb::EngineCommand {
    cmd(C::Reconcile(opb::ReconcileRequest {
        region: region.to_owned(),
        repair,
    }))
}

pub fn order_id(client: &str, rid: &str) -> String {
    _engine::domain::ids::format_order_id(_engine::domain::ids::order_key(client, rid))
}

/// (line_index, location_id, quantity) of an order's allocations.
pub fn allocs(o: &opb::Order) -> Vec<(i32, String, i64)> {
    o.allocations
        .iter()
        .map(|a| (a.line_index, a.location_id.clone(), a.quantity))
        .collect()
}

pub fn violations(e: &opb::OrderError) -> Vec<(String, String)> {
    e.field_violations
        .iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect()
}
