"""Settings shared by the sync and asyncio clients."""

from __future__ import annotations

from collections.abc import Iterable

from orders_client.builders import OrderLineLike, create_order_request, with_request_id
from orders_client.gen.orders.v1 import orders_pb2

DEFAULT_ADDRESS = "127.0.0.1:50051"
#: Every call gets a deadline: this many seconds for all its attempts together.
DEFAULT_TIMEOUT = 10.0
CLIENT_ID_KEY = "x-client-id"
AUTHORIZATION_KEY = "authorization"

Metadata = tuple[tuple[str, str], ...]


def call_metadata(client_id: str | None, token: str | None) -> Metadata:
    pairs: list[tuple[str, str]] = []
    if client_id:
        pairs.append((CLIENT_ID_KEY, client_id))
    if token:
        pairs.append((AUTHORIZATION_KEY, f"Bearer {token}"))
    return tuple(pairs)


def build_create(
    request: orders_pb2.CreateOrderRequest | None,
    customer_id: str | None,
    region: str | None,
    lines: Iterable[OrderLineLike] | None,
    policy: str | int | None,
    request_id: str | None,
) -> orders_pb2.CreateOrderRequest:
    """The request of a create call, with its request_id fixed before the first attempt."""
    if request is None:
        if customer_id is None or region is None or lines is None:
            raise TypeError("create_order needs a request, or customer_id, region and lines")
        request = create_order_request(
            customer_id=customer_id,
            region=region,
            lines=lines,
            policy=policy,
            request_id=request_id or "",
        )
    elif any(v is not None for v in (customer_id, region, lines, policy, request_id)):
        raise TypeError("pass either a request or keyword fields, not both")
    return with_request_id(request)


def build_batch(
    requests: Iterable[orders_pb2.CreateOrderRequest],
    error_policy: orders_pb2.BatchErrorPolicy.ValueType,
) -> orders_pb2.BatchCreateOrdersRequest:
    return orders_pb2.BatchCreateOrdersRequest(
        requests=[with_request_id(r) for r in requests], error_policy=error_policy
    )


def list_request(
    customer_id: str, status: orders_pb2.OrderStatus.ValueType, page_size: int, page_token: str
) -> orders_pb2.ListOrdersRequest:
    return orders_pb2.ListOrdersRequest(
        customer_id=customer_id, status=status, page_size=page_size, page_token=page_token
    )


def region_request(
    region: str, strategy: orders_pb2.AllocationStrategy.ValueType, ttl_seconds: int
) -> orders_pb2.ConfigureRegionRequest:
    return orders_pb2.ConfigureRegionRequest(
        region=orders_pb2.Region(
            region=region, strategy=strategy, reservation_ttl_seconds=ttl_seconds
        )
    )
