"""Core benchmark: the Rust allocation engine against the pure-Python reference model.

    python bench/core_bench.py [--seconds S] [--reference-batches K] [--seed N]
                               [--out bench/results/core.json]

What is timed: `engine.apply(batch_bytes)` only. That call decodes the EngineBatch,
validates and allocates every order, and encodes the responses, changed rows and events
(the BatchOutput is complete when apply returns). Not timed: building and encoding the
batches (the service's job; done before timing), the setup batches (SetStock for every
SKU x location), `commit()`, and reading `output.encode()`.

Runs:
1. Rust, growing run: a fresh engine, setup, then as many create batches as needed for
   at least --seconds of apply time. Its order store grows as orders arrive, so the
   timed part also pays the kernel for every fresh page of new orders (high on the
   development VM: see docs/design.md, "Engine memory is provisioned").
2. Rust, provisioned run (the headline): the same batches on a fresh engine whose order
   store was reserved and faulted in after setup (Engine.reserve_orders, not timed), as
   the service does at start with engine_reserve_orders. `lines_per_s` and
   `orders_per_s` are this run's; the growing run's figures are under `growing`, and
   both are printed. The two runs' outputs must be identical.
3. Reference model: a fresh model, the same setup, the first K create batches of the same
   sequence. The speedup compares it with the Rust engine's time on the same K batches
   (same state, same input): the median over --speedup-runs fresh engines, the first
   being run 1's first K batches. K batches take the engine a few tens of milliseconds,
   so one stall of the VM in a single measurement could halve the speedup; the median
   does not move for it. The outputs of those K batches are compared (parsed) for
   equality.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "bench", ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from workloads import OrderBatch, StandardWorkload, WorkloadSpec  # noqa: E402

from server.engine_build import loaded_build  # noqa: E402

TARGET_LINES_PER_S = 5e6
TARGET_SPEEDUP = 50.0
# Fresh engines timed on the reference's batches (see the docstring, run 3).
SPEEDUP_RUNS = 5


INTERACTIVE = sys.stderr.isatty()


def progress(message: str) -> None:
    """A progress line, rewritten in place on a terminal (silent in logs)."""
    if INTERACTIVE:
        sys.stderr.write(f"\r\x1b[K{message}")
        sys.stderr.flush()


def progress_done(message: str) -> None:
    sys.stderr.write(f"\r\x1b[K{message}\n" if INTERACTIVE else f"{message}\n")
    sys.stderr.flush()


def pin_to_one_core() -> str:
    """Pins the process to one CPU so both engines run on the same core, undisturbed."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (os.sched_setaffinity unavailable)"
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[0]})
    except OSError as exc:
        return f"not pinned ({exc})"
    return f"pinned to CPU {cpus[0]}"


def machine_info() -> dict[str, Any]:
    cpu_model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        # other processes competing for the CPU make every figure unreliable
        "loadavg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def git_commit() -> dict[str, Any] | None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def import_engine(path: Path | None = None) -> Any:
    """The engine extension: the built one (server._engine), or the shared library at
    `path` (another build of it, e.g. an older commit's, for `bench/core_ab.py`)."""
    if path is None:
        try:
            return importlib.import_module("server._engine")
        except ImportError as exc:
            sys.exit(f"server._engine is not importable ({exc}): run `make build` first")
    # The module's init function is named after the last part of the name (_engine).
    spec = importlib.util.spec_from_file_location("server._engine", path)
    if spec is None or spec.loader is None:
        sys.exit(f"{path} is not an importable extension module")
    # Creating an extension module registers it in sys.modules under its name; keep
    # whichever build `import server._engine` gave (or none) there instead.
    previous = sys.modules.get("server._engine")
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if previous is None:
            sys.modules.pop("server._engine", None)
        else:
            sys.modules["server._engine"] = previous
    return module


class BatchSource:
    """The workload's create batches, encoded ahead of time and kept for reuse."""

    def __init__(self, workload: StandardWorkload) -> None:
        self._stream: Iterator[OrderBatch] = workload.order_batches()
        self.batches: list[OrderBatch] = []

    def ensure(self, count: int, label: str = "encoding batches") -> None:
        start = time.perf_counter()
        while len(self.batches) < count:
            self.batches.append(next(self._stream))
            if len(self.batches) % 20 == 0 or len(self.batches) == count:
                progress(f"{label}: {len(self.batches)}/{count}")
        progress_done(
            f"{label}: {len(self.batches)} batches ready ({time.perf_counter() - start:.1f} s)"
        )


def setup(engine: Any, batches: list[bytes], label: str) -> None:
    """Applies and commits the setup batches on a Rust engine (not timed)."""
    start = time.perf_counter()
    for i, data in enumerate(batches, 1):
        out = engine.apply(data)
        engine.commit(out.batch_seq)
        if i % 5 == 0 or i == len(batches):
            progress(f"{label} setup: {i}/{len(batches)} batches")
    progress_done(f"{label} setup: {len(batches)} batches ({time.perf_counter() - start:.1f} s)")


def quiesce_gc() -> None:
    """Collects, then moves everything alive into the permanent generation, so that the
    setup state is not traversed again by every full collection during timing."""
    gc.collect()
    gc.freeze()


@dataclass
class CpuSplit:
    """CPU seconds spent inside apply(), by mode. System time is nearly all page
    faults: the kernel zeroing fresh memory for the growing engine state."""

    user: float = 0.0
    system: float = 0.0
    # Wall time of Engine.reserve_orders before the run (not timed; 0 if none).
    reserve_seconds: float = 0.0


def run_rust(
    engine_module: Any,
    setup_batches: list[bytes],
    source: BatchSource,
    min_batches: int,
    seconds: float,
    keep_outputs: int,
    cpu: CpuSplit,
    reserve_orders: int = 0,
    exact_batches: int | None = None,
) -> tuple[list[float], list[bytes], dict[str, int]]:
    """A Rust run: per-batch apply() times, the encoded outputs of the first batches.
    Runs for `seconds` of apply() (and at least `min_batches`), or exactly
    `exact_batches`. With `reserve_orders`, the engine's order store is reserved and
    faulted in after setup (not timed), as a service configured with
    engine_reserve_orders does at start."""
    engine = engine_module.Engine()
    label = "rust (provisioned)" if reserve_orders else "rust (growing)"
    setup(engine, setup_batches, label)
    if reserve_orders:
        started = time.perf_counter()
        engine.reserve_orders(reserve_orders)
        cpu.reserve_seconds = time.perf_counter() - started
        progress_done(
            f"reserved {reserve_orders:,} orders ({cpu.reserve_seconds:.1f} s, not timed)"
        )
    quiesce_gc()
    times: list[float] = []
    outputs: list[bytes] = []
    total = 0.0
    i = 0

    def more() -> bool:
        if exact_batches is not None:
            return i < exact_batches
        return total < seconds or i < min_batches

    while more():
        if i >= len(source.batches):
            # The estimate was short: encode more (not timed).
            source.ensure(i + max(8, i // 4), "encoding more batches")
        data = source.batches[i].data
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        out = engine.apply(data)
        elapsed = time.perf_counter() - t0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu.user += usage1.ru_utime - usage0.ru_utime
        cpu.system += usage1.ru_stime - usage0.ru_stime
        engine.commit(out.batch_seq)
        if i < keep_outputs:
            outputs.append(out.encode())
        times.append(elapsed)
        total += elapsed
        i += 1
        if i % 10 == 0:
            lines = sum(b.lines for b in source.batches[:i])
            progress(f"{label}: batch {i}, {total:.2f} s applied, {lines / total:,.0f} lines/s")
    progress_done(f"{label}: {i} batches in {total:.2f} s of apply()")
    stats: dict[str, int] = {}
    if hasattr(engine, "stats"):
        stats = dict(engine.stats())
    return times, outputs, stats


def calibrate(
    engine_module: Any, setup_batches: list[bytes], source: BatchSource, count: int
) -> float:
    """Batches per second of the Rust engine on the first batches (throwaway engine)."""
    return count / time_first_batches(engine_module, setup_batches, source, count, "calibration")


def run_reference(
    setup_batches: list[bytes], source: BatchSource, count: int
) -> tuple[list[float], list[bytes]]:
    from reference.model import ReferenceEngine  # type: ignore[import-not-found]

    ref = ReferenceEngine()
    gc.disable()  # setup only: hundreds of thousands of long-lived rows
    try:
        start = time.perf_counter()
        for i, data in enumerate(setup_batches, 1):
            ref.apply(data)
            ref.commit(ref.batch_seq)
            if i % 5 == 0 or i == len(setup_batches):
                progress(f"reference setup: {i}/{len(setup_batches)} batches")
        progress_done(
            f"reference setup: {len(setup_batches)} batches ({time.perf_counter() - start:.1f} s)"
        )
    finally:
        gc.enable()
    quiesce_gc()
    times: list[float] = []
    outputs: list[bytes] = []
    for i, batch in enumerate(source.batches[:count], 1):
        t0 = time.perf_counter()
        out = ref.apply(batch.data)
        times.append(time.perf_counter() - t0)
        ref.commit(ref.batch_seq)
        outputs.append(out)
        progress(f"reference: batch {i}/{count}, {sum(times):.1f} s")
    progress_done(f"reference: {count} batches in {sum(times):.2f} s")
    return times, outputs


def compare_outputs(rust: list[bytes], ref: list[bytes]) -> tuple[bool, Counter[str]]:
    """Parsed equality of the outputs of the batches both ran; outcome mix of the orders."""
    from server.gen.orders.engine.v1 import engine_pb2
    from server.gen.orders.v1 import orders_pb2

    same = True
    outcomes: Counter[str] = Counter()
    for a, b in zip(rust, ref, strict=False):
        ra = engine_pb2.EngineBatchResult.FromString(a)
        rb = engine_pb2.EngineBatchResult.FromString(b)
        # event payloads may differ in encoding but not in content
        for result in (ra, rb):
            for env in result.events:
                env.payload = b""
        same = same and ra == rb
        for r in rb.results:
            if r.code:
                outcomes[f"error:{r.error.reason}"] += 1
            else:
                outcomes[orders_pb2.OrderStatus.Name(r.order.status)] += 1
    return same, outcomes


def write_framed(path: Path, batches: list[bytes]) -> None:
    """Batches one after another, each after its length (4 bytes, little-endian)."""
    with path.open("wb") as out:
        for data in batches:
            out.write(struct.pack("<I", len(data)))
            out.write(data)


def read_framed(path: Path) -> list[bytes]:
    """The batches of a file `write_framed` wrote."""
    data = path.read_bytes()
    batches, at = [], 0
    while at < len(data):
        (length,) = struct.unpack_from("<I", data, at)
        batches.append(data[at + 4 : at + 4 + length])
        at += 4 + length
    if at != len(data):
        raise ValueError(f"{path}: the last batch is cut short")
    return batches


def dump_batches(directory: Path, setup_batches: list[bytes], timed: list[bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_framed(directory / "setup.bin", setup_batches)
    write_framed(directory / "timed.bin", timed)
    progress_done(f"wrote {len(setup_batches)} setup and {len(timed)} timed batches to {directory}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def time_first_batches(
    engine_module: Any, setup_batches: list[bytes], source: BatchSource, count: int, label: str
) -> float:
    """Apply time of the first `count` batches on a fresh engine after setup."""
    engine = engine_module.Engine()
    setup(engine, setup_batches, label)
    quiesce_gc()
    total = 0.0
    for batch in source.batches[:count]:
        t0 = time.perf_counter()
        out = engine.apply(batch.data)
        total += time.perf_counter() - t0
        engine.commit(out.batch_seq)
    return total


def add_workload_size_arguments(parser: argparse.ArgumentParser) -> None:
    """--skus and --batch-size: the standard workload's by default, smaller for smoke runs."""
    defaults = WorkloadSpec()
    parser.add_argument(
        "--skus",
        type=int,
        default=defaults.skus,
        help="SKU count (the standard workload's; smaller only for smoke runs)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="orders per batch (the standard workload's; smaller only for smoke runs)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum Rust apply time")
    parser.add_argument(
        "--batches",
        type=int,
        metavar="N",
        help="apply exactly N timed batches instead of --seconds' worth: the same work "
        "for every build compared (bench/core_ab.py), since later batches meet a larger "
        "state and emptier top locations",
    )
    parser.add_argument(
        "--reference-batches", type=int, default=3, help="batches run on the reference model"
    )
    parser.add_argument(
        "--speedup-runs",
        type=int,
        default=SPEEDUP_RUNS,
        metavar="R",
        help="fresh Rust engines timed on the reference's batches; the speedup uses their median",
    )
    parser.add_argument("--seed", type=int, default=1)
    add_workload_size_arguments(parser)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "core.json")
    parser.add_argument(
        "--engine-module",
        type=Path,
        metavar="SO",
        help="benchmark this build of the engine extension (a lib_engine.so) instead of "
        "server._engine",
    )
    parser.add_argument(
        "--dump-batches",
        type=Path,
        metavar="DIR",
        help="also write the setup and timed batches to DIR (setup.bin, timed.bin), for "
        "`BENCH_REPLAY=DIR cargo run --release --example bench_engine` and its profilers",
    )
    args = parser.parse_args(argv)
    if args.speedup_runs < 1:
        parser.error("--speedup-runs must be at least 1")
    if args.batches is not None and args.batches < max(1, args.reference_batches):
        parser.error("--batches must be at least --reference-batches")

    pinning = pin_to_one_core()
    print(f"core_bench: {pinning}", file=sys.stderr)
    engine_module = import_engine(args.engine_module)
    spec = WorkloadSpec(seed=args.seed, skus=args.skus, batch_size=args.batch_size)
    workload = StandardWorkload(spec)
    print(f"workload: {spec.describe()}", file=sys.stderr)

    t0 = time.perf_counter()
    setup_batches = workload.setup_batches()
    progress_done(f"encoded {len(setup_batches)} setup batches ({time.perf_counter() - t0:.1f} s)")
    source = BatchSource(workload)
    k = max(1, args.reference_batches)
    if args.batches is None:
        calibration_batches = max(k, 4)
        source.ensure(calibration_batches, "encoding calibration batches")
        rate = calibrate(engine_module, setup_batches, source, calibration_batches)
        planned = max(k, math.ceil(args.seconds * rate * 1.15))
        progress_done(f"calibration: {rate:.1f} batches/s -> planning {planned} batches")
    else:
        planned = args.batches
    source.ensure(planned)

    growing_cpu = CpuSplit()
    growing_times, rust_outputs, engine_stats = run_rust(
        engine_module,
        setup_batches,
        source,
        k,
        args.seconds,
        k,
        growing_cpu,
        exact_batches=args.batches,
    )
    n = len(growing_times)
    orders = sum(b.orders for b in source.batches[:n])
    lines = sum(b.lines for b in source.batches[:n])
    growing_total = sum(growing_times)
    k_lines = sum(b.lines for b in source.batches[:k])
    # The growing run's first K batches, and the same K on further fresh engines.
    rust_k_times = [sum(growing_times[:k])] + [
        time_first_batches(engine_module, setup_batches, source, k, f"rust, speedup run {run}")
        for run in range(2, args.speedup_runs + 1)
    ]
    rust_k_time = statistics.median(rust_k_times)

    # The headline: the same batches on an engine provisioned for them at start.
    cpu = CpuSplit()
    times, provisioned_outputs, _ = run_rust(
        engine_module,
        setup_batches,
        source,
        k,
        args.seconds,
        k,
        cpu,
        reserve_orders=orders,
        exact_batches=n,
    )
    total = sum(times)
    if args.dump_batches is not None:
        dump_batches(args.dump_batches, setup_batches, [b.data for b in source.batches[:n]])

    ref_times, ref_outputs = run_reference(setup_batches, source, k)
    ref_time = sum(ref_times)
    outputs_match, outcomes = compare_outputs(rust_outputs, ref_outputs)

    lines_per_s = lines / total
    growing_lines_per_s = lines / growing_total
    rust_k_lines_per_s = k_lines / rust_k_time
    reference_lines_per_s = k_lines / ref_time
    speedup = rust_k_lines_per_s / reference_lines_per_s
    runs_match = provisioned_outputs == rust_outputs

    def latency(run_times: list[float]) -> dict[str, float]:
        batch_ms = [t * 1e3 for t in run_times]
        return {
            "mean": statistics.fmean(batch_ms),
            "p50": percentile(batch_ms, 0.5),
            "p99": percentile(batch_ms, 0.99),
            "max": max(batch_ms),
        }

    result: dict[str, Any] = {
        "benchmark": "core",
        "timed": "Engine.apply(batch bytes): decode + validation/allocation + encoding of "
        "responses, changed rows and events; not timed: batch construction/encoding, setup, "
        "Engine.reserve_orders, commit(), BatchOutput.encode()",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_commit(),
        # The file the engine was loaded from (another build with --engine-module).
        "engine_module": str(getattr(engine_module, "__file__", "")),
        # baseline (portable x86-64) or x86-64-v4 (AVX-512): server/engine_build.py.
        "engine_build": loaded_build(engine_module),
        # The profile it was compiled with (deploy/build_engine.sh), or "none".
        "engine_profile": str(getattr(engine_module, "BUILD_PROFILE", "none")),
        "machine": machine_info(),
        "cpu_pinning": pinning,
        "workload": {"description": spec.describe(), "spec": spec.as_dict()},
        "batches": n,
        # --batches (a fixed run, for comparisons), or null: --seconds of apply().
        "batches_requested": args.batches,
        "orders": orders,
        "lines": lines,
        # The headline figures: the provisioned run (see the module docstring).
        "apply_seconds": total,
        "orders_per_s": orders / total,
        "lines_per_s": lines_per_s,
        "cpu_seconds": {"user": cpu.user, "system": cpu.system},
        "lines_per_user_cpu_s": lines / cpu.user if cpu.user > 0 else None,
        "batch_ms": latency(times),
        "provisioned": {
            "about": "an engine whose order store was reserved for the run's orders and "
            "faulted in after setup, not timed (Engine.reserve_orders; the service's "
            "engine_reserve_orders): the order store and its index fault in no memory in "
            "the timed part",
            "reserve_orders": orders,
            "reserve_seconds": cpu.reserve_seconds,
        },
        "growing": {
            "about": "the same batches on an engine whose order store grows as orders "
            "arrive: the timed part includes the kernel's page faults for the new orders' "
            "memory (system CPU)",
            "apply_seconds": growing_total,
            "orders_per_s": orders / growing_total,
            "lines_per_s": growing_lines_per_s,
            "cpu_seconds": {"user": growing_cpu.user, "system": growing_cpu.system},
            "lines_per_user_cpu_s": (lines / growing_cpu.user if growing_cpu.user > 0 else None),
            "batch_ms": latency(growing_times),
            "outputs_match_provisioned_run": runs_match,
        },
        "reference": {
            "batches": k,
            "lines": k_lines,
            "seconds": ref_time,
            "lines_per_s": reference_lines_per_s,
            # The median of rust_seconds_runs (fresh engines, same K batches).
            "rust_seconds_same_batches": rust_k_time,
            "rust_seconds_runs": rust_k_times,
            "rust_lines_per_s_same_batches": rust_k_lines_per_s,
            "outputs_match": outputs_match,
            "outcomes": dict(sorted(outcomes.items())),
        },
        "reference_lines_per_s": reference_lines_per_s,
        "speedup_vs_reference": speedup,
        "engine_stats": engine_stats,
        "targets": {
            "lines_per_s": TARGET_LINES_PER_S,
            "speedup": TARGET_SPEEDUP,
            "lines_per_s_pass": lines_per_s >= TARGET_LINES_PER_S,
            "growing_lines_per_s_pass": growing_lines_per_s >= TARGET_LINES_PER_S,
            "speedup_pass": speedup >= TARGET_SPEEDUP,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    def row(label: str, value: str) -> str:
        return f"  {label:<40} {value}"

    verdict = {True: "PASS", False: "FAIL"}

    def target(value: float) -> str:
        return f"(target {TARGET_LINES_PER_S:,.0f}: {verdict[value >= TARGET_LINES_PER_S]})"

    print("core benchmark (time of Engine.apply: decode + domain + encode)")
    print(row("machine", f"{result['machine']['cpu_model']}, {pinning}"))
    print(
        row(
            "engine build",
            f"{result['engine_build']}, profile {result['engine_profile']} "
            f"({result['engine_module']})",
        )
    )
    print(row("workload", spec.describe()))
    print(row("rust batches / orders / lines", f"{n} / {orders:,} / {lines:,}"))
    print("  provisioned engine (order store reserved at start, as the service does):")
    print(row("  apply time", f"{total:.3f} s"))
    print(row("  orders/s", f"{orders / total:,.0f}"))
    print(row("  lines/s", f"{lines_per_s:,.0f}  {target(lines_per_s)}"))
    print(row("  CPU in apply: user / system", f"{cpu.user:.2f} s / {cpu.system:.2f} s"))
    print(
        row(
            "  batch latency ms p50 / p99 / max",
            "{p50:.2f} / {p99:.2f} / {max:.2f}".format(**result["batch_ms"]),
        )
    )
    print(row("  reservation (not timed)", f"{orders:,} orders in {cpu.reserve_seconds:.2f} s"))
    print("  growing engine (order store grows as orders arrive):")
    print(row("  lines/s", f"{growing_lines_per_s:,.0f}  {target(growing_lines_per_s)}"))
    print(
        row(
            "  CPU in apply: user / system",
            f"{growing_cpu.user:.2f} s / {growing_cpu.system:.2f} s "
            "(system: page faults of the growing state)",
        )
    )
    print(row("  outputs identical to the provisioned run", str(runs_match)))
    print(row(f"reference lines/s (first {k} batches)", f"{reference_lines_per_s:,.0f}"))
    print(
        row(
            f"rust lines/s (same {k} batches)",
            f"{rust_k_lines_per_s:,.0f}  (median of {len(rust_k_times)} fresh engines: "
            f"{min(rust_k_times) * 1e3:.1f}-{max(rust_k_times) * 1e3:.1f} ms)",
        )
    )
    print(
        row(
            "speedup vs reference",
            f"{speedup:,.1f}x  "
            f"(target {TARGET_SPEEDUP:.0f}x: {verdict[speedup >= TARGET_SPEEDUP]})",
        )
    )
    print(row("outputs identical on those batches", str(outputs_match)))
    print(row("outcomes (reference batches)", ", ".join(f"{k}={v}" for k, v in outcomes.items())))
    print(row("written", str(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
