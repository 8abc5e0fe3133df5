"""The sync client against the FakeOrdersServer: deadlines, retries, errors, typed results."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import grpc
import pytest
from orders_client import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OrdersClient,
    OrdersError,
    PermissionDenied,
    ResourceExhausted,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
    orders_pb2,
)
from sdk_fake_server import FakeError, FakeOrdersServer, Slow

LINES = [("SKU-1", 2, 1999, "EUR")]
UNAVAILABLE = FakeError(grpc.StatusCode.UNAVAILABLE, "store down", "STORE_UNAVAILABLE")


class ZeroJitter(random.Random):
    """An RNG whose uniform(a, b) is always a: the wait is exactly the RetryInfo delay."""

    def random(self) -> float:
        return 0.0


def fast_policy(**changes: object) -> RetryPolicy:
    settings: dict[str, object] = {"initial_backoff": 0.001, "max_backoff": 0.005}
    settings.update(changes)
    return RetryPolicy(**settings)  # type: ignore[arg-type]


@pytest.fixture
def client(fake: FakeOrdersServer) -> Iterator[OrdersClient]:
    with OrdersClient(fake.address, client_id="tester", retry=fast_policy()) as c:
        yield c


def test_every_call_has_a_deadline_by_default(fake: FakeOrdersServer) -> None:
    with OrdersClient(fake.address) as client:
        client.get_order("o-1")
        client.confirm_order("o-1")
        client.get_stock("SKU-1")
        client.get_order("o-1", timeout=2.0)
    remaining = [c.time_remaining for c in fake.service.calls]
    assert all(r is not None for r in remaining)
    assert all(5.0 < r <= 10.5 for r in remaining[:3])  # type: ignore[operator]
    assert 0.5 < remaining[3] <= 2.5  # type: ignore[operator]


def test_identity_metadata(fake: FakeOrdersServer) -> None:
    with OrdersClient(fake.address, client_id="checkout", token="s3cret") as client:
        client.get_order("o-1")
    metadata = fake.service.calls[0].metadata
    assert metadata["x-client-id"] == "checkout"
    assert metadata["authorization"] == "Bearer s3cret"


def test_create_returns_typed_order(client: OrdersClient) -> None:
    order = client.create_order(customer_id="c-1", region="eu", lines=LINES, policy="split")
    assert isinstance(order, orders_pb2.Order)
    assert order.status == orders_pb2.ORDER_STATUS_ALLOCATED
    assert order.policy == orders_pb2.ALLOCATION_POLICY_SPLIT
    assert order.total_minor == 2 * 1999
    assert len(order.request_id) == 32  # generated: uuid4 hex


def test_create_retries_unavailable_with_the_same_request_id(
    fake: FakeOrdersServer, client: OrdersClient
) -> None:
    fake.service.script["CreateOrder"].extend([UNAVAILABLE, UNAVAILABLE])
    order = client.create_order(customer_id="c-1", region="eu", lines=LINES)
    calls = fake.service.calls_to("CreateOrder")
    assert len(calls) == 3
    request_ids = {c.request.request_id for c in calls}
    assert request_ids == {order.request_id}
    assert order.request_id


def test_create_keeps_the_callers_request_id_and_does_not_mutate(
    fake: FakeOrdersServer, client: OrdersClient
) -> None:
    request = orders_pb2.CreateOrderRequest(customer_id="c", region="eu")
    request.lines.add(sku="A", quantity=1, unit_price_minor=1, currency="EUR")
    client.create_order(request)
    client.create_order(customer_id="c", region="eu", lines=LINES, request_id="mine")
    assert request.request_id == ""  # the caller's message is left alone
    sent = [c.request.request_id for c in fake.service.calls_to("CreateOrder")]
    assert sent[0] and sent[1] == "mine"


def test_retries_are_bounded(fake: FakeOrdersServer) -> None:
    fake.service.script["GetOrder"].extend([UNAVAILABLE] * 10)
    client = OrdersClient(fake.address, retry=fast_policy(max_attempts=3))
    with client, pytest.raises(Unavailable) as caught:
        client.get_order("o-1")
    assert len(fake.service.calls_to("GetOrder")) == 3
    assert caught.value.reason == "STORE_UNAVAILABLE"


def test_confirm_is_not_retried_on_plain_unavailable(
    fake: FakeOrdersServer, client: OrdersClient
) -> None:
    fake.service.script["ConfirmOrder"].append(UNAVAILABLE)
    with pytest.raises(Unavailable):
        client.confirm_order("o-1")
    assert len(fake.service.calls_to("ConfirmOrder")) == 1


@pytest.mark.parametrize("method", ["cancel_order", "ship_order"])
def test_other_transitions_are_not_retried_either(
    fake: FakeOrdersServer, client: OrdersClient, method: str
) -> None:
    name = {"cancel_order": "CancelOrder", "ship_order": "ShipOrder"}[method]
    fake.service.script[name].append(FakeError(grpc.StatusCode.UNAVAILABLE, "conn reset"))
    with pytest.raises(Unavailable):
        getattr(client, method)("o-1")
    assert len(fake.service.calls_to(name)) == 1


def test_confirm_is_retried_when_the_server_was_not_serving(
    fake: FakeOrdersServer, client: OrdersClient
) -> None:
    fake.service.script["ConfirmOrder"].append(
        FakeError(grpc.StatusCode.UNAVAILABLE, "recovering", "NOT_SERVING")
    )
    order = client.confirm_order("o-1")
    assert order.status == orders_pb2.ORDER_STATUS_CONFIRMED
    assert len(fake.service.calls_to("ConfirmOrder")) == 2


def test_stock_changes_are_retried_only_when_the_queue_was_full(
    fake: FakeOrdersServer, client: OrdersClient
) -> None:
    fake.service.script["SetStock"].append(
        FakeError(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", "QUEUE_FULL", retry_after_ms=1)
    )
    assert client.set_stock("SKU-1", "loc-a", 5).on_hand == 5
    assert len(fake.service.calls_to("SetStock")) == 2
    fake.service.script["AdjustStock"].append(UNAVAILABLE)
    with pytest.raises(Unavailable):
        client.adjust_stock("SKU-1", "loc-a", -1)
    assert len(fake.service.calls_to("AdjustStock")) == 1


def test_retry_info_delay_is_honoured(fake: FakeOrdersServer) -> None:
    fake.service.script["ConfirmOrder"].append(
        FakeError(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", "QUEUE_FULL", retry_after_ms=250)
    )
    with OrdersClient(fake.address, retry=fast_policy(rng=ZeroJitter())) as client:
        waits: list[float] = []
        client._sleep = waits.append  # record instead of sleeping
        client.confirm_order("o-1")
    assert waits == [pytest.approx(0.25)]
    # And for real: the second attempt comes no sooner than the delay.
    fake.service.script["GetOrder"].append(
        FakeError(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", "QUEUE_FULL", retry_after_ms=200)
    )
    with OrdersClient(fake.address, retry=fast_policy()) as client:
        started = time.monotonic()
        client.get_order("o-1")
        assert time.monotonic() - started >= 0.2


def test_resource_exhausted_without_retry_info_is_not_retried(
    fake: FakeOrdersServer, client: OrdersClient
) -> None:
    fake.service.script["GetOrder"].append(
        FakeError(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit")
    )
    with pytest.raises(ResourceExhausted) as caught:
        client.get_order("o-1")
    assert caught.value.retry_after is None
    assert len(fake.service.calls_to("GetOrder")) == 1


def test_retries_never_pass_the_overall_deadline(fake: FakeOrdersServer) -> None:
    busy = FakeError(grpc.StatusCode.UNAVAILABLE, "busy", "NOT_SERVING", retry_after_ms=300)
    fake.service.script["GetOrder"].extend([busy] * 10)
    with OrdersClient(fake.address, timeout=0.5, retry=fast_policy(max_attempts=10)) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            client.get_order("o-1")
        elapsed = time.monotonic() - started
    assert len(fake.service.calls_to("GetOrder")) == 2
    assert elapsed < 0.5
    assert caught.value.retry_after == pytest.approx(0.3)


def test_deadline_exceeded_is_retried_with_a_per_attempt_timeout(
    fake: FakeOrdersServer,
) -> None:
    fake.service.script["CreateOrder"].append(Slow(2.0))
    policy = fast_policy(attempt_timeout=0.3)
    with OrdersClient(fake.address, timeout=5.0, retry=policy) as client:
        order = client.create_order(customer_id="c", region="eu", lines=LINES)
    calls = fake.service.calls_to("CreateOrder")
    assert len(calls) == 2
    assert calls[0].request.request_id == calls[1].request.request_id == order.request_id


def test_deadline_exceeded_when_the_call_is_too_slow(fake: FakeOrdersServer) -> None:
    fake.service.script["GetOrder"].append(Slow(2.0))
    client = OrdersClient(fake.address, timeout=0.2, retry=fast_policy())
    with client, pytest.raises(DeadlineExceeded) as caught:
        client.get_order("o-1")
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(fake.service.calls_to("GetOrder")) == 1


def test_invalid_argument_carries_field_violations(
    fake: FakeOrdersServer, client: OrdersClient
) -> None:
    fake.service.script["CreateOrder"].append(
        FakeError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid request: lines[0].quantity: must be 1..100000",
            "INVALID_REQUEST",
            [("lines[0].quantity", "must be 1..100000"), ("region", "is required")],
        )
    )
    with pytest.raises(InvalidArgument) as caught:
        client.create_order(customer_id="c", region="eu", lines=[("A", 0, 1, "EUR")])
    error = caught.value
    assert isinstance(error, OrdersError)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_REQUEST"
    assert error.field_violations == [
        FieldViolation("lines[0].quantity", "must be 1..100000"),
        FieldViolation("region", "is required"),
    ]
    assert "lines[0].quantity" in str(error)
    assert len(fake.service.calls_to("CreateOrder")) == 1  # never retried


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND", NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED", AlreadyExists),
        (grpc.StatusCode.FAILED_PRECONDITION, "ILLEGAL_TRANSITION", FailedPrecondition),
        (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, "", PermissionDenied),
        (grpc.StatusCode.INTERNAL, "", OrdersError),
    ],
)
def test_errors_map_to_exception_classes(
    fake: FakeOrdersServer,
    client: OrdersClient,
    code: grpc.StatusCode,
    reason: str,
    cls: type[OrdersError],
) -> None:
    fake.service.script["ConfirmOrder"].append(FakeError(code, "nope", reason))
    with pytest.raises(cls) as caught:
        client.confirm_order("o-1")
    assert type(caught.value) is cls
    assert caught.value.code == code
    assert caught.value.reason == reason
    assert caught.value.message == "nope"


def test_unreachable_server_is_unavailable() -> None:
    client = OrdersClient("127.0.0.1:1", timeout=1.0, retry=fast_policy())
    with client, pytest.raises((Unavailable, DeadlineExceeded)):
        client.get_order("o-1")


def test_batch_create_assigns_request_ids_and_maps_results(
    fake: FakeOrdersServer, client: OrdersClient
) -> None:
    requests = [
        orders_pb2.CreateOrderRequest(customer_id="c", region="eu", request_id="r-1"),
        orders_pb2.CreateOrderRequest(customer_id="c", region="eu"),
    ]
    fake.service.script["BatchCreateOrders"].append(UNAVAILABLE)
    results = client.batch_create_orders(requests)
    calls = fake.service.calls_to("BatchCreateOrders")
    assert len(calls) == 2  # retried: each item has its request_id
    assert calls[0].request == calls[1].request
    assert results[0].request_id == "r-1"
    assert results[1].request_id and results[1].ok
    assert (
        results[1].order is not None and results[1].order.order_id == "o-" + results[1].request_id
    )


def test_iter_orders_follows_pages(fake: FakeOrdersServer, client: OrdersClient) -> None:
    fake.service.script["ListOrders"].extend(
        [
            orders_pb2.ListOrdersResponse(
                orders=[orders_pb2.Order(order_id="o-1"), orders_pb2.Order(order_id="o-2")],
                next_page_token="t1",
            ),
            orders_pb2.ListOrdersResponse(orders=[orders_pb2.Order(order_id="o-3")]),
        ]
    )
    ids = [o.order_id for o in client.iter_orders("c-1", status="allocated", page_size=2)]
    assert ids == ["o-1", "o-2", "o-3"]
    calls = fake.service.calls_to("ListOrders")
    assert [c.request.page_token for c in calls] == ["", "t1"]
    assert calls[0].request.status == orders_pb2.ORDER_STATUS_ALLOCATED


def test_inventory_calls(fake: FakeOrdersServer, client: OrdersClient) -> None:
    assert client.upsert_location("loc-a", "eu", 3).priority == 3
    region = client.configure_region("eu", strategy="most-available", reservation_ttl_seconds=60)
    assert region.strategy == orders_pb2.ALLOCATION_STRATEGY_MOST_AVAILABLE
    assert [level.location_id for level in client.get_stock("SKU-1", region="eu")] == [
        "loc-a",
        "warehouse-b",
    ]
    assert client.reconcile("eu", repair=True).rows_checked == 4
    assert fake.service.calls_to("Reconcile")[0].request.repair is True
