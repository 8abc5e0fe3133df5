"""bulk_create over StreamCreateOrders (sync and asyncio) against the FakeOrdersServer:
backpressure, matching by request_id, per-item errors as results, resends."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from orders_client import (
    AsyncOrdersClient,
    CreateResult,
    InvalidArgument,
    OrdersClient,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
    create_order_request,
    orders_pb2,
)
from orders_client.bulk import BulkCore
from sdk_fake_server import FakeError, FakeOrdersServer

POLICY = RetryPolicy(initial_backoff=0.001, max_backoff=0.01)


def requests(count: int, with_ids: bool = True) -> Iterator[orders_pb2.CreateOrderRequest]:
    for i in range(count):
        yield create_order_request(
            customer_id=f"c-{i % 7}",
            region="eu",
            lines=[("SKU-1", 1 + i % 3, 100, "EUR")],
            request_id=f"r-{i}" if with_ids else "",
        )


def check_complete(results: list[CreateResult], count: int) -> None:
    assert len(results) == count
    assert sorted(int(r.request_id.removeprefix("r-")) for r in results) == list(range(count))
    for result in results:
        assert result.ok and result.order is not None
        assert result.order.request_id == result.request_id == result.request.request_id


def test_sync_backpressure_never_exceeds_max_in_flight(fake: FakeOrdersServer) -> None:
    fake.service.stream.min_delay, fake.service.stream.max_delay = 0.001, 0.005
    with OrdersClient(fake.address, retry=POLICY) as client:
        results = list(client.bulk_create(requests(300), max_in_flight=8))
    check_complete(results, 300)
    assert fake.service.max_unanswered == 8  # pipelined up to the limit, never past it
    assert fake.service.stream_calls == 1


def test_sync_results_arrive_out_of_order_and_are_matched(fake: FakeOrdersServer) -> None:
    fake.service.stream.min_delay, fake.service.stream.max_delay = 0.0, 0.01
    with OrdersClient(fake.address, retry=POLICY) as client:
        results = list(client.bulk_create(requests(100), max_in_flight=50))
    check_complete(results, 100)
    order = [int(r.request_id.removeprefix("r-")) for r in results]
    assert order != sorted(order)


def test_sync_source_is_read_lazily(fake: FakeOrdersServer) -> None:
    pulled = 0

    def source() -> Iterator[orders_pb2.CreateOrderRequest]:
        nonlocal pulled
        for request in requests(1_000_000):
            pulled += 1
            yield request

    with OrdersClient(fake.address, retry=POLICY) as client:
        stream = client.bulk_create(source(), max_in_flight=4)
        first = [next(stream) for _ in range(10)]
        stream.close()  # type: ignore[attr-defined]
    assert len(first) == 10
    assert pulled < 100


def test_sync_generates_missing_request_ids(fake: FakeOrdersServer) -> None:
    with OrdersClient(fake.address, retry=POLICY) as client:
        results = list(client.bulk_create(requests(20, with_ids=False)))
    ids = {r.request_id for r in results}
    assert len(ids) == 20 and all(len(i) == 32 for i in ids)


def test_sync_per_item_error_is_a_result(fake: FakeOrdersServer) -> None:
    fake.service.stream.item_errors["r-3"] = deque(
        [
            FakeError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid",
                "INVALID_REQUEST",
                [("lines[0].sku", "is required")],
            )
        ]
    )
    with OrdersClient(fake.address, retry=POLICY) as client:
        results = {r.request_id: r for r in client.bulk_create(requests(10))}
    assert len(results) == 10
    bad = results["r-3"]
    assert not bad.ok and bad.order is None
    assert isinstance(bad.error, InvalidArgument)
    assert bad.error.field_violations[0].field == "lines[0].sku"
    assert bad.attempts == 1
    assert all(r.ok for k, r in results.items() if k != "r-3")


def test_sync_queue_full_items_are_resent_with_the_same_request_id(
    fake: FakeOrdersServer,
) -> None:
    full = FakeError(grpc.StatusCode.RESOURCE_EXHAUSTED, "at capacity", "QUEUE_FULL")
    fake.service.stream.item_errors["r-1"] = deque([full, full])
    fake.service.stream.item_errors["r-2"] = deque([full] * 10)
    with OrdersClient(fake.address, retry=POLICY) as client:
        results = {r.request_id: r for r in client.bulk_create(requests(5))}
    assert results["r-1"].ok and results["r-1"].attempts == 3
    assert not results["r-2"].ok and results["r-2"].attempts == POLICY.max_attempts
    sent = [r.request_id for r in fake.service.stream_requests]
    assert sent.count("r-1") == 3 and sent.count("r-2") == POLICY.max_attempts


def test_sync_broken_stream_is_reopened_and_unanswered_requests_resent(
    fake: FakeOrdersServer,
) -> None:
    fake.service.stream.abort_after = 5
    fake.service.stream.min_delay, fake.service.stream.max_delay = 0.001, 0.002
    with OrdersClient(fake.address, retry=POLICY) as client:
        results = list(client.bulk_create(requests(40), max_in_flight=10))
    check_complete(results, 40)
    assert fake.service.stream_calls == 2


def test_sync_non_retryable_stream_error_fails_unanswered_and_raises(
    fake: FakeOrdersServer,
) -> None:
    fake.service.stream.abort_after = 2
    fake.service.stream.abort_with = FakeError(
        grpc.StatusCode.UNAUTHENTICATED, "bad token", "UNAUTHENTICATED"
    )
    fake.service.stream.min_delay, fake.service.stream.max_delay = 0.002, 0.003
    got: list[CreateResult] = []
    with OrdersClient(fake.address, retry=POLICY) as client, pytest.raises(Unauthenticated):
        for result in client.bulk_create(requests(40), max_in_flight=5):
            got.append(result)
    assert sum(r.ok for r in got) == 2
    failed = [r for r in got if not r.ok]
    assert failed and all(isinstance(r.error, Unauthenticated) for r in failed)


def test_sync_stalled_stream_counts_as_deadline_and_is_reopened(
    fake: FakeOrdersServer,
) -> None:
    fake.service.stream.hang_once = True
    with OrdersClient(fake.address, retry=POLICY) as client:
        results = list(client.bulk_create(requests(5), stall_timeout=0.3))
    check_complete(results, 5)
    assert fake.service.stream_calls == 2


def test_sync_source_error_propagates(fake: FakeOrdersServer) -> None:
    def source() -> Iterator[orders_pb2.CreateOrderRequest]:
        yield from requests(3)
        raise RuntimeError("bad input")

    client = OrdersClient(fake.address, retry=POLICY)
    with client, pytest.raises(RuntimeError, match="bad input"):
        list(client.bulk_create(source()))


# -------------------------------------------------------------------- asyncio


async def test_async_backpressure_never_exceeds_max_in_flight(fake: FakeOrdersServer) -> None:
    fake.service.stream.min_delay, fake.service.stream.max_delay = 0.001, 0.005
    async with AsyncOrdersClient(fake.address, retry=POLICY) as client:
        results = [r async for r in client.bulk_create(requests(300), max_in_flight=8)]
    check_complete(results, 300)
    assert fake.service.max_unanswered == 8
    assert fake.service.stream_calls == 1


async def test_async_accepts_an_async_iterable(fake: FakeOrdersServer) -> None:
    async def source() -> AsyncIterator[orders_pb2.CreateOrderRequest]:
        for request in requests(50):
            yield request

    async with AsyncOrdersClient(fake.address, retry=POLICY) as client:
        results = [r async for r in client.bulk_create(source(), max_in_flight=16)]
    check_complete(results, 50)


async def test_async_per_item_errors_and_resends(fake: FakeOrdersServer) -> None:
    full = FakeError(grpc.StatusCode.RESOURCE_EXHAUSTED, "at capacity", "QUEUE_FULL")
    fake.service.stream.item_errors["r-1"] = deque([full])
    fake.service.stream.item_errors["r-4"] = deque(
        [FakeError(grpc.StatusCode.FAILED_PRECONDITION, "no region", "REGION_NOT_FOUND")]
    )
    async with AsyncOrdersClient(fake.address, retry=POLICY) as client:
        results = {r.request_id: r async for r in client.bulk_create(requests(6))}
    assert results["r-1"].ok and results["r-1"].attempts == 2
    assert results["r-4"].error is not None and results["r-4"].error.reason == "REGION_NOT_FOUND"
    assert len(results) == 6


async def test_async_broken_stream_is_reopened(fake: FakeOrdersServer) -> None:
    fake.service.stream.abort_after = 7
    fake.service.stream.min_delay, fake.service.stream.max_delay = 0.001, 0.002
    async with AsyncOrdersClient(fake.address, retry=POLICY) as client:
        results = [r async for r in client.bulk_create(requests(40), max_in_flight=10)]
    check_complete(results, 40)
    assert fake.service.stream_calls == 2


async def test_async_stalled_stream_is_reopened(fake: FakeOrdersServer) -> None:
    fake.service.stream.hang_once = True
    async with AsyncOrdersClient(fake.address, retry=POLICY) as client:
        results = [r async for r in client.bulk_create(requests(3), stall_timeout=0.2)]
    check_complete(results, 3)
    assert fake.service.stream_calls == 2


async def _collect(
    fake: FakeOrdersServer, policy: RetryPolicy, sync: bool, got: list[CreateResult]
) -> None:
    if sync:
        with OrdersClient(fake.address, retry=policy) as client:
            got.extend(client.bulk_create(requests(20), max_in_flight=4))
    else:
        async with AsyncOrdersClient(fake.address, retry=policy) as aclient:
            async for result in aclient.bulk_create(requests(20), max_in_flight=4):
                got.append(result)


@pytest.mark.parametrize("sync", [True, False])
async def test_streams_that_keep_breaking_fail_items_after_max_attempts(
    fake: FakeOrdersServer, sync: bool
) -> None:
    # Every stream answers 2 requests, then breaks: answers are progress, so the bulk
    # goes on, and each request is sent at most max_attempts times.
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.002)
    behaviour = fake.service.stream
    behaviour.abort_after, behaviour.abort_streams = 2, 1000
    behaviour.abort_with = FakeError(grpc.StatusCode.UNAVAILABLE, "down")
    behaviour.min_delay, behaviour.max_delay = 0.001, 0.002
    got: list[CreateResult] = []
    await _collect(fake, policy, sync, got)
    assert sorted(r.request_id for r in got) == sorted(f"r-{i}" for i in range(20))
    failed = [r for r in got if not r.ok]
    assert failed and all(isinstance(r.error, Unavailable) for r in failed)
    assert all(r.attempts == policy.max_attempts for r in failed)
    sent = [r.request_id for r in fake.service.stream_requests]
    assert max(sent.count(f"r-{i}") for i in range(20)) <= policy.max_attempts


@pytest.mark.parametrize("sync", [True, False])
async def test_gives_up_after_max_attempts_of_streams_without_answers(
    fake: FakeOrdersServer, sync: bool
) -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.002)
    behaviour = fake.service.stream
    behaviour.abort_after, behaviour.abort_streams = 0, 1000
    behaviour.abort_with = FakeError(grpc.StatusCode.UNAVAILABLE, "down", "NOT_SERVING")
    got: list[CreateResult] = []
    with pytest.raises(Unavailable) as caught:
        await _collect(fake, policy, sync, got)
    # grpc.aio loses the status when a write races with the end of the call (see
    # orders_client.bulk._AIO_WRITE_RACE): the async driver may only know "UNAVAILABLE".
    assert caught.value.reason == "NOT_SERVING" or (not sync and caught.value.reason == "")
    assert fake.service.stream_calls == policy.max_attempts
    # What was sent and never answered is reported, as failed results, before the raise.
    assert got and not any(r.ok for r in got)


async def test_async_source_error_propagates(fake: FakeOrdersServer) -> None:
    async def source() -> AsyncIterator[orders_pb2.CreateOrderRequest]:
        for request in requests(3):
            yield request
        raise RuntimeError("bad input")

    async with AsyncOrdersClient(fake.address, retry=POLICY) as client:
        with pytest.raises(RuntimeError, match="bad input"):
            async for _ in client.bulk_create(source()):
                pass


# -------------------------------------------------------------------- the core


def test_core_rejects_unknown_request_ids() -> None:
    core = BulkCore(POLICY, 2)
    with pytest.raises(Exception, match="unknown request_id"):
        core.on_result(orders_pb2.CreateOrderResult(request_id="nope"))


def test_core_duplicate_request_ids_are_matched_in_order() -> None:
    core = BulkCore(POLICY, 4)
    first = core.new_item(orders_pb2.CreateOrderRequest(request_id="r", customer_id="a"))
    second = core.new_item(orders_pb2.CreateOrderRequest(request_id="r", customer_id="b"))
    core.mark_sent(first)
    core.mark_sent(second)
    assert core.unanswered == 2 and core.has_room()
    order = orders_pb2.Order(order_id="o")
    one = core.on_result(orders_pb2.CreateOrderResult(request_id="r", order=order))
    two = core.on_result(orders_pb2.CreateOrderResult(request_id="r", order=order))
    assert one is not None and two is not None
    assert [one.request.customer_id, two.request.customer_id] == ["a", "b"]
    core.input_done = True
    assert core.finished()
