"""The asyncio client against the FakeOrdersServer: the same policy as the sync client."""

from __future__ import annotations

import random

import grpc
import pytest
from orders_client import (
    AsyncOrdersClient,
    FailedPrecondition,
    InvalidArgument,
    RetryPolicy,
    Unavailable,
    orders_pb2,
)
from sdk_fake_server import FakeError, FakeOrdersServer

LINES = [("SKU-1", 2, 1999, "EUR")]
FAST = RetryPolicy(initial_backoff=0.001, max_backoff=0.005)


class ZeroJitter(random.Random):
    def random(self) -> float:
        return 0.0


async def test_default_deadline_and_identity(fake: FakeOrdersServer) -> None:
    async with AsyncOrdersClient(fake.address, client_id="pos", token="t") as client:
        await client.get_order("o-1")
        await client.ship_order("o-1", timeout=3.0)
    first, second = fake.service.calls
    assert first.time_remaining is not None and 5.0 < first.time_remaining <= 10.5
    assert second.time_remaining is not None and 1.0 < second.time_remaining <= 3.5
    assert first.metadata["x-client-id"] == "pos"
    assert first.metadata["authorization"] == "Bearer t"


async def test_create_retries_with_the_same_request_id(fake: FakeOrdersServer) -> None:
    fake.service.script["CreateOrder"].extend(
        [
            FakeError(grpc.StatusCode.UNAVAILABLE, "down"),
            FakeError(grpc.StatusCode.DEADLINE_EXCEEDED, "slow store"),
        ]
    )
    async with AsyncOrdersClient(fake.address, retry=FAST) as client:
        order = await client.create_order(customer_id="c", region="eu", lines=LINES)
    calls = fake.service.calls_to("CreateOrder")
    assert len(calls) == 3
    assert {c.request.request_id for c in calls} == {order.request_id}


async def test_retries_bounded(fake: FakeOrdersServer) -> None:
    fake.service.script["GetStock"].extend([FakeError(grpc.StatusCode.UNAVAILABLE)] * 9)
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.001, max_backoff=0.002)
    async with AsyncOrdersClient(fake.address, retry=policy) as client:
        with pytest.raises(Unavailable):
            await client.get_stock("SKU-1")
    assert len(fake.service.calls_to("GetStock")) == 2


async def test_confirm_not_retried_without_not_serving(fake: FakeOrdersServer) -> None:
    fake.service.script["ConfirmOrder"].append(FakeError(grpc.StatusCode.UNAVAILABLE, "cut"))
    async with AsyncOrdersClient(fake.address, retry=FAST) as client:
        with pytest.raises(Unavailable):
            await client.confirm_order("o-1")
        assert len(fake.service.calls_to("ConfirmOrder")) == 1
        fake.service.script["ConfirmOrder"].append(
            FakeError(grpc.StatusCode.UNAVAILABLE, "starting", "NOT_SERVING")
        )
        order = await client.confirm_order("o-1")
    assert order.status == orders_pb2.ORDER_STATUS_CONFIRMED
    assert len(fake.service.calls_to("ConfirmOrder")) == 3


async def test_retry_info_honoured(fake: FakeOrdersServer) -> None:
    fake.service.script["CancelOrder"].append(
        FakeError(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", "QUEUE_FULL", retry_after_ms=120)
    )
    policy = RetryPolicy(initial_backoff=0.001, max_backoff=0.005, rng=ZeroJitter())
    waits: list[float] = []

    async def record(delay: float) -> None:
        waits.append(delay)

    async with AsyncOrdersClient(fake.address, retry=policy) as client:
        client._sleep = record
        order = await client.cancel_order("o-1", "changed mind")
    assert waits == [pytest.approx(0.12)]
    assert order.status == orders_pb2.ORDER_STATUS_CANCELLED
    assert fake.service.calls_to("CancelOrder")[0].request.reason == "changed mind"


async def test_error_mapping(fake: FakeOrdersServer) -> None:
    fake.service.script["CreateOrder"].append(
        FakeError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "bad",
            "INVALID_REQUEST",
            [("customer_id", "is required")],
        )
    )
    fake.service.script["ShipOrder"].append(
        FakeError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "cannot ship an order in status ALLOCATED",
            "ILLEGAL_TRANSITION",
        )
    )
    async with AsyncOrdersClient(fake.address, retry=FAST) as client:
        with pytest.raises(InvalidArgument) as invalid:
            await client.create_order(customer_id="", region="eu", lines=LINES)
        with pytest.raises(FailedPrecondition) as illegal:
            await client.ship_order("o-1")
    assert invalid.value.field_violations[0].field == "customer_id"
    assert illegal.value.reason == "ILLEGAL_TRANSITION"


async def test_iter_orders_and_batch(fake: FakeOrdersServer) -> None:
    fake.service.script["ListOrders"].extend(
        [
            orders_pb2.ListOrdersResponse(
                orders=[orders_pb2.Order(order_id="o-1")], next_page_token="n"
            ),
            orders_pb2.ListOrdersResponse(orders=[orders_pb2.Order(order_id="o-2")]),
        ]
    )
    async with AsyncOrdersClient(fake.address, retry=FAST) as client:
        ids = [o.order_id async for o in client.iter_orders("c-1")]
        results = await client.batch_create_orders(
            [orders_pb2.CreateOrderRequest(customer_id="c", region="eu")], all_or_nothing=True
        )
    assert ids == ["o-1", "o-2"]
    assert results[0].ok and results[0].request_id
    batch = fake.service.calls_to("BatchCreateOrders")[0].request
    assert batch.error_policy == orders_pb2.BATCH_ERROR_POLICY_ALL_OR_NOTHING


async def test_keyword_and_request_forms_are_exclusive(fake: FakeOrdersServer) -> None:
    async with AsyncOrdersClient(fake.address) as client:
        with pytest.raises(TypeError):
            await client.create_order(orders_pb2.CreateOrderRequest(), customer_id="c")
        with pytest.raises(TypeError):
            await client.create_order(customer_id="c")
