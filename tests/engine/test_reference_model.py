"""Unit tests of the pure-Python reference model against docs/engine.md."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import xxhash
from engine_helpers import (
    T0,
    adjust_stock,
    batch,
    batch_create,
    cancel,
    confirm,
    create,
    create_req,
    decode_event,
    expire,
    location,
    parse,
    reconcile,
    region,
    set_stock,
    ship,
)
from reference.model import (
    ReferenceEngine,
    ReferenceStateError,
    location_proto,
    make_order_id,
    order_proto,
    region_proto,
    stock_proto,
)

from server.gen.orders.engine.v1 import engine_pb2
from server.gen.orders.v1 import events_pb2, orders_pb2

ALLOCATED = orders_pb2.ORDER_STATUS_ALLOCATED
BACKORDERED = orders_pb2.ORDER_STATUS_BACKORDERED
REJECTED = orders_pb2.ORDER_STATUS_REJECTED
CONFIRMED = orders_pb2.ORDER_STATUS_CONFIRMED
SHIPPED = orders_pb2.ORDER_STATUS_SHIPPED
CANCELLED = orders_pb2.ORDER_STATUS_CANCELLED
EXPIRED = orders_pb2.ORDER_STATUS_EXPIRED
SPLIT = orders_pb2.ALLOCATION_POLICY_SPLIT
BACKORDER = orders_pb2.ALLOCATION_POLICY_BACKORDER
SINGLE = orders_pb2.ALLOCATION_POLICY_SINGLE_LOCATION
MOST_AVAILABLE = orders_pb2.ALLOCATION_STRATEGY_MOST_AVAILABLE


class Harness:
    def __init__(self) -> None:
        self.engine = ReferenceEngine()

    def run(
        self, *commands: engine_pb2.EngineCommand, now: int = T0
    ) -> engine_pb2.EngineBatchResult:
        out = parse(self.engine.apply(batch(commands, now)))
        self.engine.check_invariants()
        return out

    def one(self, command: engine_pb2.EngineCommand, now: int = T0) -> engine_pb2.CommandResult:
        out = self.run(command, now=now)
        assert len(out.results) == 1
        return out.results[0]

    def stock(self, sku: str, loc: str) -> tuple[int, int]:
        row = self.engine.stock[(sku, loc)]
        return row.on_hand, row.reserved


@pytest.fixture
def h() -> Harness:
    """Region eu (PRIORITY, ttl 60 s) with locations a (priority 1), b (2), c (2)."""
    harness = Harness()
    harness.run(region("eu", ttl=60), location("a", priority=1), location("b", priority=2))
    harness.run(location("c", priority=2))
    return harness


def oid(request_id: str, client: str = "client-a") -> str:
    return make_order_id(client, request_id)


def allocs(order: orders_pb2.Order) -> list[tuple[int, str, str, int]]:
    return [(a.line_index, a.sku, a.location_id, a.quantity) for a in order.allocations]


def backorders(order: orders_pb2.Order) -> list[tuple[int, str, int]]:
    return [(b.line_index, b.sku, b.quantity) for b in order.backorders]


def violations(result: engine_pb2.CommandResult | orders_pb2.OrderError) -> list[str]:
    err = result.error if isinstance(result, engine_pb2.CommandResult) else result
    return [v.field for v in err.field_violations]


def subjects(out: engine_pb2.EngineBatchResult) -> list[str]:
    return [e.subject for e in out.events]


def stock_all(h: Harness, rows: Sequence[tuple[str, str, int]]) -> None:
    h.run(*[set_stock(sku, loc, n) for sku, loc, n in rows])


# ----------------------------------------------------------------------------- ids


def test_order_id_is_xxh3_128_of_client_and_request() -> None:
    expected = "o-" + xxhash.xxh3_128(b"client-a\x00r1").hexdigest()
    assert make_order_id("client-a", "r1") == expected
    assert len(expected) == 2 + 32
    assert make_order_id("client-b", "r1") != expected


# ----------------------------------------------------------------------------- validation


def test_empty_create_reports_every_violation_in_order(h: Harness) -> None:
    res = h.one(
        engine_pb2.EngineCommand(client_id="c", create_order=orders_pb2.CreateOrderRequest())
    )
    assert res.code == 3
    assert res.error.code == 3
    assert res.error.reason == "INVALID_REQUEST"
    assert violations(res) == ["request_id", "customer_id", "region", "lines"]
    assert res.error.field_violations[3].description == "at least one line is required"


def test_line_violations_in_spec_order(h: Harness) -> None:
    req = create_req(
        "r1",
        [
            ("s 1", 0, -1, "EUR"),  # bad sku, quantity, price
            ("s2", 1, 1, "XXX"),  # unknown currency
            ("s3", 1, 1, "USD"),  # currency differs from lines[0]
            ("s3", 100_001, 1, "EUR"),  # duplicate sku, quantity too big
        ],
        policy=9,
    )
    res = h.one(engine_pb2.EngineCommand(client_id="c", create_order=req))
    assert res.code == 3
    assert violations(res) == [
        "lines[0].sku",
        "lines[0].quantity",
        "lines[0].unit_price_minor",
        "lines[1].currency",
        "lines[3].quantity",
        "lines[3].sku",
        "lines[2].currency",
        "policy",
    ]
    descr = {(v.field, v.description) for v in res.error.field_violations}
    assert ("lines[3].sku", "duplicate sku, first at lines[2]") in descr
    assert ("lines[2].currency", "all lines must use the currency of lines[0] (EUR)") in descr


def test_identifier_limits(h: Harness) -> None:
    ok = "x" * 64
    res = h.one(create(ok, [("s", 1)], customer=ok, region="r" * 32))
    assert res.error.reason == "REGION_NOT_FOUND"  # valid, region just isn't configured
    res = h.one(create("x" * 65, [("s" * 65, 1)], customer="a/b", region="r" * 33))
    assert violations(res) == ["request_id", "customer_id", "region", "lines[0].sku"]
    res = h.one(create("r1", [("s", 1)], client="bad client"))
    assert res.code == 3
    assert violations(res) == ["client_id"]
    # client_id comes first, together with the command's own violations
    res = h.one(create("", [("s", 1)], client=""))
    assert violations(res) == ["client_id", "request_id"]
    res = h.one(cancel("", client="a b"))
    assert violations(res) == ["client_id", "order_id"]
    assert res.error.message == (
        "invalid request: client_id: must contain only the characters [A-Za-z0-9._:-]; "
        "order_id: is required"
    )


def test_too_many_lines_and_total(h: Harness) -> None:
    res = h.one(create("r1", [(f"s{i}", 1) for i in range(101)]))
    assert violations(res) == ["lines"]
    assert res.error.field_violations[0].description == "at most 100 lines"
    big = 10**12
    res = h.one(create("r2", [("s1", 1000, big), ("s2", 1, 1)]))
    assert violations(res) == ["lines"]
    assert "exceeds 1000000000000000" in res.error.field_violations[0].description
    # exactly at the limit is fine
    res = h.one(create("r3", [("s1", 1000, big)], policy=BACKORDER))
    assert res.code == 0


def test_duplicates_and_currencies_with_invalid_values(h: Harness) -> None:
    res = h.one(create("r1", [("", 1, 1, "EU"), ("", 1, 1, "USD"), ("s", 1, 1, "EU")]))
    assert [(v.field, v.description) for v in res.error.field_violations] == [
        ("lines[0].sku", "is required"),
        ("lines[0].currency", "must be an active ISO 4217 currency code"),
        ("lines[1].sku", "is required"),
        ("lines[2].currency", "must be an active ISO 4217 currency code"),
        ("lines[1].sku", "duplicate sku, first at lines[0]"),
        ("lines[1].currency", "all lines must use the currency of lines[0] (EU)"),
    ]


def test_missing_messages_and_unknown_enums(h: Harness) -> None:
    res = h.one(
        engine_pb2.EngineCommand(
            client_id="admin", upsert_location=orders_pb2.UpsertLocationRequest()
        )
    )
    assert violations(res) == ["location"]
    res = h.one(
        engine_pb2.EngineCommand(
            client_id="admin", configure_region=orders_pb2.ConfigureRegionRequest()
        )
    )
    assert violations(res) == ["region"]
    res = h.one(engine_pb2.EngineCommand(client_id="admin"))
    assert violations(res) == ["command"]
    cmd = batch_create([create_req("r1", [("s1", 1)])])
    cmd.batch_create_orders.error_policy = 7  # type: ignore[assignment]
    res = h.one(cmd)
    assert violations(res) == ["error_policy"]


def test_total_not_checked_when_an_amount_is_invalid(h: Harness) -> None:
    res = h.one(create("r1", [("s1", 100_000, 10**12), ("s2", 0, 1)]))
    assert violations(res) == ["lines[1].quantity"]


def test_invalid_body_with_known_request_id_is_invalid_argument(h: Harness) -> None:
    stock_all(h, [("s1", "a", 5)])
    assert h.one(create("r1", [("s1", 1)])).code == 0
    res = h.one(create("r1", [("s1", 0)]))
    assert res.code == 3
    assert res.error.reason == "INVALID_REQUEST"


def test_failed_validation_changes_nothing(h: Harness) -> None:
    out = h.run(create("r1", [("s1", 0)]))
    assert not out.changed_orders and not out.events
    assert oid("r1") not in h.engine.orders


# ----------------------------------------------------------------------------- allocation


def test_priority_strategy_picks_first_location_that_fills_everything(h: Harness) -> None:
    stock_all(h, [("s1", "a", 5), ("s2", "a", 1), ("s1", "b", 5), ("s2", "b", 5)])
    stock_all(h, [("s1", "c", 5), ("s2", "c", 5)])
    res = h.one(create("r1", [("s1", 2), ("s2", 2)]))
    assert res.code == 0 and not res.replayed
    order = res.order
    assert order.status == ALLOCATED
    # a cannot fill s2; b and c tie on priority 2 -> b by id
    assert allocs(order) == [(0, "s1", "b", 2), (1, "s2", "b", 2)]
    assert order.version == 1
    assert order.expire_time.ToMilliseconds() == T0 + 60_000
    assert order.total_minor == 400 and order.currency == "EUR"
    assert order.create_time.ToMilliseconds() == T0 == order.update_time.ToMilliseconds()
    assert order.client_id == "client-a" and order.order_id == oid("r1")
    assert h.stock("s1", "b") == (5, 2)


def test_most_available_strategy(h: Harness) -> None:
    h.run(region("eu", strategy=MOST_AVAILABLE, ttl=60))
    stock_all(h, [("s1", "a", 3), ("s2", "a", 3), ("s1", "b", 2), ("s2", "b", 9)])
    stock_all(h, [("s1", "c", 9), ("s2", "c", 2)])
    # b and c both sum to 11 -> priority tie (2) -> location id: b
    res = h.one(create("r1", [("s1", 2), ("s2", 2)]))
    assert allocs(res.order) == [(0, "s1", "b", 2), (1, "s2", "b", 2)]
    # now b sums 7, c 11, a 6 -> c
    res = h.one(create("r2", [("s1", 2), ("s2", 2)]))
    assert allocs(res.order)[0][2] == "c"
    # only a can fill 3 x s2... no: b has 7 s2 left; b (7) beats a (3)
    res = h.one(create("r3", [("s2", 3)]))
    assert allocs(res.order) == [(0, "s2", "b", 3)]


def test_single_location_rejects_when_no_location_fills_everything(h: Harness) -> None:
    stock_all(h, [("s1", "a", 5), ("s2", "b", 5)])
    out = h.run(create("r1", [("s1", 1), ("s2", 1)]))
    order = out.results[0].order
    assert out.results[0].code == 0
    assert order.status == REJECTED
    assert order.status_reason == "INSUFFICIENT_STOCK"
    assert order.version == 1
    assert not order.allocations and not order.HasField("expire_time")
    assert subjects(out) == ["orders.v1.rejected"]
    assert [o.order_id for o in out.changed_orders] == [oid("r1")]
    assert not out.changed_stock
    # a retry sees the same answer
    res = h.one(create("r1", [("s1", 1), ("s2", 1)]))
    assert res.replayed and res.order.status == REJECTED


def test_split_across_locations_in_priority_order(h: Harness) -> None:
    stock_all(h, [("s1", "a", 2), ("s1", "b", 0), ("s1", "c", 5), ("s2", "b", 1)])
    stock_all(h, [("s2", "c", 1)])
    res = h.one(create("r1", [("s1", 4), ("s2", 2)], policy=SPLIT))
    assert res.order.status == ALLOCATED
    assert allocs(res.order) == [
        (0, "s1", "a", 2),
        (0, "s1", "c", 2),
        (1, "s2", "b", 1),
        (1, "s2", "c", 1),
    ]
    assert h.stock("s1", "c") == (5, 2)


def test_split_prefers_one_location_first(h: Harness) -> None:
    stock_all(h, [("s1", "a", 1), ("s1", "c", 5)])
    res = h.one(create("r1", [("s1", 3)], policy=SPLIT))
    assert allocs(res.order) == [(0, "s1", "c", 3)]


def test_split_rejects_when_not_everything_fits(h: Harness) -> None:
    stock_all(h, [("s1", "a", 2), ("s1", "b", 1)])
    out = h.run(create("r1", [("s1", 4)], policy=SPLIT))
    assert out.results[0].order.status == REJECTED
    assert not out.changed_stock
    assert h.stock("s1", "a") == (2, 0)


def test_backorder_reserves_what_exists(h: Harness) -> None:
    stock_all(h, [("s1", "a", 2), ("s1", "b", 1), ("s2", "c", 9)])
    out = h.run(create("r1", [("s1", 5), ("s2", 1), ("s3", 2)], policy=BACKORDER))
    order = out.results[0].order
    assert order.status == BACKORDERED
    assert allocs(order) == [(0, "s1", "a", 2), (0, "s1", "b", 1), (1, "s2", "c", 1)]
    assert backorders(order) == [(0, "s1", 2), (2, "s3", 2)]
    assert not order.HasField("expire_time")
    assert subjects(out) == ["orders.v1.backordered"]
    assert [(s.sku, s.location_id, s.reserved, s.version) for s in out.changed_stock] == [
        ("s1", "a", 2, 2),
        ("s1", "b", 1, 2),
        ("s2", "c", 1, 2),
    ]


def test_region_not_found(h: Harness) -> None:
    out = h.run(create("r1", [("s1", 1)], region="us"))
    assert out.results[0].code == 9
    assert out.results[0].error.reason == "REGION_NOT_FOUND"
    assert not out.changed_orders
    assert oid("r1") not in h.engine.orders


def test_region_without_locations_rejects_or_backorders(h: Harness) -> None:
    h.run(region("empty"))
    assert h.one(create("r1", [("s1", 1)], region="empty")).order.status == REJECTED
    res = h.one(create("r2", [("s1", 1)], region="empty", policy=BACKORDER))
    assert res.order.status == BACKORDERED
    assert backorders(res.order) == [(0, "s1", 1)]


# ----------------------------------------------------------------------------- backorders


def test_restock_serves_backorders_fifo(h: Harness) -> None:
    h.run(create("r1", [("s1", 3)], policy=BACKORDER))
    h.run(create("r2", [("s1", 2)], policy=BACKORDER))
    out = h.run(set_stock("s1", "b", 4), now=T0 + 5)
    assert subjects(out) == [
        "inventory.v1.stock_changed",
        "orders.v1.allocated",
        "orders.v1.backordered",
    ]
    stock_event = decode_event(out.events[0])
    assert isinstance(stock_event, events_pb2.StockEvent)
    assert stock_event.reason == events_pb2.STOCK_EVENT_REASON_SET
    # level right after the on_hand change, before serving
    assert (stock_event.level.on_hand, stock_event.level.reserved) == (4, 0)
    assert stock_event.event_id == "stock:s1@b:1"
    assert out.events[0].event_id == "stock:s1@b:1"
    # the command's result is the level after serving
    level = out.results[0].stock
    assert (level.on_hand, level.reserved, level.available, level.version) == (4, 4, 0, 3)
    first, second = (decode_event(e) for e in out.events[1:])
    assert isinstance(first, events_pb2.OrderEvent) and isinstance(second, events_pb2.OrderEvent)
    assert first.event_id == f"{oid('r1')}:2"
    assert first.type == events_pb2.ORDER_EVENT_TYPE_ALLOCATED
    assert first.order.status == ALLOCATED
    assert first.order.expire_time.ToMilliseconds() == T0 + 5 + 60_000
    assert first.order.update_time.ToMilliseconds() == T0 + 5
    assert first.event_time.ToMilliseconds() == T0 + 5
    assert not first.order.backorders
    assert second.order.status == BACKORDERED
    assert backorders(second.order) == [(0, "s1", 1)]
    assert allocs(second.order) == [(0, "s1", "b", 1)]
    assert [o.order_id for o in out.changed_orders] == [oid("r1"), oid("r2")]
    # more stock at the same location tops up the existing allocation
    out = h.run(adjust_stock("s1", "b", 1))
    order = out.changed_orders[0]
    assert order.status == ALLOCATED and order.version == 3
    assert allocs(order) == [(0, "s1", "b", 2)]
    assert h.engine.queues == {}


def test_backorder_served_from_other_location_keeps_line_order(h: Harness) -> None:
    stock_all(h, [("s1", "a", 1), ("s2", "a", 1)])
    h.run(create("r1", [("s1", 2), ("s2", 3)], policy=BACKORDER))
    out = h.run(set_stock("s2", "c", 1))
    assert allocs(out.changed_orders[0]) == [
        (0, "s1", "a", 1),
        (1, "s2", "a", 1),
        (1, "s2", "c", 1),
    ]
    assert backorders(out.changed_orders[0]) == [(0, "s1", 1), (1, "s2", 1)]
    # an earlier line served later still lists by line index
    out = h.run(set_stock("s1", "c", 1))
    assert allocs(out.changed_orders[0]) == [
        (0, "s1", "a", 1),
        (0, "s1", "c", 1),
        (1, "s2", "a", 1),
        (1, "s2", "c", 1),
    ]


def test_cancel_frees_stock_for_backorders(h: Harness) -> None:
    stock_all(h, [("s1", "a", 2), ("s2", "a", 5)])
    h.run(create("r1", [("s1", 2), ("s2", 1)]))
    h.run(create("r2", [("s1", 1)], policy=BACKORDER))
    out = h.run(cancel(oid("r1")))
    assert out.results[0].order.status == CANCELLED
    assert out.results[0].order.status_reason == "CANCELLED_BY_CLIENT"
    assert subjects(out) == ["orders.v1.cancelled", "orders.v1.allocated"]
    assert h.stock("s1", "a") == (2, 1)
    assert h.stock("s2", "a") == (5, 0)
    # history stays on the cancelled order
    assert allocs(out.results[0].order) == [(0, "s1", "a", 2), (1, "s2", "a", 1)]
    assert not out.results[0].order.HasField("expire_time")


def test_cancel_backordered_leaves_queue(h: Harness) -> None:
    stock_all(h, [("s1", "a", 1)])
    h.run(create("r1", [("s1", 3)], policy=BACKORDER))
    h.run(create("r2", [("s1", 1)], policy=BACKORDER))
    out = h.run(cancel(oid("r1"), reason="changed-mind"))
    assert out.results[0].order.status_reason == "changed-mind"
    assert backorders(out.results[0].order) == [(0, "s1", 2)]
    # the freed unit goes to r2, the only waiting order
    assert subjects(out) == ["orders.v1.cancelled", "orders.v1.allocated"]
    assert h.engine.queues == {}


def test_backorder_queue_is_per_region(h: Harness) -> None:
    h.run(region("us"), location("u1", "us"))
    h.run(create("r1", [("s1", 1)], region="us", policy=BACKORDER))
    out = h.run(set_stock("s1", "a", 5))
    assert subjects(out) == ["inventory.v1.stock_changed"]
    out = h.run(set_stock("s1", "u1", 5))
    assert subjects(out) == ["inventory.v1.stock_changed", "orders.v1.allocated"]


# ----------------------------------------------------------------------------- transitions


def test_confirm_ship_lifecycle(h: Harness) -> None:
    stock_all(h, [("s1", "a", 5)])
    h.run(create("r1", [("s1", 2)]))
    res = h.one(confirm(oid("r1")))
    assert res.order.status == CONFIRMED and res.order.version == 2
    assert not res.order.HasField("expire_time")
    out = h.run(ship(oid("r1")))
    assert out.results[0].order.status == SHIPPED
    assert subjects(out) == ["orders.v1.shipped"]
    assert out.events[0].event_id == f"{oid('r1')}:3"
    assert h.stock("s1", "a") == (3, 0)
    assert out.changed_stock[0].version == 3  # set, reserve, ship


@pytest.mark.parametrize(
    ("verb", "make"),
    [("confirm", confirm), ("ship", ship), ("cancel", cancel)],
)
def test_illegal_transitions(h: Harness, verb: str, make: object) -> None:
    h.run(create("r1", [("s1", 1)]))  # REJECTED
    res = h.one(make(oid("r1")))  # type: ignore[operator]
    assert res.code == 9
    assert res.error.reason == "ILLEGAL_TRANSITION"
    assert res.error.message == f"cannot {verb} an order in status REJECTED"


def test_unknown_order_and_invalid_id(h: Harness) -> None:
    res = h.one(confirm("o-nope"))
    assert (res.code, res.error.reason) == (5, "ORDER_NOT_FOUND")
    res = h.one(ship(""))
    assert (res.code, violations(res)) == (3, ["order_id"])
    res = h.one(cancel("o-x", reason="r" * 257))
    assert violations(res) == ["reason"]


def test_ship_requires_confirm_and_cancel_of_confirmed(h: Harness) -> None:
    stock_all(h, [("s1", "a", 5)])
    h.run(create("r1", [("s1", 2)]))
    assert h.one(ship(oid("r1"))).error.message == "cannot ship an order in status ALLOCATED"
    h.run(confirm(oid("r1")))
    assert h.one(confirm(oid("r1"))).error.reason == "ILLEGAL_TRANSITION"
    res = h.one(cancel(oid("r1")))
    assert res.order.status == CANCELLED
    assert h.stock("s1", "a") == (5, 0)
    assert h.one(cancel(oid("r1"))).error.message == "cannot cancel an order in status CANCELLED"


def test_expiry_in_expire_time_then_id_order(h: Harness) -> None:
    stock_all(h, [("s1", "a", 10)])
    h.run(create("r1", [("s1", 1)]), create("r2", [("s1", 1)]), now=T0)
    h.run(create("r3", [("s1", 1)]), now=T0 + 1000)
    # not yet due
    res = h.one(expire(), now=T0 + 59_999)
    assert res.expire_reservations.expired == 0
    out = h.run(expire(), now=T0 + 60_000)
    assert out.results[0].expire_reservations.expired == 2
    assert [o.order_id for o in out.changed_orders] == sorted([oid("r1"), oid("r2")])
    assert out.changed_orders[0].status == EXPIRED
    assert out.changed_orders[0].status_reason == "RESERVATION_EXPIRED"
    assert h.stock("s1", "a") == (10, 1)
    # due but not yet expired: confirm still succeeds
    assert h.one(confirm(oid("r3")), now=T0 + 999_999).order.status == CONFIRMED
    assert h.one(expire(), now=T0 + 999_999).expire_reservations.expired == 0
    assert h.one(confirm(oid("r1"))).error.message == "cannot confirm an order in status EXPIRED"


def test_expiry_serves_backorders(h: Harness) -> None:
    stock_all(h, [("s1", "a", 1)])
    h.run(create("r1", [("s1", 1)]))
    h.run(create("r2", [("s1", 1)], policy=BACKORDER))
    out = h.run(expire(), now=T0 + 60_000)
    assert subjects(out) == ["orders.v1.expired", "orders.v1.allocated"]
    assert out.changed_orders[1].expire_time.ToMilliseconds() == T0 + 120_000


def test_default_ttl(h: Harness) -> None:
    h.run(region("d"), location("d1", "d"), set_stock("s1", "d1", 1))
    res = h.one(create("r1", [("s1", 1)], region="d"))
    assert res.order.expire_time.ToMilliseconds() == T0 + 900_000


# ----------------------------------------------------------------------------- idempotency


def test_replay_returns_order_as_it_is_now(h: Harness) -> None:
    stock_all(h, [("s1", "a", 5)])
    h.run(create("r1", [("s1", 2)], policy=SINGLE))
    h.run(confirm(oid("r1")))
    out = h.run(create("r1", [("s1", 2)]))  # UNSPECIFIED == SINGLE_LOCATION
    res = out.results[0]
    assert res.code == 0 and res.replayed
    assert res.order.status == CONFIRMED and res.order.version == 2
    assert not out.changed_orders and not out.changed_stock and not out.events


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"customer": "other"}, "customer_id"),
        ({"region": "us"}, "region"),
        ({"lines": [("s1", 3)]}, "lines"),
        ({"policy": SPLIT}, "policy"),
    ],
)
def test_request_id_reused(h: Harness, kwargs: dict[str, object], field: str) -> None:
    stock_all(h, [("s1", "a", 5)])
    h.run(create("r1", [("s1", 2)]))
    args: dict[str, object] = {"lines": [("s1", 2)]}
    args.update(kwargs)
    lines = args.pop("lines")
    out = h.run(create("r1", lines, **args))  # type: ignore[arg-type]
    res = out.results[0]
    assert (res.code, res.error.reason) == (6, "REQUEST_ID_REUSED")
    assert field in res.error.message
    assert not out.changed_orders and not out.events


def test_request_id_scoped_by_client(h: Harness) -> None:
    stock_all(h, [("s1", "a", 5)])
    a = h.one(create("r1", [("s1", 2)], client="client-a"))
    b = h.one(create("r1", [("s1", 3)], client="client-b"))
    assert not b.replayed and a.order.order_id != b.order.order_id
    assert b.order.client_id == "client-b"


# ----------------------------------------------------------------------------- batch create


def test_batch_each(h: Harness) -> None:
    stock_all(h, [("s1", "a", 1)])
    out = h.run(
        batch_create(
            [
                create_req("r1", [("s1", 1)]),
                create_req("r2", [("s1", 0)]),
                create_req("r3", [("s1", 1)]),
                create_req("r1", [("s1", 1)]),
            ]
        )
    )
    res = out.results[0]
    assert res.code == 0 and not res.replayed
    items = res.batch_create_orders.results
    assert [x.request_id for x in items] == ["r1", "r2", "r3", "r1"]
    assert items[0].order.status == ALLOCATED
    assert items[1].error.reason == "INVALID_REQUEST"
    assert violations(items[1].error) == ["lines[0].quantity"]
    assert items[2].order.status == REJECTED
    assert items[3].order.order_id == oid("r1")
    assert [o.order_id for o in out.changed_orders] == [oid("r1"), oid("r3")]


def test_batch_all_or_nothing_aborts_everything(h: Harness) -> None:
    stock_all(h, [("s1", "a", 1), ("s2", "a", 5)])
    before = h.stock("s2", "a")
    out = h.run(
        batch_create(
            [
                create_req("r1", [("s2", 1)]),
                create_req("r2", [("s1", 2)]),  # would be rejected
                create_req("r3", [("s2", 1)], region="nowhere"),
                create_req("r4", [("s2", 1)]),
            ],
            all_or_nothing=True,
        )
    )
    items = out.results[0].batch_create_orders.results
    assert out.results[0].code == 0
    assert [(x.error.code, x.error.reason) for x in items] == [
        (10, "BATCH_ABORTED"),
        (9, "INSUFFICIENT_STOCK"),
        (9, "REGION_NOT_FOUND"),
        (10, "BATCH_ABORTED"),
    ]
    assert not out.changed_orders and not out.changed_stock and not out.events
    assert h.stock("s2", "a") == before
    assert not h.engine.orders


def test_batch_all_or_nothing_success_and_replays(h: Harness) -> None:
    stock_all(h, [("s1", "a", 3)])
    h.run(create("r0", [("s1", 1)]))
    out = h.run(
        batch_create(
            [
                create_req("r0", [("s1", 1)]),  # replay counts as success
                create_req("r1", [("s1", 1)]),
                create_req("r2", [("s1", 5)], policy=BACKORDER),
            ],
            all_or_nothing=True,
        )
    )
    items = out.results[0].batch_create_orders.results
    assert [x.order.status for x in items] == [ALLOCATED, ALLOCATED, BACKORDERED]
    assert [o.order_id for o in out.changed_orders] == [oid("r1"), oid("r2")]
    assert h.stock("s1", "a") == (3, 3)


def test_batch_too_many_requests(h: Harness) -> None:
    reqs = [create_req(f"r{i}", [("s1", 1)]) for i in range(1001)]
    out = h.run(batch_create(reqs))
    assert out.results[0].code == 3
    assert violations(out.results[0]) == ["requests"]
    assert not out.changed_orders


# ----------------------------------------------------------------------------- stock & setup


def test_stock_errors(h: Harness) -> None:
    res = h.one(set_stock("s1", "zz", 1))
    assert (res.code, res.error.reason) == (5, "LOCATION_NOT_FOUND")
    res = h.one(set_stock("", "a", -1))
    assert violations(res) == ["sku", "on_hand"]
    stock_all(h, [("s1", "a", 5)])
    h.run(create("r1", [("s1", 3)]))
    res = h.one(set_stock("s1", "a", 2))
    assert (res.code, res.error.reason) == (9, "STOCK_BELOW_RESERVED")
    res = h.one(adjust_stock("s1", "a", -3))
    assert res.error.reason == "STOCK_BELOW_RESERVED"
    res = h.one(adjust_stock("s1", "a", 10**12))
    assert (res.code, violations(res)) == (3, ["delta"])
    res = h.one(adjust_stock("s1", "a", 10**12 + 1))
    assert violations(res) == ["delta"]
    res = h.one(adjust_stock("s9", "a", -1))  # missing row counts as 0
    assert res.error.reason == "STOCK_BELOW_RESERVED"
    assert ("s9", "a") not in h.engine.stock
    out = h.run(adjust_stock("s1", "a", -2))
    level = out.results[0].stock
    assert (level.on_hand, level.reserved, level.available) == (3, 3, 0)
    ev = decode_event(out.events[0])
    assert isinstance(ev, events_pb2.StockEvent)
    assert ev.reason == events_pb2.STOCK_EVENT_REASON_ADJUSTED


def test_locations_and_regions(h: Harness) -> None:
    res = h.one(location("x", "nowhere"))
    assert (res.code, res.error.reason) == (9, "REGION_NOT_FOUND")
    h.run(region("us"))
    res = h.one(location("a", "us"))
    assert res.error.reason == "LOCATION_REGION_IMMUTABLE"
    out = h.run(location("a", "eu", priority=7))
    assert out.results[0].location.priority == 7
    assert [x.location_id for x in out.changed_locations] == ["a"]
    res = h.one(location("a", "eu", priority=1_000_001))
    assert violations(res) == ["location.priority"]
    res = h.one(region("", strategy=5, ttl=604_801))
    assert violations(res) == ["region.region", "region.strategy", "region.reservation_ttl_seconds"]
    out = h.run(region("eu", strategy=MOST_AVAILABLE, ttl=30))
    assert out.results[0].region.reservation_ttl_seconds == 30
    assert [r.region for r in out.changed_regions] == ["eu"]


def test_changed_rows_each_once_in_first_touch_order(h: Harness) -> None:
    stock_all(h, [("s1", "a", 5), ("s2", "a", 5)])
    out = h.run(
        create("r1", [("s2", 1)]),
        create("r2", [("s1", 1)]),
        confirm(oid("r1")),
        set_stock("s2", "a", 9),
    )
    assert [o.order_id for o in out.changed_orders] == [oid("r1"), oid("r2")]
    assert out.changed_orders[0].status == CONFIRMED  # final state
    assert [(s.sku, s.on_hand) for s in out.changed_stock] == [("s2", 9), ("s1", 5)]
    assert out.batch_seq == 4


# ----------------------------------------------------------------------------- reconcile


def test_reconcile_detects_and_repairs_drift(h: Harness) -> None:
    stock_all(h, [("s1", "a", 5), ("s2", "a", 5), ("s1", "b", 1)])
    h.run(create("r1", [("s1", 2)]))
    res = h.one(reconcile())
    assert res.reconcile.rows_checked == 3 and not res.reconcile.drifts
    # simulate state restored from an inconsistent store
    h.engine.stock[("s1", "a")].reserved = 4
    h.engine.stock[("s1", "b")].reserved = 1
    h.engine.stock[("s2", "a")].reserved = 1
    out = parse(h.engine.apply(batch([reconcile("eu")])))
    drifts = [
        (d.sku, d.location_id, d.recorded_reserved, d.computed_reserved)
        for d in out.results[0].reconcile.drifts
    ]
    assert drifts == [("s1", "a", 4, 2), ("s1", "b", 1, 0), ("s2", "a", 1, 0)]
    assert not out.changed_stock
    out = h.run(reconcile("eu", repair=True))
    assert out.results[0].reconcile.repaired
    assert [s.reserved for s in out.changed_stock] == [2, 0, 0]
    ev = decode_event(out.events[0])
    assert isinstance(ev, events_pb2.StockEvent)
    assert ev.reason == events_pb2.STOCK_EVENT_REASON_RECONCILED
    res = h.one(reconcile("us"))
    assert (res.code, res.error.reason) == (9, "REGION_NOT_FOUND")
    h.run(region("us"))
    res = h.one(reconcile("us"))
    assert res.code == 0 and res.reconcile.rows_checked == 0 and not res.reconcile.repaired


def test_lowering_stock_does_not_serve_backorders(h: Harness) -> None:
    """Only SetStock/AdjustStock *upward* serve the queue (visible after a restore
    whose reserved was repaired down by Reconcile)."""
    stock_all(h, [("s1", "a", 4)])
    h.run(create("r1", [("s1", 4)]))
    h.run(create("r2", [("s1", 2)], policy=BACKORDER))
    regions, locations, stock, orders = state_rows(h.engine)
    tampered = []
    for data in stock:
        level = orders_pb2.StockLevel.FromString(data)
        level.reserved = 2  # drift: after SetStock 3, 1 unit is available but not served
        tampered.append(level.SerializeToString())
    e = ReferenceEngine()
    e.restore(regions, locations, tampered, orders)
    out = parse(e.apply(batch([set_stock("s1", "a", 3)])))
    assert subjects(out) == ["inventory.v1.stock_changed"]


def test_reconcile_does_not_repair_above_on_hand(h: Harness) -> None:
    stock_all(h, [("s1", "a", 5)])
    h.run(create("r1", [("s1", 4)]))
    row = h.engine.stock[("s1", "a")]
    row.on_hand, row.reserved = 3, 0
    out = parse(h.engine.apply(batch([reconcile(repair=True)])))
    assert len(out.results[0].reconcile.drifts) == 1
    assert not out.changed_stock and not out.events


# ----------------------------------------------------------------------------- batches


def test_batch_seq_commit_and_rollback() -> None:
    h = Harness()
    out1 = h.run(region("eu"), location("a"), set_stock("s1", "a", 5))
    b2 = batch([create("r1", [("s1", 2)])])
    b3 = batch([create("r2", [("s1", 3)]), confirm(oid("r1"))])
    out2 = h.engine.apply(b2)
    out3 = h.engine.apply(b3)
    assert out1.batch_seq == 1 and parse(out3).batch_seq == 3
    assert h.engine.pending_batches() == [1, 2, 3]
    h.engine.commit(1)
    h.engine.rollback(2)  # undoes 3 then 2
    assert h.engine.pending_batches() == []
    assert not h.engine.orders
    assert h.stock("s1", "a") == (5, 0)
    h.engine.check_invariants()
    assert h.engine.apply(b2) == out2
    assert h.engine.apply(b3) == out3
    with pytest.raises(ReferenceStateError):
        h.engine.commit(1)
    with pytest.raises(ReferenceStateError):
        h.engine.rollback(7)


def test_rollback_restores_exact_state_after_every_kind_of_change(h: Harness) -> None:
    stock_all(h, [("s1", "a", 2), ("s2", "b", 5)])
    h.run(create("r1", [("s1", 3)], policy=BACKORDER), create("r2", [("s2", 1)]))
    seq = h.engine.batch_seq
    for s in h.engine.pending_batches():
        h.engine.commit(s)
    before = (
        repr(h.engine.orders),
        repr(h.engine.stock),
        repr(h.engine.queues),
        repr(h.engine.locations),
        repr(h.engine.regions),
    )
    h.run(
        set_stock("s1", "c", 5),
        cancel(oid("r2")),
        location("a", priority=9),
        region("eu", ttl=5),
        region("new"),
        create("r3", [("s1", 1)], policy=BACKORDER),
        batch_create([create_req("r4", [("s2", 2)])], all_or_nothing=True),
    )
    h.engine.rollback(seq + 1)
    after = (
        repr(h.engine.orders),
        repr(h.engine.stock),
        repr(h.engine.queues),
        repr(h.engine.locations),
        repr(h.engine.regions),
    )
    assert after == before
    assert h.engine.batch_seq == seq


def test_same_batches_give_identical_bytes() -> None:
    batches = [
        batch([region("eu"), location("a"), location("b", priority=3)]),
        batch([set_stock("s1", "a", 3), set_stock("s1", "b", 3)]),
        batch([create(f"r{i}", [("s1", 1 + i % 3)], policy=i % 4) for i in range(8)]),
        batch([cancel(oid("r0")), expire()], now=T0 + 10**9),
    ]
    e1, e2 = ReferenceEngine(), ReferenceEngine()
    for b in batches:
        assert e1.apply(b) == e2.apply(b)


def test_events_are_order_events_with_snapshots(h: Harness) -> None:
    stock_all(h, [("s1", "a", 5)])
    out = h.run(create("r1", [("s1", 1)]))
    env = out.events[0]
    assert env.subject == "orders.v1.allocated"
    ev = decode_event(env)
    assert isinstance(ev, events_pb2.OrderEvent)
    assert ev.event_id == env.event_id == f"{oid('r1')}:1"
    assert ev.order == out.changed_orders[0]
    assert ev.event_time.ToMilliseconds() == T0


# ----------------------------------------------------------------------------- restore


def state_rows(e: ReferenceEngine) -> tuple[list[bytes], list[bytes], list[bytes], list[bytes]]:
    return (
        [region_proto(r).SerializeToString() for r in e.regions.values()],
        [location_proto(x).SerializeToString() for x in e.locations.values()],
        [stock_proto(s).SerializeToString() for s in e.stock.values()],
        [order_proto(o).SerializeToString() for o in e.orders.values()],
    )


def test_restore_rebuilds_queues_fifo_by_create_time(h: Harness) -> None:
    stock_all(h, [("s1", "a", 1), ("s2", "b", 4)])
    h.run(create("r9", [("s1", 2)], policy=BACKORDER), now=T0 + 1)
    h.run(create("r1", [("s1", 1), ("s2", 2)], policy=BACKORDER), now=T0 + 2)
    h.run(create("r5", [("s2", 1)]), now=T0 + 3)
    restored = ReferenceEngine()
    restored.restore(*state_rows(h.engine), batch_seq=h.engine.batch_seq)
    restored.check_invariants()
    assert restored.queues == h.engine.queues
    nxt = batch([set_stock("s1", "c", 2), cancel(oid("r5")), expire()], now=T0 + 10**8)
    assert restored.apply(nxt) == h.engine.apply(nxt)


def test_restore_keeps_drift_for_reconcile(h: Harness) -> None:
    stock_all(h, [("s1", "a", 5)])
    h.run(create("r1", [("s1", 2)]))
    regions, locations, stock, orders = state_rows(h.engine)
    level = orders_pb2.StockLevel.FromString(stock[0])
    level.reserved = 3
    restored = ReferenceEngine()
    restored.restore(regions, locations, [level.SerializeToString()], orders, batch_seq=7)
    out = parse(restored.apply(batch([reconcile(repair=True)])))
    assert out.batch_seq == 8
    drift = out.results[0].reconcile.drifts[0]
    assert (drift.recorded_reserved, drift.computed_reserved) == (3, 2)
    assert out.changed_stock[0].reserved == 2
    restored.check_invariants()
