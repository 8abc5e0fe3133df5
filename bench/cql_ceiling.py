"""The raw CQL write ceiling with the service's driver (scylla-driver, `cassandra` module).

    python bench/cql_ceiling.py --port 9042 --duration 10 --in-flight 256 --out x.json

A prepared INSERT of a ~300-byte blob row into a fresh table of a fresh keyspace, with
`--in-flight` statements outstanding at all times, issued and completed on the driver's own
threads (as the service's store does), for `--duration` seconds after `--warmup`.
Consistency LOCAL_QUORUM like the service (replication factor 1 locally).

Also holds the small CQL helpers the other benchmark scripts share (connect, await a
statement from asyncio, read stored orders and stock for the oversell check).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.cluster import Cluster, Session
from cassandra.policies import RoundRobinPolicy
from cassandra.query import SimpleStatement

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from server.gen.orders.v1 import orders_pb2  # noqa: E402

ROW_BYTES = 300
MAX_SECONDS = 600.0
LIVE_STATUSES = {
    orders_pb2.ORDER_STATUS_ALLOCATED,
    orders_pb2.ORDER_STATUS_BACKORDERED,
    orders_pb2.ORDER_STATUS_CONFIRMED,
}


def connect(host: str, port: int, keyspace: str | None = None) -> tuple[Cluster, Session]:
    cluster = Cluster(
        contact_points=[host],
        port=port,
        protocol_version=4,
        load_balancing_policy=RoundRobinPolicy(),
        connect_timeout=10,
        control_connection_timeout=10,
    )
    session = cluster.connect(keyspace)
    session.default_timeout = 20
    return cluster, session


def create_keyspace(session: Session, keyspace: str) -> None:
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )


async def execute(session: Session, statement: Any, params: Sequence[Any] | None = None) -> Any:
    """Awaits one statement on the driver's threads; returns the rows as a list."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is None:
            future.set_result(value)
        else:
            future.set_exception(exc)

    response = session.execute_async(statement, params)
    response.add_callbacks(
        lambda rows: loop.call_soon_threadsafe(settle, list(rows or []), None),
        lambda exc: loop.call_soon_threadsafe(settle, None, exc),
    )
    return await future


# ----------------------------------------------------------------------------- oversell check


def oversell_report(
    host: str, port: int, keyspace: str, sku_filter: str | None = None, time_limit_s: float = 90
) -> dict[str, Any]:
    """Reads stock rows and orders straight from the store and compares them.

    Expects the service's shape (also used by the baseline): `stock(sku, location_id, on_hand,
    reserved)` and `orders(order_id, state)` where `state` is a serialized Order. Oversold
    units = sum over (sku, location) of max(0, live allocations - on_hand); also reports
    rows whose stored `reserved` exceeds on_hand or differs from the live allocations.
    """
    cluster, session = connect(host, port, keyspace)
    started = time.monotonic()
    try:
        stock: dict[tuple[str, str], tuple[int, int]] = {}
        for row in session.execute(
            SimpleStatement(
                "SELECT sku, location_id, on_hand, reserved FROM stock", fetch_size=5000
            )
        ):
            if sku_filter is None or row.sku.startswith(sku_filter):
                stock[(row.sku, row.location_id)] = (row.on_hand or 0, row.reserved or 0)
        live: dict[tuple[str, str], int] = defaultdict(int)
        statuses: dict[str, int] = defaultdict(int)
        orders = 0
        complete = True
        query = SimpleStatement("SELECT DISTINCT order_id, state FROM orders", fetch_size=5000)
        for row in session.execute(query, timeout=60):
            if time.monotonic() - started > time_limit_s:
                complete = False
                break
            if row.state is None:
                continue
            order = orders_pb2.Order.FromString(row.state)
            if sku_filter is not None and not any(
                line.sku.startswith(sku_filter) for line in order.lines
            ):
                continue
            orders += 1
            statuses[orders_pb2.OrderStatus.Name(order.status)] += 1
            if order.status in LIVE_STATUSES:
                for allocation in order.allocations:
                    key = (allocation.sku, allocation.location_id)
                    if sku_filter is None or allocation.sku.startswith(sku_filter):
                        live[key] += allocation.quantity
        oversold = 0
        reserved_over_on_hand = 0
        drift_rows = 0
        for key in set(stock) | set(live):
            on_hand, reserved = stock.get(key, (0, 0))
            oversold += max(0, live.get(key, 0) - on_hand)
            reserved_over_on_hand += max(0, reserved - on_hand)
            if complete and reserved != live.get(key, 0):
                drift_rows += 1
        return {
            "keyspace": keyspace,
            "sku_filter": sku_filter,
            "stock_rows": len(stock),
            "on_hand_units": sum(v[0] for v in stock.values()),
            "reserved_units": sum(v[1] for v in stock.values()),
            "allocated_live_units": sum(live.values()),
            "orders_scanned": orders,
            "orders_by_status": dict(statuses),
            "scan_complete": complete,
            "oversold_units": oversold,
            "reserved_over_on_hand_units": reserved_over_on_hand,
            "reserved_drift_rows": drift_rows,
            "check_s": round(time.monotonic() - started, 1),
        }
    finally:
        cluster.shutdown()


# ----------------------------------------------------------------------------- ceiling


class _Writer:
    """Keeps `in_flight` inserts outstanding until the deadline, on the driver's threads."""

    def __init__(
        self, session: Session, statement: Any, in_flight: int, t_measure: float, t_end: float
    ) -> None:
        self.session = session
        self.statement = statement
        self.in_flight = in_flight
        self.t_measure = t_measure
        self.t_end = t_end
        self.lock = threading.Lock()
        self.outstanding = 0
        self.seq = 0
        self.ends: list[float] = []
        self.latencies: list[float] = []
        self.errors: dict[str, int] = defaultdict(int)
        self.done = threading.Event()
        self.blob = os.urandom(ROW_BYTES - 40)
        self.prefix = uuid.uuid4().hex[:8]

    def start(self) -> None:
        for _ in range(self.in_flight):
            self._launch()

    def _launch(self) -> None:
        with self.lock:
            if time.perf_counter() >= self.t_end:
                if self.outstanding == 0:
                    self.done.set()
                return
            self.seq += 1
            self.outstanding += 1
            key = f"{self.prefix}-{self.seq}"
        t0 = time.perf_counter()
        try:
            future = self.session.execute_async(self.statement, (key, self.blob))
        except Exception as exc:  # the driver can raise synchronously when overloaded
            self._finish(t0, type(exc).__name__)
            return
        future.add_callbacks(
            lambda _r: self._finish(t0, None), lambda exc: self._finish(t0, type(exc).__name__)
        )

    def _finish(self, t0: float, error: str | None) -> None:
        t1 = time.perf_counter()
        with self.lock:
            self.outstanding -= 1
            if t1 >= self.t_measure:
                if error is None:
                    self.ends.append(t1 - self.t_measure)
                    self.latencies.append(t1 - t0)
                else:
                    self.errors[error] += 1
            last = self.outstanding == 0 and t1 >= self.t_end
        if last:
            self.done.set()
        else:
            self._launch()


def measure(
    host: str, port: int, duration_s: float, warmup_s: float, in_flight: int
) -> dict[str, Any]:
    if not 0 < duration_s <= MAX_SECONDS:
        raise ValueError("duration out of range")
    keyspace = f"bench_ceiling_{uuid.uuid4().hex[:8]}"
    cluster, session = connect(host, port)
    try:
        create_keyspace(session, keyspace)
        session.set_keyspace(keyspace)
        session.execute("CREATE TABLE IF NOT EXISTS rows (id text PRIMARY KEY, payload blob)")
        statement = session.prepare("INSERT INTO rows (id, payload) VALUES (?, ?)")
        statement.consistency_level = ConsistencyLevel.LOCAL_QUORUM
        t_measure = time.perf_counter() + warmup_s
        writer = _Writer(session, statement, in_flight, t_measure, t_measure + duration_s)
        writer.start()
        writer.done.wait(timeout=warmup_s + duration_s + 60)
        lat = sorted(x * 1000 for x in writer.latencies)
        seconds = max(1, math.ceil(duration_s))
        per_s = [0] * seconds
        for end in writer.ends:
            per_s[min(seconds - 1, int(end))] += 1
        writes = len(lat)

        def pct(q: float) -> float:
            if not lat:
                return 0.0
            return round(lat[min(len(lat), max(1, math.ceil(q / 100 * len(lat)))) - 1], 3)

        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
        return {
            "scenario": "cql_ceiling",
            "target": f"{host}:{port}",
            "kind": "cql_insert",
            "row_bytes": ROW_BYTES,
            "concurrency": in_flight,
            "warmup_s": warmup_s,
            "duration_s": duration_s,
            "requests": writes + sum(writer.errors.values()),
            "ok": writes,
            "errors": sum(writer.errors.values()),
            "errors_by_code": dict(writer.errors),
            "writes_per_s": round(writes / duration_s, 1),
            "orders_per_s": round(writes / duration_s, 1),
            "p50_ms": pct(50),
            "p95_ms": pct(95),
            "p99_ms": pct(99),
            "timeline_columns": ["t_s", "ok"],
            "timeline": [[t, n] for t, n in enumerate(per_s)],
        }
    finally:
        cluster.shutdown()


def main() -> int:
    p = argparse.ArgumentParser(description="raw CQL write ceiling (same driver as the service)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("ORDERS_CQL_PORT", "9042")))
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--in-flight", type=int, default=256)
    p.add_argument("--out")
    args = p.parse_args()
    result = measure(args.host, args.port, args.duration, args.warmup, args.in_flight)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(
            f"cql_ceiling: {result['writes_per_s']} writes/s, p99 {result['p99_ms']} ms",
            file=sys.stderr,
        )
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
