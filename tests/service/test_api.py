"""The gRPC API against a real server, Cassandra and NATS: bad input, idempotency,
transitions, listing, reads."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from harness import (
    Api,
    ServerProcess,
    TcpProxy,
    create_request,
    new_server,
    read_stream,
    reason,
    short_location,
    unique_name,
    violations,
)

from server import _engine, engine_build
from server.config import DEFAULT_ENGINE_RESERVE_ORDERS
from server.gen.orders.v1 import orders_pb2

pytestmark = pytest.mark.integration


async def _stock(api: Api, sku: str) -> dict[str, tuple[int, int]]:
    reply = await api.inventory.GetStock(orders_pb2.GetStockRequest(sku=sku), timeout=10)
    return {
        short_location(level.location_id): (level.on_hand, level.reserved) for level in reply.levels
    }


async def test_bad_input_is_answered_never_obeyed(server: ServerProcess, api: Api) -> None:
    region = unique_name("r")
    await api.region(region, {"l1": 1}, {("sku-a", "l1"): 10})
    bad = orders_pb2.CreateOrderRequest(
        request_id="bad-1",
        customer_id="c1",
        region=region,
        lines=[
            orders_pb2.OrderLine(sku="sku-a", quantity=0, unit_price_minor=100, currency="EUR"),
            orders_pb2.OrderLine(sku="sku a!", quantity=1, unit_price_minor=-5, currency="XXQ"),
        ],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.orders.CreateOrder(bad, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {field for field, _ in violations(caught.value)}
    assert {"lines[0].quantity", "lines[1].sku", "lines[1].unit_price_minor"} <= fields
    assert "lines[1].currency" in fields
    assert reason(caught.value) == "INVALID_REQUEST"
    # The failure is logged as one JSON line carrying the request id.
    logged = [
        json.loads(line)
        for line in server.log_path.read_text().splitlines()
        if line.startswith("{") and '"rpc failed"' in line
    ]
    assert any(
        entry.get("request_id") == "bad-1" and entry.get("code") == "INVALID_ARGUMENT"
        for entry in logged
    ), logged[-3:]
    # Nothing written: the stock is untouched, and the request id is still free.
    assert await _stock(api, "sku-a") == {"l1": (10, 0)}
    good = create_request("bad-1", region, [("sku-a", 2)], customer_id="c1")
    order = await api.orders.CreateOrder(good, timeout=10)
    assert order.status == orders_pb2.ORDER_STATUS_ALLOCATED
    assert await _stock(api, "sku-a") == {"l1": (10, 2)}


async def test_garbage_bytes_do_not_poison_a_batch(server: ServerProcess, api: Api) -> None:
    region = unique_name("r")
    await api.region(region, {"l1": 1}, {("sku-g", "l1"): 100})
    async with grpc.aio.insecure_channel(server.address) as channel:
        raw = channel.unary_unary("/orders.v1.OrderService/CreateOrder")
        garbage = raw(b"\xff\xff\xff\xff\x0f", timeout=10)
        goods = [
            api.orders.CreateOrder(create_request(f"g-{i}", region, [("sku-g", 1)]), timeout=10)
            for i in range(20)
        ]
        results = await asyncio.gather(garbage, *goods, return_exceptions=True)
    assert isinstance(results[0], grpc.aio.AioRpcError)
    assert results[0].code() == grpc.StatusCode.INVALID_ARGUMENT
    assert all(isinstance(r, orders_pb2.Order) for r in results[1:]), results[1:]


async def test_get_and_list_validate_input(api: Api) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=""), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value)[0][0] == "order_id"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.orders.GetOrder(orders_pb2.GetOrderRequest(order_id="o-missing"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.orders.ListOrders(
            orders_pb2.ListOrdersRequest(customer_id="c1", page_token="not-a-token"), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value)[0][0] == "page_token"


async def test_idempotency_concurrent_retries_and_reuse(api: Api) -> None:
    region = unique_name("r")
    await api.region(region, {"l1": 1, "l2": 2}, {("sku-i", "l1"): 5, ("sku-i", "l2"): 5})
    request = create_request("same-request", region, [("sku-i", 3)])
    answers = await asyncio.gather(
        *[api.orders.CreateOrder(request, timeout=10) for _ in range(40)]
    )
    assert len({a.SerializeToString() for a in answers}) == 1
    assert answers[0].status == orders_pb2.ORDER_STATUS_ALLOCATED
    # One allocation: 3 reserved, not 3 x 40.
    stock = await _stock(api, "sku-i")
    assert sum(reserved for _, reserved in stock.values()) == 3
    other = create_request("same-request", region, [("sku-i", 4)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.orders.CreateOrder(other, timeout=10)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason(caught.value) == "REQUEST_ID_REUSED"
    stored = await api.orders.GetOrder(
        orders_pb2.GetOrderRequest(order_id=answers[0].order_id), timeout=10
    )
    assert stored == answers[0]


async def test_transitions_and_illegal_ones(api: Api) -> None:
    region = unique_name("r")
    await api.region(region, {"l1": 1}, {("sku-t", "l1"): 10})
    order = await api.orders.CreateOrder(create_request("t-1", region, [("sku-t", 4)]), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.orders.ShipOrder(orders_pb2.ShipOrderRequest(order_id=order.order_id), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(caught.value) == "ILLEGAL_TRANSITION"
    confirmed = await api.orders.ConfirmOrder(
        orders_pb2.ConfirmOrderRequest(order_id=order.order_id), timeout=10
    )
    assert (confirmed.status, confirmed.version) == (orders_pb2.ORDER_STATUS_CONFIRMED, 2)
    shipped = await api.orders.ShipOrder(
        orders_pb2.ShipOrderRequest(order_id=order.order_id), timeout=10
    )
    assert (shipped.status, shipped.version) == (orders_pb2.ORDER_STATUS_SHIPPED, 3)
    assert await _stock(api, "sku-t") == {"l1": (6, 0)}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.orders.CancelOrder(
            orders_pb2.CancelOrderRequest(order_id=order.order_id), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    second = await api.orders.CreateOrder(create_request("t-2", region, [("sku-t", 6)]), timeout=10)
    cancelled = await api.orders.CancelOrder(
        orders_pb2.CancelOrderRequest(order_id=second.order_id, reason="changed-mind"), timeout=10
    )
    assert cancelled.status == orders_pb2.ORDER_STATUS_CANCELLED
    assert await _stock(api, "sku-t") == {"l1": (6, 0)}


async def test_listing_is_stable_and_complete_under_concurrent_inserts(api: Api) -> None:
    region = unique_name("r")
    customer = unique_name("cust")
    await api.region(region, {"l1": 1}, {("sku-l", "l1"): 100_000})
    before = [
        await api.orders.CreateOrder(
            create_request(f"l-{i}", region, [("sku-l", 1)], customer_id=customer), timeout=10
        )
        for i in range(45)
    ]
    expected = {order.order_id for order in before}

    async def insert_more() -> None:
        for i in range(30):
            await api.orders.CreateOrder(
                create_request(f"late-{i}", region, [("sku-l", 1)], customer_id=customer),
                timeout=10,
            )

    inserting = asyncio.create_task(insert_more())
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await api.orders.ListOrders(
            orders_pb2.ListOrdersRequest(customer_id=customer, page_size=7, page_token=token),
            timeout=10,
        )
        pages += 1
        assert len(page.orders) <= 7
        seen += [order.order_id for order in page.orders]
        token = page.next_page_token
        if not token:
            break
        await asyncio.sleep(0.01)
    await inserting
    assert pages >= 7
    assert len(seen) == len(set(seen)), "an order was listed twice"
    assert expected <= set(seen), "an order that existed before listing started was missed"
    times = []
    for order_id in seen:
        stored = await api.orders.GetOrder(
            orders_pb2.GetOrderRequest(order_id=order_id), timeout=10
        )
        times.append(stored.create_time.ToMilliseconds())
    assert times == sorted(times, reverse=True), "not newest first"
    confirmed = await api.orders.ConfirmOrder(
        orders_pb2.ConfirmOrderRequest(order_id=before[0].order_id), timeout=10
    )
    filtered = await api.orders.ListOrders(
        orders_pb2.ListOrdersRequest(
            customer_id=customer, page_size=100, status=orders_pb2.ORDER_STATUS_CONFIRMED
        ),
        timeout=10,
    )
    assert [o.order_id for o in filtered.orders] == [confirmed.order_id]


async def test_batch_create_all_or_nothing_and_each(api: Api) -> None:
    region = unique_name("r")
    await api.region(region, {"l1": 1}, {("sku-b", "l1"): 5})
    requests = [
        create_request("b-1", region, [("sku-b", 2)]),
        create_request("b-2", region, [("sku-b", 9)]),
    ]
    reply = await api.orders.BatchCreateOrders(
        orders_pb2.BatchCreateOrdersRequest(
            requests=requests, error_policy=orders_pb2.BATCH_ERROR_POLICY_ALL_OR_NOTHING
        ),
        timeout=10,
    )
    assert [r.WhichOneof("outcome") for r in reply.results] == ["error", "error"]
    assert await _stock(api, "sku-b") == {"l1": (5, 0)}
    reply = await api.orders.BatchCreateOrders(
        orders_pb2.BatchCreateOrdersRequest(
            requests=requests, error_policy=orders_pb2.BATCH_ERROR_POLICY_EACH
        ),
        timeout=10,
    )
    assert reply.results[0].order.status == orders_pb2.ORDER_STATUS_ALLOCATED
    assert reply.results[1].order.status == orders_pb2.ORDER_STATUS_REJECTED
    assert await _stock(api, "sku-b") == {"l1": (5, 2)}


async def test_stream_create_matches_results_by_request_id(api: Api) -> None:
    region = unique_name("r")
    await api.region(region, {"l1": 1}, {("sku-s", "l1"): 10_000})

    async def requests():  # type: ignore[no-untyped-def]
        for i in range(500):
            yield create_request(f"s-{i}", region, [("sku-s", 1)])
        yield orders_pb2.CreateOrderRequest(request_id="s-bad", region=region)

    results = {}
    async for item in api.orders.StreamCreateOrders(requests(), timeout=60):
        results[item.result.request_id] = item.result
    assert len(results) == 501
    assert all(results[f"s-{i}"].order.request_id == f"s-{i}" for i in range(500))
    assert results["s-bad"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert results["s-bad"].error.field_violations


async def test_a_server_with_default_settings_provisions_its_order_store_and_says_its_build(
    server: ServerProcess,
) -> None:
    """The engine's order store is provisioned at start by default (docs/design.md,
    "Engine memory is provisioned"): the log says how many orders, and how long it took."""
    log = server.log_path.read_text(errors="replace").splitlines()
    records = [json.loads(line) for line in log if line.startswith("{")]
    reserved = [r for r in records if r.get("msg") == "engine order store reserved"]
    assert len(reserved) == 1, server.tail()
    assert reserved[0]["orders"] == DEFAULT_ENGINE_RESERVE_ORDERS == 1_000_000
    assert reserved[0]["seconds"] >= 0
    # And it says which build of the engine this CPU got (server/engine_build.py).
    serving = [r for r in records if r.get("msg") == "serving"]
    assert [r["engine_build"] for r in serving] == [engine_build.chosen_build()], server.tail()
    # And the profile it was compiled with (deploy/build_engine.sh).
    assert [r["engine_profile"] for r in serving] == [_engine.BUILD_PROFILE], server.tail()


async def test_health_reflection_and_metrics(server: ServerProcess) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "orders.v1.OrderService", "orders.v1.InventoryService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names: set[str] = set()
        async for answer in reflection.ServerReflectionInfo(ask(), timeout=5):
            names |= {s.name for s in answer.list_services_response.service}
        assert {"orders.v1.OrderService", "orders.v1.InventoryService"} <= names
        # One write so that the per-method series exist.
        await Api(channel).region(unique_name("r"), {"l1": 1}, {})
    body = await asyncio.to_thread(
        lambda: (
            urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5)
            .read()
            .decode()
        )
    )
    for name in (
        "orders_rpc_requests_total",
        "orders_rpc_latency_seconds_bucket",
        "orders_batch_commands_bucket",
        "orders_engine_seconds_bucket",
        "orders_store_write_seconds_bucket",
        "orders_queue_depth",
        "orders_outbox_lag_batches",
    ):
        assert name in body, name


async def test_sigterm_drains_and_publishes_everything(
    cql_proxy: TcpProxy, nats_proxy: TcpProxy
) -> None:
    # Started with a smaller reservation than the default (several chunks): the flag is obeyed.
    process = new_server(cql_proxy, nats_proxy, "--engine-reserve-orders", "50000")
    await process.start()
    async with grpc.aio.insecure_channel(process.address) as channel:
        api = Api(channel)
        region = unique_name("r")
        await api.region(region, {"l1": 1}, {("sku-d", "l1"): 1000})
        orders = await asyncio.gather(
            *[
                api.orders.CreateOrder(create_request(f"d-{i}", region, [("sku-d", 1)]), timeout=10)
                for i in range(200)
            ]
        )
    assert await process.terminate() == 0, process.tail()
    assert '"engine order store reserved"' in process.tail(200), process.tail()
    assert '"all_events_published": true' in process.tail(), process.tail()
    published = {msg_id for _, msg_id, _ in await read_stream(process)}
    assert {f"{o.order_id}:1" for o in orders} <= published
