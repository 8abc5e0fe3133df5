"""Compare builds of the engine batch by batch, in one process.

    python bench/batch_ab.py BASE [HEAD] [--also REF ...] [--batches N]
                             [--modes fresh,reserved] [--out bench/results/batch_ab.json]

`bench/core_ab.py` alternates whole `core_bench` runs, each ~10 s; on the development
VM the speed of the same run moves by a third within minutes, so a small change needs
many runs to show. This loads the builds of the engine extension into one process
(BASE from a detached worktree, HEAD the working tree unless given, both portable and
without a profile; each may also be a .so file), gives each its own engine with the
same setup, and applies every timed batch of the standard workload to each, one right
after the other, in rotation (batch i starts with build i mod n). All applies of a batch run within
tens of ms, so a slow stretch of the VM lands on all of them: the figure is the
per-batch ratio of each build's apply time to BASE's, summarised by its median and
geometric mean with a bootstrap 95 % interval over batches. Outputs are compared
with BASE's byte for byte. With `--also`, three or more builds in one run show whether
pairwise ratios compose (separate runs have disagreed by ~10 %: docs/engine.md).

The engines share the CPU caches and the memory bandwidth, so absolute figures here
are lower than `core_bench`'s; the ratio is what this is for. A change that relies
on the caches holding more of one engine's state may show less here than alone:
confirm with `make bench-core-ab`.
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

from core_ab import (  # noqa: E402
    AB_BATCHES,
    build_engine,
    plain_build_of_this_tree,
    resolve,
    this_build,
    write_summary,
)
from core_bench import (  # noqa: E402
    BatchSource,
    add_workload_size_arguments,
    import_engine,
    pin_to_one_core,
    progress,
    progress_done,
    quiesce_gc,
    setup,
)
from workloads import StandardWorkload, WorkloadSpec  # noqa: E402

MODES = ("fresh", "reserved")
# Resamples for the bootstrap interval of the mean log-ratio: enough for a stable
# 2.5th and 97.5th percentile, a second or two of Python.
BOOTSTRAP_RESAMPLES = 2000
# Orders reserved per engine in the reserved mode: every order the run creates.
RESERVE_SLACK = 1.05


@dataclass
class Side:
    """One build's engine and what its applies cost."""

    label: str
    engine: Any
    seconds: list[float] = field(default_factory=list)
    user: float = 0.0
    system: float = 0.0

    def apply(self, data: bytes) -> Any:
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        out = self.engine.apply(data)
        elapsed = time.perf_counter() - t0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        self.user += usage1.ru_utime - usage0.ru_utime
        self.system += usage1.ru_stime - usage0.ru_stime
        self.seconds.append(elapsed)
        return out


def bootstrap_interval(log_ratios: list[float], seed: int) -> tuple[float, float]:
    """A 95 % bootstrap interval of the geometric mean ratio (resampling batches)."""
    rng = random.Random(seed)
    n = len(log_ratios)
    means = sorted(sum(rng.choices(log_ratios, k=n)) / n for _ in range(BOOTSTRAP_RESAMPLES))
    low = means[int(0.025 * BOOTSTRAP_RESAMPLES)]
    high = means[int(0.975 * BOOTSTRAP_RESAMPLES) - 1]
    return math.exp(low), math.exp(high)


def ratio_summary(base: Side, other: Side, seed: int) -> dict[str, Any]:
    """Per-batch apply time of `other` over `base`: median, geometric mean with its
    bootstrap interval, and the share of batches `other` was faster on."""
    log_ratios = [math.log(o / b) for b, o in zip(base.seconds, other.seconds, strict=True)]
    low, high = bootstrap_interval(log_ratios, seed)
    ratios = [math.exp(r) for r in log_ratios]
    return {
        "median": statistics.median(ratios),
        "geometric_mean": math.exp(statistics.fmean(log_ratios)),
        "geometric_mean_95": [low, high],
        "faster_share": sum(r < 1 for r in ratios) / len(ratios),
    }


def summarise(sides: list[Side], lines: int, seed: int) -> dict[str, Any]:
    """The comparison of one mode: totals per build and each build's per-batch ratio
    to the first (BASE); `head_over_base` is the second build's."""
    base = sides[0]
    over_base = {side.label: ratio_summary(base, side, seed) for side in sides[1:]}
    return {
        "batches": len(base.seconds),
        "head_over_base": over_base[sides[1].label],
        "over_base": over_base,
        "builds": {
            side.label: {
                "apply_s": sum(side.seconds),
                "lines_per_s": lines / sum(side.seconds),
                "median_batch_ms": statistics.median(side.seconds) * 1e3,
                "cpu_user_s": side.user,
                "cpu_system_s": side.system,
            }
            for side in sides
        },
    }


def run_mode(
    mode: str,
    modules: dict[str, Any],
    setup_batches: list[bytes],
    source: BatchSource,
    batches: int,
    compare: bool,
) -> tuple[list[Side], int]:
    """Applies `batches` timed batches to one engine of each build, in turn: batch i
    starts with build i mod n, so each build goes first, second, ... equally often.
    Returns the sides (BASE first) and how many batches' outputs differed from BASE's."""
    sides = [Side(label, module.Engine()) for label, module in modules.items()]
    for side in sides:
        setup(side.engine, setup_batches, f"{side.label} ({mode})")
    if mode == "reserved":
        orders = math.ceil(sum(b.orders for b in source.batches[:batches]) * RESERVE_SLACK)
        for side in sides:
            side.engine.reserve_orders(orders)
    quiesce_gc()
    base, head = sides[0], sides[1]
    mismatches = 0
    for i, batch in enumerate(source.batches[:batches]):
        first = i % len(sides)
        outs = {}
        for side in sides[first:] + sides[:first]:
            out = side.apply(batch.data)
            side.engine.commit(out.batch_seq)
            outs[side.label] = out
        if compare:
            expected = outs[base.label].encode()
            mismatches += any(outs[s.label].encode() != expected for s in sides[1:])
        if (i + 1) % 20 == 0 or i + 1 == batches:
            ratio = sum(head.seconds) / sum(base.seconds)
            progress(f"{mode}: batch {i + 1}/{batches}, head/base apply time {ratio:.3f}")
    progress_done(f"{mode}: {batches} batches on each build")
    return sides, mismatches


def built_module(ref: str | None) -> Path | None:
    """`ref` as a built extension module, if it names one (a .so file), else None."""
    if ref is not None and ref.endswith(".so") and Path(ref).is_file():
        return Path(ref)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "base", help="the commit to compare against, or a built extension (a .so file)"
    )
    parser.add_argument(
        "head", nargs="?", help="a commit or a .so file; default: the working tree's build"
    )
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="REF",
        help="a further build (commit or .so) run in the same rotation and compared with "
        "BASE too: three builds in one run show whether pairwise ratios compose",
    )
    parser.add_argument(
        "--batches", type=int, default=AB_BATCHES, help="timed batches (default: %(default)s)"
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated, of: fresh (a growing engine), reserved (order store "
        "reserved first); default: %(default)s",
    )
    parser.add_argument(
        "--no-compare", action="store_true", help="skip the byte-for-byte output comparison"
    )
    parser.add_argument(
        "--allow-same",
        action="store_true",
        help="let BASE and HEAD be one commit: an A/A run, which shows the method's own bias",
    )
    parser.add_argument("--seed", type=int, default=1, help="the workload's seed")
    add_workload_size_arguments(parser)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "batch_ab.json")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes takes a comma-separated list of {', '.join(MODES)}")
    if args.batches < 1:
        parser.error("--batches must be at least 1")

    print(f"batch_ab: {pin_to_one_core()}", file=sys.stderr)
    spec = WorkloadSpec(seed=args.seed, skus=args.skus, batch_size=args.batch_size)
    workload = StandardWorkload(spec)
    setup_batches = workload.setup_batches()
    source = BatchSource(workload)
    source.ensure(args.batches)
    lines = sum(b.lines for b in source.batches[: args.batches])

    summary: dict[str, Any] = {
        "benchmark": "batch_ab",
        "workload": spec.describe(),
        "batches": args.batches,
        "modes": {},
    }
    base_so, head_so = built_module(args.base), built_module(args.head)
    base_commit = None if base_so else resolve(args.base)
    head_commit = resolve(args.head) if args.head and not head_so else None
    base_name = base_commit or args.base
    head_name = head_commit or (args.head if head_so else this_build())
    if base_name == head_name:
        if not args.allow_same:
            parser.error("BASE and HEAD name the same build (--allow-same for an A/A run)")
        base_name, head_name = f"{base_name} (as base)", f"{head_name} (as head)"

    with tempfile.TemporaryDirectory(prefix="batch_ab-") as tmp_name:
        tmp = Path(tmp_name)
        for part in ("base", "head"):
            (tmp / part).mkdir()
        base_module = import_engine(base_so or build_engine(str(base_commit), tmp / "base"))
        head_path = (
            build_engine(head_commit, tmp / "head")
            if head_commit
            else head_so or plain_build_of_this_tree()
        )
        head_module = import_engine(head_path)
        modules = {base_name: base_module, head_name: head_module}
        for k, ref in enumerate(args.also):
            so = built_module(ref)
            name = ref if so else resolve(ref)
            if name in modules:
                parser.error(f"{ref} is already one of the builds compared")
            (tmp / f"also-{k}").mkdir()
            modules[name] = import_engine(so or build_engine(name, tmp / f"also-{k}"))
        summary["base"], summary["head"] = base_name, head_name
        summary["builds"] = list(modules)
        for mode in modes:
            sides, mismatches = run_mode(
                mode, modules, setup_batches, source, args.batches, not args.no_compare
            )
            result = summarise(sides, lines, args.seed)
            result["output_mismatches"] = None if args.no_compare else mismatches
            summary["modes"][mode] = result

    print(f"batch_ab: against {base_name}, {args.batches} batches, builds in rotation")
    for mode, result in summary["modes"].items():
        for label, r in result["over_base"].items():
            low, high = r["geometric_mean_95"]
            print(
                f"  {mode:9} {label} / base, apply time per batch: median {r['median']:.3f}, "
                f"geometric mean {r['geometric_mean']:.3f} (95 % {low:.3f}-{high:.3f}), "
                f"faster on {r['faster_share']:.0%} of batches"
            )
        for label, b in result["builds"].items():
            print(
                f"  {'':9} {label:28} {b['lines_per_s'] / 1e6:.2f} M lines/s, median batch "
                f"{b['median_batch_ms']:.2f} ms, CPU user/system {b['cpu_user_s']:.2f}/"
                f"{b['cpu_system_s']:.2f} s"
            )
        if result["output_mismatches"]:
            print(f"  {mode:9} OUTPUTS DIFFER on {result['output_mismatches']} batches")
    write_summary(args.out, summary)
    mismatched = any(r["output_mismatches"] for r in summary["modes"].values())
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
