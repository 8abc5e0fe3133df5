"""`make bench`: service benchmarks against their ceilings and a per-request baseline.

    python bench/run_all.py [--quick] [--no-stack] [--only NAME,...] [--concurrency C]

Starts the local stack (`python -m deploy.stack up`; ports and state directory from the
usual ORDERS_* variables) unless --no-stack, and at the end stops only the services this
run started. Then, with the same load generator (bench/loadgen.py, a separate process):

1. echo           bare grpc.aio echo server: the unary ceiling of this machine
2. cql_ceiling    raw CQL inserts with the service's driver: the store ceiling
3. baseline_*     bench/baseline_server.py (per-request validate/lock/write/publish):
                  steady load and a hot-SKU flash sale
4. service_steady the service, closed loop: saturation throughput
   service_half   the service, open loop at half that rate: latency at half saturation
5. flash_sale     many buyers, little stock of one hot SKU
6. spike          C callers, then 10x C, then C again
7. batch          BatchCreateOrders of 500 orders: ingestion throughput
8. locust_mix     (default mode, if locust is installed) 80/15/5 create/get/cancel users

Each service and baseline scenario gets a fresh keyspace and stream, and afterwards its
orders and stock rows are read straight from Cassandra to count oversold units. Writes
bench/results/<scenario>.json, summary.json (ratios vs the architecture's targets),
report.md and *.png (bench/report.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
for _p in (ROOT, BENCH):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from cql_ceiling import oversell_report  # noqa: E402
from workloads import (  # noqa: E402
    configure_region_request,
    set_stock_request,
    upsert_location_request,
)

from deploy.stack.config import load_config  # noqa: E402

PY = sys.executable
RESULTS = BENCH / "results"
INVENTORY = "/orders.v1.InventoryService/"
LOCATIONS = 8
TARGETS = {
    "unary_vs_echo": 0.75,
    "p99_half_saturation_ms": 20.0,
    "batch_vs_cql_ceiling": 0.7,
    "vs_baseline_throughput": 5.0,
}
WRITES_PER_ORDER = 2  # orders + orders_by_customer; the journal row is per batch


@dataclass(frozen=True)
class Mode:
    duration_s: float
    warmup_s: float
    concurrency: int
    skus: int
    flash_buyers: int
    flash_units: int
    spike: tuple[float, float, float]
    locust_s: float
    flash_cap_s: float
    store_warmup_s: float


QUICK = Mode(6, 2, 128, 200, 4000, 400, (4, 3, 4), 0, 30, 10)
DEFAULT = Mode(20, 3, 128, 1000, 20_000, 1000, (10, 5, 10), 20, 90, 20)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------- processes


class Child:
    """A server subprocess (echo, baseline or the service), stopped with SIGTERM."""

    def __init__(self, name: str, args: list[str], port: int, logs: Path) -> None:
        self.name = name
        self.port = port
        self.log_path = logs / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, health: bool, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.target) as channel:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: see {self.log_path}")
                try:
                    if not health:  # echo and baseline: listening is ready
                        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                            return
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except (grpc.RpcError, OSError):
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout_s} s: see {self.log_path}")

    def stop(self, timeout_s: float = 60) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


@contextlib.contextmanager
def child(name: str, args: list[str], port: int, logs: Path, health: bool) -> Iterator[Child]:
    proc = Child(name, args, port, logs)
    try:
        proc.wait_ready(health)
        yield proc
    finally:
        proc.stop()


# ----------------------------------------------------------------------------- helpers


async def setup_inventory(
    target: str, region: str, stock: dict[str, int], concurrency: int = 32
) -> None:
    """A region with 8 locations and `stock[sku]` units at each location."""
    async with grpc.aio.insecure_channel(target) as channel:

        async def call(method: str, payload: bytes) -> None:
            await channel.unary_unary(INVENTORY + method)(payload, timeout=30)

        await call("ConfigureRegion", configure_region_request(region, 1, 0))
        for i in range(LOCATIONS):
            await call("UpsertLocation", upsert_location_request(f"loc{i}.{region}", region, i))
        gate = asyncio.Semaphore(concurrency)

        async def one(sku: str, location: str, units: int) -> None:
            async with gate:
                await call("SetStock", set_stock_request(sku, location, units))

        await asyncio.gather(
            *(
                one(sku, f"loc{i}.{region}", units)
                for sku, units in stock.items()
                for i in range(LOCATIONS)
            )
        )


HISTOGRAMS = {
    "orders_batch_commands": "batch_commands",
    "orders_engine_seconds": "engine_s",
    "orders_store_write_seconds": "store_write_s",
    "orders_broker_publish_seconds": "publish_round_s",
}
COUNTERS = {"orders_rejected_queue_full_total": "rejected_queue_full"}


def scrape(metrics_port: int) -> dict[str, float]:
    """Sums and counts of the service's batch histograms (Prometheus text format)."""
    import urllib.request

    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        name = name.split("{", 1)[0]
        with contextlib.suppress(ValueError):
            out[name] = out.get(name, 0.0) + float(value)
    return out


def server_metrics(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per-batch means over a scenario: batch size, engine, store and publish times."""
    if not after:
        return {}
    result: dict[str, float] = {}
    for metric, label in HISTOGRAMS.items():
        count = after.get(metric + "_count", 0.0) - before.get(metric + "_count", 0.0)
        total = after.get(metric + "_sum", 0.0) - before.get(metric + "_sum", 0.0)
        if count > 0:
            mean = total / count
            if label.endswith("_s"):
                result[f"mean_{label.removesuffix('_s')}_ms"] = round(mean * 1000, 2)
            else:
                result[f"mean_{label}"] = round(mean, 1)
                result["batches"] = count
    for metric, label in COUNTERS.items():
        result[label] = after.get(metric, 0.0) - before.get(metric, 0.0)
    return result


def loadgen(scenario: str, target: str, *extra: str) -> dict[str, Any]:
    out = RESULTS / f"{scenario}.json"
    args = [
        PY,
        str(BENCH / "loadgen.py"),
        "--target",
        target,
        "--scenario",
        scenario,
        "--out",
        str(out),
        *extra,
    ]
    subprocess.run(args, cwd=ROOT, check=True, timeout=900)
    return dict(json.loads(out.read_text()))


def save(result: dict[str, Any]) -> dict[str, Any]:
    (RESULTS / f"{result['scenario']}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mode = QUICK if args.quick else DEFAULT
        if args.concurrency:
            self.mode = Mode(**{**self.mode.__dict__, "concurrency": args.concurrency})
        self.cfg = load_config()
        self.run_id = uuid.uuid4().hex[:6]
        self.logs = Path(tempfile.mkdtemp(prefix="orders-bench-logs-"))
        self.results: dict[str, dict[str, Any]] = {}
        self.only = set(args.only.split(",")) if args.only else None
        self.failures: dict[str, str] = {}
        self.metrics_port = 0

    def wanted(self, name: str) -> bool:
        return self.only is None or name in self.only or name == "cql_warmup"

    def steady_args(self, prefix: str) -> list[str]:
        m = self.mode
        return [
            "--kind",
            "create",
            "--concurrency",
            str(m.concurrency),
            "--duration",
            str(m.duration_s),
            "--warmup",
            str(m.warmup_s),
            "--skus",
            str(m.skus),
            "--hot-skus",
            "10",
            "--hot-share",
            str(self.args.hot_share),
            "--request-prefix",
            prefix,
            "--processes",
            str(self.args.client_processes),
        ]

    def svc_load(self, scenario: str, target: str, *extra: str) -> dict[str, Any]:
        """loadgen against the service, with the service's batch metrics over the run."""
        before = scrape(self.metrics_port)
        result = loadgen(scenario, target, *extra)
        result["server_metrics"] = server_metrics(before, scrape(self.metrics_port))
        return result

    def engine_args(self) -> list[str]:
        return ["--engine", self.args.unary_engine]

    def stock_for_steady(self) -> dict[str, int]:
        stock = {f"sku-{i}": 1_000_000 for i in range(self.mode.skus)}
        stock.update({f"hot-{i}": 1_000_000 for i in range(10)})
        return stock

    def flash_args(self, prefix: str) -> list[str]:
        m = self.mode
        return [
            "--kind",
            "create",
            "--region",
            "flash",
            "--concurrency",
            "400",
            "--duration",
            str(m.flash_cap_s),
            "--warmup",
            "0",
            "--max-requests",
            str(m.flash_buyers),
            "--skus",
            "0",
            "--hot-skus",
            "1",
            "--hot-share",
            "1",
            "--hot-prefix",
            "flash-",
            "--lines-max",
            "1",
            "--quantity-max",
            "1",
            "--customers",
            str(m.flash_buyers),
            "--request-prefix",
            prefix,
        ]

    def flash_stock(self) -> dict[str, int]:
        return {"flash-0": max(1, self.mode.flash_units // LOCATIONS)}

    def record(self, result: dict[str, Any], oversell: dict[str, Any] | None = None) -> None:
        if oversell is not None:
            result["store_check"] = oversell
            result["oversold_units"] = oversell["oversold_units"]
        self.results[result["scenario"]] = save(result)
        log(
            f"{result['scenario']}: {result.get('orders_per_s')} orders/s, "
            f"p50 {result.get('p50_ms')} ms, p99 {result.get('p99_ms')} ms, "
            f"errors {result.get('errors_by_code')}, oversold {result.get('oversold_units', '-')}"
        )

    # ---------------------------------------------------------------- servers

    def service(self, name: str) -> contextlib.AbstractContextManager[Child]:
        port = free_port()
        self.metrics_port = free_port()
        keyspace = self.keyspace(name)
        args = [
            PY,
            "-m",
            "server",
            "--listen",
            f"127.0.0.1:{port}",
            "--metrics-port",
            str(self.metrics_port),
            *self.store_args(keyspace),
        ]
        return child(f"service-{name}", args, port, self.logs, health=True)

    def keyspace(self, name: str) -> str:
        return f"bench_{name}_{self.run_id}"

    def store_args(self, keyspace: str) -> list[str]:
        """Where a server under test keeps its rows and publishes its events: a keyspace
        and a stream of its own, so runs never read each other's data."""
        return [
            "--cql-port",
            str(self.cfg.cql_port),
            "--cql-keyspace",
            keyspace,
            "--nats-url",
            self.cfg.nats_url,
            "--stream-name",
            keyspace.upper(),
            "--subject-prefix",
            f"{keyspace}.",
        ]

    def check(self, name: str, sku_filter: str | None = None) -> dict[str, Any]:
        return oversell_report("127.0.0.1", self.cfg.cql_port, self.keyspace(name), sku_filter)

    # ---------------------------------------------------------------- scenarios

    def run(self) -> None:
        steps = [
            ("echo", self.run_echo),
            ("cql_warmup", self.warm_store),
            ("baseline", self.run_baseline),
            ("service_steady", self.run_steady),
            ("flash_sale", self.run_flash),
            ("spike", self.run_spike),
            ("cql_ceiling", self.run_ceiling),
            ("batch", self.run_batch),
            ("locust_mix", self.run_locust),
        ]
        for name, step in steps:
            if not self.wanted(name):
                continue
            try:
                step()
            except Exception as exc:  # one broken scenario must not hide the others
                log(f"{name}: FAILED: {exc!r} (server logs in {self.logs})")
                self.failures[name] = repr(exc)

    def run_echo(self) -> None:
        log("echo: bare grpc.aio server")
        port = free_port()
        args = [PY, str(BENCH / "echo_server.py"), "--listen", f"127.0.0.1:{port}"]
        with child("echo", args, port, self.logs, health=False) as echo:
            self.record(
                loadgen(
                    "echo",
                    echo.target,
                    *self.steady_args("echo"),
                    "--kind",
                    "echo",
                    *self.engine_args(),
                )
            )

    def warm_store(self) -> None:
        """A fresh Cassandra is several times slower until its JIT has warmed up: write for a
        while (not recorded) before the first measured scenario that uses it."""
        if self.only is not None and not self.only & {
            "baseline",
            "service_steady",
            "flash_sale",
            "spike",
            "cql_ceiling",
            "batch",
        }:
            return
        log("cql_warmup: warming up Cassandra (not recorded)")
        args = [PY, str(BENCH / "cql_ceiling.py"), "--port", str(self.cfg.cql_port)]
        args += ["--duration", str(self.mode.store_warmup_s), "--warmup", "0"]
        subprocess.run(args, cwd=ROOT, check=True, timeout=600, stdout=subprocess.DEVNULL)

    def run_ceiling(self) -> None:
        m = self.mode
        log("cql_ceiling: raw prepared inserts, 256 in flight")
        out = RESULTS / "cql_ceiling.json"
        args = [PY, str(BENCH / "cql_ceiling.py"), "--port", str(self.cfg.cql_port)]
        args += ["--duration", str(m.duration_s), "--warmup", str(m.warmup_s), "--out", str(out)]
        subprocess.run(args, cwd=ROOT, check=True, timeout=600)
        self.record(json.loads(out.read_text()))

    def run_steady(self) -> None:
        with self.service("steady") as svc:
            log("service_steady: setup")
            asyncio.run(setup_inventory(svc.target, "bench", self.stock_for_steady()))
            log("service_steady: closed loop")
            steady = self.svc_load(
                "service_steady", svc.target, *self.steady_args("st"), *self.engine_args()
            )
            half_rate = max(1.0, steady["orders_per_s"] / 2)
            log(f"service_half: open loop at {half_rate:.0f}/s")
            half = self.svc_load(
                "service_half", svc.target, *self.steady_args("half"), "--rate", str(half_rate)
            )
        oversell = self.check("steady")
        self.record(steady, oversell)
        self.record(half, oversell)

    def run_flash(self) -> None:
        m = self.mode
        with self.service("flash") as svc:
            asyncio.run(setup_inventory(svc.target, "flash", self.flash_stock()))
            log(f"flash_sale: {m.flash_buyers} buyers, {m.flash_units} units")
            flash = self.svc_load("flash_sale", svc.target, *self.flash_args("fl"))
        self.record(flash, self.check("flash"))

    def run_spike(self) -> None:
        m = self.mode
        with self.service("spike") as svc:
            asyncio.run(setup_inventory(svc.target, "bench", self.stock_for_steady()))
            c = max(1, min(m.concurrency // 2, 80))
            a, b, d = m.spike
            log(f"spike: {c} callers for {a} s, {10 * c} for {b} s, {c} for {d} s")
            phases = f"{a}:{c},{b}:{10 * c},{d}:{c}"
            spike = self.svc_load(
                "spike", svc.target, *self.steady_args("sp"), "--phases", phases, "--warmup", "2"
            )
        self.record(spike, self.check("spike"))

    def run_batch(self) -> None:
        with self.service("batch") as svc:
            asyncio.run(setup_inventory(svc.target, "bench", self.stock_for_steady()))
            log("batch: BatchCreateOrders x500")
            batch = self.svc_load(
                "batch", svc.target, *self.steady_args("b"), "--kind", "batch",
                "--batch-size", "500", "--concurrency", "8", "--channels", "4", "--timeout", "30",
            )  # fmt: skip
        self.record(batch, self.check("batch"))

    def run_baseline(self) -> None:
        m = self.mode
        name = "baseline"
        port = free_port()
        keyspace = self.keyspace(name)
        args = [
            PY,
            str(BENCH / "baseline_server.py"),
            "--listen",
            f"127.0.0.1:{port}",
            *self.store_args(keyspace),
        ]
        with child(name, args, port, self.logs, health=False) as base:
            log("baseline_steady: setup")
            asyncio.run(setup_inventory(base.target, "bench", self.stock_for_steady()))
            log("baseline_steady: closed loop")
            steady = loadgen(
                "baseline_steady", base.target, *self.steady_args("bst"), *self.engine_args()
            )
            asyncio.run(setup_inventory(base.target, "flash", self.flash_stock()))
            log(f"baseline_flash_sale: {m.flash_buyers} buyers")
            flash = loadgen("baseline_flash_sale", base.target, *self.flash_args("bfl"))
        self.record(steady, self.check(name, "sku-"))
        self.record(flash, self.check(name, "flash-"))

    def run_locust(self) -> None:
        if self.mode.locust_s <= 0:
            return
        if shutil.which("locust", path=str(Path(PY).parent)) is None:
            log("locust_mix: skipped (locust not installed: pip install -r bench/requirements.txt)")
            return
        with self.service("locust") as svc:
            asyncio.run(setup_inventory(svc.target, "bench", self.stock_for_steady()))
            log(f"locust_mix: 50 users for {self.mode.locust_s} s")
            prefix = self.logs / "locust"
            env = {
                **os.environ,
                "BENCH_TARGET": svc.target,
                "BENCH_SKUS": str(self.mode.skus),
                "BENCH_HOT_SHARE": str(self.args.hot_share),
            }
            subprocess.run(
                [
                    str(Path(PY).parent / "locust"),
                    "-f",
                    str(BENCH / "locustfile.py"),
                    "--headless",
                    "-u",
                    "50",
                    "-r",
                    "25",
                    "-t",
                    f"{int(self.mode.locust_s)}s",
                    "--only-summary",
                    "--csv",
                    str(prefix),
                ],
                cwd=ROOT,
                env=env,
                check=False,
                timeout=self.mode.locust_s + 120,
                stdout=(self.logs / "locust.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
        self.record(locust_result(prefix, self.mode.locust_s), self.check("locust"))


def locust_result(prefix: Path, duration_s: float) -> dict[str, Any]:
    """The locust CSV stats as a result in the loadgen's shape (aggregated row)."""
    import csv

    stats = Path(f"{prefix}_stats.csv")
    rows = list(csv.DictReader(stats.open())) if stats.exists() else []
    by_name = {row["Name"]: row for row in rows}
    total = by_name.get("Aggregated", {})
    failures = Path(f"{prefix}_failures.csv")
    errors: dict[str, int] = {}
    if failures.exists():
        for row in csv.DictReader(failures.open()):
            errors[row["Error"][:60]] = errors.get(row["Error"][:60], 0) + int(row["Occurrences"])
    creates = by_name.get("CreateOrder", {})

    def num(row: dict[str, str], key: str) -> float:
        try:
            return float(row.get(key) or 0)
        except ValueError:
            return 0.0

    return {
        "scenario": "locust_mix",
        "kind": "locust (80% create / 15% get / 5% cancel)",
        "concurrency": 50,
        "duration_s": duration_s,
        "requests": int(num(total, "Request Count")),
        "ok": int(num(total, "Request Count") - num(total, "Failure Count")),
        "errors_by_code": errors,
        "orders_per_s": round(num(creates, "Requests/s"), 1),
        "calls_per_s": round(num(total, "Requests/s"), 1),
        "p50_ms": num(total, "50%"),
        "p95_ms": num(total, "95%"),
        "p99_ms": num(total, "99%"),
        "ops": {
            name: int(num(row, "Request Count"))
            for name, row in by_name.items()
            if name != "Aggregated"
        },
        "timeline_columns": ["t_s", "ok", "errors", "p50_ms", "p99_ms"],
        "timeline": locust_timeline(Path(f"{prefix}_stats_history.csv")),
    }


def locust_timeline(history: Path) -> list[list[float]]:
    """Per-second [t, ok/s, errors/s, p50, p99] of the aggregated locust history."""
    import csv

    if not history.exists():
        return []
    rows = [r for r in csv.DictReader(history.open()) if r.get("Name") == "Aggregated"]
    if not rows:
        return []
    t0 = int(rows[0]["Timestamp"])
    out = []
    for row in rows:
        try:
            rps, fps = float(row["Requests/s"]), float(row["Failures/s"])
            p50 = float(row["50%"]) if row["50%"] != "N/A" else 0.0
            p99 = float(row["99%"]) if row["99%"] != "N/A" else 0.0
        except (KeyError, ValueError):
            continue
        out.append([int(row["Timestamp"]) - t0, round(rps - fps, 1), round(fps, 1), p50, p99])
    return out


# ----------------------------------------------------------------------------- summary


def summarize(results: dict[str, dict[str, Any]], mode: str) -> dict[str, Any]:
    def get(name: str, key: str) -> float | None:
        value = results.get(name, {}).get(key)
        return float(value) if isinstance(value, int | float) else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    svc = get("service_steady", "orders_per_s")
    echo = get("echo", "calls_per_s")
    ceiling = get("cql_ceiling", "writes_per_s")
    batch = get("batch", "orders_per_s")
    base = get("baseline_steady", "orders_per_s")
    half_p99 = get("service_half", "p99_ms")
    svc_p99 = get("service_steady", "p99_ms")
    base_p99 = get("baseline_steady", "p99_ms")
    ingest_target = ceiling / WRITES_PER_ORDER if ceiling else None
    checks: dict[str, Any] = {
        "unary_vs_echo": {
            "value": ratio(svc, echo),
            "target": f">= {TARGETS['unary_vs_echo']}",
            "pass": _ge(ratio(svc, echo), TARGETS["unary_vs_echo"]),
            "detail": f"service {svc} orders/s vs echo {echo} calls/s",
        },
        "p99_half_saturation_ms": {
            "value": half_p99,
            "target": f"<= {TARGETS['p99_half_saturation_ms']}",
            "pass": None if half_p99 is None else half_p99 <= TARGETS["p99_half_saturation_ms"],
            "detail": f"open loop at {get('service_half', 'rate')} orders/s",
        },
        "batch_vs_cql_ceiling": {
            "value": ratio(batch, ingest_target),
            "target": f">= {TARGETS['batch_vs_cql_ceiling']}",
            "pass": _ge(ratio(batch, ingest_target), TARGETS["batch_vs_cql_ceiling"]),
            "detail": f"batch {batch} orders/s vs ceiling {ceiling} writes/s / "
            f"{WRITES_PER_ORDER} writes per order",
        },
        "vs_baseline_throughput": {
            "value": ratio(svc, base),
            "target": f">= {TARGETS['vs_baseline_throughput']}",
            "pass": _ge(ratio(svc, base), TARGETS["vs_baseline_throughput"]),
            "detail": f"service {svc} vs baseline {base} orders/s, same concurrency",
        },
        "vs_baseline_p99": {
            "value": svc_p99,
            "target": f"<= baseline p99 ({base_p99} ms)",
            "pass": None if svc_p99 is None or base_p99 is None else svc_p99 <= base_p99,
            "detail": "closed loop at saturation, same concurrency",
        },
    }
    oversold = {
        name: r.get("oversold_units") for name, r in results.items() if "oversold_units" in r
    }
    checks["zero_oversell_service"] = {
        "value": sum(v or 0 for k, v in oversold.items() if not k.startswith("baseline")),
        "target": "0",
        "pass": all((v or 0) == 0 for k, v in oversold.items() if not k.startswith("baseline")),
        "detail": "every service scenario, checked against the store",
    }
    checks["zero_oversell_baseline"] = {
        "value": oversold.get("baseline_flash_sale"),
        "target": "0 (reported, not a target)",
        "pass": None
        if "baseline_flash_sale" not in oversold
        else oversold["baseline_flash_sale"] == 0,
        "detail": "the baseline's flash sale, checked against its store",
    }
    return {
        "mode": mode,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_end": list(os.getloadavg()),
            "note": "client, server, Cassandra and NATS share these cores",
        },
        "checks": checks,
        "oversold_units": oversold,
        "scenarios": {
            name: {
                k: r.get(k)
                for k in (
                    "orders_per_s",
                    "calls_per_s",
                    "p50_ms",
                    "p95_ms",
                    "p99_ms",
                    "errors_by_code",
                    "oversold_units",
                    "concurrency",
                    "client_cpu_s",
                )
            }
            for name, r in results.items()
        },
    }


def _ge(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target


# ----------------------------------------------------------------------------- main


def start_stack(started_file: Path) -> None:
    log("stack: up (ports from ORDERS_* environment)")
    subprocess.run(
        [PY, "-m", "deploy.stack", "up", "--started-file", str(started_file)],
        cwd=ROOT,
        check=True,
        timeout=600,
    )


def stop_started(started_file: Path) -> None:
    services = started_file.read_text().split() if started_file.exists() else []
    for service in services:
        log(f"stack: stopping {service} (this run started it)")
        subprocess.run(
            [PY, "-m", "deploy.stack", "down", "--only", service],
            cwd=ROOT,
            check=False,
            timeout=120,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="about 4 minutes instead of ~9")
    p.add_argument("--no-stack", action="store_true", help="use the running stack as it is")
    p.add_argument(
        "--only",
        help="comma-separated: echo,cql_ceiling,baseline,service_steady,"
        "flash_sale,spike,batch,locust_mix",
    )
    p.add_argument("--concurrency", type=int, default=0, help="closed-loop callers")
    p.add_argument("--hot-share", type=float, default=0.05, help="orders with a hot SKU")
    p.add_argument(
        "--unary-engine",
        choices=["python", "ghz"],
        default="python",
        help="client for echo, baseline_steady and service_steady (ghz: go install "
        "github.com/bojand/ghz/cmd/ghz@v0.120.0)",
    )
    p.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="load generator processes for the closed-loop scenarios (default 1: the client "
        "shares the cores with the server, Cassandra and NATS)",
    )
    args = p.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    started = Path(tempfile.mkstemp(prefix="orders-bench-started-")[1])
    t0 = time.monotonic()
    try:
        if not args.no_stack:
            start_stack(started)
        bench.run()
    finally:
        if not args.no_stack:
            stop_started(started)
        started.unlink(missing_ok=True)
    results = dict(bench.results)
    carried: list[str] = []
    if args.only:  # a partial run: the other scenarios come from earlier runs' files
        from report import load_results

        for name, result in load_results(RESULTS).items():
            if name not in results:
                results[name] = result
                carried.append(name)
    summary = summarize(results, "quick" if args.quick else "default")
    summary["carried_over_from_earlier_runs"] = carried
    summary["failed_scenarios"] = bench.failures
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    summary["server_logs"] = str(bench.logs)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    from report import write_report

    write_report(RESULTS)
    log(f"done in {summary['wall_s']} s: {RESULTS / 'report.md'}")
    for name, check in summary["checks"].items():
        log(f"  {name}: {check['value']} (target {check['target']}) pass={check['pass']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
