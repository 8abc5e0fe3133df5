"""Locust users for the order service: a realistic mix over gRPC.

    .venv/bin/locust -f bench/locustfile.py --headless -u 50 -r 25 -t 30s \
        --host 127.0.0.1:50051

Each user does, by weight, 80% CreateOrder, 15% GetOrder (of an order it created) and 5%
CancelOrder (of an order it created), and reports every call as a locust request event
(request_type "grpc", name = the method). `BENCH_HOT_SHARE` (default 0.05) is the share of
orders that include one of 10 hot SKUs; `BENCH_SKUS` (default 1000) the catalogue;
`BENCH_REGION` (default "bench") the region. Set up the region and stock first (bench/run_all.py
does; SKUs are named sku-<i> and hot-<i>, locations loc<i>.<region>).

Locust runs users as gevent greenlets, so gRPC's gevent integration is switched on before
any channel exists. Locust cannot saturate the service (one core, Python per call): use
bench/loadgen.py for throughput; this file is for realistic mixes and interactive runs.
"""

from __future__ import annotations

import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, between, events, task

grpc_gevent.init_gevent()

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from workloads import f_int, f_msg, f_str, order_line  # noqa: E402

from server.gen.orders.v1 import orders_pb2  # noqa: E402

SERVICE = "/orders.v1.OrderService/"
HOT_SHARE = float(os.environ.get("BENCH_HOT_SHARE", "0.05"))
SKUS = int(os.environ.get("BENCH_SKUS", "1000"))
REGION = os.environ.get("BENCH_REGION", "bench")
HOT_SKUS = 10
TIMEOUT_S = 10.0


@events.init_command_line_parser.add_listener
def _defaults(parser: Any) -> None:
    parser.set_defaults(host=os.environ.get("BENCH_TARGET", "127.0.0.1:50051"))


class OrdersUser(User):
    """One buyer (or integration) calling the service with raw protobuf bytes."""

    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        target = (self.host or "127.0.0.1:50051").removeprefix("http://")
        self.channel = grpc.insecure_channel(target)
        self.calls = {
            name: self.channel.unary_unary(SERVICE + name)
            for name in ("CreateOrder", "GetOrder", "CancelOrder")
        }
        self.rng = random.Random()
        self.prefix = uuid.uuid4().hex[:10]
        self.counter = 0
        self.mine: list[str] = []

    def on_stop(self) -> None:
        self.channel.close()

    def _call(self, name: str, payload: bytes) -> bytes | None:
        start = time.perf_counter()
        response: bytes | None = None
        error: Exception | None = None
        try:
            response = self.calls[name](payload, timeout=TIMEOUT_S)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            error = Exception(code.name if code is not None else str(exc))
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=len(response or b""),
            exception=error,
            context={},
        )
        return response

    def _order_body(self) -> bytes:
        self.counter += 1
        skus: set[str] = set()
        if self.rng.random() < HOT_SHARE:
            skus.add(f"hot-{self.rng.randrange(HOT_SKUS)}")
        while len(skus) < self.rng.randint(1, 3):
            skus.add(f"sku-{self.rng.randrange(max(1, SKUS))}")
        lines = b"".join(
            f_msg(4, order_line(sku, self.rng.randint(1, 2), self.rng.randint(100, 20_000), "EUR"))
            for sku in sorted(skus)
        )
        return (
            f_str(1, f"locust-{self.prefix}-{self.counter}")
            + f_str(2, f"c{self.rng.randrange(10_000)}")
            + f_str(3, REGION)
            + lines
            + f_int(5, 2)
        )

    @task(80)
    def create_order(self) -> None:
        response = self._call("CreateOrder", self._order_body())
        if response is not None:
            self.mine.append(orders_pb2.Order.FromString(response).order_id)
            del self.mine[:-1000]

    @task(15)
    def get_order(self) -> None:
        if not self.mine:
            return self.create_order()
        self._call("GetOrder", f_str(1, self.rng.choice(self.mine)))
        return None

    @task(5)
    def cancel_order(self) -> None:
        if not self.mine:
            return self.create_order()
        order_id = self.mine.pop(self.rng.randrange(len(self.mine)))
        self._call("CancelOrder", f_str(1, order_id) + f_str(2, "locust"))
        return None
