//! Property tests over random command streams: no oversell, conservation,
//! determinism (also across snapshot → from_snapshot), idempotency, errors
//! change nothing, rollback restores the exact prior snapshot.
//!
//! Case counts are modest so `cargo test` stays fast; raise them with
//! PROPTEST_CASES=1000 for a longer soak.

mod common;

use std::collections::BTreeMap;

use _engine::codec::{self, decode, pb};
use _engine::domain::command::Command;
use _engine::domain::engine::Engine;
use common::*;
use pb::orders::engine::v1 as epb;
use pb::orders::v1 as opb;
use proptest::prelude::*;
use prost::Message;

const SKUS: [&str; 4] = ["s0", "s1", "s2", "s3"];
const LOCS: [&str; 4] = ["l0", "l1", "l2", "l3"];
const REGIONS: [&str; 2] = ["r0", "r1"];
const CLIENTS: [&str; 2] = ["c0", "c1"];

#[derive(Debug, Clone)]
struct CreateSpec {
    client: usize,
    rid: usize,
    region: usize,
    lines: Vec<(usize, i64)>,
    policy: i32,
}

#[derive(Debug, Clone)]
enum Op {
    Create(CreateSpec),
    BatchCreate(Vec<CreateSpec>, i32),
    Cancel(usize, usize),
    Confirm(usize, usize),
    Ship(usize, usize),
    SetStock(usize, usize, i64),
    Adjust(usize, usize, i64),
    Expire,
    Reconcile(bool),
    Location(usize, usize, i32),
    Region(usize, i32, i64),
}

#[derive(Debug, Clone)]
struct Step {
    ops: Vec<Op>,
    advance_ms: i64,
    /// 0: commit; 1: roll back; 2: apply a second batch and roll both back.
    ending: u8,
}

fn create_spec() -> impl Strategy<Value = CreateSpec> {
    (
        0..CLIENTS.len(),
        0..10usize,
        prop_oneof![9 => Just(0usize), 1 => Just(1usize)],
        prop::collection::vec(
            (0..SKUS.len(), prop_oneof![9 => 1..6i64, 1 => Just(0i64)]),
            1..4,
        ),
        0..4i32,
    )
        .prop_map(|(client, rid, region, lines, policy)| CreateSpec {
            client,
            rid,
            region,
            lines,
            policy,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let order = || (0..CLIENTS.len(), 0..10usize);
    prop_oneof![
        8 => create_spec().prop_map(Op::Create),
        2 => (prop::collection::vec(create_spec(), 0..4), 0..3i32).prop_map(|(v, p)| Op::BatchCreate(v, p)),
        2 => order().prop_map(|(c, r)| Op::Cancel(c, r)),
        2 => order().prop_map(|(c, r)| Op::Confirm(c, r)),
        2 => order().prop_map(|(c, r)| Op::Ship(c, r)),
        3 => (0..SKUS.len(), 0..LOCS.len(), 0..12i64).prop_map(|(s, l, n)| Op::SetStock(s, l, n)),
        3 => (0..SKUS.len(), 0..LOCS.len(), -6..10i64).prop_map(|(s, l, n)| Op::Adjust(s, l, n)),
        2 => Just(Op::Expire),
        1 => any::<bool>().prop_map(Op::Reconcile),
        1 => (0..LOCS.len(), 0..REGIONS.len(), 0..4i32).prop_map(|(l, r, p)| Op::Location(l, r, p)),
        1 => (0..REGIONS.len(), 0..3i32, prop_oneof![Just(0i64), Just(1), Just(30)]).prop_map(|(r, s, t)| Op::Region(r, s, t)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop::collection::vec(op(), 1..5),
        prop_oneof![Just(0i64), Just(500), Just(20_000), Just(1_000_000)],
        prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
    )
        .prop_map(|(ops, advance_ms, ending)| Step {
            ops,
            advance_ms,
            ending,
        })
}

fn request(spec: &CreateSpec) -> opb::CreateOrderRequest {
    opb::CreateOrderRequest {
        request_id: format!("q{}", spec.rid),
        customer_id: format!("cust{}", spec.rid % 3),
        region: REGIONS[spec.region].into(),
        lines: spec
            .lines
            .iter()
            .map(|&(s, q)| opb::OrderLine {
                sku: SKUS[s].into(),
                quantity: q,
                unit_price_minor: 10 * (s as i64 + 1),
                currency: "USD".into(),
            })
            .collect(),
        policy: spec.policy,
    }
}

fn oid(client: usize, rid: usize) -> String {
    order_id(CLIENTS[client], &format!("q{rid}"))
}

fn with_client(client: usize, command: C) -> epb::EngineCommand {
    epb::EngineCommand {
        client_id: CLIENTS[client].into(),
        command: Some(command),
    }
}

fn command(op: &Op) -> epb::EngineCommand {
    match op {
        Op::Create(s) => with_client(s.client, C::CreateOrder(request(s))),
        Op::BatchCreate(items, p) => with_client(
            items.first().map_or(0, |s| s.client),
            C::BatchCreateOrders(opb::BatchCreateOrdersRequest {
                requests: items.iter().map(request).collect(),
                error_policy: *p,
            }),
        ),
        Op::Cancel(c, r) => with_client(
            *c,
            C::CancelOrder(opb::CancelOrderRequest {
                order_id: oid(*c, *r),
                reason: String::new(),
            }),
        ),
        Op::Confirm(c, r) => with_client(
            *c,
            C::ConfirmOrder(opb::ConfirmOrderRequest {
                order_id: oid(*c, *r),
            }),
        ),
        Op::Ship(c, r) => with_client(
            *c,
            C::ShipOrder(opb::ShipOrderRequest {
                order_id: oid(*c, *r),
            }),
        ),
        Op::SetStock(s, l, n) => set_stock(SKUS[*s], LOCS[*l], *n),
        Op::Adjust(s, l, n) => adjust_stock(SKUS[*s], LOCS[*l], *n),
        Op::Expire => expire(),
        Op::Reconcile(repair) => reconcile("", *repair),
        Op::Location(l, r, p) => upsert_location(LOCS[*l], REGIONS[*r], *p),
        Op::Region(r, s, t) => configure_region(REGIONS[*r], *s, *t),
    }
}

/// A snapshot without its leading batch_seq field.
fn state_bytes(engine: &Engine) -> Vec<u8> {
    let mut snap =
        epb::EngineSnapshot::decode(&*codec::snapshot(engine).expect("snapshot")).expect("decode");
    snap.batch_seq = 0;
    snap.encode_to_vec()
}

fn stock_map(engine: &Engine) -> BTreeMap<(String, String), (i64, i64)> {
    let snap =
        epb::EngineSnapshot::decode(&*codec::snapshot(engine).expect("snapshot")).expect("decode");
    snap.stock
        .into_iter()
        .map(|s| ((s.sku, s.location_id), (s.on_hand, s.reserved)))
        .collect()
}

fn setup_batch() -> Vec<epb::EngineCommand> {
    vec![
        configure_region("r0", 1, 0),
        upsert_location("l0", "r0", 2),
        upsert_location("l1", "r0", 1),
        upsert_location("l2", "r0", 1),
        set_stock("s0", "l0", 5),
        set_stock("s1", "l1", 3),
        set_stock("s0", "l2", 2),
    ]
}

fn apply_bytes(engine: &mut Engine, bytes: &[u8]) -> codec::BatchOutput {
    codec::apply(engine, bytes).expect("valid batch")
}

fn run_stream(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut now = 1_700_000_000_000i64;
    let mut main = Engine::new();
    let mut shadow = Engine::new();
    let batch = |commands: Vec<epb::EngineCommand>, now: i64| {
        epb::EngineBatch {
            now_unix_ms: now,
            commands,
        }
        .encode_to_vec()
    };
    let setup = batch(setup_batch(), now);
    for e in [&mut main, &mut shadow] {
        let out = apply_bytes(e, &setup);
        e.commit(out.batch_seq).expect("commit");
    }
    // Last seen version of every order, and the creates that succeeded.
    let mut orders: BTreeMap<String, opb::Order> = BTreeMap::new();
    let mut created: Vec<(usize, opb::CreateOrderRequest, String)> = Vec::new();

    for (i, step) in steps.into_iter().enumerate() {
        now += step.advance_ms;
        let commands: Vec<epb::EngineCommand> = step.ops.iter().map(command).collect();
        let bytes = batch(commands.clone(), now);

        // The zero-copy decoder agrees with prost.
        let decoded = epb::EngineBatch::decode(&*bytes).expect("decode");
        let mut storage = None;
        let fast = decode::decode_batch(&bytes, &mut storage).expect("fast decode");
        prop_assert_eq!(&fast, &decode::from_prost(&decoded));

        let before_state = state_bytes(&main);
        let before_stock = stock_map(&main);
        let out = apply_bytes(&mut main, &bytes);
        let shadow_out = apply_bytes(&mut shadow, &bytes);
        let encoded = out.encode();
        prop_assert_eq!(&encoded, &shadow_out.encode(), "determinism");
        if let Err(e) = main.check_invariants() {
            return Err(TestCaseError::fail(format!("after batch {i}: {e}")));
        }
        let result = epb::EngineBatchResult::decode(&*encoded).expect("result");

        if step.ending != 0 {
            let mut first = out.batch_seq;
            if step.ending == 2 {
                let second = batch(vec![expire(), adjust_stock("s0", "l0", 3)], now + 1);
                let o2 = apply_bytes(&mut main, &second);
                apply_bytes(&mut shadow, &second);
                prop_assert_eq!(main.pending(), vec![first, o2.batch_seq]);
            }
            main.rollback(first).expect("rollback");
            shadow.rollback(first).expect("rollback");
            first -= 1;
            prop_assert_eq!(main.batch_seq(), first);
            prop_assert_eq!(
                state_bytes(&main),
                before_state,
                "rollback restores the state"
            );
            continue;
        }
        main.commit(out.batch_seq).expect("commit");
        shadow.commit(out.batch_seq).expect("commit");

        // Errors change nothing.
        if result.results.iter().all(|r| r.code != 0) {
            prop_assert!(result.changed_orders.is_empty() && result.changed_stock.is_empty());
            prop_assert!(result.events.is_empty());
            prop_assert_eq!(state_bytes(&main), before_state.clone());
        }

        // Conservation: on_hand moves only by set / adjust / ship.
        let mut expected: BTreeMap<(String, String), i64> =
            before_stock.iter().map(|(k, v)| (k.clone(), v.0)).collect();
        for (op, r) in step.ops.iter().zip(&result.results) {
            if r.code != 0 {
                continue;
            }
            match (op, &r.response) {
                (Op::SetStock(s, l, n), _) => {
                    expected.insert((SKUS[*s].into(), LOCS[*l].into()), *n);
                }
                (Op::Adjust(s, l, n), _) => {
                    *expected
                        .entry((SKUS[*s].into(), LOCS[*l].into()))
                        .or_insert(0) += *n;
                }
                (Op::Ship(..), Some(Response::Order(o))) => {
                    for a in &o.allocations {
                        *expected
                            .entry((a.sku.clone(), a.location_id.clone()))
                            .or_insert(0) -= a.quantity;
                    }
                }
                _ => {}
            }
        }
        let after_stock = stock_map(&main);
        for (k, (on_hand, _)) in &after_stock {
            prop_assert_eq!(
                expected.get(k).copied().unwrap_or(0),
                *on_hand,
                "on_hand of {:?}",
                k
            );
        }

        // Cancel / expiry release exactly what was reserved (the allocations
        // of the order's previous version); versions step by one per event.
        for e in result
            .events
            .iter()
            .filter(|e| e.subject.starts_with("orders."))
        {
            let ev = opb::OrderEvent::decode(&*e.payload).expect("event");
            let o = ev.order.expect("order");
            match orders.get(&o.order_id) {
                Some(prev) => {
                    prop_assert_eq!(o.version, prev.version + 1);
                    if o.status == 6 || o.status == 7 {
                        prop_assert_eq!(&o.allocations, &prev.allocations);
                    }
                }
                None => prop_assert_eq!(o.version, 1),
            }
            orders.insert(o.order_id.clone(), o);
        }
        for o in &result.changed_orders {
            prop_assert_eq!(Some(o), orders.get(&o.order_id), "row = last event");
        }

        // Remember fresh creates, then replay one: nothing changes.
        for (op, r) in step.ops.iter().zip(&result.results) {
            if let (Op::Create(spec), Some(Response::Order(o))) = (op, &r.response) {
                if r.code == 0 && !r.replayed {
                    created.push((spec.client, request(spec), o.order_id.clone()));
                }
            }
        }
        if let Some((client, req, id)) = created.get(i % created.len().max(1)).cloned() {
            let before = state_bytes(&main);
            let replay = batch(vec![with_client(client, C::CreateOrder(req))], now);
            let out = apply_bytes(&mut main, &replay);
            apply_bytes(&mut shadow, &replay);
            main.commit(out.batch_seq).expect("commit");
            shadow.commit(out.batch_seq).expect("commit");
            let r = epb::EngineBatchResult::decode(&*out.encode()).expect("result");
            prop_assert!(r.results[0].replayed);
            match &r.results[0].response {
                Some(Response::Order(o)) => prop_assert_eq!(&o.order_id, &id),
                other => return Err(TestCaseError::fail(format!("replay answered {other:?}"))),
            }
            prop_assert!(r.changed_orders.is_empty() && r.events.is_empty());
            prop_assert_eq!(state_bytes(&main), before);
        }

        // Every few batches the shadow restarts from a snapshot of main.
        if i % 3 == 2 {
            let snap = codec::snapshot(&main).expect("snapshot");
            shadow = codec::from_snapshot(&snap).expect("from_snapshot");
            prop_assert_eq!(codec::snapshot(&shadow).expect("snapshot"), snap);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_command_streams_keep_every_invariant(steps in prop::collection::vec(step(), 1..14)) {
        run_stream(steps)?;
    }
}

/// Mutated and random bytes: never a panic; the zero-copy decoder accepts
/// exactly what prost accepts, with the same meaning.
/// The EngineBatch framing: each `commands` entry's bytes, or None if the
/// framing itself is broken (only fields 1 varint and 2 bytes are expected).
fn command_frames(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    use prost::encoding::decode_varint;
    let mut rest = bytes;
    let mut frames = Vec::new();
    while !rest.is_empty() {
        match decode_varint(&mut rest).ok()? {
            8 => {
                decode_varint(&mut rest).ok()?;
            }
            18 => {
                let len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
                if len > rest.len() {
                    return None;
                }
                frames.push(rest[..len].to_vec());
                rest = &rest[len..];
            }
            _ => return None,
        }
    }
    Some(frames)
}

fn check_decoding(bytes: &[u8]) -> Result<(), TestCaseError> {
    let prost_result = epb::EngineBatch::decode(bytes);
    let mut storage = None;
    let ours = decode::decode_batch(bytes, &mut storage);
    match (&prost_result, &ours) {
        (Ok(p), Ok(o)) => prop_assert_eq!(o, &decode::from_prost(p)),
        (Err(_), Err(_)) => {}
        (Err(_), Ok(o)) => {
            // Salvaged: the framing is sound, and exactly the commands that do
            // not decode on their own are Malformed.
            let frames = command_frames(bytes);
            prop_assert!(frames.is_some(), "salvaged a batch with broken framing");
            let frames = frames.unwrap_or_default();
            prop_assert_eq!(frames.len(), o.commands.len());
            for (frame, command) in frames.iter().zip(&o.commands) {
                let bad = epb::EngineCommand::decode(frame.as_slice()).is_err();
                prop_assert_eq!(bad, command.command == Command::Malformed);
            }
        }
        (Ok(_), Err(_)) => {
            return Err(TestCaseError::fail("prost decodes a batch we refuse"));
        }
    }
    let mut engine = Engine::new();
    let applied = codec::apply(&mut engine, bytes);
    prop_assert_eq!(applied.is_ok(), ours.is_ok());
    if applied.is_ok() {
        prop_assert!(engine.check_invariants().is_ok());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        check_decoding(&bytes)?;
    }

    #[test]
    fn mutated_batches_decode_like_prost(
        ops in prop::collection::vec(op(), 1..6),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut commands = setup_batch();
        commands.extend(ops.iter().map(command));
        let mut bytes = epb::EngineBatch { now_unix_ms: 7, commands }.encode_to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        check_decoding(&bytes)?;
    }
}
