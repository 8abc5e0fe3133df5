"""The asyncio client: the same API as `OrdersClient`, with coroutines.

    async with AsyncOrdersClient("127.0.0.1:50051", client_id="checkout") as client:
        order = await client.create_order(
            customer_id="c-1", region="eu", lines=[("SKU-1", 2, 1999, "EUR")]
        )
        await client.confirm_order(order.order_id)

Every call has a deadline (the client's `timeout`, 10 s by default, for all attempts
together; a call's own `timeout=` overrides it) and follows the retry policy of
`orders_client.retry`. Results are the generated protobuf
messages (`orders_pb2.Order`, `orders_pb2.StockLevel`, ...); failures raise `OrdersError`
subclasses (`orders_client.errors`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import grpc
from grpc import aio

from orders_client._common import (
    DEFAULT_ADDRESS,
    DEFAULT_TIMEOUT,
    build_batch,
    build_create,
    call_metadata,
    list_request,
    region_request,
)
from orders_client.builders import OrderLineLike, parse_status, parse_strategy
from orders_client.bulk import DEFAULT_MAX_IN_FLIGHT, CreateResult, bulk_create_async
from orders_client.bulk import result_from_proto as _result
from orders_client.errors import from_rpc_error
from orders_client.gen.orders.v1 import orders_pb2, orders_pb2_grpc
from orders_client.retry import RetryPolicy, RetryState

# `timeout=` is the gRPC deadline, sent to the server with the call (asyncio.timeout could
# not do that): hence the ASYNC109 exemptions below.

__all__ = ["AsyncOrdersClient"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class AsyncOrdersClient:
    """asyncio client of orders.v1.OrderService and orders.v1.InventoryService."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        client_id: str | None = None,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        channel: aio.Channel | None = None,
        options: Sequence[tuple[str, int | str]] = (),
    ) -> None:
        """`client_id` is sent as x-client-id (servers without auth), `token` as a bearer
        token. `timeout=None` removes the default deadline (not recommended). Pass
        `channel` to share one; the client then does not close it."""
        self.address = address
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._metadata = call_metadata(client_id, token)
        self._owns_channel = channel is None
        if channel is None:
            if credentials is None:
                channel = aio.insecure_channel(address, options=list(options))
            else:
                channel = aio.secure_channel(address, credentials, options=list(options))
        self._channel = channel
        # The generated stub's overloads give the AsyncStub type for an aio channel.
        self._orders: orders_pb2_grpc.OrderServiceAsyncStub = orders_pb2_grpc.OrderServiceStub(
            channel
        )
        self._inventory: orders_pb2_grpc.InventoryServiceAsyncStub = (
            orders_pb2_grpc.InventoryServiceStub(channel)
        )
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    # ---------------------------------------------------------------- lifecycle

    async def close(self, grace: float | None = None) -> None:
        if self._owns_channel:
            await self._channel.close(grace)

    async def __aenter__(self) -> AsyncOrdersClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---------------------------------------------------------------- plumbing

    async def _call(
        self,
        method: aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        *,
        idempotent: bool,
        timeout: float | None,  # noqa: ASYNC109
    ) -> Resp:
        total = self.timeout if timeout is None else timeout
        state = RetryState(self.retry, total, idempotent=idempotent)
        while True:
            try:
                return await method(
                    request, timeout=state.attempt_timeout(), metadata=self._metadata
                )
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                delay = state.next_delay(error)
                if delay is None:
                    raise error from exc
            await self._sleep(delay)

    # ---------------------------------------------------------------- orders

    async def create_order(
        self,
        request: orders_pb2.CreateOrderRequest | None = None,
        *,
        customer_id: str | None = None,
        region: str | None = None,
        lines: Iterable[OrderLineLike] | None = None,
        policy: str | int | None = None,
        request_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> orders_pb2.Order:
        """Create an order (a request message, or its fields as keywords). Without a
        request_id one is generated once and reused by every retry. REJECTED (no stock) is
        an order status, not an exception."""
        message = build_create(request, customer_id, region, lines, policy, request_id)
        return await self._call(self._orders.CreateOrder, message, idempotent=True, timeout=timeout)

    async def batch_create_orders(
        self,
        requests: Iterable[orders_pb2.CreateOrderRequest],
        *,
        all_or_nothing: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[CreateResult]:
        """Up to 1000 creates in one call; one result per request, in request order."""
        policy = (
            orders_pb2.BATCH_ERROR_POLICY_ALL_OR_NOTHING
            if all_or_nothing
            else orders_pb2.BATCH_ERROR_POLICY_EACH
        )
        message = build_batch(requests, policy)
        response = await self._call(
            self._orders.BatchCreateOrders, message, idempotent=True, timeout=timeout
        )
        return [
            _result(r, res, 1) for r, res in zip(message.requests, response.results, strict=False)
        ]

    def bulk_create(
        self,
        requests: Iterable[orders_pb2.CreateOrderRequest]
        | AsyncIterable[orders_pb2.CreateOrderRequest],
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        stall_timeout: float | None = None,
    ) -> AsyncIterator[CreateResult]:
        """Stream creates with at most `max_in_flight` unanswered; yields one result per
        request as answers arrive (see `orders_client.bulk`)."""
        stall = self.timeout if stall_timeout is None else stall_timeout
        return bulk_create_async(
            self._orders,
            requests,
            metadata=self._metadata,
            policy=self.retry,
            max_in_flight=max_in_flight,
            stall_timeout=stall,
        )

    async def get_order(self, order_id: str, *, timeout: float | None = None) -> orders_pb2.Order:  # noqa: ASYNC109
        request = orders_pb2.GetOrderRequest(order_id=order_id)
        return await self._call(self._orders.GetOrder, request, idempotent=True, timeout=timeout)

    async def list_orders(
        self,
        customer_id: str,
        *,
        status: str | int | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> orders_pb2.ListOrdersResponse:
        """One page of a customer's orders, newest first."""
        request = list_request(customer_id, parse_status(status), page_size, page_token)
        return await self._call(self._orders.ListOrders, request, idempotent=True, timeout=timeout)

    async def iter_orders(
        self,
        customer_id: str,
        *,
        status: str | int | None = None,
        page_size: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AsyncIterator[orders_pb2.Order]:
        """Every order of a customer, page after page (each page is its own call)."""
        token = ""
        while True:
            page = await self.list_orders(
                customer_id, status=status, page_size=page_size, page_token=token, timeout=timeout
            )
            for order in page.orders:
                yield order
            token = page.next_page_token
            if not token:
                return

    async def cancel_order(
        self,
        order_id: str,
        reason: str = "",
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> orders_pb2.Order:
        """Not retried unless the server refused it untouched (see orders_client.retry)."""
        request = orders_pb2.CancelOrderRequest(order_id=order_id, reason=reason)
        return await self._call(
            self._orders.CancelOrder, request, idempotent=False, timeout=timeout
        )

    async def confirm_order(
        self,
        order_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> orders_pb2.Order:
        request = orders_pb2.ConfirmOrderRequest(order_id=order_id)
        return await self._call(
            self._orders.ConfirmOrder, request, idempotent=False, timeout=timeout
        )

    async def ship_order(self, order_id: str, *, timeout: float | None = None) -> orders_pb2.Order:  # noqa: ASYNC109
        request = orders_pb2.ShipOrderRequest(order_id=order_id)
        return await self._call(self._orders.ShipOrder, request, idempotent=False, timeout=timeout)

    # ---------------------------------------------------------------- inventory

    async def set_stock(
        self,
        sku: str,
        location_id: str,
        on_hand: int,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> orders_pb2.StockLevel:
        request = orders_pb2.SetStockRequest(sku=sku, location_id=location_id, on_hand=on_hand)
        return await self._call(
            self._inventory.SetStock, request, idempotent=False, timeout=timeout
        )

    async def adjust_stock(
        self,
        sku: str,
        location_id: str,
        delta: int,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> orders_pb2.StockLevel:
        request = orders_pb2.AdjustStockRequest(sku=sku, location_id=location_id, delta=delta)
        return await self._call(
            self._inventory.AdjustStock, request, idempotent=False, timeout=timeout
        )

    async def get_stock(
        self,
        sku: str,
        *,
        region: str = "",
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[orders_pb2.StockLevel]:
        request = orders_pb2.GetStockRequest(sku=sku, region=region)
        response = await self._call(
            self._inventory.GetStock, request, idempotent=True, timeout=timeout
        )
        return list(response.levels)

    async def upsert_location(
        self,
        location_id: str,
        region: str,
        priority: int = 0,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> orders_pb2.Location:
        request = orders_pb2.UpsertLocationRequest(
            location=orders_pb2.Location(location_id=location_id, region=region, priority=priority)
        )
        return await self._call(
            self._inventory.UpsertLocation, request, idempotent=False, timeout=timeout
        )

    async def configure_region(
        self,
        region: str,
        *,
        strategy: str | int | None = None,
        reservation_ttl_seconds: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> orders_pb2.Region:
        request = region_request(region, parse_strategy(strategy), reservation_ttl_seconds)
        return await self._call(
            self._inventory.ConfigureRegion, request, idempotent=False, timeout=timeout
        )

    async def reconcile(
        self,
        region: str = "",
        *,
        repair: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> orders_pb2.ReconcileResponse:
        request = orders_pb2.ReconcileRequest(region=region, repair=repair)
        # Recomputed from the live allocations: repeating it (even with repair) is harmless.
        return await self._call(
            self._inventory.Reconcile, request, idempotent=True, timeout=timeout
        )
