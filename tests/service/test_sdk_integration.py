"""The Python SDK and the `orders` CLI against the real server (and the real NATS for
event subscription): what a user of the SDK sees."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from harness import (
    NATS_URL,
    ServerProcess,
    unique_name,
)
from orders_client import AsyncOrdersClient, OrdersClient
from orders_client.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from orders_client.events import subscribe
from orders_client.gen.orders.v1 import events_pb2, orders_pb2

pytestmark = pytest.mark.integration


def _setup_region(client: OrdersClient, region: str, units: int) -> str:
    client.configure_region(region, strategy="priority")
    location = f"w1.{region}"
    client.upsert_location(location, region, 1)
    client.set_stock("sdk-sku", location, units)
    return location


async def test_sync_client_round_trip_and_typed_errors(server: ServerProcess) -> None:
    def scenario() -> None:
        region = unique_name("r")
        with OrdersClient(server.address, client_id="sdk-tests") as client:
            _setup_region(client, region, 10)
            order = client.create_order(
                customer_id="sdk-c1",
                region=region,
                lines=[("sdk-sku", 4, 250, "EUR")],
                request_id="sdk-1",
            )
            assert order.status == orders_pb2.ORDER_STATUS_ALLOCATED
            assert client.get_order(order.order_id) == order
            assert order.order_id in [o.order_id for o in client.iter_orders("sdk-c1")]
            with pytest.raises(InvalidArgument) as invalid:
                client.create_order(customer_id="sdk-c1", region=region, lines=[])
            assert invalid.value.field_violations[0].field == "lines"
            with pytest.raises(AlreadyExists) as reused:
                client.create_order(
                    customer_id="sdk-c1",
                    region=region,
                    lines=[("sdk-sku", 5, 250, "EUR")],
                    request_id="sdk-1",
                )
            assert reused.value.reason == "REQUEST_ID_REUSED"
            client.confirm_order(order.order_id)
            with pytest.raises(FailedPrecondition):
                client.confirm_order(order.order_id)
            with pytest.raises(NotFound):
                client.get_order("o-does-not-exist")

    await asyncio.to_thread(scenario)


async def test_bulk_create_and_event_subscription(server: ServerProcess) -> None:
    region = unique_name("r")
    await asyncio.to_thread(lambda: _setup_region(OrdersClient(server.address), region, 100))
    requests = [
        orders_pb2.CreateOrderRequest(
            request_id=f"bulk-{i}",
            customer_id="sdk-bulk",
            region=region,
            policy=orders_pb2.ALLOCATION_POLICY_SPLIT,
            lines=[orders_pb2.OrderLine(sku="sdk-sku", quantity=1, currency="EUR")],
        )
        for i in range(300)
    ]
    async with AsyncOrdersClient(server.address, client_id="sdk-bulk") as client:
        results = [r async for r in client.bulk_create(requests, max_in_flight=64)]
    assert sorted(r.request_id for r in results) == sorted(r.request_id for r in requests)
    statuses = [r.order.status for r in results if r.order is not None]
    assert statuses.count(orders_pb2.ORDER_STATUS_ALLOCATED) == 100
    assert statuses.count(orders_pb2.ORDER_STATUS_REJECTED) == 200
    ids = {r.order.order_id for r in results if r.order is not None}

    seen: set[str] = set()
    async with subscribe(
        NATS_URL, stream=server.stream, subject_prefix=server.subject_prefix
    ) as events:

        async def collect() -> None:
            async for event in events:
                if isinstance(event, events_pb2.OrderEvent) and event.order.order_id in ids:
                    assert event.event_id not in seen, "a duplicate was not removed"
                    seen.add(event.event_id)
                    if len(seen) == len(ids):
                        return

        await asyncio.wait_for(collect(), 30)
    assert seen == {f"{order_id}:1" for order_id in ids}


async def test_cli_create_get_and_exit_codes(server: ServerProcess) -> None:
    region = unique_name("r")
    await asyncio.to_thread(lambda: _setup_region(OrdersClient(server.address), region, 5))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orders_client.cli", "--address", server.address, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    created = await asyncio.to_thread(
        cli,
        "--json",
        "create",
        "--region",
        region,
        "--customer",
        "cli-c",
        "--line",
        "sdk-sku:2:100:EUR",
        "--request-id",
        "cli-1",
    )
    assert created.returncode == 0, created.stderr
    order = json.loads(created.stdout.splitlines()[0])
    fetched = await asyncio.to_thread(cli, "get", order["order_id"])
    assert fetched.returncode == 0 and order["order_id"] in fetched.stdout
    missing = await asyncio.to_thread(cli, "get", "o-missing")
    assert missing.returncode == 4, missing.stderr
    invalid = await asyncio.to_thread(
        cli, "create", "--region", region, "--customer", "cli-c", "--line", "sdk-sku:0:100:EUR"
    )
    assert invalid.returncode == 3, invalid.stderr
    assert "lines[0].quantity" in invalid.stderr + invalid.stdout
