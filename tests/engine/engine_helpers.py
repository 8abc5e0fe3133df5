"""Builders for EngineBatch commands shared by the engine tests (imported, not collected)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

import pytest

from server.gen.orders.engine.v1 import engine_pb2
from server.gen.orders.v1 import events_pb2, orders_pb2

T0 = 1_700_000_000_000  # a fixed batch time (ms)

LineSpec = tuple[str, int] | tuple[str, int, int] | tuple[str, int, int, str]


def line(spec: LineSpec) -> orders_pb2.OrderLine:
    sku, qty = spec[0], spec[1]
    price = int(spec[2]) if len(spec) > 2 else 100
    currency = str(spec[3]) if len(spec) > 3 else "EUR"
    return orders_pb2.OrderLine(sku=sku, quantity=qty, unit_price_minor=price, currency=currency)


def create_req(
    request_id: str,
    lines: Sequence[LineSpec],
    *,
    region: str = "eu",
    customer: str = "cust-1",
    policy: int = 0,
) -> orders_pb2.CreateOrderRequest:
    return orders_pb2.CreateOrderRequest(
        request_id=request_id,
        customer_id=customer,
        region=region,
        lines=[line(x) for x in lines],
        policy=policy,  # type: ignore[arg-type]
    )


def create(
    request_id: str,
    lines: Sequence[LineSpec],
    *,
    client: str = "client-a",
    region: str = "eu",
    customer: str = "cust-1",
    policy: int = 0,
) -> engine_pb2.EngineCommand:
    return engine_pb2.EngineCommand(
        client_id=client,
        create_order=create_req(request_id, lines, region=region, customer=customer, policy=policy),
    )


def batch_create(
    requests: Sequence[orders_pb2.CreateOrderRequest],
    *,
    all_or_nothing: bool = False,
    client: str = "client-a",
) -> engine_pb2.EngineCommand:
    policy = (
        orders_pb2.BATCH_ERROR_POLICY_ALL_OR_NOTHING
        if all_or_nothing
        else orders_pb2.BATCH_ERROR_POLICY_EACH
    )
    return engine_pb2.EngineCommand(
        client_id=client,
        batch_create_orders=orders_pb2.BatchCreateOrdersRequest(
            requests=requests, error_policy=policy
        ),
    )


def region(name: str = "eu", strategy: int = 0, ttl: int = 0) -> engine_pb2.EngineCommand:
    return engine_pb2.EngineCommand(
        client_id="admin",
        configure_region=orders_pb2.ConfigureRegionRequest(
            region=orders_pb2.Region(
                region=name,
                strategy=strategy,  # type: ignore[arg-type]
                reservation_ttl_seconds=ttl,
            )
        ),
    )


def location(loc_id: str, region_name: str = "eu", priority: int = 0) -> engine_pb2.EngineCommand:
    return engine_pb2.EngineCommand(
        client_id="admin",
        upsert_location=orders_pb2.UpsertLocationRequest(
            location=orders_pb2.Location(location_id=loc_id, region=region_name, priority=priority)
        ),
    )


def set_stock(sku: str, loc_id: str, on_hand: int) -> engine_pb2.EngineCommand:
    return engine_pb2.EngineCommand(
        client_id="admin",
        set_stock=orders_pb2.SetStockRequest(sku=sku, location_id=loc_id, on_hand=on_hand),
    )


def adjust_stock(sku: str, loc_id: str, delta: int) -> engine_pb2.EngineCommand:
    return engine_pb2.EngineCommand(
        client_id="admin",
        adjust_stock=orders_pb2.AdjustStockRequest(sku=sku, location_id=loc_id, delta=delta),
    )


def cancel(order_id: str, reason: str = "", client: str = "client-a") -> engine_pb2.EngineCommand:
    return engine_pb2.EngineCommand(
        client_id=client,
        cancel_order=orders_pb2.CancelOrderRequest(order_id=order_id, reason=reason),
    )


def confirm(order_id: str, client: str = "client-a") -> engine_pb2.EngineCommand:
    return engine_pb2.EngineCommand(
        client_id=client, confirm_order=orders_pb2.ConfirmOrderRequest(order_id=order_id)
    )


def ship(order_id: str, client: str = "client-a") -> engine_pb2.EngineCommand:
    return engine_pb2.EngineCommand(
        client_id=client, ship_order=orders_pb2.ShipOrderRequest(order_id=order_id)
    )


def expire() -> engine_pb2.EngineCommand:
    return engine_pb2.EngineCommand(
        client_id="system", expire_reservations=engine_pb2.ExpireReservations()
    )


def reconcile(region_name: str = "", repair: bool = False) -> engine_pb2.EngineCommand:
    return engine_pb2.EngineCommand(
        client_id="admin",
        reconcile=orders_pb2.ReconcileRequest(region=region_name, repair=repair),
    )


def batch(commands: Sequence[engine_pb2.EngineCommand], now: int = T0) -> bytes:
    return engine_pb2.EngineBatch(now_unix_ms=now, commands=commands).SerializeToString()


def parse(result: bytes) -> engine_pb2.EngineBatchResult:
    return engine_pb2.EngineBatchResult.FromString(result)


def decode_event(env: engine_pb2.EventEnvelope) -> events_pb2.OrderEvent | events_pb2.StockEvent:
    if env.subject == "inventory.v1.stock_changed":
        return events_pb2.StockEvent.FromString(env.payload)
    return events_pb2.OrderEvent.FromString(env.payload)


def rust_engine_module() -> ModuleType:
    """server._engine, or a test failure (never a skip): the engine must be built."""
    try:
        module = importlib.import_module("server._engine")
    except ImportError as exc:  # pragma: no cover - depends on the build
        pytest.fail(
            f"server._engine is not importable ({exc}): run `make build` "
            "(maturin develop --release) first",
            pytrace=False,
        )
    return module
