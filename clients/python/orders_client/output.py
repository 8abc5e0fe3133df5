"""Rendering of results for the command line: aligned tables, or JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from orders_client.errors import OrdersError
from orders_client.events import Event
from orders_client.gen.orders.v1 import events_pb2, orders_pb2

__all__ = [
    "error_dict",
    "event_line",
    "json_line",
    "message_dict",
    "order_detail",
    "order_rows",
    "reconcile_text",
    "stock_rows",
    "table",
]

ORDER_COLUMNS = ("ORDER_ID", "STATUS", "CUSTOMER", "REGION", "LINES", "TOTAL", "VERSION", "CREATED")


def message_dict(message: Message) -> dict[str, Any]:
    """MessageToDict with the proto field names, and default values included."""
    result: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return result


def json_line(value: Message | dict[str, Any]) -> str:
    data = message_dict(value) if isinstance(value, Message) else value
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def error_dict(error: OrdersError) -> dict[str, Any]:
    return {
        "code": error.code.name,
        "message": error.message,
        "reason": error.reason,
        "field_violations": [
            {"field": v.field, "description": v.description} for v in error.field_violations
        ],
        "retry_after": error.retry_after,
    }


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces; numbers right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    numeric = [
        all(_is_number(row[i]) for row in cells) and bool(cells) for i in range(len(headers))
    ]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in cells)])


def _is_number(text: str) -> bool:
    return text.lstrip("-").isdigit()


def timestamp(value: Timestamp) -> str:
    if not value.seconds and not value.nanos:
        return ""
    return value.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def status_name(status: orders_pb2.OrderStatus.ValueType) -> str:
    return orders_pb2.OrderStatus.Name(status).removeprefix("ORDER_STATUS_")


def policy_name(policy: orders_pb2.AllocationPolicy.ValueType) -> str:
    return orders_pb2.AllocationPolicy.Name(policy).removeprefix("ALLOCATION_POLICY_")


def order_rows(orders: Iterable[orders_pb2.Order]) -> list[list[object]]:
    return [
        [
            o.order_id,
            status_name(o.status),
            o.customer_id,
            o.region,
            len(o.lines),
            f"{o.total_minor} {o.currency}".strip(),
            o.version,
            timestamp(o.create_time),
        ]
        for o in orders
    ]


def order_detail(order: orders_pb2.Order) -> str:
    fields: list[tuple[str, object]] = [
        ("order_id", order.order_id),
        ("status", status_name(order.status)),
        ("status_reason", order.status_reason),
        ("version", order.version),
        ("request_id", order.request_id),
        ("customer_id", order.customer_id),
        ("region", order.region),
        ("policy", policy_name(order.policy)),
        ("total", f"{order.total_minor} {order.currency} (minor units)"),
        ("created", timestamp(order.create_time)),
        ("updated", timestamp(order.update_time)),
        ("expires", timestamp(order.expire_time)),
        ("client_id", order.client_id),
    ]
    width = max(len(name) for name, _ in fields)
    parts = ["\n".join(f"{name.ljust(width)}  {value}" for name, value in fields if value != "")]
    parts.append(
        table(
            ("LINE", "SKU", "QUANTITY", "UNIT_PRICE", "CURRENCY"),
            (
                (i, line.sku, line.quantity, line.unit_price_minor, line.currency)
                for i, line in enumerate(order.lines)
            ),
        )
    )
    if order.allocations:
        parts.append(
            table(
                ("LINE", "SKU", "LOCATION", "QUANTITY"),
                ((a.line_index, a.sku, a.location_id, a.quantity) for a in order.allocations),
            )
        )
    if order.backorders:
        parts.append(
            table(
                ("LINE", "SKU", "BACKORDERED"),
                ((b.line_index, b.sku, b.quantity) for b in order.backorders),
            )
        )
    return "\n\n".join(parts)


def stock_rows(levels: Iterable[orders_pb2.StockLevel]) -> list[list[object]]:
    return [[s.sku, s.location_id, s.on_hand, s.reserved, s.available, s.version] for s in levels]


STOCK_COLUMNS = ("SKU", "LOCATION", "ON_HAND", "RESERVED", "AVAILABLE", "VERSION")


def reconcile_text(response: orders_pb2.ReconcileResponse) -> str:
    head = f"rows checked: {response.rows_checked}  drifts: {len(response.drifts)}"
    head += f"  repaired: {'yes' if response.repaired else 'no'}"
    if not response.drifts:
        return head
    rows = (
        (d.sku, d.location_id, d.recorded_reserved, d.computed_reserved) for d in response.drifts
    )
    return head + "\n\n" + table(("SKU", "LOCATION", "RECORDED", "COMPUTED"), rows)


def event_line(event: Event, as_json: bool) -> str:
    if isinstance(event, events_pb2.OrderEvent):
        if as_json:
            return json_line({"order_event": message_dict(event)})
        kind = events_pb2.OrderEventType.Name(event.type).removeprefix("ORDER_EVENT_TYPE_")
        order = event.order
        return (
            f"{timestamp(event.event_time)}  {kind.lower():<11}  {order.order_id}  "
            f"v{order.version}  {status_name(order.status)}  {order.customer_id}  "
            f"{order.region}"
        )
    if as_json:
        return json_line({"stock_event": message_dict(event)})
    reason = events_pb2.StockEventReason.Name(event.reason).removeprefix("STOCK_EVENT_REASON_")
    level = event.level
    return (
        f"{timestamp(event.event_time)}  stock:{reason.lower():<5}  {level.sku}@{level.location_id}"
        f"  v{level.version}  on_hand={level.on_hand} reserved={level.reserved}"
    )
