"""Invariants under faults, against the real Cassandra and NATS: oversell races, kill -9,
the store and the broker going away (network cut by a proxy) and coming back.

After every fault the checks are the architecture's invariants:
I1 no oversell, I2 durable acknowledgement, I3 idempotency, I4 events exactly once in
version order after dedup, I5 conservation (via reconcile and stock vs. orders)."""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator

import grpc
import pytest
import xxhash
from cassandra.cluster import Cluster
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import (
    CQL_HOST,
    CQL_PORT,
    LIVE_STATUSES,
    Api,
    ServerProcess,
    TcpProxy,
    create_request,
    new_server,
    read_stream,
    reason,
    retry_delay_ms,
    unique_name,
)

from server.gen.orders.v1 import events_pb2, orders_pb2

pytestmark = pytest.mark.integration

# Bounds for every loop below: count and time.
RACE_BUYERS = 2000
RACE_IN_FLIGHT = 800
LOAD_SECONDS = 3.0
RECOVERY_TIMEOUT_S = 60.0


@pytest.fixture
async def fresh_server(cql_proxy: TcpProxy, nats_proxy: TcpProxy) -> AsyncIterator[ServerProcess]:
    cql_proxy.restore()
    nats_proxy.restore()
    process = new_server(cql_proxy, nats_proxy)
    await process.start()
    yield process
    cql_proxy.restore()
    nats_proxy.restore()
    if process.process is not None and process.process.poll() is None:
        await process.terminate()


def stored_rows(
    keyspace: str,
) -> tuple[dict[str, orders_pb2.Order], dict[tuple[str, str], tuple[int, int]]]:
    """Read the orders and stock rows straight from Cassandra (not through the service)."""
    cluster = Cluster([CQL_HOST], port=CQL_PORT)
    try:
        session = cluster.connect(keyspace)
        orders = {}
        for row in session.execute("SELECT DISTINCT order_id, state FROM orders"):
            if row.state is not None:
                orders[row.order_id] = orders_pb2.Order.FromString(row.state)
        stock = {
            (row.sku, row.location_id): (row.on_hand, row.reserved)
            for row in session.execute("SELECT sku, location_id, on_hand, reserved FROM stock")
        }
        return orders, stock
    finally:
        cluster.shutdown()


def assert_stock_agrees_with_orders(
    orders: dict[str, orders_pb2.Order], stock: dict[tuple[str, str], tuple[int, int]]
) -> None:
    live: dict[tuple[str, str], int] = defaultdict(int)
    for order in orders.values():
        if order.status in LIVE_STATUSES:
            for allocation in order.allocations:
                live[(allocation.sku, allocation.location_id)] += allocation.quantity
    for key, (on_hand, reserved) in stock.items():
        assert 0 <= reserved <= on_hand, (
            f"I1 broken at {key}: reserved {reserved}, on_hand {on_hand}"
        )
        assert reserved == live.get(key, 0), f"I1 drift at {key}: {reserved} != {live.get(key, 0)}"
    assert set(live) <= set(stock), "an allocation points at a stock row that does not exist"


async def assert_events_exactly_once(
    server: ServerProcess, orders: dict[str, orders_pb2.Order], timeout_s: float = 30.0
) -> None:
    """I4: after dedup, every persisted order version has exactly one event, in version
    order, and no event describes a version that was not persisted."""
    deadline = time.monotonic() + timeout_s
    while True:
        messages = await read_stream(server)
        seen: dict[str, list[int]] = defaultdict(list)
        for subject, msg_id, payload in messages:
            if ".orders.v1." not in f".{subject}":
                continue
            event = events_pb2.OrderEvent.FromString(payload)
            assert msg_id == event.event_id == f"{event.order.order_id}:{event.order.version}"
            seen[event.order.order_id].append(event.order.version)
        missing = {
            order_id: order.version
            for order_id, order in orders.items()
            if seen.get(order_id, []) != list(range(1, order.version + 1))
        }
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    for order_id, versions in seen.items():
        assert order_id in orders, f"event for an order that was never persisted: {order_id}"
        assert versions == sorted(set(versions)), (
            f"{order_id}: duplicates or out of order {versions}"
        )
        assert versions[-1] <= orders[order_id].version, (
            f"{order_id}: event past the stored version"
        )
    assert not missing, f"orders whose events are missing or wrong: {list(missing.items())[:5]}"


async def _health_becomes(channel: grpc.aio.Channel, status: int, timeout_s: float = 10.0) -> bool:
    """Poll grpc.health.v1 until the overall status is `status` (bounded in time)."""
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        if reply.status == status:
            return True
        await asyncio.sleep(0.1)
    return False


async def reconcile_has_no_drift(api: Api) -> None:
    reply = await api.inventory.Reconcile(orders_pb2.ReconcileRequest(), timeout=30)
    assert reply.rows_checked > 0
    assert list(reply.drifts) == []


async def test_oversell_race_hot_sku(fresh_server: ServerProcess) -> None:
    region = unique_name("r")
    on_hand = {"a": 40, "b": 30, "c": 30}
    async with grpc.aio.insecure_channel(fresh_server.address) as channel:
        api = Api(channel)
        await api.region(
            region, {"a": 1, "b": 2, "c": 3}, {("hot", loc): q for loc, q in on_hand.items()}
        )
        rng = random.Random(7)
        requests = [
            create_request(
                f"buy-{i}", region, [("hot", rng.choice((1, 2)))], customer_id=f"c{i % 50}"
            )
            for i in range(RACE_BUYERS)
        ]
        # All buyers are started at once; at most RACE_IN_FLIGHT calls are on the wire at a
        # time (gRPC core refuses streams beyond a couple of thousand per server process,
        # see docs/design.md), so hundreds of creates race inside each engine batch.
        in_flight = asyncio.Semaphore(RACE_IN_FLIGHT)

        async def buy(request: orders_pb2.CreateOrderRequest) -> orders_pb2.Order:
            async with in_flight:
                return await api.orders.CreateOrder(request, timeout=60)

        answers = await asyncio.gather(*[buy(r) for r in requests], return_exceptions=True)
        errors = [a for a in answers if not isinstance(a, orders_pb2.Order)]
        assert not errors, errors[:3]
        allocated = sum(
            a.quantity
            for order in answers
            if isinstance(order, orders_pb2.Order)
            for a in order.allocations
            if order.status == orders_pb2.ORDER_STATUS_ALLOCATED
        )
        assert allocated <= 100
        assert allocated >= 99, "stock was left while buyers were turned away"
        await reconcile_has_no_drift(api)
    orders, stock = stored_rows(fresh_server.keyspace)
    assert len(orders) == RACE_BUYERS
    assert_stock_agrees_with_orders(orders, stock)
    assert sum(reserved for (sku, _), (_, reserved) in stock.items() if sku == "hot") == allocated
    await assert_events_exactly_once(fresh_server, orders)


async def test_kill_9_under_load_loses_nothing_acknowledged(
    fresh_server: ServerProcess, cql_proxy: TcpProxy, nats_proxy: TcpProxy
) -> None:
    region = unique_name("r")
    skus = [f"s{i}" for i in range(20)]
    acked: dict[str, orders_pb2.Order] = {}
    first_answers: dict[str, orders_pb2.Order] = {}
    async with grpc.aio.insecure_channel(fresh_server.address) as channel:
        api = Api(channel)
        await api.region(
            region,
            {"a": 1, "b": 2},
            {(sku, loc): 30 for sku in skus for loc in ("a", "b")},
        )

        async def worker(worker_id: int) -> None:
            rng = random.Random(worker_id)
            deadline = time.monotonic() + LOAD_SECONDS * 3
            for i in range(100_000):
                if time.monotonic() > deadline:
                    return
                request = create_request(
                    f"k-{worker_id}-{i}",
                    region,
                    [(rng.choice(skus), rng.randint(1, 3))],
                    customer_id=f"c{worker_id}",
                )
                try:
                    order = await api.orders.CreateOrder(request, timeout=5)
                    acked[order.order_id] = order
                    first_answers.setdefault(request.request_id, order)
                    if rng.random() < 0.3 and order.status == orders_pb2.ORDER_STATUS_ALLOCATED:
                        confirmed = await api.orders.ConfirmOrder(
                            orders_pb2.ConfirmOrderRequest(order_id=order.order_id), timeout=5
                        )
                        acked[order.order_id] = confirmed
                except grpc.aio.AioRpcError:
                    return  # the server died under us

        workers = [asyncio.create_task(worker(w)) for w in range(32)]
        await asyncio.sleep(LOAD_SECONDS)
        await fresh_server.kill9()
        await asyncio.gather(*workers)
    assert len(acked) > 50, "the load did not get going before the kill"

    restarted = ServerProcess(
        cql_port=cql_proxy.port,
        nats_url=fresh_server.nats_url,
        keyspace=fresh_server.keyspace,
        stream=fresh_server.stream,
        subject_prefix=fresh_server.subject_prefix,
    )
    await restarted.start()
    try:
        async with grpc.aio.insecure_channel(restarted.address) as channel:
            api = Api(channel)
            for order_id, order in acked.items():
                stored = await api.orders.GetOrder(
                    orders_pb2.GetOrderRequest(order_id=order_id), timeout=10
                )
                assert stored.version >= order.version
                if stored.version == order.version:
                    assert stored == order, f"{order_id} differs from what was acknowledged"
            # I3 after a restart: a retry gets the same order and allocates nothing new.
            request_id, first = next(
                (rid, o) for rid, o in first_answers.items() if acked[o.order_id].version == 1
            )
            worker_id = request_id.split("-")[1]
            retry = create_request(
                request_id,
                region,
                [(line.sku, line.quantity) for line in first.lines],
                customer_id=f"c{worker_id}",
            )
            again = await api.orders.CreateOrder(retry, timeout=10)
            assert again == first
            await reconcile_has_no_drift(api)
        orders, stock = stored_rows(fresh_server.keyspace)
        assert_stock_agrees_with_orders(orders, stock)
        await assert_events_exactly_once(restarted, orders)
    finally:
        assert await restarted.terminate() == 0, restarted.tail()


async def test_store_down_means_unavailable_and_recovery(
    fresh_server: ServerProcess, cql_proxy: TcpProxy
) -> None:
    region = unique_name("r")
    async with grpc.aio.insecure_channel(fresh_server.address) as channel:
        api = Api(channel)
        await api.region(region, {"a": 1}, {("sd", "a"): 1000})
        before = await api.orders.CreateOrder(
            create_request("sd-0", region, [("sd", 1)]), timeout=10
        )
        cql_proxy.cut()
        failed: list[orders_pb2.CreateOrderRequest] = []
        for i in range(1, 6):
            request = create_request(f"sd-{i}", region, [("sd", 1)])
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await api.orders.CreateOrder(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert retry_delay_ms(caught.value) > 0
            assert reason(caught.value) in {"STORE_UNAVAILABLE", "NOT_SERVING"}
            failed.append(request)
        # While the in-doubt batch is being rolled forward the service says so.
        assert await _health_becomes(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
        cql_proxy.restore()
        # The service comes back by itself; the failed requests succeed on retry, each once.
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        recovered: list[orders_pb2.Order] = []
        for request in failed:
            while True:
                try:
                    recovered.append(await api.orders.CreateOrder(request, timeout=10))
                    break
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE
                    assert time.monotonic() < deadline, "the service did not recover"
                    await asyncio.sleep(0.5)
        assert len({o.order_id for o in recovered}) == len(failed)
        assert await _health_becomes(channel, health_pb2.HealthCheckResponse.SERVING)
        await reconcile_has_no_drift(api)
        stock = await api.inventory.GetStock(orders_pb2.GetStockRequest(sku="sd"), timeout=10)
        assert stock.levels[0].reserved == 1 + len(failed)
    orders, rows = stored_rows(fresh_server.keyspace)
    assert before.order_id in orders
    assert_stock_agrees_with_orders(orders, rows)
    await assert_events_exactly_once(fresh_server, orders)


async def test_broker_down_orders_accepted_events_follow(
    fresh_server: ServerProcess, nats_proxy: TcpProxy
) -> None:
    region = unique_name("r")
    async with grpc.aio.insecure_channel(fresh_server.address) as channel:
        api = Api(channel)
        await api.region(region, {"a": 1}, {("bd", "a"): 1000})
        nats_proxy.cut()
        accepted = [
            await api.orders.CreateOrder(create_request(f"bd-{i}", region, [("bd", 1)]), timeout=10)
            for i in range(30)
        ]
        assert all(o.status == orders_pb2.ORDER_STATUS_ALLOCATED for o in accepted)
        messages = await read_stream(fresh_server, settle_s=0.2)
        published = {msg_id for _, msg_id, _ in messages}
        assert not {f"{o.order_id}:1" for o in accepted} <= published
        nats_proxy.restore()
    orders, _ = stored_rows(fresh_server.keyspace)
    await assert_events_exactly_once(fresh_server, orders, timeout_s=RECOVERY_TIMEOUT_S)


async def test_full_queue_answers_resource_exhausted(
    cql_proxy: TcpProxy, nats_proxy: TcpProxy
) -> None:
    process = new_server(
        cql_proxy,
        nats_proxy,
        "--queue-max-commands",
        "8",
        "--batch-max-wait-ms",
        "300",
        "--batch-max-commands",
        "4",
    )
    await process.start()
    try:
        async with grpc.aio.insecure_channel(process.address) as channel:
            api = Api(channel)
            region = unique_name("r")
            await api.region(region, {"a": 1}, {("q", "a"): 10_000})
            answers = await asyncio.gather(
                *[
                    api.orders.CreateOrder(create_request(f"q-{i}", region, [("q", 1)]), timeout=30)
                    for i in range(200)
                ],
                return_exceptions=True,
            )
            exhausted = [
                a
                for a in answers
                if isinstance(a, grpc.aio.AioRpcError)
                and a.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            ]
            assert exhausted, "a bounded queue of 8 took 200 concurrent requests"
            assert all(retry_delay_ms(a) > 0 for a in exhausted)
            assert any(isinstance(a, orders_pb2.Order) for a in answers)
            # A request whose deadline passes while it waits in the queue is dropped before
            # the engine sees it: it creates nothing, and the drop is counted.
            await asyncio.sleep(1.0)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await api.orders.CreateOrder(
                    create_request("q-late", region, [("q", 1)]), timeout=0.05
                )
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.sleep(1.0)
            late_id = "o-" + xxhash.xxh3_128_hexdigest(b"anonymous\x00q-late")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await api.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=late_id), timeout=10)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            metrics = (
                urllib.request.urlopen(
                    f"http://127.0.0.1:{process.metrics_port}/metrics", timeout=10
                )
                .read()
                .decode()
            )
            dropped = [
                float(line.split()[-1])
                for line in metrics.splitlines()
                if line.startswith("orders_dropped_deadline_total")
            ]
            assert dropped and dropped[0] >= 1
    finally:
        assert await process.terminate() == 0, process.tail()
