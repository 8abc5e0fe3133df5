"""Tests of the Python binding of the Rust engine (server._engine)."""

from __future__ import annotations

import resource
import threading
import time
from types import ModuleType
from typing import Any

import pytest
from engine_helpers import (
    T0,
    batch,
    batch_create,
    cancel,
    confirm,
    create,
    create_req,
    expire,
    location,
    parse,
    reconcile,
    region,
    rust_engine_module,
    set_stock,
    ship,
)
from reference.model import make_order_id
from workloads import StandardWorkload, WorkloadSpec

from server.gen.orders.engine.v1 import engine_pb2
from server.gen.orders.v1 import events_pb2, orders_pb2

BACKORDER = orders_pb2.ALLOCATION_POLICY_BACKORDER


@pytest.fixture(scope="module")
def eng() -> ModuleType:
    return rust_engine_module()


def oid(request_id: str, client: str = "client-a") -> str:
    return make_order_id(client, request_id)


SETUP = batch(
    [
        region("eu", ttl=60),
        location("a", priority=1),
        location("b", priority=2),
        set_stock("s1", "a", 5),
        set_stock("s2", "a", 5),
        set_stock("s1", "b", 3),
    ]
)

WORK = [
    batch(
        [
            create("r1", [("s1", 2), ("s2", 1)]),
            create("r2", [("s1", 9)], policy=BACKORDER),
            create("r3", [("s2", 0)]),
            batch_create(
                [create_req("r4", [("s2", 1)]), create_req("r5", [("s9", 1)])],
                all_or_nothing=True,
            ),
        ],
        now=T0 + 1,
    ),
    batch([confirm(oid("r1")), set_stock("s1", "b", 10), create("r1", [("s1", 2), ("s2", 1)])]),
    batch([ship(oid("r1")), cancel(oid("r2")), cancel("o-unknown"), reconcile()], now=T0 + 5),
    batch([create("r6", [("s1", 1)]), expire()], now=T0 + 10**7),
]


def fresh(eng: ModuleType, *batches: bytes) -> Any:
    engine = eng.Engine()
    for data in batches:
        out = engine.apply(data)
        engine.commit(out.batch_seq)
    return engine


# ----------------------------------------------------------------------------- errors


def test_exception_hierarchy(eng: ModuleType) -> None:
    assert issubclass(eng.EngineError, Exception)
    for name in ("BatchDecodeError", "SnapshotError", "EngineStateError", "EngineBugError"):
        assert issubclass(getattr(eng, name), eng.EngineError), name


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff\xff",  # invalid tag / varint
        b"\x12\x05\x0a\x03ab",  # truncated command
        b"\x08",  # truncated varint
    ],
)
def test_malformed_batch_raises_and_engine_keeps_working(eng: ModuleType, data: bytes) -> None:
    engine = eng.Engine()
    with pytest.raises(eng.BatchDecodeError):
        engine.apply(data)
    assert list(engine.pending()) == []
    out = engine.apply(SETUP)
    assert out.batch_seq == 1
    engine.check_invariants()


def test_a_malformed_command_fails_alone(eng: ModuleType) -> None:
    # Sound framing, but one command's client_id is not UTF-8: the service splices
    # callers' bytes in undecoded, so only that command may fail.
    engine = eng.Engine()
    engine.apply(SETUP)
    out = engine.apply(b"\x08\x01\x12\x04\x0a\x02\xc3\x28")
    code, payload = out.responses[0]
    assert code == 3
    error = orders_pb2.OrderError.FromString(payload)
    assert [v.field for v in error.field_violations] == ["request"]
    engine.check_invariants()


def test_commit_and_rollback_of_a_wrong_seq(eng: ModuleType) -> None:
    engine = eng.Engine()
    with pytest.raises(eng.EngineStateError):
        engine.commit(1)
    with pytest.raises(eng.EngineStateError):
        engine.rollback(1)
    out = engine.apply(SETUP)
    with pytest.raises(eng.EngineStateError):
        engine.commit(out.batch_seq + 1)
    with pytest.raises(eng.EngineStateError):
        engine.rollback(out.batch_seq + 5)
    engine.commit(out.batch_seq)
    with pytest.raises(eng.EngineStateError):
        engine.commit(out.batch_seq)  # already committed
    with pytest.raises(eng.EngineStateError):
        engine.rollback(out.batch_seq)  # durable: cannot be undone
    engine.check_invariants()


# ----------------------------------------------------------------------------- output


RESPONSE_TYPES: dict[str, type[Any]] = {
    "order": orders_pb2.Order,
    "batch_create_orders": orders_pb2.BatchCreateOrdersResponse,
    "stock": orders_pb2.StockLevel,
    "location": orders_pb2.Location,
    "region": orders_pb2.Region,
    "reconcile": orders_pb2.ReconcileResponse,
    "expire_reservations": engine_pb2.ExpireReservationsResult,
}


def check_output_consistency(out: Any) -> engine_pb2.EngineBatchResult:
    """Every accessor of BatchOutput agrees with encode() (and journal())."""
    result = parse(out.encode())
    assert out.batch_seq == result.batch_seq
    assert len(out.responses) == len(result.results) == len(out.replayed)
    for (code, payload), replayed, r in zip(
        out.responses, out.replayed, result.results, strict=True
    ):
        assert code == r.code
        assert replayed == r.replayed
        if code == 0:
            kind = r.WhichOneof("response")
            assert kind is not None
            assert RESPONSE_TYPES[kind].FromString(payload) == getattr(r, kind)
        else:
            assert orders_pb2.OrderError.FromString(payload) == r.error
    assert len(out.order_rows) == len(result.changed_orders)
    for row, order in zip(out.order_rows, result.changed_orders, strict=True):
        order_id, customer_id, status, version, create_ms, update_ms, data = row
        assert orders_pb2.Order.FromString(data) == order
        assert (order_id, customer_id, status, version) == (
            order.order_id,
            order.customer_id,
            order.status,
            order.version,
        )
        assert create_ms == order.create_time.ToMilliseconds()
        assert update_ms == order.update_time.ToMilliseconds()
    assert len(out.stock_rows) == len(result.changed_stock)
    for srow, level in zip(out.stock_rows, result.changed_stock, strict=True):
        assert tuple(srow[:5]) == (
            level.sku,
            level.location_id,
            level.on_hand,
            level.reserved,
            level.version,
        )
    assert [orders_pb2.Location.FromString(x) for x in out.location_rows] == list(
        result.changed_locations
    )
    assert [orders_pb2.Region.FromString(x) for x in out.region_rows] == list(
        result.changed_regions
    )
    assert [tuple(e) for e in out.events] == [
        (e.subject, e.event_id, e.payload) for e in result.events
    ]
    for e in result.events:
        if e.subject == "inventory.v1.stock_changed":
            assert events_pb2.StockEvent.FromString(e.payload).event_id == e.event_id
        else:
            assert events_pb2.OrderEvent.FromString(e.payload).event_id == e.event_id
    journal = engine_pb2.JournalEntry.FromString(out.journal())
    assert journal.batch_seq == result.batch_seq
    assert list(journal.events) == list(result.events)
    for name in ("changed_stock", "changed_locations", "changed_regions"):
        if getattr(journal, name):
            assert list(getattr(journal, name)) == list(getattr(result, name)), name
    return result


def test_output_accessors_match_encode(eng: ModuleType) -> None:
    engine = eng.Engine()
    kinds: set[str] = set()
    for data in [SETUP, *WORK]:
        out = engine.apply(data)
        result = check_output_consistency(out)
        kinds.update(r.WhichOneof("response") or f"error{r.code}" for r in result.results)
        engine.check_invariants()
    assert {"order", "batch_create_orders", "stock", "reconcile", "error3"} <= kinds
    assert list(engine.pending()) == [1, 2, 3, 4, 5]


def test_stats_is_a_dict_of_ints(eng: ModuleType) -> None:
    engine = fresh(eng, SETUP, *WORK)
    stats = engine.stats()
    assert isinstance(stats, dict)
    assert stats
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in stats.items())


# ----------------------------------------------------------------------------- state


def test_rollback_then_reapply_gives_identical_bytes(eng: ModuleType) -> None:
    engine = fresh(eng, SETUP)
    first = [engine.apply(data).encode() for data in WORK]
    assert list(engine.pending()) == [2, 3, 4, 5]
    engine.rollback(3)  # undoes 5, 4 and 3
    assert list(engine.pending()) == [2]
    engine.check_invariants()
    again = [engine.apply(data).encode() for data in WORK[1:]]
    assert again == first[1:]
    engine.rollback(2)
    assert list(engine.pending()) == []
    assert [engine.apply(data).encode() for data in WORK] == first


def test_reserved_engine_gives_identical_results(eng: ModuleType) -> None:
    plain = fresh(eng, SETUP)
    reserved = eng.Engine()
    reserved.reserve_orders(50_000)  # spans several order chunks
    out = reserved.apply(SETUP)
    reserved.commit(out.batch_seq)
    for data in WORK:
        assert reserved.apply(data).encode() == plain.apply(data).encode()
    reserved.rollback(reserved.pending()[0])  # undo through reserved chunks
    plain.rollback(plain.pending()[0])
    assert reserved.snapshot() == plain.snapshot()
    reserved.check_invariants()
    assert reserved.stats() == plain.stats()


def test_a_reserved_engine_creates_orders_with_few_page_faults(eng: ModuleType) -> None:
    """What provisioning buys (docs/design.md, "Engine memory is provisioned"): once
    reserve_orders(N) returns, creating N orders faults in almost no fresh memory, where
    a growing engine faults in a page for every few dozen orders. What is left are the
    few orders' extras outside the order store (a split order's list of allocations,
    backorder queues: 100-300 pages for these 120,000 orders)."""
    spec = WorkloadSpec(seed=3, skus=2_000, locations=4, batch_size=2_048, body_pool=4_096)
    workload = StandardWorkload(spec)
    setup = workload.setup_batches()
    stream = workload.order_batches()
    batches = [next(stream).data for _ in range(60)]
    orders = 60 * spec.batch_size

    def page_faults_creating_orders(reserve: int) -> int:
        engine = eng.Engine()
        for data in setup:
            engine.commit(engine.apply(data).batch_seq)
        if reserve:
            engine.reserve_orders(reserve)
        # The first batch grows the per-batch buffers (output, logs), which later
        # batches reuse: not counted.
        engine.commit(engine.apply(batches[0]).batch_seq)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for data in batches[1:]:
            engine.commit(engine.apply(data).batch_seq)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        assert engine.stats()["orders"] == orders
        return faults

    growing = page_faults_creating_orders(0)
    reserved = page_faults_creating_orders(orders)
    # Measured: 102-274 against 4,100-5,100 (fewer when earlier tests' memory is reused).
    assert reserved <= orders // 250, (reserved, growing)
    assert growing > 8 * (reserved + 1), (reserved, growing)


def test_commit_in_order_while_pipelining(eng: ModuleType) -> None:
    engine = fresh(eng, SETUP)
    seqs = [engine.apply(data).batch_seq for data in WORK]
    assert seqs == [2, 3, 4, 5]
    engine.commit(2)
    engine.commit(3)
    assert list(engine.pending()) == [4, 5]
    engine.rollback(4)
    assert list(engine.pending()) == []
    assert engine.apply(WORK[2]).batch_seq == 4


def test_snapshot_needs_no_pending_batches(eng: ModuleType) -> None:
    engine = fresh(eng, SETUP)
    engine.apply(WORK[0])
    with pytest.raises(eng.EngineStateError):
        engine.snapshot()
    engine.rollback(2)
    assert engine_pb2.EngineSnapshot.FromString(engine.snapshot()).batch_seq == 1


def test_snapshot_round_trip_gives_identical_results(eng: ModuleType) -> None:
    engine = fresh(eng, SETUP, WORK[0], WORK[1])
    snap = engine.snapshot()
    parsed = engine_pb2.EngineSnapshot.FromString(snap)
    assert parsed.batch_seq == 3
    assert len(parsed.orders) >= 2
    copy = eng.Engine.from_snapshot(snap)
    copy.check_invariants()
    assert copy.snapshot() == snap
    for data in WORK[2:]:
        assert copy.apply(data).encode() == engine.apply(data).encode()
    with pytest.raises(eng.SnapshotError):
        eng.Engine.from_snapshot(b"\xff\xff\xff")


def test_restore_from_rows(eng: ModuleType) -> None:
    engine = fresh(eng, SETUP, WORK[0], WORK[1])
    snap = engine_pb2.EngineSnapshot.FromString(engine.snapshot())
    restored = eng.Engine()
    restored.restore(
        [r.SerializeToString() for r in snap.regions],
        [x.SerializeToString() for x in snap.locations],
        [s.SerializeToString() for s in snap.stock],
        [o.SerializeToString() for o in snap.orders],
        batch_seq=snap.batch_seq,
    )
    restored.check_invariants()
    for data in WORK[2:]:
        assert restored.apply(data).encode() == engine.apply(data).encode()


# ----------------------------------------------------------------------------- GIL


def big_batch(orders: int) -> bytes:
    """Many small creates over a few SKUs (most get allocated, then rejected)."""
    return engine_pb2.EngineBatch(
        now_unix_ms=T0,
        commands=[
            create(f"g{i}", [(f"s{i % 2 + 1}", 1), ("s2" if i % 2 == 0 else "s1", 1)])
            for i in range(orders)
        ],
    ).SerializeToString()


def test_gil_is_released_during_apply(eng: ModuleType) -> None:
    engine = fresh(
        eng,
        batch(
            [region("eu"), location("a"), set_stock("s1", "a", 10**9), set_stock("s2", "a", 10**9)]
        ),
    )
    data = big_batch(60_000)
    stamps: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            stamps.append(time.perf_counter())

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        time.sleep(0.01)
        start = time.perf_counter()
        engine.apply(data)
        end = time.perf_counter()
    finally:
        stop.set()
        thread.join()
    duration = end - start
    assert duration > 0.02, f"apply too fast ({duration:.3f} s) to tell"
    # With the GIL held for the whole call, no Python code can run in the other
    # thread between the moment apply() starts (within a switch interval of `start`)
    # and its return.
    margin = 0.01
    inside = [t for t in stamps if start + margin < t < end - 0.001]
    assert inside, f"no progress of the other thread during a {duration:.3f} s apply()"
    covered = (max(inside) - min(inside)) / duration
    assert covered > 0.5, f"the other thread ran for only {covered:.0%} of apply()"
