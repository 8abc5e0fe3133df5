"""The `make run` demo: a region with stock, a stream of orders with a progress bar, then
what happened: counts by status, events read back from JetStream, an order read back from
CQL. Uses the Python SDK (clients/python) as a user would.

    python -m deploy.demo [--orders N] [--address HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from collections import Counter

from cassandra.cluster import Cluster
from orders_client import AsyncOrdersClient
from orders_client.events import subscribe
from orders_client.gen.orders.v1 import events_pb2, orders_pb2
from orders_client.progress import Progress

DEFAULT_ORDERS = 5000
REGION = "demo-eu"
LOCATIONS = {"demo-berlin": 1, "demo-paris": 2, "demo-madrid": 3}
SKUS = [f"DEMO-SKU-{i:03d}" for i in range(50)]
EVENTS_SHOWN = 5


def _requests(count: int, run: str) -> list[orders_pb2.CreateOrderRequest]:
    rng = random.Random(42)
    policies = [
        orders_pb2.ALLOCATION_POLICY_SINGLE_LOCATION,
        orders_pb2.ALLOCATION_POLICY_SPLIT,
        orders_pb2.ALLOCATION_POLICY_BACKORDER,
    ]
    requests = []
    for i in range(count):
        skus = rng.sample(SKUS, rng.randint(1, 3))
        requests.append(
            orders_pb2.CreateOrderRequest(
                request_id=f"demo-{run}-{i}",
                customer_id=f"demo-customer-{rng.randint(1, 200)}",
                region=REGION,
                policy=rng.choice(policies),
                lines=[
                    orders_pb2.OrderLine(
                        sku=sku,
                        quantity=rng.randint(1, 4),
                        unit_price_minor=rng.randint(199, 9999),
                        currency="EUR",
                    )
                    for sku in skus
                ],
            )
        )
    return requests


async def run(address: str, count: int) -> int:
    run_id = uuid.uuid4().hex[:6]
    async with AsyncOrdersClient(address, client_id="demo") as client:
        print(f"setting up region {REGION}: {len(LOCATIONS)} locations, {len(SKUS)} SKUs")
        await client.configure_region(REGION, strategy="priority", reservation_ttl_seconds=900)
        for location, priority in LOCATIONS.items():
            await client.upsert_location(location, REGION, priority)
        rng = random.Random(7)
        for sku in SKUS:
            for location in LOCATIONS:
                await client.set_stock(sku, location, rng.randint(20, 120))

        requests = _requests(count, run_id)
        statuses: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        progress = Progress(len(requests), sys.stderr, label="orders")
        started = time.perf_counter()
        sample: orders_pb2.Order | None = None
        async for result in client.bulk_create(requests, max_in_flight=1000):
            progress.advance()
            if result.order is not None:
                statuses[orders_pb2.OrderStatus.Name(result.order.status)] += 1
                sample = sample or result.order
            elif result.error is not None:
                errors[result.error.code.name] += 1
        progress.close()
        elapsed = time.perf_counter() - started
        print(f"\n{count} orders in {elapsed:.2f} s ({count / elapsed:,.0f} orders/s)")
        print("by status:")
        for status, n in statuses.most_common():
            print(f"  {status:<28} {n:>7}")
        for code, n in errors.most_common():
            print(f"  error {code:<22} {n:>7}")
        if sample is None:
            print("error: no order was created")
            return 1

    nats_url = os.environ.get("ORDERS_NATS_URL", "nats://127.0.0.1:4222")
    print(f"\nfirst {EVENTS_SHOWN} events of this run, read back from JetStream ({nats_url}):")
    shown = 0
    async with subscribe(nats_url, deliver="all") as events:
        async for event in events:
            if isinstance(event, events_pb2.OrderEvent) and event.order.request_id.startswith(
                f"demo-{run_id}-"
            ):
                kind = events_pb2.OrderEventType.Name(event.type)
                print(f"  {event.event_id}  {kind:<30} {event.order.request_id}")
                shown += 1
                if shown >= EVENTS_SHOWN:
                    break

    hosts = os.environ.get("ORDERS_CQL_HOSTS", "127.0.0.1").split(",")
    port = int(os.environ.get("ORDERS_CQL_PORT", "9042"))
    keyspace = os.environ.get("ORDERS_CQL_KEYSPACE", "orders")
    cluster = Cluster(hosts, port=port)
    try:
        session = cluster.connect(keyspace)
        row = session.execute(
            "SELECT state, current_version FROM orders WHERE order_id = %s LIMIT 1",
            (sample.order_id,),
        ).one()
    finally:
        cluster.shutdown()
    stored = orders_pb2.Order.FromString(row.state)
    print(f"\norder {stored.order_id} read back from CQL ({keyspace}.orders):")
    print(f"  status {orders_pb2.OrderStatus.Name(stored.status)}, version {stored.version}")
    for allocation in stored.allocations:
        print(
            f"  line {allocation.line_index}: {allocation.quantity} x {allocation.sku} "
            f"from {allocation.location_id}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.demo", description=__doc__)
    parser.add_argument("--orders", type=int, default=DEFAULT_ORDERS)
    parser.add_argument("--address", default=os.environ.get("ORDERS_LISTEN", "127.0.0.1:50051"))
    args = parser.parse_args(argv)
    return asyncio.run(run(args.address, args.orders))


if __name__ == "__main__":
    raise SystemExit(main())
