//! One test (or a few) per rule of docs/engine.md, end to end through the codec.

mod common;

use _engine::codec::{self, pb};
use common::*;
use pb::orders::engine::v1 as epb;
use pb::orders::v1 as opb;
use prost::Message;

const PRIORITY: i32 = 1;
const MOST_AVAILABLE: i32 = 2;
const SINGLE: i32 = 1;
const SPLIT: i32 = 2;
const BACKORDER: i32 = 3;

fn two_locations(h: &mut Harness, strategy: i32) {
    h.setup(
        "eu",
        strategy,
        &[("wh-b", 1), ("wh-a", 2)],
        &[
            ("sku-1", "wh-b", 5),
            ("sku-2", "wh-b", 1),
            ("sku-1", "wh-a", 10),
            ("sku-2", "wh-a", 10),
        ],
    );
}

// ------------------------------------------------------------ validation

#[test]
fn create_reports_every_violation_in_spec_order() {
    let mut h = Harness::new();
    let mut req = create_req("", "eu", &[], 9);
    req.customer_id = "bad id".into();
    req.region = "r".repeat(33);
    req.lines = vec![
        opb::OrderLine {
            sku: "s1".into(),
            quantity: 0,
            unit_price_minor: -1,
            currency: "usd".into(),
        },
        opb::OrderLine {
            sku: "s1".into(),
            quantity: 1,
            unit_price_minor: 1,
            currency: "USD".into(),
        },
        opb::OrderLine {
            sku: "s3".into(),
            quantity: 1,
            unit_price_minor: 1,
            currency: "EUR".into(),
        },
    ];
    let e = h.err(cmd(C::CreateOrder(req)));
    assert_eq!(e.code, 3);
    assert_eq!(e.reason, "INVALID_REQUEST");
    let v = violations(&e);
    let fields: Vec<&str> = v.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "request_id",
            "customer_id",
            "region",
            "lines[0].quantity",
            "lines[0].unit_price_minor",
            "lines[0].currency",
            "lines[1].sku",
            "lines[1].currency",
            "lines[2].currency",
            "policy",
        ]
    );
    assert_eq!(v[0].1, "is required");
    assert_eq!(v[2].1, "must be at most 32 bytes");
    assert_eq!(v[6].1, "duplicate sku, first at lines[0]");
    // Literal reading: lines[0]'s own currency is invalid, every valid one differs.
    assert_eq!(v[7].1, "all lines must use the currency of lines[0] (usd)");
    assert_eq!(v[9].1, "unknown allocation policy 9");
    assert!(e
        .message
        .starts_with("invalid request: request_id: is required; "));
}

#[test]
fn line_count_and_total_limits() {
    let mut h = Harness::new();
    let e = h.err(create("r1", "eu", &[], 0));
    assert_eq!(
        violations(&e),
        [("lines".into(), "at least one line is required".into())]
    );
    let many: Vec<(String, i64)> = (0..101).map(|i| (format!("s{i}"), 1)).collect();
    let many: Vec<(&str, i64)> = many.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    let e = h.err(create("r1", "eu", &many, 0));
    assert_eq!(
        violations(&e),
        [("lines".into(), "at most 100 lines".into())]
    );
    let mut req = create_req("r1", "eu", &[("a", 100_000), ("b", 100_000)], 0);
    for l in &mut req.lines {
        l.unit_price_minor = 1_000_000_000_000;
    }
    let e = h.err(cmd(C::CreateOrder(req)));
    assert_eq!(
        violations(&e),
        [(
            "lines".into(),
            "order total exceeds 1000000000000000 minor units".into()
        )]
    );
}

#[test]
fn other_commands_validate_their_fields() {
    let mut h = Harness::new();
    let mut c = set_stock("s", "l", -1);
    c.client_id = String::new();
    let e = h.err(c);
    assert_eq!(
        violations(&e)
            .iter()
            .map(|v| v.0.as_str())
            .collect::<Vec<_>>(),
        ["client_id", "on_hand"]
    );
    let e = h.err(adjust_stock("", "l", 1_000_000_000_001));
    assert_eq!(
        violations(&e)
            .iter()
            .map(|v| v.0.as_str())
            .collect::<Vec<_>>(),
        ["sku", "delta"]
    );
    let e = h.err(cancel("o-1", &"x".repeat(257)));
    assert_eq!(violations(&e)[0].0, "reason");
    let e = h.err(upsert_location("l 1", "", 1_000_001));
    assert_eq!(
        violations(&e)
            .iter()
            .map(|v| v.0.as_str())
            .collect::<Vec<_>>(),
        [
            "location.location_id",
            "location.region",
            "location.priority"
        ]
    );
    let e = h.err(configure_region("eu", 3, 604_801));
    assert_eq!(
        violations(&e)
            .iter()
            .map(|v| v.0.as_str())
            .collect::<Vec<_>>(),
        ["region.strategy", "region.reservation_ttl_seconds"]
    );
    let e = h.err(cmd(C::UpsertLocation(opb::UpsertLocationRequest {
        location: None,
    })));
    assert_eq!(violations(&e)[0], ("location".into(), "is required".into()));
    let e = h.err(epb::EngineCommand {
        client_id: CLIENT.into(),
        command: None,
    });
    assert_eq!(violations(&e)[0], ("command".into(), "is required".into()));
    let e = h.err(confirm(""));
    assert_eq!(violations(&e)[0].0, "order_id");
    let e = h.err(reconcile("bad region", false));
    assert_eq!(violations(&e)[0].0, "region");
}

#[test]
fn invalid_requests_change_nothing_and_are_not_stored() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    let before = h.snapshot();
    let r = h.run(vec![create("r1", "eu", &[("sku-1", 0)], 0)]);
    assert_eq!(r.results[0].code, 3);
    assert!(r.changed_orders.is_empty() && r.changed_stock.is_empty() && r.events.is_empty());
    assert_eq!(h.snapshot()[2..], before[2..]); // only batch_seq differs
                                                // Same request id, now valid: a fresh order, not a replay.
    let o = h.ok_order(create("r1", "eu", &[("sku-1", 1)], 0));
    assert_eq!(o.version, 1);
}

#[test]
fn a_malformed_command_fails_alone_and_the_rest_of_the_batch_applies() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    let good = create("r1", "eu", &[("sku-1", 1)], 0).encode_to_vec();
    // A command whose create_order field holds bytes that are not a message.
    let mut garbage = Vec::new();
    prost::encoding::string::encode(1, &CLIENT.to_string(), &mut garbage);
    prost::encoding::bytes::encode(10, &vec![0xffu8, 0xff, 0xff, 0xff, 0x0f], &mut garbage);
    let mut batch = Vec::new();
    prost::encoding::int64::encode(1, &h.now, &mut batch);
    for command in [&good, &garbage, &good] {
        prost::encoding::bytes::encode(2, command, &mut batch);
    }
    let out = _engine::codec::apply(&mut h.engine, &batch).expect("the framing is valid");
    let result: epb::EngineBatchResult = canonical(&out.encode());
    assert_eq!(
        result.results.iter().map(|r| r.code).collect::<Vec<_>>(),
        vec![0, 3, 0]
    );
    let error = result.results[1].error.clone().expect("error");
    assert_eq!(error.field_violations[0].field, "request");
    assert!(
        result.results[2].replayed,
        "the third command replays the first"
    );
    // Broken framing is still a decode error for the whole batch.
    assert!(_engine::codec::apply(&mut h.engine, &batch[..batch.len() - 3]).is_err());
}

// ------------------------------------------------------------ allocation

#[test]
fn priority_picks_the_first_location_that_fills_every_line() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    // wh-b (priority 1) fills sku-1 x5 but not sku-2 x2: wh-a gets everything.
    let o = h.ok_order(create("r1", "eu", &[("sku-1", 5), ("sku-2", 2)], 0));
    assert_eq!(o.status, 1);
    assert_eq!(allocs(&o), [(0, "wh-a".into(), 5), (1, "wh-a".into(), 2)]);
    assert_eq!(o.total_minor, 7 * 250);
    assert_eq!(o.currency, "EUR");
    let exp = o.expire_time.expect("expire_time");
    assert_eq!(exp.seconds * 1000, h.now + 900_000);
    let o = h.ok_order(create("r2", "eu", &[("sku-1", 5)], 0));
    assert_eq!(allocs(&o), [(0, "wh-b".into(), 5)]);
    assert_eq!(h.stock("sku-1", "wh-b"), (5, 5));
    assert_eq!(h.stock("sku-1", "wh-a"), (10, 5));
}

#[test]
fn priority_ties_break_on_location_id() {
    let mut h = Harness::new();
    h.setup(
        "eu",
        PRIORITY,
        &[("z", 1), ("a", 1)],
        &[("s", "z", 5), ("s", "a", 5)],
    );
    let o = h.ok_order(create("r1", "eu", &[("s", 1)], 0));
    assert_eq!(allocs(&o), [(0, "a".into(), 1)]);
}

#[test]
fn most_available_ranks_by_summed_availability() {
    let mut h = Harness::new();
    h.setup(
        "eu",
        MOST_AVAILABLE,
        &[("p1", 1), ("p2", 2), ("p3", 2)],
        &[
            ("s", "p1", 3),
            ("s", "p2", 9),
            ("s", "p3", 9),
            ("t", "p1", 3),
            ("t", "p2", 1),
            ("t", "p3", 1),
        ],
    );
    // Sums: p1 = 6, p2 = 10, p3 = 10 → p2 (priority tie → id).
    let o = h.ok_order(create("r1", "eu", &[("s", 1), ("t", 1)], 0));
    assert_eq!(allocs(&o), [(0, "p2".into(), 1), (1, "p2".into(), 1)]);
}

#[test]
fn split_fills_line_by_line_by_priority() {
    let mut h = Harness::new();
    two_locations(&mut h, MOST_AVAILABLE);
    let o = h.ok_order(create("r1", "eu", &[("sku-1", 12)], SPLIT));
    assert_eq!(o.status, 1);
    assert_eq!(allocs(&o), [(0, "wh-b".into(), 5), (0, "wh-a".into(), 7)]);
}

#[test]
fn split_that_cannot_fill_is_rejected_without_stock_change() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    let before = h.stock("sku-1", "wh-a");
    let r = h.run(vec![create("r1", "eu", &[("sku-1", 16)], SPLIT)]);
    let o = match &r.results[0].response {
        Some(Response::Order(o)) => o.clone(),
        _ => panic!(),
    };
    assert_eq!(o.status, 3);
    assert_eq!(o.status_reason, "INSUFFICIENT_STOCK");
    assert!(o.allocations.is_empty() && o.expire_time.is_none());
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].subject, "orders.v1.rejected");
    assert!(r.changed_stock.is_empty());
    assert_eq!(h.stock("sku-1", "wh-a"), before);
}

#[test]
fn single_location_rejection_is_stored_and_replayed() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    let o = h.ok_order(create("r1", "eu", &[("sku-1", 12)], SINGLE));
    assert_eq!((o.status, o.version), (3, 1));
    h.now += 1000;
    let r = h.one(create("r1", "eu", &[("sku-1", 12)], 0));
    assert!(r.replayed);
    assert_eq!(r.response, Some(Response::Order(o)));
}

#[test]
fn backorder_reserves_what_exists_and_queues_the_rest() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    let o = h.ok_order(create(
        "r1",
        "eu",
        &[("sku-2", 14), ("sku-1", 3)],
        BACKORDER,
    ));
    assert_eq!(o.status, 2);
    assert!(o.expire_time.is_none());
    assert_eq!(
        allocs(&o),
        [
            (0, "wh-b".into(), 1),
            (0, "wh-a".into(), 10),
            (1, "wh-b".into(), 3)
        ]
    );
    assert_eq!(o.backorders.len(), 1);
    assert_eq!(
        (
            o.backorders[0].line_index,
            o.backorders[0].sku.as_str(),
            o.backorders[0].quantity
        ),
        (0, "sku-2", 3)
    );
    // Nothing available at all: everything backordered.
    let o2 = h.ok_order(create("r2", "eu", &[("sku-2", 2)], BACKORDER));
    assert_eq!(o2.status, 2);
    assert!(o2.allocations.is_empty());

    // Restock at wh-a: FIFO — r1 takes 3 (complete), r2 takes 1 (still short).
    h.now += 5_000;
    let r = h.run(vec![adjust_stock("sku-2", "wh-a", 4)]);
    let subjects: Vec<&str> = r.events.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "inventory.v1.stock_changed",
            "orders.v1.allocated",
            "orders.v1.backordered"
        ]
    );
    let ev = opb::StockEvent::decode(&*r.events[0].payload).unwrap();
    let level = ev.level.unwrap();
    assert_eq!((level.on_hand, level.reserved, level.version), (14, 10, 3));
    let after = match &r.results[0].response {
        Some(Response::Stock(s)) => s.clone(),
        _ => panic!(),
    };
    assert_eq!(
        (
            after.on_hand,
            after.reserved,
            after.available,
            after.version
        ),
        (14, 14, 0, 5)
    );
    let o1 = opb::OrderEvent::decode(&*r.events[1].payload)
        .unwrap()
        .order
        .unwrap();
    assert_eq!((o1.status, o1.version), (1, 2));
    assert!(o1.backorders.is_empty());
    assert_eq!(allocs(&o1)[1], (0, "wh-a".into(), 13));
    assert_eq!(o1.expire_time.unwrap().seconds * 1000, h.now + 900_000);
    let o2 = opb::OrderEvent::decode(&*r.events[2].payload)
        .unwrap()
        .order
        .unwrap();
    assert_eq!(
        (o2.status, o2.version, o2.backorders[0].quantity),
        (2, 2, 1)
    );
    assert_eq!(r.changed_orders.len(), 2);
}

#[test]
fn backorder_allocation_appended_in_line_order() {
    let mut h = Harness::new();
    h.setup(
        "eu",
        PRIORITY,
        &[("a", 1), ("b", 2)],
        &[("x", "a", 1), ("y", "a", 1)],
    );
    let o = h.ok_order(create("r1", "eu", &[("x", 2), ("y", 1)], BACKORDER));
    assert_eq!(allocs(&o), [(0, "a".into(), 1), (1, "a".into(), 1)]);
    let r = h.run(vec![set_stock("x", "b", 1)]);
    let o = opb::OrderEvent::decode(&*r.events[1].payload)
        .unwrap()
        .order
        .unwrap();
    assert_eq!(
        allocs(&o),
        [(0, "a".into(), 1), (0, "b".into(), 1), (1, "a".into(), 1)]
    );
}

#[test]
fn unknown_region_is_failed_precondition_and_not_stored() {
    let mut h = Harness::new();
    let e = h.err(create("r1", "nowhere", &[("s", 1)], 0));
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (9, "REGION_NOT_FOUND", "region nowhere not found")
    );
    assert!(h.snapshot().len() < 8);
}

// ------------------------------------------------------------ transitions

#[test]
fn confirm_ship_and_their_stock_effects() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    let id = h.ok_order(create("r1", "eu", &[("sku-1", 2)], 0)).order_id;
    let e = h.err(ship(&id));
    assert_eq!((e.code, e.reason.as_str()), (9, "ILLEGAL_TRANSITION"));
    assert_eq!(e.message, "cannot ship an order in status ALLOCATED");
    let o = h.ok_order(confirm(&id));
    assert_eq!((o.status, o.version), (4, 2));
    assert!(o.expire_time.is_none());
    let o = h.ok_order(ship(&id));
    assert_eq!((o.status, o.version), (5, 3));
    assert_eq!(h.stock("sku-1", "wh-b"), (3, 0));
    for c in [confirm(&id), ship(&id), cancel(&id, "")] {
        let e = h.err(c);
        assert_eq!(e.reason, "ILLEGAL_TRANSITION");
        assert!(e.message.ends_with("in status SHIPPED"), "{}", e.message);
    }
    let e = h.err(confirm("o-00000000000000000000000000000000"));
    assert_eq!((e.code, e.reason.as_str()), (5, "ORDER_NOT_FOUND"));
    let e = h.err(confirm("nope"));
    assert_eq!(e.message, "order nope not found");
}

#[test]
fn cancel_releases_and_serves_backorders() {
    let mut h = Harness::new();
    h.setup("eu", PRIORITY, &[("a", 1)], &[("s", "a", 3)]);
    let first = h.ok_order(create("r1", "eu", &[("s", 3)], 0)).order_id;
    let waiting = h
        .ok_order(create("r2", "eu", &[("s", 2)], BACKORDER))
        .order_id;
    let o = h.ok_order(confirm(&first));
    assert_eq!(o.status, 4);
    let r = h.run(vec![cancel(&first, "")]);
    let subjects: Vec<&str> = r.events.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects, ["orders.v1.cancelled", "orders.v1.allocated"]);
    let cancelled = match &r.results[0].response {
        Some(Response::Order(o)) => o.clone(),
        _ => panic!(),
    };
    assert_eq!(cancelled.status_reason, "CANCELLED_BY_CLIENT");
    assert_eq!(allocs(&cancelled), [(0, "a".into(), 3)]); // kept as history
    assert_eq!(r.changed_orders[1].order_id, waiting);
    assert_eq!(h.stock("s", "a"), (3, 2));
    // Cancel a BACKORDERED order: it leaves the queue.
    let third = h.ok_order(create("r3", "eu", &[("s", 5)], BACKORDER));
    assert_eq!(allocs(&third), [(0, "a".into(), 1)]);
    let o = h.ok_order(cancel(&third.order_id, "customer changed mind"));
    assert_eq!(
        (o.status, o.status_reason.as_str()),
        (6, "customer changed mind")
    );
    let r = h.run(vec![adjust_stock("s", "a", 10)]);
    assert_eq!(r.events.len(), 1, "nobody waits any more");
}

#[test]
fn expiry_releases_in_expire_time_order_and_serves_backorders() {
    let mut h = Harness::new();
    h.setup("eu", PRIORITY, &[("a", 1)], &[("s", "a", 2)]);
    h.run(vec![configure_region("eu", PRIORITY, 60)]);
    let a = h.ok_order(create("r1", "eu", &[("s", 1)], 0)).order_id;
    h.now += 1_000;
    let b = h.ok_order(create("r2", "eu", &[("s", 1)], 0)).order_id;
    let w = h
        .ok_order(create("r3", "eu", &[("s", 1)], BACKORDER))
        .order_id;
    h.now += 59_500; // a due (at +60 s), b not yet (at +61 s)
    let r = h.run(vec![expire()]);
    match &r.results[0].response {
        Some(Response::ExpireReservations(x)) => assert_eq!(x.expired, 1),
        _ => panic!(),
    }
    let subjects: Vec<&str> = r.events.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects, ["orders.v1.expired", "orders.v1.allocated"]);
    assert_eq!(r.changed_orders[0].order_id, a);
    assert_eq!(r.changed_orders[0].status_reason, "RESERVATION_EXPIRED");
    assert!(r.changed_orders[0].expire_time.is_none());
    assert_eq!(r.changed_orders[1].order_id, w);
    // b is past due now, but nothing expired it: confirm succeeds.
    h.now += 10_000;
    let o = h.ok_order(confirm(&b));
    assert_eq!(o.status, 4);
    let r = h.run(vec![expire()]);
    match &r.results[0].response {
        Some(Response::ExpireReservations(x)) => assert_eq!(x.expired, 0),
        _ => panic!(),
    }
}

#[test]
fn expiry_orders_by_time_then_order_id() {
    let mut h = Harness::new();
    h.setup("eu", PRIORITY, &[("a", 1)], &[("s", "a", 10)]);
    let ids: Vec<String> = (0..5)
        .map(|i| {
            h.ok_order(create(&format!("r{i}"), "eu", &[("s", 1)], 0))
                .order_id
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    h.now += 900_000;
    let r = h.run(vec![expire()]);
    let got: Vec<String> = r
        .changed_orders
        .iter()
        .map(|o| o.order_id.clone())
        .collect();
    assert_eq!(got, sorted);
}

#[test]
fn expiry_skips_cancelled_orders_and_handles_expire_times_out_of_order() {
    // Two regions with different TTLs, created interleaved: expire times do
    // not grow with creation order. Cancelled orders leave their expiry
    // entries behind (see ExpiryIndex); they must never expire.
    let mut h = Harness::new();
    h.setup("eu", PRIORITY, &[("a", 1)], &[("s", "a", 100)]);
    h.setup("us", PRIORITY, &[("u", 1)], &[("s", "u", 100)]);
    h.run(vec![
        configure_region("eu", PRIORITY, 60),
        configure_region("us", PRIORITY, 30),
    ]);
    let mut eu = Vec::new();
    let mut us = Vec::new();
    for i in 0..4 {
        eu.push(
            h.ok_order(create(&format!("e{i}"), "eu", &[("s", 1)], 0))
                .order_id,
        );
        us.push(
            h.ok_order(create(&format!("u{i}"), "us", &[("s", 1)], 0))
                .order_id,
        );
        h.now += 1_000;
    }
    h.run(vec![cancel(&us[1], ""), cancel(&eu[2], "")]);
    h.engine.check_invariants().unwrap();
    let expired_ids = |h: &mut Harness, at: i64| -> Vec<String> {
        h.now = at;
        let r = h.run(vec![expire()]);
        h.engine.check_invariants().unwrap();
        r.changed_orders
            .iter()
            .map(|o| o.order_id.clone())
            .collect()
    };
    let t0 = h.now - 4_000;
    // At t0 + 32 s the "us" orders created at t0 + 0, 1, 2 s are due (u1 is cancelled).
    assert_eq!(
        expired_ids(&mut h, t0 + 32_000),
        [us[0].clone(), us[2].clone()]
    );
    // At t0 + 61 s: u3 (at t0 + 33 s) first, then e0 and e1 (e2 is cancelled).
    assert_eq!(
        expired_ids(&mut h, t0 + 61_000),
        [us[3].clone(), eu[0].clone(), eu[1].clone()]
    );
    assert_eq!(expired_ids(&mut h, t0 + 100_000), [eu[3].clone()]);
    assert!(expired_ids(&mut h, t0 + 200_000).is_empty());
}

// ------------------------------------------------------------ idempotency

#[test]
fn order_id_is_xxh3_of_client_and_request() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    let o = h.ok_order(create("req-1", "eu", &[("sku-1", 1)], 0));
    let expected = xxhash_rust::xxh3::xxh3_128(b"client-a\x00req-1");
    assert_eq!(o.order_id, format!("o-{expected:032x}"));
    assert_eq!(o.client_id, CLIENT);
}

#[test]
fn replay_returns_the_order_as_it_is_now() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    let o = h.ok_order(create("r1", "eu", &[("sku-1", 1)], 0));
    let confirmed = h.ok_order(confirm(&o.order_id));
    let r = h.run(vec![create("r1", "eu", &[("sku-1", 1)], SINGLE)]);
    assert!(r.results[0].replayed);
    assert_eq!(r.results[0].response, Some(Response::Order(confirmed)));
    assert!(r.changed_orders.is_empty() && r.events.is_empty() && r.changed_stock.is_empty());
}

#[test]
fn reused_request_id_names_the_first_differing_field() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    h.ok_order(create("r1", "eu", &[("sku-1", 1)], 0));
    let e = h.err(create("r1", "eu", &[("sku-1", 2)], 0));
    assert_eq!((e.code, e.reason.as_str()), (6, "REQUEST_ID_REUSED"));
    assert_eq!(
        e.message,
        "request_id r1 was already used with a different lines"
    );
    let e = h.err(create("r1", "eu", &[("sku-1", 1)], SPLIT));
    assert!(e.message.ends_with("different policy"));
    let mut req = create_req("r1", "eu", &[("sku-1", 1)], 0);
    req.customer_id = "other".into();
    let e = h.err(cmd(C::CreateOrder(req)));
    assert!(e.message.ends_with("different customer_id"));
    // Validation first: an invalid body with a known request id.
    let e = h.err(create("r1", "eu", &[("sku-1", 0)], 0));
    assert_eq!(e.code, 3);
    // Another client with the same request id is another order.
    let mut c = create("r1", "eu", &[("sku-1", 1)], 0);
    c.client_id = "client-b".into();
    let o = h.ok_order(c);
    assert_eq!(o.order_id, order_id("client-b", "r1"));
}

// ------------------------------------------------------------ batch create

#[test]
fn batch_create_each_applies_items_independently() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    let r = h.one(batch_create(
        vec![
            create_req("b1", "eu", &[("sku-1", 1)], 0),
            create_req("b2", "eu", &[("sku-1", 0)], 0),
            create_req("b3", "eu", &[("sku-1", 100)], 0),
        ],
        0,
    ));
    assert_eq!(r.code, 0);
    let Some(Response::BatchCreateOrders(b)) = r.response else {
        panic!()
    };
    use opb::create_order_result::Outcome;
    assert!(matches!(&b.results[0].outcome, Some(Outcome::Order(o)) if o.status == 1));
    match &b.results[1].outcome {
        Some(Outcome::Error(e)) => {
            assert_eq!(e.code, 3);
            assert_eq!(e.field_violations[0].field, "lines[0].quantity");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&b.results[2].outcome, Some(Outcome::Order(o)) if o.status == 3));
    assert_eq!(b.results[1].request_id, "b2");
}

#[test]
fn batch_create_all_or_nothing_changes_nothing_on_failure() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    h.ok_order(create("old", "eu", &[("sku-1", 1)], 0));
    let before = h.snapshot();
    let r = h.run(vec![batch_create(
        vec![
            create_req("b1", "eu", &[("sku-1", 1)], 0),
            create_req("old", "eu", &[("sku-1", 1)], 0),
            create_req("b3", "eu", &[("sku-1", 100)], 0),
            create_req("b4", "mars", &[("sku-1", 1)], 0),
        ],
        2,
    )]);
    assert!(r.changed_orders.is_empty() && r.changed_stock.is_empty() && r.events.is_empty());
    let Some(Response::BatchCreateOrders(b)) = &r.results[0].response else {
        panic!()
    };
    use opb::create_order_result::Outcome;
    let codes: Vec<(i32, String)> = b
        .results
        .iter()
        .map(|x| match &x.outcome {
            Some(Outcome::Error(e)) => (e.code, e.reason.clone()),
            _ => (0, String::new()),
        })
        .collect();
    assert_eq!(
        codes,
        [
            (10, "BATCH_ABORTED".into()),
            (10, "BATCH_ABORTED".into()),
            (9, "INSUFFICIENT_STOCK".into()),
            (9, "REGION_NOT_FOUND".into())
        ]
    );
    assert_eq!(h.snapshot()[2..], before[2..]);
    // All fine: everything applied.
    let r = h.run(vec![batch_create(
        vec![
            create_req("b1", "eu", &[("sku-1", 1)], 0),
            create_req("old", "eu", &[("sku-1", 1)], 0),
        ],
        2,
    )]);
    assert_eq!(r.changed_orders.len(), 1);
    assert_eq!(r.events.len(), 1);
}

#[test]
fn all_or_nothing_after_earlier_commands_of_the_same_batch() {
    // A stock row touched earlier in the batch and again by an aborted
    // batch create must come back to its earlier value.
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    let r = h.run(vec![
        create("x1", "eu", &[("sku-1", 1)], 0),
        batch_create(
            vec![
                create_req("b1", "eu", &[("sku-1", 2)], 0),
                create_req("b2", "eu", &[("sku-1", 99)], 0),
            ],
            2,
        ),
    ]);
    assert_eq!(r.changed_stock.len(), 1);
    assert_eq!(r.changed_stock[0].reserved, 1);
    assert_eq!(h.stock("sku-1", "wh-b"), (5, 1));
}

#[test]
fn changed_stock_rows_name_their_sku_and_location() {
    // Names of several lengths (the encoder copies short names with small
    // loads and longer ones whole), in one batch, with the rows' texts
    // packed together in the output arena.
    let long_sku = "sku-".to_string() + &"l".repeat(40);
    let long_loc = "warehouse-".to_string() + &"w".repeat(30);
    let mut h = Harness::new();
    h.setup(
        "eu",
        PRIORITY,
        &[("w", 1), (long_loc.as_str(), 2)],
        &[
            ("s", "w", 0),
            ("s", long_loc.as_str(), 5),
            (long_sku.as_str(), "w", 5),
        ],
    );
    let r = h.run(vec![
        create("o1", "eu", &[("s", 1)], SINGLE),
        create("o2", "eu", &[(long_sku.as_str(), 2)], SINGLE),
    ]);
    let rows: Vec<(&str, &str, i64)> = r
        .changed_stock
        .iter()
        .map(|s| (s.sku.as_str(), s.location_id.as_str(), s.reserved))
        .collect();
    assert_eq!(
        rows,
        [("s", long_loc.as_str(), 1), (long_sku.as_str(), "w", 2)]
    );
}

#[test]
fn batch_create_limit() {
    let mut h = Harness::new();
    let reqs = (0..1001)
        .map(|i| create_req(&format!("r{i}"), "eu", &[("s", 1)], 0))
        .collect();
    let e = h.err(batch_create(reqs, 0));
    assert_eq!(
        violations(&e),
        [("requests".into(), "at most 1000 requests".into())]
    );
    let e = h.err(batch_create(vec![], 7));
    assert_eq!(violations(&e)[0].0, "error_policy");
}

// ------------------------------------------------------------ stock, locations, regions

#[test]
fn stock_commands_and_their_errors() {
    let mut h = Harness::new();
    h.setup("eu", PRIORITY, &[("a", 1)], &[]);
    let e = h.err(set_stock("s", "zz", 1));
    assert_eq!((e.code, e.reason.as_str()), (5, "LOCATION_NOT_FOUND"));
    let r = h.one(set_stock("s", "a", 5));
    let Some(Response::Stock(l)) = r.response else {
        panic!()
    };
    assert_eq!(
        (l.on_hand, l.reserved, l.available, l.version),
        (5, 0, 5, 1)
    );
    h.ok_order(create("r1", "eu", &[("s", 4)], 0));
    let e = h.err(set_stock("s", "a", 3));
    assert_eq!((e.code, e.reason.as_str()), (9, "STOCK_BELOW_RESERVED"));
    assert_eq!(e.message, "on_hand 3 would be below reserved 4");
    let e = h.err(adjust_stock("s", "a", -2));
    assert_eq!(e.reason, "STOCK_BELOW_RESERVED");
    let e = h.err(adjust_stock("s", "a", 1_000_000_000_000));
    assert_eq!(
        violations(&e),
        [("delta".into(), "on_hand would exceed 1000000000000".into())]
    );
    let r = h.run(vec![adjust_stock("s", "a", -1)]);
    assert_eq!(r.changed_stock[0].on_hand, 4);
    assert_eq!(r.events[0].event_id, "stock:s@a:3");
}

#[test]
fn locations_need_a_region_and_keep_it() {
    let mut h = Harness::new();
    let e = h.err(upsert_location("a", "eu", 1));
    assert_eq!(e.reason, "REGION_NOT_FOUND");
    h.setup("eu", PRIORITY, &[("a", 1)], &[]);
    h.run(vec![configure_region("us", PRIORITY, 0)]);
    let e = h.err(upsert_location("a", "us", 1));
    assert_eq!(
        (e.code, e.reason.as_str()),
        (9, "LOCATION_REGION_IMMUTABLE")
    );
    let r = h.one(upsert_location("a", "eu", 7));
    let Some(Response::Location(l)) = r.response else {
        panic!()
    };
    assert_eq!(l.priority, 7);
    let r = h.one(configure_region("eu", MOST_AVAILABLE, 0));
    let Some(Response::Region(g)) = r.response else {
        panic!()
    };
    assert_eq!((g.strategy, g.reservation_ttl_seconds), (2, 0));
}

#[test]
fn priority_change_reranks_locations() {
    let mut h = Harness::new();
    h.setup(
        "eu",
        PRIORITY,
        &[("a", 1), ("b", 2)],
        &[("s", "a", 5), ("s", "b", 5)],
    );
    h.run(vec![upsert_location("b", "eu", 0)]);
    let o = h.ok_order(create("r1", "eu", &[("s", 1)], 0));
    assert_eq!(allocs(&o), [(0, "b".into(), 1)]);
}

// ------------------------------------------------------------ reconcile

fn s(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(Vec::as_slice).collect()
}

fn order_row(o: &opb::Order) -> Vec<u8> {
    o.encode_to_vec()
}

#[test]
fn reconcile_reports_and_repairs_drift_from_restored_state() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    let o = h.ok_order(create("r1", "eu", &[("sku-1", 2)], 0)); // reserves sku-1@wh-b
    let snap: epb::EngineSnapshot = canonical(&h.snapshot());
    let regions: Vec<Vec<u8>> = snap.regions.iter().map(Message::encode_to_vec).collect();
    let locations: Vec<Vec<u8>> = snap.locations.iter().map(Message::encode_to_vec).collect();
    let mut stock = snap.stock.clone();
    for s in &mut stock {
        match (s.sku.as_str(), s.location_id.as_str()) {
            ("sku-1", "wh-b") => s.reserved = 0, // lost reservation
            ("sku-2", "wh-a") => s.reserved = 4, // phantom reservation
            ("sku-2", "wh-b") => s.reserved = 0,
            _ => {}
        }
    }
    // A live order allocating more than on_hand at sku-2@wh-b: not repairable.
    let mut big = o.clone();
    big.order_id = order_id(CLIENT, "r9");
    big.request_id = "r9".into();
    big.lines = vec![line("sku-2", 3)];
    big.allocations = vec![opb::Allocation {
        line_index: 0,
        sku: "sku-2".into(),
        location_id: "wh-b".into(),
        quantity: 3,
    }];
    let stock: Vec<Vec<u8>> = stock.iter().map(Message::encode_to_vec).collect();
    let orders = vec![order_row(&o), order_row(&big)];
    h.engine = codec::restore(&s(&regions), &s(&locations), &s(&stock), &s(&orders), 10).unwrap();
    assert!(h.engine.check_invariants().is_err());

    let r = h.apply(vec![reconcile("", false)]);
    let Some(Response::Reconcile(rep)) = &r.results[0].response else {
        panic!()
    };
    assert_eq!(rep.rows_checked, 4);
    assert!(!rep.repaired);
    let drifts: Vec<(String, String, i64, i64)> = rep
        .drifts
        .iter()
        .map(|d| {
            (
                d.sku.clone(),
                d.location_id.clone(),
                d.recorded_reserved,
                d.computed_reserved,
            )
        })
        .collect();
    assert_eq!(
        drifts,
        [
            ("sku-1".into(), "wh-b".into(), 0, 2),
            ("sku-2".into(), "wh-a".into(), 4, 0),
            ("sku-2".into(), "wh-b".into(), 0, 3),
        ]
    );
    assert_eq!(r.batch_seq, 11);
    assert!(r.events.is_empty());
    let r = h.apply(vec![reconcile("eu", true)]);
    let Some(Response::Reconcile(rep)) = &r.results[0].response else {
        panic!()
    };
    assert!(rep.repaired);
    assert_eq!(rep.drifts.len(), 3);
    assert_eq!(r.events.len(), 2);
    assert!(r
        .events
        .iter()
        .all(|e| opb::StockEvent::decode(&*e.payload).unwrap().reason == 3));
    assert_eq!(r.changed_stock.len(), 2);
    let e = h.apply(vec![reconcile("mars", false)]).results.remove(0);
    assert_eq!(e.error.unwrap().reason, "REGION_NOT_FOUND");
}

// ------------------------------------------------------------ commit / rollback / snapshot

#[test]
fn pipelined_rollback_restores_the_exact_state() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    h.ok_order(create("keep", "eu", &[("sku-1", 1)], BACKORDER));
    let before = h.snapshot();
    let seq0 = h.engine.batch_seq();
    let b1 = h.apply(vec![
        create("p1", "eu", &[("sku-1", 3), ("sku-2", 1)], BACKORDER),
        set_stock("sku-9", "wh-a", 4),
    ]);
    let id = order_id(CLIENT, "keep");
    let b2 = h.apply(vec![
        confirm(&id),
        create("p2", "eu", &[("sku-2", 50)], BACKORDER),
        expire(),
    ]);
    h.now += 2_000_000;
    let b3 = h.apply(vec![
        cancel(&order_id(CLIENT, "p2"), ""),
        expire(),
        upsert_location("wh-c", "eu", 0),
        configure_region("us", 2, 5),
    ]);
    assert_eq!(
        h.engine.pending(),
        [b1.batch_seq, b2.batch_seq, b3.batch_seq]
    );
    assert!(codec::snapshot(&h.engine).is_err());
    assert!(h.engine.commit(99).is_err());
    h.engine.rollback(b2.batch_seq).unwrap();
    assert_eq!(h.engine.pending(), [b1.batch_seq]);
    h.engine.rollback(b1.batch_seq).unwrap();
    assert_eq!(h.engine.batch_seq(), seq0);
    assert_eq!(h.snapshot(), before);
    h.engine.check_invariants().unwrap();
    // The sequence continues from the last kept batch.
    let again = h.apply(vec![expire()]);
    assert_eq!(again.batch_seq, seq0 + 1);
    h.engine.commit(again.batch_seq).unwrap();
    assert!(h.engine.rollback(again.batch_seq).is_err());
}

#[test]
fn snapshot_round_trip_keeps_queue_order() {
    let mut h = Harness::new();
    h.setup("eu", PRIORITY, &[("a", 1)], &[("s", "a", 0)]);
    // Same create_time: restore-by-rows would order by id; the snapshot keeps FIFO.
    let ids: Vec<String> = (0..6)
        .map(|i| {
            h.ok_order(create(&format!("w{i}"), "eu", &[("s", 1)], BACKORDER))
                .order_id
        })
        .collect();
    let snap = h.snapshot();
    let restored = codec::from_snapshot(&snap).unwrap();
    assert_eq!(codec::snapshot(&restored).unwrap(), snap);
    let mut h2 = Harness {
        engine: restored,
        now: h.now,
        last: None,
    };
    let r1 = h.run(vec![set_stock("s", "a", 3)]);
    let r2 = h2.run(vec![set_stock("s", "a", 3)]);
    assert_eq!(r1, r2);
    let served: Vec<String> = r1
        .changed_orders
        .iter()
        .map(|o| o.order_id.clone())
        .collect();
    assert_eq!(served, ids[..3]);
}

#[test]
fn event_and_version_numbering() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    let r = h.run(vec![create("r1", "eu", &[("sku-1", 1)], 0)]);
    let id = order_id(CLIENT, "r1");
    assert_eq!(r.events[0].event_id, format!("{id}:1"));
    assert_eq!(r.changed_stock[0].version, 2); // set (1) + reservation (2)
    let r = h.run(vec![confirm(&id), ship(&id)]);
    let ids: Vec<&str> = r.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, [format!("{id}:2"), format!("{id}:3")]);
    assert_eq!(r.changed_orders.len(), 1);
    assert_eq!(r.changed_orders[0].version, 3);
    let ev = opb::OrderEvent::decode(&*r.events[1].payload).unwrap();
    assert_eq!(ev.event_time.unwrap().seconds * 1000, h.now);
    assert_eq!(r.changed_stock[0].version, 3);
}

#[test]
fn decode_errors_and_prost_fallback() {
    let mut e = _engine::domain::engine::Engine::new();
    assert!(codec::apply(&mut e, &[0xff, 0xff]).is_err());
    // A oneof member twice: prost merges / replaces; the fast path defers to it.
    let mut bytes = epb::EngineBatch {
        now_unix_ms: 5,
        commands: vec![],
    }
    .encode_to_vec();
    let c1 = configure_region("eu", 1, 0);
    let mut cmd_bytes = c1.encode_to_vec();
    cmd_bytes.extend(
        epb::EngineCommand {
            client_id: String::new(),
            command: Some(C::ExpireReservations(epb::ExpireReservations {})),
        }
        .encode_to_vec(),
    );
    bytes.push(0x12);
    bytes.push(cmd_bytes.len() as u8);
    bytes.extend(&cmd_bytes);
    let out = codec::apply(&mut e, &bytes).unwrap();
    let r: epb::EngineBatchResult = canonical(&out.encode());
    assert!(matches!(
        r.results[0].response,
        Some(Response::ExpireReservations(_))
    ));
}

#[test]
fn timestamps_before_1970_use_floor_division() {
    let mut h = Harness::new();
    h.now = -1_500;
    two_locations(&mut h, PRIORITY);
    let o = h.ok_order(create("r1", "eu", &[("sku-1", 1)], 0));
    let t = o.create_time.unwrap();
    assert_eq!((t.seconds, t.nanos), (-2, 500_000_000));
}

#[test]
fn long_names_and_unicode_reasons_encode_canonically() {
    let mut h = Harness::new();
    let sku = "s".repeat(64);
    let loc = "l".repeat(64);
    let region = "r".repeat(32);
    h.setup(
        &region,
        PRIORITY,
        &[(&loc, 1_000_000)],
        &[(&sku, &loc, 1_000_000_000_000)],
    );
    let mut req = create_req(&"q".repeat(64), &region, &[(&sku, 100_000)], BACKORDER);
    req.customer_id = "c".repeat(64);
    req.lines[0].unit_price_minor = 1_000_000_000_000 / 100_000 * 100; // total 10^12 * 100 / 100
    let o = h.ok_order(cmd(C::CreateOrder(req)));
    let o = h.ok_order(cancel(&o.order_id, &"é".repeat(128)));
    assert_eq!(o.status_reason.len(), 256);
    let r = h.run(vec![adjust_stock(&sku, &loc, -5)]);
    assert!(r.events[0].event_id.len() > 127);
}

/// Persisted rows of the current state (as the service would read them back).
fn rows(h: &Harness) -> [Vec<Vec<u8>>; 4] {
    let snap: epb::EngineSnapshot = canonical(&h.snapshot());
    [
        snap.regions.iter().map(Message::encode_to_vec).collect(),
        snap.locations.iter().map(Message::encode_to_vec).collect(),
        snap.stock.iter().map(Message::encode_to_vec).collect(),
        snap.orders.iter().map(Message::encode_to_vec).collect(),
    ]
}

#[test]
fn order_id_collision_is_already_exists() {
    let mut h = Harness::new();
    two_locations(&mut h, PRIORITY);
    h.ok_order(create("r1", "eu", &[("sku-1", 1)], 0));
    // Pretend another (client, request_id) owns the id that (client-a, r2) hashes to.
    let [regions, locations, stock, mut orders] = rows(&h);
    let mut o = opb::Order::decode(&*orders[0]).unwrap();
    o.order_id = order_id(CLIENT, "r2");
    o.status = 6; // not live: its allocations hold no stock
    orders.push(o.encode_to_vec());
    h.engine = codec::restore(&s(&regions), &s(&locations), &s(&stock), &s(&orders), 0).unwrap();
    let e = h.err(create("r2", "eu", &[("sku-1", 1)], 0));
    assert_eq!((e.code, e.reason.as_str()), (6, "ORDER_ID_COLLISION"));
}

#[test]
fn restore_queues_backorders_by_create_time_then_order_id() {
    let mut h = Harness::new();
    h.setup("eu", PRIORITY, &[("a", 1)], &[("s", "a", 0)]);
    let late = h
        .ok_order(create("late", "eu", &[("s", 1)], BACKORDER))
        .order_id;
    h.now -= 10_000; // created "earlier" although queued later
    let early = h
        .ok_order(create("early", "eu", &[("s", 1)], BACKORDER))
        .order_id;
    let [regions, locations, stock, orders] = rows(&h);
    h.engine = codec::restore(&s(&regions), &s(&locations), &s(&stock), &s(&orders), 7).unwrap();
    h.engine.check_invariants().unwrap();
    let r = h.run(vec![set_stock("s", "a", 1)]);
    assert_eq!(r.batch_seq, 8);
    assert_eq!(r.changed_orders[0].order_id, early);
    assert_ne!(early, late);
    assert!(codec::restore(&s(&regions), &[], &s(&stock), &s(&orders), 0).is_err());
}
