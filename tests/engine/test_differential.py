"""Differential test: the Rust engine (server._engine) against the reference model.

Random sequences of EngineBatch messages are applied to both; every EngineBatchResult must
be equal (compared as parsed messages, event payloads parsed too). Pending batches are
randomly committed and rolled back on both, and invariants are checked after every step.

Runs in well under a minute by default; DIFF_EXAMPLES=N raises the number of examples.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any

import pytest
from engine_helpers import T0, decode_event, rust_engine_module
from google.protobuf import text_format
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from reference.model import (
    ALLOCATED,
    BACKORDERED,
    CONFIRMED,
    ReferenceEngine,
    make_order_id,
)

from server.gen.orders.engine.v1 import engine_pb2
from server.gen.orders.v1 import orders_pb2

EXAMPLES = int(os.environ.get("DIFF_EXAMPLES", "60"))
settings.register_profile(
    "engine-differential",
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
DIFF_SETTINGS = settings.get_profile("engine-differential")

# ----------------------------------------------------------------------------- universe

REGIONS = ["eu", "us", "ap"]  # "ap" is usually left unconfigured
LOCATIONS = {"l1": "eu", "l2": "eu", "l3": "eu", "l4": "us", "l5": "ap"}
SKUS = ["s1", "s2", "s3", "s4"]
CLIENTS = ["c1", "c2"]
REQUEST_IDS = [f"r{i}" for i in range(6)]
CURRENCIES = ["EUR", "USD"]

BAD_IDS = ["", "bad id", "x" * 65, "é"]


def pick(values: list[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from(values)


@st.composite
def weighted(draw: st.DrawFn, *options: tuple[int, st.SearchStrategy[Any]]) -> Any:
    """One of the strategies, chosen with the given weights. Shrinks towards the first."""
    total = sum(w for w, _ in options)
    ticket = draw(st.integers(0, total - 1))
    for w, strategy in options:
        if ticket < w:
            return draw(strategy)
        ticket -= w
    raise AssertionError("unreachable")


def sometimes(valid: st.SearchStrategy[Any], invalid: list[Any]) -> st.SearchStrategy[Any]:
    """Mostly (19 in 20) a valid value, now and then one of the invalid ones."""
    return weighted((19, valid), (1, pick(invalid)))


@dataclass
class World:
    """What the generator has seen so far (to produce replays and known order ids)."""

    now: int = T0
    bodies: dict[tuple[str, str], orders_pb2.CreateOrderRequest] = field(default_factory=dict)
    # ids of the orders the reference holds, by status (updated after every step)
    stored: dict[int, list[str]] = field(default_factory=dict)

    def observe(self, ref: ReferenceEngine) -> None:
        self.stored = {}
        for oid, order in sorted(ref.orders.items()):
            self.stored.setdefault(order.status, []).append(oid)

    def known_order_ids(self) -> list[str]:
        generated = {make_order_id(c, r) for c, r in self.bodies}
        stored = {oid for ids in self.stored.values() for oid in ids}
        return sorted(generated | stored)


# ----------------------------------------------------------------------------- commands


@st.composite
def order_line(draw: st.DrawFn, sku: str) -> orders_pb2.OrderLine:
    return orders_pb2.OrderLine(
        sku=sku,
        quantity=draw(st.integers(1, 6)),
        unit_price_minor=draw(pick([0, 1, 250, 9_999])),
        currency="EUR",
    )


@st.composite
def create_body(draw: st.DrawFn, world: World, client: str) -> orders_pb2.CreateOrderRequest:
    request_id = draw(pick(REQUEST_IDS))
    previous = world.bodies.get((client, request_id))
    if previous is not None and draw(st.integers(0, 2)) > 0:
        body = orders_pb2.CreateOrderRequest()
        body.CopyFrom(previous)
        if draw(st.integers(0, 3)) == 0 and body.policy in (
            orders_pb2.ALLOCATION_POLICY_UNSPECIFIED,
            orders_pb2.ALLOCATION_POLICY_SINGLE_LOCATION,
        ):
            # UNSPECIFIED and SINGLE_LOCATION are the same body
            body.policy = 1 - body.policy  # type: ignore[assignment]
        return body
    skus = draw(st.lists(pick(SKUS), min_size=1, max_size=3, unique=True))
    body = orders_pb2.CreateOrderRequest(
        request_id=request_id,
        customer_id=draw(pick(["cust-1", "cust-2"])),
        region=draw(
            weighted((16, st.just("eu")), (3, st.just("us")), (1, pick(["ap", "nowhere"])))
        ),
        lines=[draw(order_line(sku)) for sku in skus],
        policy=draw(pick([0, 1, 2, 3])),
    )
    if draw(st.integers(0, 7)) == 7:
        mutate_invalid(draw, body)
    return body


def mutate_invalid(draw: st.DrawFn, body: orders_pb2.CreateOrderRequest) -> None:
    """Breaks a create body in one or more of the ways docs/engine.md lists."""
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 13))
        line = body.lines[draw(st.integers(0, len(body.lines) - 1))] if body.lines else None
        if kind == 0:
            body.request_id = draw(pick(BAD_IDS))
        elif kind == 1:
            body.customer_id = draw(pick(BAD_IDS))
        elif kind == 2:
            body.region = draw(pick(["", "r" * 33, "e u"]))
        elif kind == 3:
            del body.lines[:]
        elif kind == 4 and line is not None:
            line.sku = draw(pick(BAD_IDS))
        elif kind == 5 and line is not None:
            line.quantity = draw(pick([0, -1, 100_001]))
        elif kind == 6 and line is not None:
            line.unit_price_minor = draw(pick([-1, 10**12 + 1]))
        elif kind == 7 and line is not None:
            line.currency = draw(pick(["", "eur", "ZZZ", "EURO"]))
        elif kind == 8 and line is not None:
            body.lines.append(orders_pb2.OrderLine(sku=line.sku, quantity=1, currency="EUR"))
        elif kind == 9 and line is not None:
            line.currency = "USD"
        elif kind == 10:
            body.policy = draw(pick([4, 99]))
        elif kind == 11 and line is not None:
            line.quantity = 100_000
            line.unit_price_minor = 10**12
            body.lines.append(
                orders_pb2.OrderLine(
                    sku="s9", quantity=100_000, unit_price_minor=10**12, currency=line.currency
                )
            )
        elif kind == 12:
            body.lines.extend(
                orders_pb2.OrderLine(sku=f"k{i}", quantity=1, currency="EUR") for i in range(101)
            )
        elif kind == 13:
            # 100 lines at the maximum: the total (10^19) overflows a signed 64-bit sum
            del body.lines[:]
            body.lines.extend(
                orders_pb2.OrderLine(
                    sku=f"m{i}", quantity=100_000, unit_price_minor=10**12, currency="EUR"
                )
                for i in range(100)
            )


@st.composite
def client_id(draw: st.DrawFn) -> str:
    value: str = draw(weighted((30, pick(CLIENTS)), (1, pick(BAD_IDS))))
    return value


@st.composite
def order_id(draw: st.DrawFn, world: World, prefer: tuple[int, ...] = ()) -> str:
    """Mostly an order that exists, preferably in a status the command accepts."""
    options: list[tuple[int, st.SearchStrategy[Any]]] = []
    preferred = sorted(oid for status in prefer for oid in world.stored.get(status, []))
    if preferred:
        options.append((12, pick(preferred)))
    known = world.known_order_ids()
    if known:
        options.append((6, pick(known)))
    options.append((1, pick(["o-unknown", "", "bad id"])))
    value: str = draw(weighted(*options))
    return value


@st.composite
def command(draw: st.DrawFn, world: World) -> engine_pb2.EngineCommand:
    kind = draw(
        pick(
            ["create"] * 8
            + ["batch_create"] * 2
            + ["cancel", "cancel", "confirm", "confirm", "confirm", "ship", "ship", "ship"]
            + ["set_stock", "set_stock", "adjust_stock", "adjust_stock"]
            + ["expire", "reconcile", "location", "region"]
        )
    )
    client = draw(client_id())
    cmd = engine_pb2.EngineCommand(client_id=client)
    if kind == "create":
        body = draw(create_body(world, client))
        cmd.create_order.CopyFrom(body)
    elif kind == "batch_create":
        bodies = draw(st.lists(create_body(world, client), min_size=0, max_size=5))
        if draw(st.integers(0, 40)) == 40:
            bodies = bodies * (1 + 1000 // max(1, len(bodies)))  # over MAX_BATCH_CREATE
        policy = draw(weighted((8, pick([0, 1, 2, 2])), (1, pick([3, -1]))))
        cmd.batch_create_orders.CopyFrom(
            orders_pb2.BatchCreateOrdersRequest(requests=bodies, error_policy=policy)
        )
    elif kind == "cancel":
        cmd.cancel_order.CopyFrom(
            orders_pb2.CancelOrderRequest(
                order_id=draw(order_id(world, (ALLOCATED, BACKORDERED, CONFIRMED))),
                reason=draw(
                    sometimes(
                        pick(["", "", "changed-mind"]),
                        # limits are in bytes: 128 x "é" is 256 bytes, 129 x "é" 258
                        ["x" * 257, "x" * 256, "ünïcode", "é" * 128, "é" * 129],
                    )
                ),
            )
        )
    elif kind == "confirm":
        cmd.confirm_order.CopyFrom(
            orders_pb2.ConfirmOrderRequest(order_id=draw(order_id(world, (ALLOCATED,))))
        )
    elif kind == "ship":
        cmd.ship_order.CopyFrom(
            orders_pb2.ShipOrderRequest(order_id=draw(order_id(world, (CONFIRMED,))))
        )
    elif kind == "set_stock":
        cmd.set_stock.CopyFrom(
            orders_pb2.SetStockRequest(
                sku=draw(sometimes(pick(SKUS), BAD_IDS)),
                location_id=draw(sometimes(pick(sorted(LOCATIONS)), ["l9", ""])),
                on_hand=draw(sometimes(st.integers(0, 12), [-1, 10**12, 10**12 + 1])),
            )
        )
    elif kind == "adjust_stock":
        cmd.adjust_stock.CopyFrom(
            orders_pb2.AdjustStockRequest(
                sku=draw(sometimes(pick(SKUS), BAD_IDS)),
                location_id=draw(sometimes(pick(sorted(LOCATIONS)), ["l9"])),
                delta=draw(sometimes(st.integers(-4, 8), [10**12, 10**12 + 1, -(10**12) - 1])),
            )
        )
    elif kind == "expire":
        cmd.expire_reservations.SetInParent()
    elif kind == "reconcile":
        cmd.reconcile.CopyFrom(
            orders_pb2.ReconcileRequest(
                region=draw(pick(["", "eu", "us", "zz", "bad region"])),
                repair=draw(st.booleans()),
            )
        )
    elif kind == "location":
        cmd.upsert_location.CopyFrom(location_request(draw))
    else:
        cmd.configure_region.CopyFrom(region_request(draw))
    remember(world, cmd)
    return cmd


def location_request(draw: st.DrawFn) -> orders_pb2.UpsertLocationRequest:
    loc_id = draw(sometimes(pick(sorted(LOCATIONS)), ["", "bad id"]))
    region = LOCATIONS.get(loc_id, "eu")
    if draw(st.integers(0, 5)) == 0:
        region = draw(pick([*REGIONS, "", "r" * 33]))
    return orders_pb2.UpsertLocationRequest(
        location=orders_pb2.Location(
            location_id=loc_id,
            region=region,
            priority=draw(sometimes(pick([0, 1, 2, 5]), [-1, 1_000_000, 1_000_001])),
        )
    )


def region_request(draw: st.DrawFn) -> orders_pb2.ConfigureRegionRequest:
    return orders_pb2.ConfigureRegionRequest(
        region=orders_pb2.Region(
            region=draw(sometimes(pick(REGIONS[:2]), ["", "r" * 33, "a b"])),
            strategy=draw(sometimes(pick([0, 1, 2]), [3, -1])),
            reservation_ttl_seconds=draw(sometimes(pick([0, 1, 60, 120]), [-1, 604_800, 604_801])),
        )
    )


def remember(world: World, cmd: engine_pb2.EngineCommand) -> None:
    """Records create bodies so later commands can replay them or address their orders."""
    kind = cmd.WhichOneof("command")
    if kind == "create_order":
        bodies = [cmd.create_order]
    elif kind == "batch_create_orders":
        bodies = list(cmd.batch_create_orders.requests)
    else:
        return
    for body in bodies:
        if body.request_id in REQUEST_IDS and (cmd.client_id, body.request_id) not in world.bodies:
            copy = orders_pb2.CreateOrderRequest()
            copy.CopyFrom(body)
            world.bodies[(cmd.client_id, body.request_id)] = copy


@st.composite
def setup_batch(draw: st.DrawFn) -> list[engine_pb2.EngineCommand]:
    """Regions, locations and stock, so that allocations have something to work with."""
    cmds = []
    for name in ("eu", "us"):
        cmds.append(
            engine_pb2.EngineCommand(
                client_id="admin",
                configure_region=orders_pb2.ConfigureRegionRequest(
                    region=orders_pb2.Region(
                        region=name,
                        strategy=draw(pick([0, 1, 2])),
                        reservation_ttl_seconds=draw(pick([0, 60, 120])),
                    )
                ),
            )
        )
    for loc_id, region in LOCATIONS.items():
        if region == "ap":
            continue
        cmds.append(
            engine_pb2.EngineCommand(
                client_id="admin",
                upsert_location=orders_pb2.UpsertLocationRequest(
                    location=orders_pb2.Location(
                        location_id=loc_id, region=region, priority=draw(pick([0, 1, 2]))
                    )
                ),
            )
        )
    for sku in SKUS:
        for loc_id in draw(st.lists(pick(["l1", "l2", "l3", "l4"]), max_size=4, unique=True)):
            cmds.append(
                engine_pb2.EngineCommand(
                    client_id="admin",
                    set_stock=orders_pb2.SetStockRequest(
                        sku=sku, location_id=loc_id, on_hand=draw(st.integers(0, 15))
                    ),
                )
            )
    return cmds


# ----------------------------------------------------------------------------- comparison


def normalized(result: engine_pb2.EngineBatchResult) -> tuple[engine_pb2.EngineBatchResult, list]:  # type: ignore[type-arg]
    """The result without event payload bytes, plus the parsed payloads."""
    copy = engine_pb2.EngineBatchResult()
    copy.CopyFrom(result)
    payloads = []
    for env in copy.events:
        payloads.append(decode_event(env))
        env.payload = b""
    return copy, payloads


def text(msg: Any) -> str:
    return str(text_format.MessageToString(msg, as_utf8=True))


def describe_mismatch(rust: engine_pb2.EngineBatchResult, ref: engine_pb2.EngineBatchResult) -> str:
    def diff(label: str, a: Any, b: Any) -> str:
        lines = difflib.unified_diff(
            text(b).splitlines(), text(a).splitlines(), "reference", "rust", lineterm="", n=3
        )
        return f"first difference in {label}:\n" + "\n".join(lines)

    if rust.batch_seq != ref.batch_seq:
        return f"batch_seq: rust {rust.batch_seq} != reference {ref.batch_seq}"
    if len(rust.results) != len(ref.results):
        return f"result count: rust {len(rust.results)} != reference {len(ref.results)}"
    for i, (a, b) in enumerate(zip(rust.results, ref.results, strict=True)):
        if a != b:
            return diff(f"results[{i}]", a, b)
    rust_n, rust_payloads = normalized(rust)
    ref_n, ref_payloads = normalized(ref)
    for name in ("changed_orders", "changed_stock", "changed_locations", "changed_regions"):
        xs, ys = getattr(rust_n, name), getattr(ref_n, name)
        if len(xs) != len(ys):
            ids = [text(x).split("\n")[0] for x in xs], [text(y).split("\n")[0] for y in ys]
            return f"{name}: rust has {len(xs)} rows, reference {len(ys)}: {ids[0]} vs {ids[1]}"
        for i, (a, b) in enumerate(zip(xs, ys, strict=True)):
            if a != b:
                return diff(f"{name}[{i}]", a, b)
    subjects = [(e.subject, e.event_id) for e in rust_n.events]
    ref_subjects = [(e.subject, e.event_id) for e in ref_n.events]
    if subjects != ref_subjects:
        return f"events: rust {subjects}\n   reference {ref_subjects}"
    for i, (a, b) in enumerate(zip(rust_payloads, ref_payloads, strict=True)):
        if a != b:
            return diff(f"events[{i}].payload", a, b)
    return "results differ (no field-level difference found)"


def assert_same(rust_bytes: bytes, ref_bytes: bytes, batch_bytes: bytes) -> None:
    rust = engine_pb2.EngineBatchResult.FromString(rust_bytes)
    ref = engine_pb2.EngineBatchResult.FromString(ref_bytes)
    rust_n, rust_payloads = normalized(rust)
    ref_n, ref_payloads = normalized(ref)
    if rust_n != ref_n or rust_payloads != ref_payloads:
        batch = engine_pb2.EngineBatch.FromString(batch_bytes)
        pytest.fail(
            "Rust engine and reference model disagree\n"
            + describe_mismatch(rust, ref)
            + "\n\nbatch:\n"
            + text(batch),
            pytrace=False,
        )


# ----------------------------------------------------------------------------- the test


class Pair:
    """The Rust engine and the reference model, driven in lockstep."""

    def __init__(self, rust: Any = None, ref: ReferenceEngine | None = None) -> None:
        self.rust = rust if rust is not None else rust_engine_module().Engine()
        self.ref = ref if ref is not None else ReferenceEngine()
        # Restored state may violate I1 on purpose (drift for Reconcile).
        self.check_i1 = True

    def apply(self, commands: list[engine_pb2.EngineCommand], now: int) -> None:
        data = engine_pb2.EngineBatch(now_unix_ms=now, commands=commands).SerializeToString()
        note(f"apply @{now}:\n{text(engine_pb2.EngineBatch(now_unix_ms=now, commands=commands))}")
        ref_bytes = self.ref.apply(data)
        rust_bytes = self.rust.apply(data).encode()
        assert_same(rust_bytes, ref_bytes, data)
        self.check()

    def check(self) -> None:
        if self.check_i1:
            self.rust.check_invariants()
            self.ref.check_invariants()
        assert list(self.rust.pending()) == self.ref.pending_batches()

    def commit_oldest(self) -> None:
        pending = self.ref.pending_batches()
        if pending:
            note(f"commit {pending[0]}")
            self.rust.commit(pending[0])
            self.ref.commit(pending[0])
            self.check()

    def rollback(self, seq: int) -> None:
        note(f"rollback {seq}")
        self.rust.rollback(seq)
        self.ref.rollback(seq)
        self.check()


def test_rust_engine_is_importable() -> None:
    rust_engine_module()


@DIFF_SETTINGS
@given(data=st.data())
def test_differential(data: st.DataObject) -> None:
    pair = Pair()
    world = World()
    if data.draw(st.integers(0, 9), label="skip setup") < 9:
        pair.apply(data.draw(setup_batch(), label="setup"), world.now)
    steps = data.draw(st.integers(1, 14), label="steps")
    for _ in range(steps):
        action = data.draw(pick(["batch"] * 7 + ["commit", "commit", "rollback"]))
        if action == "batch":
            world.now += data.draw(pick([0, 1, 1_000, 59_000, 61_000, 130_000, 1_000_000]))
            n = data.draw(st.integers(0, 8))
            commands = [data.draw(command(world)) for _ in range(n)]
            if data.draw(st.integers(0, 3)) == 0:
                commands.insert(
                    0,
                    engine_pb2.EngineCommand(
                        client_id="system", expire_reservations=engine_pb2.ExpireReservations()
                    ),
                )
            pair.apply(commands, world.now)
            world.observe(pair.ref)
        elif action == "commit":
            pair.commit_oldest()
        else:
            pending = pair.ref.pending_batches()
            if pending:
                pair.rollback(data.draw(pick(pending)))
    # everything still pending can be rolled back to the last commit
    pending = pair.ref.pending_batches()
    if pending:
        pair.rollback(pending[0])


@DIFF_SETTINGS
@given(data=st.data())
def test_differential_hot_sku(data: st.DataObject) -> None:
    """Many creates on one or two SKUs: backorder queues, splits and restocks."""
    pair = Pair()
    world = World()
    pair.apply(data.draw(setup_batch(), label="setup"), world.now)
    for _ in range(data.draw(st.integers(1, 6))):
        world.now += data.draw(pick([0, 1_000, 61_000, 200_000]))
        commands = []
        for _ in range(data.draw(st.integers(1, 12))):
            kind = data.draw(pick(["create", "create", "create", "restock", "cancel", "other"]))
            if kind == "create":
                client = data.draw(pick(CLIENTS))
                skus = data.draw(st.lists(pick(SKUS[:2]), min_size=1, max_size=2, unique=True))
                cmd = engine_pb2.EngineCommand(
                    client_id=client,
                    create_order=orders_pb2.CreateOrderRequest(
                        request_id=f"h{data.draw(st.integers(0, 30))}",
                        customer_id="cust-1",
                        region="eu",
                        lines=[
                            orders_pb2.OrderLine(
                                sku=s, quantity=data.draw(st.integers(1, 8)), currency="EUR"
                            )
                            for s in skus
                        ],
                        policy=data.draw(pick([1, 2, 3, 3])),
                    ),
                )
                commands.append(cmd)
                remember(world, cmd)
            elif kind == "restock":
                commands.append(
                    engine_pb2.EngineCommand(
                        client_id="admin",
                        adjust_stock=orders_pb2.AdjustStockRequest(
                            sku=data.draw(pick(SKUS[:2])),
                            location_id=data.draw(pick(["l1", "l2", "l3"])),
                            delta=data.draw(st.integers(0, 9)),
                        ),
                    )
                )
            elif kind == "cancel" and world.bodies:
                commands.append(
                    engine_pb2.EngineCommand(
                        client_id="c1",
                        cancel_order=orders_pb2.CancelOrderRequest(
                            order_id=data.draw(pick(world.known_order_ids()))
                        ),
                    )
                )
            else:
                commands.append(data.draw(command(world)))
        pair.apply(commands, world.now)
        world.observe(pair.ref)
        if data.draw(st.booleans()):
            pair.commit_oldest()


@DIFF_SETTINGS
@given(data=st.data())
def test_differential_restore_with_drift(data: st.DataObject) -> None:
    """State restored from persisted rows (Engine.restore), with `reserved` drifted in some
    stock rows as an inconsistent store would leave it: Reconcile and everything after it
    must agree. Both engines are restored from the same rows (the Rust engine's snapshot)."""
    pair = Pair()
    world = World()
    pair.apply(data.draw(setup_batch(), label="setup"), world.now)
    for _ in range(data.draw(st.integers(1, 4))):
        world.now += data.draw(pick([0, 1_000, 61_000]))
        pair.apply(
            [data.draw(command(world)) for _ in range(data.draw(st.integers(1, 8)))], world.now
        )
        world.observe(pair.ref)
    for seq in pair.ref.pending_batches():
        pair.rust.commit(seq)
        pair.ref.commit(seq)
    snap = engine_pb2.EngineSnapshot.FromString(pair.rust.snapshot())
    stock = list(snap.stock)
    for level in stock:
        if data.draw(st.integers(0, 3), label="drift?") == 3:
            level.reserved = data.draw(st.integers(0, level.on_hand), label="reserved")
            level.available = level.on_hand - level.reserved
    rows = (
        [r.SerializeToString() for r in snap.regions],
        [x.SerializeToString() for x in snap.locations],
        [s.SerializeToString() for s in stock],
        [o.SerializeToString() for o in snap.orders],
    )
    note(f"restored from snapshot with stock {[text(s) for s in stock]}")
    rust = rust_engine_module().Engine()
    rust.restore(*rows, batch_seq=snap.batch_seq)
    ref = ReferenceEngine()
    ref.restore(*rows, batch_seq=snap.batch_seq)
    restored = Pair(rust, ref)
    restored.check_i1 = False
    for _ in range(data.draw(st.integers(1, 3))):
        world.now += data.draw(pick([0, 1_000, 61_000, 1_000_000]))
        commands = [
            engine_pb2.EngineCommand(
                client_id="admin",
                reconcile=orders_pb2.ReconcileRequest(
                    region=data.draw(pick(["", "eu", "us"])), repair=data.draw(st.booleans())
                ),
            )
        ]
        commands += [data.draw(command(world)) for _ in range(data.draw(st.integers(0, 6)))]
        restored.apply(commands, world.now)
