"""gRPC load generator for the order service, the echo server and the per-request baseline.

    python bench/loadgen.py --target 127.0.0.1:50051 --kind create --region R --skus 1000 \
        --concurrency 256 --duration 20 --warmup 3 --out bench/results/x.json

asyncio + grpc.aio, `--channels` HTTP/2 connections, requests sent as pre-serialized bytes
(no serializer: the client does not build protobuf objects per request). Closed loop with
`--concurrency` callers, or open loop at `--rate` calls/s with at most `--concurrency` in
flight (latency measured from the scheduled send time, so queueing is not hidden).
`--phases 10:50,5:500,10:50` runs closed-loop phases (seconds:concurrency) for spikes.
`--processes P` splits the callers over P processes (one core each at most) and merges.

Kinds: `create` (CreateOrder), `batch` (BatchCreateOrders of --batch-size orders), `mix`
(80% create / 15% get / 5% cancel, shares configurable) and `echo` (CreateOrder-shaped bytes,
the response is parsed like an Order so the client does the same work as for `create`).

Every request has a deadline (`--timeout`); every status other than OK counts as an error
by its code name (CANCELLED included: the server refused the stream). Only calls that
finish inside the measured window count (not the warm-up, not the drain after the end).
Output: one JSON object (see `summarize`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from workloads import f_int, f_msg, f_str, order_line  # noqa: E402

from server.gen.orders.v1 import orders_pb2  # noqa: E402

SERVICE = "/orders.v1.OrderService/"
CREATE = SERVICE + "CreateOrder"
BATCH_CREATE = SERVICE + "BatchCreateOrders"
GET = SERVICE + "GetOrder"
CANCEL = SERVICE + "CancelOrder"
POLICY_SINGLE_LOCATION = 1
POLICY_SPLIT = 2
MAX_CONCURRENCY = 2000  # a grpc.aio server refuses streams well before this
MAX_SECONDS = 3600.0
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # one TCP connection per channel object, not a shared subchannel
    ("grpc.use_local_subchannel_pool", 1),
]


# ----------------------------------------------------------------------------- workload


@dataclass
class Workload:
    """What to send: pre-encoded CreateOrder bodies plus a unique request_id per call."""

    kind: str = "create"
    region: str = "bench"
    skus: int = 1000
    sku_prefix: str = "sku-"
    hot_skus: int = 10
    hot_share: float = 0.05
    hot_prefix: str = "hot-"
    lines_max: int = 3
    quantity_max: int = 2
    policy: int = POLICY_SPLIT
    customers: int = 10_000
    request_prefix: str = "r"
    batch_size: int = 500
    get_share: float = 0.15
    cancel_share: float = 0.05
    seed: int = 1
    bodies: list[bytes] = field(default_factory=list)
    _counter: int = 0
    _rng: random.Random = field(default_factory=random.Random)
    _created: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=50_000)
    )

    def prepare(self) -> None:
        """Encodes a pool of request bodies (everything but request_id) once."""
        self._rng = random.Random(self.seed)
        rng = self._rng
        pool = []
        for _ in range(4096):
            lines: list[bytes] = []
            n_lines = rng.randint(1, max(1, self.lines_max))
            chosen: set[str] = set()
            if self.hot_skus > 0 and rng.random() < self.hot_share:
                chosen.add(f"{self.hot_prefix}{rng.randrange(self.hot_skus)}")
            while len(chosen) < n_lines and self.skus > 0:
                chosen.add(f"{self.sku_prefix}{rng.randrange(self.skus)}")
            if not chosen:
                chosen.add(f"{self.hot_prefix}0")
            for sku in sorted(chosen):
                quantity = rng.randint(1, max(1, self.quantity_max))
                lines.append(order_line(sku, quantity, rng.randint(100, 20_000), "EUR"))
            customer = f"c{rng.randrange(self.customers)}"
            body = (
                f_str(2, customer)
                + f_str(3, self.region)
                + b"".join(f_msg(4, line) for line in lines)
                + f_int(5, self.policy)
            )
            pool.append(body)
        self.bodies = pool

    def create_bytes(self) -> bytes:
        self._counter += 1
        body = self.bodies[self._counter % len(self.bodies)]
        return f_str(1, f"{self.request_prefix}-{self._counter}") + body

    def next_call(self) -> tuple[str, str, bytes]:
        """(operation, method, request bytes)."""
        if self.kind == "batch":
            items = b"".join(f_msg(1, self.create_bytes()) for _ in range(self.batch_size))
            return "batch", BATCH_CREATE, items + f_int(2, 1)
        if self.kind == "mix" and self._created:
            draw = self._rng.random()
            if draw < self.cancel_share:
                order_id = self._created.popleft()
                return "cancel", CANCEL, f_str(1, order_id) + f_str(2, "bench")
            if draw < self.cancel_share + self.get_share:
                order_id = self._created[self._rng.randrange(len(self._created))]
                return "get", GET, f_str(1, order_id)
        return "create", CREATE, self.create_bytes()

    def remember(self, order_id: str) -> None:
        if self.kind == "mix":
            self._created.append(order_id)


# ----------------------------------------------------------------------------- recording


@dataclass
class Recorder:
    """Every counted request: end time (s after the measured start), latency (s), code."""

    ends: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    orders_ok: int = 0
    orders_failed: int = 0
    item_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    client_dropped: int = 0
    children_cpu_s: float = 0.0

    def to_raw(self) -> dict[str, Any]:
        return {
            "ends": self.ends,
            "latencies": self.latencies,
            "codes": self.codes,
            "orders_ok": self.orders_ok,
            "orders_failed": self.orders_failed,
            "item_errors": dict(self.item_errors),
            "outcomes": dict(self.outcomes),
            "ops": dict(self.ops),
            "client_dropped": self.client_dropped,
        }

    @classmethod
    def merge(cls, raws: Sequence[dict[str, Any]]) -> Recorder:
        out = cls()
        for raw in raws:
            out.ends += raw["ends"]
            out.latencies += raw["latencies"]
            out.codes += raw["codes"]
            out.orders_ok += raw["orders_ok"]
            out.orders_failed += raw["orders_failed"]
            out.item_errors.update(raw["item_errors"])
            out.outcomes.update(raw["outcomes"])
            out.ops.update(raw["ops"])
            out.client_dropped += raw["client_dropped"]
        return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty list)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(rec: Recorder, meta: dict[str, Any], duration_s: float) -> dict[str, Any]:
    ok_lat = sorted(
        lat * 1000 for lat, code in zip(rec.latencies, rec.codes, strict=True) if code == "OK"
    )
    errors = collections.Counter(code for code in rec.codes if code != "OK")
    errors.update({f"item:{k}": v for k, v in rec.item_errors.items()})
    seconds = max(1, math.ceil(duration_s))
    ok_per_s = [0] * seconds
    err_per_s = [0] * seconds
    lat_per_s: list[list[float]] = [[] for _ in range(seconds)]
    for end, lat, code in zip(rec.ends, rec.latencies, rec.codes, strict=True):
        slot = min(seconds - 1, max(0, int(end)))
        if code == "OK":
            ok_per_s[slot] += 1
            lat_per_s[slot].append(lat * 1000)
        else:
            err_per_s[slot] += 1
    timeline = []
    for t in range(seconds):
        lats = sorted(lat_per_s[t])
        timeline.append(
            [
                t,
                ok_per_s[t],
                err_per_s[t],
                round(percentile(lats, 50), 3),
                round(percentile(lats, 99), 3),
            ]
        )
    ok = len(ok_lat)
    return {
        **meta,
        "duration_s": duration_s,
        "requests": len(rec.codes),
        "ok": ok,
        "errors": sum(errors.values()),
        "errors_by_code": dict(errors),
        "orders": rec.orders_ok,
        "orders_failed": rec.orders_failed,
        "orders_per_s": round(rec.orders_ok / duration_s, 1),
        "calls_per_s": round(ok / duration_s, 1),
        "p50_ms": round(percentile(ok_lat, 50), 3),
        "p95_ms": round(percentile(ok_lat, 95), 3),
        "p99_ms": round(percentile(ok_lat, 99), 3),
        "p999_ms": round(percentile(ok_lat, 99.9), 3),
        "max_ms": round(ok_lat[-1], 3) if ok_lat else 0.0,
        "mean_ms": round(sum(ok_lat) / ok, 3) if ok else 0.0,
        "outcomes": dict(rec.outcomes),
        "ops": dict(rec.ops),
        "client_dropped": rec.client_dropped,
        "timeline_columns": ["t_s", "ok", "errors", "p50_ms", "p99_ms"],
        "timeline": timeline,
    }


# ----------------------------------------------------------------------------- the run


STATUS_NAMES = {v: k.removeprefix("ORDER_STATUS_") for k, v in orders_pb2.OrderStatus.items()}


def _account(rec: Recorder, workload: Workload, op: str, response: bytes) -> None:
    if op == "batch":
        reply = orders_pb2.BatchCreateOrdersResponse.FromString(response)
        for result in reply.results:
            if result.HasField("order"):
                rec.orders_ok += 1
                rec.outcomes[STATUS_NAMES.get(result.order.status, "?")] += 1
            else:
                rec.orders_failed += 1
                code = grpc.StatusCode
                name = next((c.name for c in code if c.value[0] == result.error.code), "?")
                rec.item_errors[name] += 1
        return
    order = orders_pb2.Order.FromString(response)
    if op == "create":
        rec.orders_ok += 1
        rec.outcomes[STATUS_NAMES.get(order.status, "?")] += 1
        workload.remember(order.order_id)


@dataclass
class RunSpec:
    target: str
    concurrency: int = 64
    duration_s: float = 10.0
    warmup_s: float = 2.0
    channels: int = 8
    rate: float = 0.0
    phases: list[tuple[float, int]] = field(default_factory=list)
    max_requests: int = 0
    timeout_s: float = 10.0
    start_at: float = 0.0  # wall clock (time.time) of the start, to align processes


async def run(spec: RunSpec, workload: Workload) -> tuple[Recorder, float]:
    """Runs the load; returns the recorder and the measured duration in seconds."""
    if not 1 <= spec.concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be 1..{MAX_CONCURRENCY}")
    workload.prepare()
    rec = Recorder()
    channels = [
        grpc.aio.insecure_channel(spec.target, options=[*CHANNEL_OPTIONS, ("bench.channel", i)])
        for i in range(max(1, spec.channels))
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(ch.channel_ready() for ch in channels)), timeout=30)
        methods = [
            {m: ch.unary_unary(m) for m in (CREATE, BATCH_CREATE, GET, CANCEL)} for ch in channels
        ]
        if spec.start_at:
            await asyncio.sleep(max(0.0, spec.start_at - time.time()))
        phases = spec.phases or [(spec.duration_s, spec.concurrency)]
        measured_s = sum(p[0] for p in phases)
        if measured_s > MAX_SECONDS:
            raise ValueError("run too long")
        t_begin = time.perf_counter()
        t_measure = t_begin + spec.warmup_s
        t_end = t_measure + measured_s
        active = phases[0][1]
        issued = 0
        stop = False

        async def call(index: int, scheduled: float | None) -> None:
            nonlocal issued
            issued += 1
            op, method, payload = workload.next_call()
            callable_ = methods[index % len(methods)][method]
            t0 = time.perf_counter() if scheduled is None else scheduled
            response = b""
            try:
                response = await callable_(payload, timeout=spec.timeout_s)
                code = "OK"
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
            t1 = time.perf_counter()
            if not t_measure <= t1 <= t_end:  # warm-up, or the drain after the end
                return
            rec.ends.append(t1 - t_measure)
            rec.latencies.append(t1 - t0)
            rec.codes.append(code)
            rec.ops[op] += 1
            if code == "OK":
                _account(rec, workload, op, response)
            elif op == "batch":
                rec.orders_failed += workload.batch_size

        def more() -> bool:
            return not stop and (spec.max_requests <= 0 or issued < spec.max_requests)

        phase_changed = [asyncio.Event()]

        async def closed_worker(index: int) -> None:
            while more() and time.perf_counter() < t_end:
                if index >= active:  # idle in this phase: wait for the next one
                    event = phase_changed[0]
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            event.wait(), timeout=max(0.01, t_end - time.perf_counter())
                        )
                    continue
                await call(index, None)

        async def phase_clock() -> None:
            nonlocal active
            await asyncio.sleep(max(0.0, t_measure - time.perf_counter()))
            elapsed = 0.0
            for seconds, concurrency in phases:
                active = concurrency
                previous, phase_changed[0] = phase_changed[0], asyncio.Event()
                previous.set()
                elapsed += seconds
                await asyncio.sleep(max(0.0, t_measure + elapsed - time.perf_counter()))

        async def open_loop() -> None:
            in_flight: set[asyncio.Task[None]] = set()
            launched = 0
            index = 0
            while more() and time.perf_counter() < t_end:
                now = time.perf_counter()
                due = int((now - t_begin) * spec.rate) - launched
                for _ in range(max(0, due)):
                    scheduled = t_begin + launched / spec.rate
                    launched += 1
                    if len(in_flight) >= spec.concurrency:
                        if scheduled >= t_measure:
                            rec.client_dropped += 1
                        continue
                    index += 1
                    task = asyncio.create_task(call(index, scheduled))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                await asyncio.sleep(0.001)
            if in_flight:
                await asyncio.wait(in_flight, timeout=spec.timeout_s + 1)

        if spec.rate > 0:
            await open_loop()
        else:
            top = max(c for _, c in phases)
            clock = asyncio.create_task(phase_clock())
            await asyncio.gather(*(closed_worker(i) for i in range(top)))
            stop = True
            clock.cancel()
        measured = min(measured_s, max(1e-3, time.perf_counter() - t_measure))
        if spec.max_requests > 0:
            measured = max(1e-3, min(measured_s, (max(rec.ends) if rec.ends else 0.0)))
        return rec, measured
    finally:
        for ch in channels:
            await ch.close()


def run_in_processes(
    spec: RunSpec, workload: Workload, processes: int, argv: Sequence[str]
) -> tuple[Recorder, float]:
    """Runs `processes` copies of this script (callers split evenly) and merges their data."""
    start_at = time.time() + 3.0
    children = []
    outs = []
    with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp:
        for k in range(processes):
            out = Path(tmp) / f"child-{k}.json"
            outs.append(out)
            args = [
                sys.executable,
                str(Path(__file__).resolve()),
                *argv,
                "--processes",
                "1",
                "--raw-out",
                str(out),
                "--start-at",
                str(start_at),
                "--concurrency",
                str(max(1, spec.concurrency // processes)),
                "--rate",
                str(spec.rate / processes),
                "--max-requests",
                str(spec.max_requests // processes if spec.max_requests else 0),
                "--request-prefix",
                f"{workload.request_prefix}p{k}",
                "--seed",
                str(workload.seed + k),
            ]
            if spec.phases:
                args += [
                    "--phases",
                    ",".join(f"{s}:{max(1, c // processes)}" for s, c in spec.phases),
                ]
            children.append(subprocess.Popen(args))
        limit = spec.warmup_s + sum(p[0] for p in spec.phases) + spec.duration_s + 120
        for child in children:
            child.wait(timeout=limit)
        raws = [json.loads(out.read_text()) for out in outs if out.exists()]
    if len(raws) != processes:
        raise RuntimeError(f"only {len(raws)} of {processes} load processes reported")
    rec = Recorder.merge([r["recorder"] for r in raws])
    rec.children_cpu_s = sum(float(r.get("cpu_s", 0.0)) for r in raws)
    return rec, max(r["measured_s"] for r in raws)


# ----------------------------------------------------------------------------- ghz


def ghz_binary() -> str | None:
    """ghz (github.com/bojand/ghz) on PATH or in ~/go/bin, if installed."""
    found = shutil.which("ghz")
    if found:
        return found
    candidate = Path(os.environ.get("GOPATH", Path.home() / "go")) / "bin" / "ghz"
    return str(candidate) if candidate.exists() else None


def run_ghz(spec: RunSpec, workload: Workload, binary: str) -> tuple[Recorder, float]:
    """The same closed-loop CreateOrder load with ghz (a Go client, far cheaper per call).

    Orders have two lines from the two halves of the catalogue (distinct SKUs), SPLIT
    policy, a unique request_id per call (ghz template). The warm-up is dropped by time.
    """
    half = max(1, workload.skus // 2)
    top = max(half + 1, workload.skus)
    sku = workload.sku_prefix
    price = {"unit_price_minor": 1999, "currency": "EUR", "quantity": 1}
    lines = [
        {"sku": sku + "{{randomInt 0 " + str(half) + "}}", **price},
        {"sku": sku + "{{randomInt " + f"{half} {top}" + "}}", **price},
    ]
    template = {
        "request_id": workload.request_prefix + "-{{.WorkerID}}-{{.RequestNumber}}",
        "customer_id": "c{{.RequestNumber}}",
        "region": workload.region,
        "policy": workload.policy,
        "lines": lines,
    }
    data = json.dumps(template)
    total_s = spec.warmup_s + spec.duration_s
    with tempfile.TemporaryDirectory(prefix="ghz-") as tmp:
        out = Path(tmp) / "ghz.json"
        args = [
            binary, "--insecure", "--proto", str(ROOT / "proto/orders/v1/orders.proto"),
            "--import-paths", str(ROOT / "proto"), "--call", "orders.v1.OrderService.CreateOrder",
            "-d", data, "-c", str(spec.concurrency), "--connections", str(spec.channels),
            "-z", f"{total_s}s", "--timeout", f"{spec.timeout_s}s", "--format", "json",
            "-o", str(out), spec.target,
        ]  # fmt: skip
        subprocess.run(args, check=True, timeout=total_s + 120, stdout=subprocess.DEVNULL)
        report = json.loads(out.read_text())
    details = report.get("details") or []
    rec = Recorder()
    if not details:
        return rec, spec.duration_s
    stamps = [_rfc3339(d["timestamp"]) for d in details]
    t_start = min(stamps)
    t_measure = t_start + spec.warmup_s
    for detail, stamp in zip(details, stamps, strict=True):
        latency = float(detail["latency"]) / 1e9
        end = stamp + latency
        if end < t_measure:
            continue
        code = str(detail.get("status") or "OK").upper()
        code = "OK" if code == "OK" else code.replace(" ", "_")
        if code != "OK" and stamp + latency >= t_start + total_s - 0.05:
            continue  # ghz cancels what is in flight when -z runs out: not a server error
        rec.ends.append(end - t_measure)
        rec.latencies.append(latency)
        rec.codes.append(code)
        rec.ops["create"] += 1
        if code == "OK":
            rec.orders_ok += 1
    return rec, spec.duration_s


def _rfc3339(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp with up to nanoseconds."""
    from datetime import datetime

    head, _, frac_tz = text.partition(".")
    digits = "".join(itertools.takewhile(str.isdigit, frac_tz))
    tz = frac_tz[len(digits) :] or "Z"
    tz = "+00:00" if tz == "Z" else tz
    base = datetime.fromisoformat(head + tz).timestamp()
    return base + (float("0." + digits) if digits else 0.0)


# ----------------------------------------------------------------------------- CLI


def parse_phases(text: str) -> list[tuple[float, int]]:
    phases = []
    for part in text.split(","):
        if part.strip():
            seconds, concurrency = part.split(":")
            phases.append((float(seconds), int(concurrency)))
    return phases


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="host:port")
    p.add_argument("--scenario", default="adhoc")
    p.add_argument("--kind", choices=["create", "batch", "mix", "echo"], default="create")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--rate", type=float, default=0.0, help="open loop: calls/s (0: closed)")
    p.add_argument("--phases", default="", help="closed-loop phases 'secs:conc,...'")
    p.add_argument("--max-requests", type=int, default=0, help="stop after this many calls")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline per call, s")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument(
        "--engine", choices=["python", "ghz"], default="python", help="ghz: closed-loop create"
    )
    p.add_argument("--region", default="bench")
    p.add_argument("--skus", type=int, default=1000)
    p.add_argument("--sku-prefix", default="sku-")
    p.add_argument("--hot-skus", type=int, default=10)
    p.add_argument("--hot-share", type=float, default=0.05)
    p.add_argument("--hot-prefix", default="hot-")
    p.add_argument("--lines-max", type=int, default=3)
    p.add_argument("--quantity-max", type=int, default=2)
    p.add_argument("--policy", type=int, default=POLICY_SPLIT)
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--request-prefix", default="")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="write the summary JSON here (default: stdout)")
    p.add_argument("--raw-out", help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    return p


def workload_from_args(args: argparse.Namespace) -> Workload:
    prefix = args.request_prefix or f"{args.scenario}-{os.getpid()}-{int(time.time())}"
    return Workload(
        kind="create" if args.kind == "echo" else args.kind,
        region=args.region,
        skus=args.skus,
        sku_prefix=args.sku_prefix,
        hot_skus=args.hot_skus,
        hot_share=args.hot_share,
        hot_prefix=args.hot_prefix,
        lines_max=args.lines_max,
        quantity_max=args.quantity_max,
        policy=args.policy,
        customers=args.customers,
        request_prefix=prefix,
        batch_size=args.batch_size,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    spec = RunSpec(
        target=args.target,
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        channels=args.channels,
        rate=args.rate,
        phases=parse_phases(args.phases),
        max_requests=args.max_requests,
        timeout_s=args.timeout,
        start_at=args.start_at,
    )
    workload = workload_from_args(args)
    cpu0 = time.process_time()
    if args.engine == "ghz":
        binary = ghz_binary()
        if binary is None:
            sys.exit("ghz not found (go install github.com/bojand/ghz/cmd/ghz@v0.120.0)")
        rec, measured = run_ghz(spec, workload, binary)
    elif args.processes > 1:
        passthrough = _strip(
            argv,
            (
                "--processes",
                "--out",
                "--concurrency",
                "--rate",
                "--max-requests",
                "--request-prefix",
                "--seed",
                "--phases",
            ),
        )
        rec, measured = run_in_processes(spec, workload, args.processes, passthrough)
    else:
        rec, measured = asyncio.run(run(spec, workload))
    if args.raw_out:
        Path(args.raw_out).write_text(
            json.dumps(
                {
                    "recorder": rec.to_raw(),
                    "measured_s": measured,
                    "cpu_s": time.process_time() - cpu0,
                }
            )
        )
        return 0
    meta = {
        "scenario": args.scenario,
        "target": args.target,
        "kind": args.kind,
        "engine": args.engine,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "phases": spec.phases,
        "channels": args.channels,
        "processes": args.processes,
        "warmup_s": args.warmup,
        "batch_size": args.batch_size if args.kind == "batch" else 1,
        "client_cpu_s": round(time.process_time() - cpu0 + rec.children_cpu_s, 2),
    }
    result = summarize(rec, meta, measured)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        print(
            f"{args.scenario}: {result['orders_per_s']} orders/s, {result['calls_per_s']} calls/s, "
            f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
            f"errors {result['errors_by_code']}",
            file=sys.stderr,
        )
    else:
        print(text)
    return 0


def _strip(argv: Sequence[str], names: Sequence[str]) -> list[str]:
    """argv without the given options (and their values)."""
    out: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
            continue
        name = item.split("=", 1)[0]
        if name in names:
            skip = "=" not in item
            continue
        out.append(item)
    return out


if __name__ == "__main__":
    sys.exit(main())
