"""Python SDK of the order service (orders.v1).

- `OrdersClient` (blocking) and `AsyncOrdersClient` (asyncio): every RPC, deadlines by
  default, bounded jittered retries (`RetryPolicy`), errors as `OrdersError` subclasses;
- `bulk_create` on both clients: StreamCreateOrders with backpressure;
- `subscribe`: JetStream events as typed, deduplicated messages.

The generated protobuf modules are `orders_client.orders_pb2` / `events_pb2` (generated
code lives in `orders_client.gen`; never edit it, regenerate with `make gen`).
"""

from orders_client.aio import AsyncOrdersClient
from orders_client.builders import (
    create_order_request,
    new_request_id,
    order_line,
    parse_policy,
    parse_status,
    parse_strategy,
)
from orders_client.bulk import DEFAULT_MAX_IN_FLIGHT, CreateResult
from orders_client.client import OrdersClient
from orders_client.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OrdersError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from orders_client.events import DEDUP_WINDOW, Event, EventSubscription, subscribe
from orders_client.gen.orders.v1 import events_pb2, orders_pb2, orders_pb2_grpc
from orders_client.retry import NO_RETRY, RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "DEDUP_WINDOW",
    "DEFAULT_MAX_IN_FLIGHT",
    "NO_RETRY",
    "Aborted",
    "AlreadyExists",
    "AsyncOrdersClient",
    "CreateResult",
    "DeadlineExceeded",
    "Event",
    "EventSubscription",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "OrdersClient",
    "OrdersError",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "Unauthenticated",
    "Unavailable",
    "create_order_request",
    "events_pb2",
    "new_request_id",
    "order_line",
    "orders_pb2",
    "orders_pb2_grpc",
    "parse_policy",
    "parse_status",
    "parse_strategy",
    "subscribe",
]
