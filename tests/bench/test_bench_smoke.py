"""Fast correctness checks of the benchmark tooling (no performance assertions).

The load generator runs for about a second against the bare echo server and must produce
a well-formed result; the report must render from a tiny fake result. No stack needed.
"""

from __future__ import annotations

import importlib
import json
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

from loadgen import Workload, percentile  # noqa: E402

from server import engine_build  # noqa: E402
from server.gen.orders.engine.v1 import engine_pb2  # noqa: E402
from server.gen.orders.v1 import orders_pb2  # noqa: E402

EXPECTED_KEYS = {
    "scenario", "target", "concurrency", "duration_s", "requests", "ok", "errors_by_code",
    "orders_per_s", "p50_ms", "p95_ms", "p99_ms", "timeline",
}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def echo_target() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(BENCH / "echo_server.py"), "--listen", f"127.0.0.1:{port}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=15)
        yield target
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_loadgen_against_echo_writes_a_complete_result(echo_target: str, tmp_path: Path) -> None:
    out = tmp_path / "echo.json"
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            str(BENCH / "loadgen.py"),
            "--target",
            echo_target,
            "--kind",
            "echo",
            "--scenario",
            "smoke",
            "--concurrency",
            "8",
            "--channels",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    assert time.monotonic() - started < 30
    result = json.loads(out.read_text())
    assert set(result) >= EXPECTED_KEYS
    assert result["scenario"] == "smoke"
    assert result["ok"] > 0 and result["requests"] >= result["ok"]
    assert result["orders_per_s"] > 0
    assert result["errors_by_code"] == {}
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert result["timeline"] and all(len(row) == 5 for row in result["timeline"])
    assert sum(row[1] for row in result["timeline"]) == result["ok"]


def test_workload_bytes_are_valid_create_requests() -> None:
    workload = Workload(kind="batch", skus=50, hot_share=0.5, batch_size=3)
    workload.prepare()
    op, method, payload = workload.next_call()
    assert (op, method) == ("batch", "/orders.v1.OrderService/BatchCreateOrders")
    batch = orders_pb2.BatchCreateOrdersRequest.FromString(payload)
    assert len(batch.requests) == 3
    assert len({r.request_id for r in batch.requests}) == 3
    for request in batch.requests:
        assert request.region == "bench" and 1 <= len(request.lines) <= 3
        assert len({line.sku for line in request.lines}) == len(request.lines)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 99) == 0.0


def test_report_renders_markdown_and_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from report import write_report

    fake = {
        "scenario": "service_steady", "kind": "create", "concurrency": 4, "duration_s": 2,
        "requests": 10, "ok": 9, "errors_by_code": {"UNAVAILABLE": 1}, "orders_per_s": 4.5,
        "calls_per_s": 4.5, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "oversold_units": 0,
        "timeline": [[0, 5, 0, 1.0, 2.0], [1, 4, 1, 1.5, 3.0]],
    }  # fmt: skip
    (tmp_path / "service_steady.json").write_text(json.dumps(fake))
    summary = {
        "mode": "quick",
        "machine": {"cpu_count": 2},
        "checks": {"unary_vs_echo": {"value": 0.8, "target": ">= 0.75", "pass": True}},
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    report = write_report(tmp_path)
    text = report.read_text()
    assert "service_steady" in text and "unary_vs_echo" in text
    for name in ("throughput.png", "latency.png"):
        png = (tmp_path / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 1000


def test_core_bench_runs_and_checks_its_outputs(tmp_path: Path) -> None:
    """A tiny run of `make bench-core`'s script: it must finish, write the fields the
    issue asks for, and find the Rust outputs equal to the reference model's and the
    provisioned run's equal to the growing run's. The speedup divides by the median of the
    fresh engines' times on the reference's batches. The batches it dumps for
    bench_engine's replay are exactly the ones it timed."""
    out = tmp_path / "core.json"
    dump = tmp_path / "batches"
    args = ["--skus", "2000", "--batch-size", "256", "--seconds", "0.2"]
    args += ["--reference-batches", "1", "--out", str(out), "--dump-batches", str(dump)]
    args += ["--speedup-runs", "3"]
    run_core_bench(args)
    result = json.loads(out.read_text())
    assert result["workload"]["spec"]["skus"] == 2000
    reference = result["reference"]
    assert len(reference["rust_seconds_runs"]) == 3
    assert reference["rust_seconds_same_batches"] == sorted(reference["rust_seconds_runs"])[1]
    assert result["speedup_vs_reference"] == pytest.approx(
        reference["seconds"] / reference["rust_seconds_same_batches"]
    )
    for key in ("orders_per_s", "lines_per_s", "speedup_vs_reference"):
        assert result[key] > 0, key
    assert result["reference"]["outputs_match"] is True
    assert result["growing"]["outputs_match_provisioned_run"] is True
    assert result["growing"]["lines_per_s"] > 0
    # The headline is the provisioned run: reserved for exactly the orders it timed.
    assert result["provisioned"]["reserve_orders"] == result["orders"]
    # The build `import server._engine` chose for this CPU (server/engine_build.py).
    assert result["engine_build"] == engine_build.chosen_build()
    assert result["engine_profile"] == importlib.import_module("server._engine").BUILD_PROFILE
    assert result["lines_per_s"] == pytest.approx(result["lines"] / result["apply_seconds"])
    assert result["targets"]["lines_per_s_pass"] == (result["lines_per_s"] >= 5e6)
    assert result["orders"] >= 256
    timed = read_framed((dump / "timed.bin").read_bytes())
    assert len(timed) == result["batches"]
    timed_orders = sum(len(engine_pb2.EngineBatch.FromString(b).commands) for b in timed)
    assert timed_orders == result["orders"]
    setup = read_framed((dump / "setup.bin").read_bytes())
    assert setup and all(engine_pb2.EngineBatch.FromString(b).commands for b in setup)


def test_core_series_summarises_every_run(tmp_path: Path) -> None:
    """`make bench-core-series`: N core_bench runs, each kept, and their median, range
    and target counts computed from exactly those runs."""
    out = tmp_path / "series.json"
    # A run file left by an earlier, longer series is not one of this series' runs.
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "run-4.json").write_text("{}")
    args = [sys.executable, str(BENCH / "core_series.py"), "--runs", "3", "--out", str(out)]
    args += ["--skus", "500", "--batch-size", "64", "--seconds", "0.05"]
    args += ["--reference-batches", "1", "--speedup-runs", "1"]
    subprocess.run(args, check=True, cwd=ROOT, timeout=300)
    summary = json.loads(out.read_text())
    runs = [json.loads((out.parent / f).read_text()) for f in summary["run_files"]]
    assert len(runs) == summary["runs"] == 3
    lines = summary["figures"]["lines_per_s"]
    assert lines["runs"] == [r["lines_per_s"] for r in runs]
    assert lines["median"] == sorted(lines["runs"])[1]
    assert lines["min"] <= lines["median"] <= lines["max"]
    assert lines["runs_meeting_target"] == sum(v >= 5e6 for v in lines["runs"])
    growing = summary["figures"]["growing_lines_per_s"]["runs"]
    assert growing == [r["growing"]["lines_per_s"] for r in runs]
    assert summary["run_timestamps"] == [r["timestamp"] for r in runs]
    assert sorted(p.name for p in (tmp_path / "series").iterdir()) == [
        "run-1.json",
        "run-2.json",
        "run-3.json",
    ]
    assert summary["engine_profile"] == runs[0]["engine_profile"]


def test_core_bench_loads_another_build_of_the_engine(tmp_path: Path) -> None:
    """`--engine-module` (what `bench/core_ab.py` runs older commits' engines with)
    benchmarks the shared library at that path, under another file name than the
    package's, and says so in its result."""
    import server._engine as built

    module = tmp_path / "lib_engine.so"
    shutil.copy(built.__file__, module)
    out = tmp_path / "core.json"
    args = ["--skus", "500", "--batch-size", "128", "--seconds", "0.1"]
    args += ["--reference-batches", "1", "--out", str(out), "--engine-module", str(module)]
    run_core_bench(args)
    result = json.loads(out.read_text())
    assert result["engine_module"] == str(module)
    assert result["engine_build"] == built.BUILD_CPU_LEVEL
    assert result["engine_profile"] == built.BUILD_PROFILE
    assert result["reference"]["outputs_match"] is True
    assert result["lines_per_s"] > 0


def test_core_bench_applies_exactly_the_batches_asked_for(tmp_path: Path) -> None:
    """`--batches N` (what `bench/core_ab.py` compares builds with) times exactly N
    batches in the growing run and the same N in the provisioned run, however long they take."""
    out = tmp_path / "core.json"
    args = ["--skus", "500", "--batch-size", "64", "--seconds", "0.001", "--batches", "7"]
    args += ["--reference-batches", "1", "--out", str(out)]
    run_core_bench(args)
    result = json.loads(out.read_text())
    assert result["batches"] == 7
    assert result["orders"] == 7 * 64
    assert result["growing"]["outputs_match_provisioned_run"] is True
    assert result["growing"]["lines_per_s"] > 0
    assert result["batches_requested"] == 7


def test_comparisons_alternate_which_build_runs_first() -> None:
    """`core_ab` and `engine_ab` run the builds in the other order every round."""
    from core_ab import round_order

    orders = [round_order(["base", "head"], run) for run in range(1, 5)]
    assert orders == [["base", "head"], ["head", "base"], ["base", "head"], ["head", "base"]]


def test_engine_ab_reads_every_figure_of_a_real_replay(tmp_path: Path) -> None:
    """`bench/engine_ab.py` parses what `bench_engine` prints: this builds the working
    tree's bench_engine, replays a tiny dump of the standard workload through it in both
    modes, and reads each figure; a run missing a figure is an error, not a zero."""
    import engine_ab

    dump = tmp_path / "batches"
    # Enough orders (~1 ms of apply) for the 3-decimal figures not to round to 0.
    args = ["--skus", "1000", "--batch-size", "512", "--seconds", "0.001", "--batches", "8"]
    args += ["--reference-batches", "1", "--out", str(tmp_path / "core.json")]
    run_core_bench([*args, "--dump-batches", str(dump)])
    binary = engine_ab.build_this_tree()
    for mode_env in engine_ab.MODES.values():
        figures = engine_ab.run_once(binary, dump, mode_env)
        assert set(figures) == set(engine_ab.PATTERNS)
        assert figures["apply_s"] > 0 and figures["median_batch_ms"] > 0
    with pytest.raises(ValueError, match="median_batch_ms"):
        engine_ab.parse_run("apply (decode): 1.0 s\nCPU: 1.0 s user (x), 0.1 s system (y)\n")


def test_served_locations_tallies_a_dumped_workload(tmp_path: Path) -> None:
    """`bench/served_locations.py` replays a dump and prints, for the batches it
    reports, shares of the orders by serving location that add up to about 100 %."""
    dump = tmp_path / "batches"
    args = ["--skus", "500", "--batch-size", "64", "--seconds", "0.001", "--batches", "5"]
    args += ["--reference-batches", "1", "--out", str(tmp_path / "core.json")]
    run_core_bench([*args, "--dump-batches", str(dump)])
    completed = subprocess.run(
        [sys.executable, str(BENCH / "served_locations.py"), str(dump), "--every", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = completed.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["batch 0", "batch 2", "batch 4"]
    for line in lines:
        shares = [int(part.split()[-2]) for part in line.split(": ")[1].split(", ")]
        assert 97 <= sum(shares) <= 103, line


def run_core_bench(args: list[str]) -> None:
    """Runs bench/core_bench.py with `args`; it must succeed."""
    completed = subprocess.run(
        [sys.executable, str(BENCH / "core_bench.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]


def read_framed(data: bytes) -> list[bytes]:
    """The batches of a --dump-batches file: each after its 4-byte little-endian length."""
    batches = []
    at = 0
    while at < len(data):
        (length,) = struct.unpack_from("<I", data, at)
        batches.append(data[at + 4 : at + 4 + length])
        at += 4 + length
    assert at == len(data)
    return batches


def test_batch_ab_runs_two_builds_in_one_process(tmp_path: Path) -> None:
    """`bench/batch_ab.py` loads two builds of the engine (here two copies of the built
    one, under other names) into one process, applies every batch to both in both modes,
    finds their outputs equal and reports a per-batch time ratio for each mode."""
    import server._engine as built

    copies = []
    for name in ("base.so", "head.so"):
        copies.append(tmp_path / name)
        shutil.copy(built.__file__, copies[-1])
    out = tmp_path / "batch_ab.json"
    args = [str(BENCH / "batch_ab.py"), *map(str, copies), "--batches", "6"]
    args += ["--skus", "500", "--batch-size", "64", "--out", str(out)]
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True)
    result = json.loads(out.read_text())
    assert set(result["modes"]) == {"fresh", "reserved"}
    for mode in result["modes"].values():
        assert mode["batches"] == 6 and mode["output_mismatches"] == 0
        ratio = mode["head_over_base"]
        low, high = ratio["geometric_mean_95"]
        assert 0 < low <= ratio["geometric_mean"] <= high
        assert set(mode["builds"]) == {str(c) for c in copies}


class _FakeOutput:
    def __init__(self, seq: int, payload: bytes) -> None:
        self.batch_seq, self._payload = seq, payload

    def encode(self) -> bytes:
        return self._payload


class _FakeEngine:
    """An engine whose output is the batch's bytes, plus `suffix` from batch `from_batch`
    on: two builds that disagree from some batch on."""

    def __init__(self, log: list[str], name: str, suffix: bytes = b"", from_batch: int = 0) -> None:
        self.log, self.name = log, name
        self.suffix, self.from_batch, self.applied, self.reserved = suffix, from_batch, 0, 0

    def apply(self, data: bytes) -> _FakeOutput:
        self.log.append(self.name)
        self.applied += 1
        extra = self.suffix if self.applied > self.from_batch else b""
        return _FakeOutput(self.applied, data + extra)

    def commit(self, seq: int) -> None:
        assert seq == self.applied

    def reserve_orders(self, orders: int) -> None:
        self.reserved = orders


def test_batch_ab_counts_batches_whose_outputs_differ() -> None:
    """Two builds whose outputs differ from the third batch on: `run_mode` counts the
    differing batches, applies every batch once to each, alternating which goes first,
    and reserves the run's orders (with slack) in the reserved mode."""
    import batch_ab
    from workloads import StandardWorkload, WorkloadSpec

    workload = StandardWorkload(WorkloadSpec(skus=200, batch_size=16))
    source = batch_ab.BatchSource(workload)
    source.ensure(5)
    log: list[str] = []
    engines = iter([_FakeEngine(log, "base"), _FakeEngine(log, "head", b"!", from_batch=2)])
    modules = {
        "base": type("M", (), {"Engine": lambda: next(engines)}),
        "head": type("M", (), {"Engine": lambda: next(engines)}),
    }
    (base, head), mismatches = batch_ab.run_mode("reserved", modules, [], source, 5, True)
    assert mismatches == 3
    assert len(base.seconds) == len(head.seconds) == 5
    assert log == ["base", "head", "head", "base"] * 2 + ["base", "head"]
    assert base.engine.reserved == head.engine.reserved >= 5 * 16
    summary = batch_ab.summarise([base, head], lines=100, seed=1)
    assert summary["batches"] == 5
    assert summary["builds"]["base"]["apply_s"] == pytest.approx(sum(base.seconds))
    assert summary["head_over_base"] == summary["over_base"]["head"]


def test_batch_ab_rotates_three_builds() -> None:
    """With a third build (`--also`), batch i starts with build i mod 3, every build
    applies every batch once, and each is compared with the first."""
    import batch_ab
    from workloads import StandardWorkload, WorkloadSpec

    source = batch_ab.BatchSource(StandardWorkload(WorkloadSpec(skus=200, batch_size=16)))
    source.ensure(4)
    log: list[str] = []
    modules = {
        name: type("M", (), {"Engine": lambda name=name: _FakeEngine(log, name)})
        for name in ("a", "b", "c")
    }
    sides, mismatches = batch_ab.run_mode("fresh", modules, [], source, 4, True)
    assert mismatches == 0
    assert log == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    summary = batch_ab.summarise(sides, lines=64, seed=1)
    assert set(summary["over_base"]) == {"b", "c"}


def test_pgo_training_runs_the_engine_it_is_given(tmp_path: Path) -> None:
    """`bench/pgo_train.py` (the training run of the profile-guided build, deploy/build_engine.sh)
    applies the workload to the build at the path it is given and exits cleanly."""
    import server._engine as built

    module = tmp_path / "lib_engine.so"
    shutil.copy(built.__file__, module)
    args = [str(BENCH / "pgo_train.py"), str(module), "--batches", "2"]
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True)


def test_pgo_training_reaches_every_command_and_outcome() -> None:
    """The profile-guided build lays out code the training never ran as cold, so the
    training must reach every EngineCommand kind (a kind added to the proto and not to
    bench/pgo_train.py fails here) and each outcome: success, invalid argument, not
    found, already exists, failed precondition, and the events of every transition."""
    import pgo_train
    from workloads import StandardWorkload, WorkloadSpec

    import server._engine as built

    spec = WorkloadSpec(seed=7, skus=200, batch_size=64)
    workload = StandardWorkload(spec)
    engine = built.Engine()
    kinds: set[str] = set()
    for data in workload.setup_batches():
        kinds.update(
            c.WhichOneof("command") for c in engine_pb2.EngineBatch.FromString(data).commands
        )
        engine.commit(engine.apply(data).batch_seq)
    allocated: list[str] = []
    batches = workload.order_batches()
    for _ in range(4):
        batch = next(batches)
        kinds.update(
            c.WhichOneof("command") for c in engine_pb2.EngineBatch.FromString(batch.data).commands
        )
        out = engine.apply(batch.data)
        engine.commit(out.batch_seq)
        allocated += pgo_train.allocated_order_ids(out)
    assert allocated

    rng = pgo_train.random.Random(1)
    codes: set[int] = set()
    subjects: set[str] = set()
    now = spec.start_unix_ms + 3_600_000
    for round_no in range(pgo_train.LIFECYCLE_ROUNDS):
        data = pgo_train.lifecycle_batch(spec, rng, allocated, round_no, now)
        kinds.update(
            c.WhichOneof("command") for c in engine_pb2.EngineBatch.FromString(data).commands
        )
        out = engine.apply(data)
        engine.commit(out.batch_seq)
        codes.update(code for code, _ in out.responses)
        subjects.update(subject for subject, _, _ in out.events)
        now += 60_000

    every_kind = {
        f.name for f in engine_pb2.EngineCommand.DESCRIPTOR.oneofs_by_name["command"].fields
    }
    assert kinds == every_kind
    ok, invalid, not_found, exists, precondition = 0, 3, 5, 6, 9
    assert {ok, invalid, not_found, exists, precondition} <= codes
    for status in ("allocated", "backordered", "confirmed", "shipped", "cancelled", "expired"):
        assert f"orders.v1.{status}" in subjects
    assert "inventory.v1.stock_changed" in subjects
