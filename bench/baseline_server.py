"""A straightforward per-request CreateOrder: the baseline the service is compared with.

    python bench/baseline_server.py --listen 127.0.0.1:50200 --cql-port 9042 \
        --cql-keyspace bench_baseline --nats-url nats://127.0.0.1:4222 \
        --stream-name BENCH_BASELINE --subject-prefix bench_baseline.

NOT product code. This is what one would write without batching: for each request, parse
it with the generated classes, validate it in Python, take a lock per SKU (in sorted order,
so no deadlock; `--lock global` takes one lock for everything), read the stock rows of its
SKUs (SELECT), allocate, write the order row and the changed stock rows (prepared
statements, the same driver, concurrently), publish one event to JetStream and wait for
its ack, release the locks and answer. Correct (no oversell: every read-modify-write of a
SKU happens under that SKU's lock in this single process), durable before it answers, but
it pays a store round trip, a publish round trip and a lock hand-off per order.

It speaks the same wire contract for the calls the benchmarks use: OrderService.CreateOrder
and GetOrder, InventoryService.ConfigureRegion, UpsertLocation and SetStock. Locations live
in memory (setup only). No idempotency table: request ids are unique in the benchmarks.
Tables have the service's shape (`orders` with a static `state`, `stock`), so the same
oversell check reads both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import grpc
import nats
from nats.js.api import StorageType, StreamConfig

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from cql_ceiling import connect, create_keyspace, execute  # noqa: E402
from grpc_serving import new_server, serve_until_signal  # noqa: E402

from server.gen.orders.v1 import orders_pb2  # noqa: E402

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS orders (
        order_id text, version bigint, state blob static, event blob,
        PRIMARY KEY (order_id, version))""",
    """CREATE TABLE IF NOT EXISTS stock (
        sku text, location_id text, on_hand bigint, reserved bigint,
        PRIMARY KEY ((sku), location_id))""",
]
MAX_LINES = 100
MAX_QUANTITY = 100_000
RESERVATION_TTL_S = 900


class Invalid(Exception):
    pass


def validate(request: orders_pb2.CreateOrderRequest) -> None:
    if not 1 <= len(request.request_id) <= 64:
        raise Invalid("request_id must be 1..64 characters")
    if not request.customer_id or not request.region:
        raise Invalid("customer_id and region are required")
    if not 1 <= len(request.lines) <= MAX_LINES:
        raise Invalid("an order has 1..100 lines")
    currencies = {line.currency for line in request.lines}
    if len(currencies) != 1:
        raise Invalid("one currency per order")
    seen: set[str] = set()
    for line in request.lines:
        if not line.sku or len(line.sku) > 64 or line.sku in seen:
            raise Invalid(f"bad or repeated sku {line.sku!r}")
        seen.add(line.sku)
        if not 1 <= line.quantity <= MAX_QUANTITY or line.unit_price_minor < 0:
            raise Invalid("quantity 1..100000, price >= 0")
        if len(line.currency) != 3 or not line.currency.isupper():
            raise Invalid("currency must be an ISO 4217 code")


class Baseline:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.global_lock = asyncio.Lock()
        self.locations: dict[str, tuple[str, int]] = {}  # location -> (region, priority)
        self.session: Any = None
        self.cluster: Any = None
        self.js: Any = None
        self.nc: Any = None

    async def start(self) -> None:
        def setup() -> tuple[Any, Any]:
            cluster, session = connect("127.0.0.1", self.args.cql_port)
            create_keyspace(session, self.args.cql_keyspace)
            session.set_keyspace(self.args.cql_keyspace)
            for statement in SCHEMA:
                session.execute(statement, timeout=60)
            return cluster, session

        self.cluster, self.session = await asyncio.to_thread(setup)
        self.q_stock = self.session.prepare(
            "SELECT location_id, on_hand, reserved FROM stock WHERE sku = ?"
        )
        self.q_stock_row = self.session.prepare(
            "SELECT on_hand, reserved FROM stock WHERE sku = ? AND location_id = ?"
        )
        self.w_stock = self.session.prepare(
            "INSERT INTO stock (sku, location_id, on_hand, reserved) VALUES (?, ?, ?, ?)"
        )
        self.w_order = self.session.prepare(
            "INSERT INTO orders (order_id, version, state, event) VALUES (?, 1, ?, ?)"
        )
        self.q_order = self.session.prepare("SELECT state FROM orders WHERE order_id = ? LIMIT 1")
        self.nc = await nats.connect(self.args.nats_url)
        self.js = self.nc.jetstream()
        prefix = self.args.subject_prefix
        with contextlib.suppress(Exception):
            await self.js.delete_stream(self.args.stream_name)
        await self.js.add_stream(
            StreamConfig(
                name=self.args.stream_name,
                subjects=[f"{prefix}orders.v1.>"],
                storage=StorageType.FILE,
                duplicate_window=600,
            )
        )

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.shutdown)

    # ------------------------------------------------------------------ CreateOrder

    async def create_order(self, raw: bytes, context: Any) -> bytes:
        try:
            request = orders_pb2.CreateOrderRequest.FromString(raw)
            validate(request)
        except Exception as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        order_id = (
            "o-" + hashlib.sha256(b"anonymous\0" + request.request_id.encode()).hexdigest()[:32]
        )
        skus = sorted({line.sku for line in request.lines})
        async with contextlib.AsyncExitStack() as stack:
            if self.args.lock == "global":
                await stack.enter_async_context(self.global_lock)
            else:
                for sku in skus:
                    await stack.enter_async_context(self.locks[sku])
            stock = await self._read_stock(skus, request.region)
            allocations = self._allocate(request, stock)
            order = self._order(request, order_id, allocations)
            state = order.SerializeToString()
            writes = [execute(self.session, self.w_order, (order_id, state, state))]
            for (sku, location), quantity in self._by_row(allocations).items():
                on_hand, reserved = stock[sku][location]
                writes.append(
                    execute(
                        self.session, self.w_stock, (sku, location, on_hand, reserved + quantity)
                    )
                )
            await asyncio.gather(*writes)
            subject = "allocated" if allocations else "rejected"
            await self.js.publish(
                f"{self.args.subject_prefix}orders.v1.{subject}",
                state,
                headers={"Nats-Msg-Id": f"{order_id}:1"},
            )
        return state

    async def _read_stock(
        self, skus: list[str], region: str
    ) -> dict[str, dict[str, tuple[int, int]]]:
        results = await asyncio.gather(*(execute(self.session, self.q_stock, (s,)) for s in skus))
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for sku, rows in zip(skus, results, strict=True):
            out[sku] = {
                row.location_id: (row.on_hand or 0, row.reserved or 0)
                for row in rows
                if self.locations.get(row.location_id, ("", 0))[0] == region
            }
        return out

    def _ranked(self, region: str) -> list[str]:
        found = [(p, loc) for loc, (r, p) in self.locations.items() if r == region]
        return [loc for _, loc in sorted(found)]

    def _allocate(
        self, request: orders_pb2.CreateOrderRequest, stock: dict[str, dict[str, tuple[int, int]]]
    ) -> list[tuple[int, str, str, int]]:
        """(line index, sku, location, quantity); empty = rejected (all or nothing)."""
        locations = self._ranked(request.region)

        def available(sku: str, location: str) -> int:
            on_hand, reserved = stock[sku].get(location, (0, 0))
            return on_hand - reserved

        if request.policy in (0, orders_pb2.ALLOCATION_POLICY_SINGLE_LOCATION):
            for location in locations:
                if all(available(line.sku, location) >= line.quantity for line in request.lines):
                    return [
                        (i, line.sku, location, int(line.quantity))
                        for i, line in enumerate(request.lines)
                    ]
            return []
        out: list[tuple[int, str, str, int]] = []
        for i, line in enumerate(request.lines):
            need = int(line.quantity)
            for location in locations:
                take = min(need, available(line.sku, location))
                if take > 0:
                    out.append((i, line.sku, location, take))
                    need -= take
                if need == 0:
                    break
            if need > 0:
                return []
        return out

    @staticmethod
    def _by_row(allocations: list[tuple[int, str, str, int]]) -> dict[tuple[str, str], int]:
        rows: dict[tuple[str, str], int] = defaultdict(int)
        for _, sku, location, quantity in allocations:
            rows[(sku, location)] += quantity
        return rows

    def _order(
        self,
        request: orders_pb2.CreateOrderRequest,
        order_id: str,
        allocations: list[tuple[int, str, str, int]],
    ) -> orders_pb2.Order:
        now = time.time()
        order = orders_pb2.Order(
            order_id=order_id,
            request_id=request.request_id,
            customer_id=request.customer_id,
            region=request.region,
            lines=request.lines,
            policy=request.policy,
            status=orders_pb2.ORDER_STATUS_ALLOCATED
            if allocations
            else orders_pb2.ORDER_STATUS_REJECTED,
            version=1,
            total_minor=sum(line.quantity * line.unit_price_minor for line in request.lines),
            currency=request.lines[0].currency,
            client_id="anonymous",
            status_reason="" if allocations else "INSUFFICIENT_STOCK",
        )
        for i, sku, location, quantity in allocations:
            order.allocations.add(line_index=i, sku=sku, location_id=location, quantity=quantity)
        order.create_time.FromNanoseconds(int(now * 1e9))
        order.update_time.FromNanoseconds(int(now * 1e9))
        if allocations:
            order.expire_time.FromNanoseconds(int((now + RESERVATION_TTL_S) * 1e9))
        return order

    # ------------------------------------------------------------------ the rest

    async def get_order(self, raw: bytes, context: Any) -> bytes:
        request = orders_pb2.GetOrderRequest.FromString(raw)
        rows = await execute(self.session, self.q_order, (request.order_id,))
        if not rows or rows[0].state is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such order")
        return bytes(rows[0].state)

    async def set_stock(self, raw: bytes, context: Any) -> bytes:
        request = orders_pb2.SetStockRequest.FromString(raw)
        async with self.locks[request.sku]:
            rows = await execute(self.session, self.q_stock_row, (request.sku, request.location_id))
            reserved = (rows[0].reserved or 0) if rows else 0
            if request.on_hand < reserved:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "below reserved")
            await execute(
                self.session,
                self.w_stock,
                (request.sku, request.location_id, request.on_hand, reserved),
            )
        return orders_pb2.StockLevel(
            sku=request.sku,
            location_id=request.location_id,
            on_hand=request.on_hand,
            reserved=reserved,
            available=request.on_hand - reserved,
        ).SerializeToString()

    async def upsert_location(self, raw: bytes, _context: Any) -> bytes:
        location = orders_pb2.UpsertLocationRequest.FromString(raw).location
        self.locations[location.location_id] = (location.region, location.priority)
        return location.SerializeToString()

    async def configure_region(self, raw: bytes, _context: Any) -> bytes:
        return orders_pb2.ConfigureRegionRequest.FromString(raw).region.SerializeToString()

    def handlers(self) -> list[grpc.GenericRpcHandler[Any, Any]]:
        def h(fn: Any) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_unary_rpc_method_handler(fn)

        return [
            grpc.method_handlers_generic_handler(
                "orders.v1.OrderService",
                {"CreateOrder": h(self.create_order), "GetOrder": h(self.get_order)},
            ),
            grpc.method_handlers_generic_handler(
                "orders.v1.InventoryService",
                {
                    "SetStock": h(self.set_stock),
                    "UpsertLocation": h(self.upsert_location),
                    "ConfigureRegion": h(self.configure_region),
                },
            ),
        ]


async def serve(args: argparse.Namespace) -> None:
    baseline = Baseline(args)
    await baseline.start()
    server = new_server()
    server.add_generic_rpc_handlers(baseline.handlers())
    await serve_until_signal(server, args.listen, "baseline server", grace=2)
    await baseline.close()


def main() -> int:
    p = argparse.ArgumentParser(description="per-request CreateOrder baseline (not product code)")
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--cql-port", type=int, default=9042)
    p.add_argument("--cql-keyspace", default="bench_baseline")
    p.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    p.add_argument("--stream-name", default="BENCH_BASELINE")
    p.add_argument("--subject-prefix", default="bench_baseline.")
    p.add_argument("--lock", choices=["sku", "global"], default="sku")
    asyncio.run(serve(p.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
