"""Small helpers that build request messages, shared by the sync and asyncio clients."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import cast

from orders_client.gen.orders.v1 import orders_pb2

__all__ = [
    "OrderLineLike",
    "create_order_request",
    "new_request_id",
    "order_line",
    "parse_policy",
    "parse_status",
    "parse_strategy",
    "with_request_id",
]

# An OrderLine message, or (sku, quantity, unit_price_minor, currency).
OrderLineLike = orders_pb2.OrderLine | tuple[str, int, int, str]

_POLICY_ALIASES = {
    "single": "ALLOCATION_POLICY_SINGLE_LOCATION",
    "single-location": "ALLOCATION_POLICY_SINGLE_LOCATION",
    "single_location": "ALLOCATION_POLICY_SINGLE_LOCATION",
    "split": "ALLOCATION_POLICY_SPLIT",
    "backorder": "ALLOCATION_POLICY_BACKORDER",
}
_STRATEGY_ALIASES = {
    "priority": "ALLOCATION_STRATEGY_PRIORITY",
    "most-available": "ALLOCATION_STRATEGY_MOST_AVAILABLE",
    "most_available": "ALLOCATION_STRATEGY_MOST_AVAILABLE",
}


def new_request_id() -> str:
    """A fresh idempotency key (uuid4, 32 hex characters)."""
    return uuid.uuid4().hex


def order_line(
    sku: str, quantity: int, unit_price_minor: int, currency: str
) -> orders_pb2.OrderLine:
    """One order line; the price is in integer minor units (cents), never a float."""
    return orders_pb2.OrderLine(
        sku=sku, quantity=quantity, unit_price_minor=unit_price_minor, currency=currency
    )


def _line(value: OrderLineLike) -> orders_pb2.OrderLine:
    if isinstance(value, orders_pb2.OrderLine):
        return value
    return order_line(*value)


def _enum_value(
    name: str, aliases: Mapping[str, str], prefix: str, values: Mapping[str, int]
) -> int:
    key = name.strip()
    canonical = aliases.get(key.lower(), key.upper())
    if canonical not in values:
        canonical = prefix + canonical.replace("-", "_")
    if canonical not in values:
        raise ValueError(f"unknown value {name!r}")
    return values[canonical]


def parse_policy(value: str | int | None) -> orders_pb2.AllocationPolicy.ValueType:
    """`single`, `split`, `backorder`, an enum name or number; None/"" = unspecified."""
    if value is None or value == "":
        return orders_pb2.ALLOCATION_POLICY_UNSPECIFIED
    if isinstance(value, int):
        number = value
    else:
        values = dict(orders_pb2.AllocationPolicy.items())
        number = _enum_value(value, _POLICY_ALIASES, "ALLOCATION_POLICY_", values)
    return cast("orders_pb2.AllocationPolicy.ValueType", number)


def parse_status(value: str | int | None) -> orders_pb2.OrderStatus.ValueType:
    """`allocated`, `ORDER_STATUS_ALLOCATED` or a number; None/"" = unspecified (any)."""
    if value is None or value == "":
        return orders_pb2.ORDER_STATUS_UNSPECIFIED
    if isinstance(value, int):
        number = value
    else:
        values = dict(orders_pb2.OrderStatus.items())
        number = _enum_value(value, {}, "ORDER_STATUS_", values)
    return cast("orders_pb2.OrderStatus.ValueType", number)


def parse_strategy(value: str | int | None) -> orders_pb2.AllocationStrategy.ValueType:
    """`priority`, `most-available`, an enum name or number; None/"" = unspecified."""
    if value is None or value == "":
        return orders_pb2.ALLOCATION_STRATEGY_UNSPECIFIED
    if isinstance(value, int):
        number = value
    else:
        values = dict(orders_pb2.AllocationStrategy.items())
        number = _enum_value(value, _STRATEGY_ALIASES, "ALLOCATION_STRATEGY_", values)
    return cast("orders_pb2.AllocationStrategy.ValueType", number)


def create_order_request(
    *,
    customer_id: str,
    region: str,
    lines: Iterable[OrderLineLike],
    policy: str | int | None = None,
    request_id: str = "",
) -> orders_pb2.CreateOrderRequest:
    """Build a CreateOrderRequest (request_id may be left empty: the client fills it in)."""
    return orders_pb2.CreateOrderRequest(
        request_id=request_id,
        customer_id=customer_id,
        region=region,
        lines=[_line(line) for line in lines],
        policy=parse_policy(policy),
    )


def with_request_id(request: orders_pb2.CreateOrderRequest) -> orders_pb2.CreateOrderRequest:
    """`request` itself if it has a request_id, else a copy with a new one (never mutates)."""
    if request.request_id:
        return request
    copy = orders_pb2.CreateOrderRequest()
    copy.CopyFrom(request)
    copy.request_id = new_request_id()
    return copy
