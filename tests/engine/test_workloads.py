"""The benchmark workload (bench/workloads.py): hand-encoded bytes are valid and canonical,
reproducible, and both engines agree on them."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import pytest
from core_bench import import_engine
from engine_helpers import rust_engine_module
from reference.model import ReferenceEngine
from workloads import StandardWorkload, WorkloadSpec, f_int, varint

from server import engine_build
from server.gen.orders.engine.v1 import engine_pb2

ROOT = Path(__file__).resolve().parents[2]

SMALL = WorkloadSpec(
    seed=7, skus=60, locations=3, batch_size=50, setup_batch_size=40, body_pool=256
)


def test_varint_matches_protobuf() -> None:
    for value in (0, 1, 127, 128, 300, 16_383, 16_384, 2**40, -1, -(10**12)):
        msg = engine_pb2.EngineBatch(now_unix_ms=value)
        assert f_int(1, value) == msg.SerializeToString(), value
    assert varint(150) == b"\x96\x01"


def test_batches_are_canonical_protobuf() -> None:
    workload = StandardWorkload(SMALL)
    setup = workload.setup_batches()
    # region + locations, then 60 x 3 SetStock in batches of 40
    assert len(setup) == 1 + 5
    for data in setup:
        assert engine_pb2.EngineBatch.FromString(data).SerializeToString() == data
    stream = workload.order_batches()
    for _ in range(3):
        batch = next(stream)
        msg = engine_pb2.EngineBatch.FromString(batch.data)
        assert msg.SerializeToString() == batch.data
        assert len(msg.commands) == batch.orders == SMALL.batch_size
        assert sum(len(c.create_order.lines) for c in msg.commands) == batch.lines
        for c in msg.commands:
            skus = [x.sku for x in c.create_order.lines]
            assert len(set(skus)) == len(skus) and 1 <= len(skus) <= 5


def test_workload_is_reproducible() -> None:
    a, b = StandardWorkload(SMALL), StandardWorkload(SMALL)
    assert a.setup_batches() == b.setup_batches()
    sa, sb = a.order_batches(), b.order_batches()
    assert [next(sa).data for _ in range(3)] == [next(sb).data for _ in range(3)]


@pytest.mark.parametrize("seed", [1, 2])
def test_engines_agree_on_the_workload(seed: int) -> None:
    spec = WorkloadSpec(
        seed=seed,
        skus=40,
        locations=4,
        batch_size=200,
        setup_batch_size=64,
        body_pool=512,
        normal_on_hand=(0, 12),  # scarce: rejections, splits and backorders happen
    )
    workload = StandardWorkload(spec)
    rust = rust_engine_module().Engine()
    ref = ReferenceEngine()
    stream = workload.order_batches()
    for data in [*workload.setup_batches(), *(next(stream).data for _ in range(4))]:
        out = rust.apply(data)
        assert engine_pb2.EngineBatchResult.FromString(
            out.encode()
        ) == engine_pb2.EngineBatchResult.FromString(ref.apply(data))
        rust.commit(out.batch_seq)
        ref.commit(ref.batch_seq)
    rust.check_invariants()
    ref.check_invariants()


def test_the_engine_loaded_is_the_build_chosen_for_this_cpu() -> None:
    """`make build` builds the x86-64-v4 engine too on x86-64 hosts, and a CPU that can
    run it gets it (server/engine_build.py)."""
    module = rust_engine_module()
    assert engine_build.loaded_build(module) == engine_build.chosen_build()
    flags = engine_build.cpu_flags(Path("/proc/cpuinfo").read_text())
    can_run = platform.machine() == "x86_64" and engine_build.WIDE_CPU_FLAGS.issubset(flags)
    if can_run and os.environ.get(engine_build.ENV_VAR, engine_build.AUTO) == engine_build.AUTO:
        assert engine_build.WIDE_PATH.is_file(), "make build did not build the v4 engine"
        assert engine_build.loaded_build(module) == engine_build.WIDE


def test_every_build_was_compiled_with_the_profile_of_this_tree() -> None:
    """`make build` compiles the engine with a profile trained on the tree's own
    sources (deploy/build_engine.sh), or without one when ENGINE_PGO=0. A build with
    another tree's profile, or none when one was asked for, fails here."""
    key = subprocess.run(
        ["bash", str(ROOT / "deploy" / "build_engine.sh"), "--key"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert len(key) == 16
    expected = "none" if os.environ.get("ENGINE_PGO") == "0" else f"engine-{key}"
    # The build chosen for this CPU first: once the portable file is loaded under the
    # module's name, `import server._engine` would return it whatever the choice.
    assert expected == rust_engine_module().BUILD_PROFILE
    baseline = import_engine(engine_build.BASELINE_PATH)
    assert expected == baseline.BUILD_PROFILE


def test_both_builds_give_identical_results() -> None:
    """The x86-64-v4 build is the same engine: byte-identical outputs and snapshots
    on a scarce workload (rejections, splits, backorders)."""
    if engine_build.chosen_build() != engine_build.WIDE:
        pytest.skip("this CPU or checkout has no x86-64-v4 engine to compare")
    wide = rust_engine_module()
    assert engine_build.loaded_build(wide) == engine_build.WIDE
    # The portable build, loaded from its file beside the package's.
    baseline = import_engine(engine_build.BASELINE_PATH)
    assert engine_build.loaded_build(baseline) == engine_build.BASELINE
    spec = WorkloadSpec(
        seed=3,
        skus=40,
        locations=4,
        batch_size=300,
        setup_batch_size=64,
        body_pool=512,
        normal_on_hand=(0, 12),
    )
    workload = StandardWorkload(spec)
    engines = [wide.Engine(), baseline.Engine()]
    stream = workload.order_batches()
    for data in [*workload.setup_batches(), *(next(stream).data for _ in range(6))]:
        outputs = [engine.apply(data) for engine in engines]
        assert outputs[0].encode() == outputs[1].encode()
        for engine, out in zip(engines, outputs, strict=True):
            engine.commit(out.batch_seq)
    assert engines[0].snapshot() == engines[1].snapshot()
