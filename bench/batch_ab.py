"""Compare two builds of the engine batch by batch, in one process.

    python bench/batch_ab.py BASE [HEAD] [--batches N] [--modes fresh,reserved]
                             [--out bench/results/batch_ab.json]

`bench/core_ab.py` alternates whole `core_bench` runs, each ~10 s; on the development
VM the speed of the same run moves by a third within minutes, so a small change needs
many runs to show. This loads both builds of the engine extension into one process
(BASE from a detached worktree, HEAD the working tree's `make build` unless given),
gives each its own engine with the same setup, and applies every timed batch of the
standard workload to both, one right after the other (BASE first on even batches,
HEAD first on odd ones). Both applies of a batch run within ~10 ms of each other, so a
slow stretch of the VM lands on both: the figure is the per-batch ratio of HEAD's
apply time to BASE's, summarised by its median and geometric mean with a bootstrap
95 % interval over batches. Outputs of both builds are compared byte for byte.

Two engines share the CPU caches and the memory bandwidth, so absolute figures here
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

from core_ab import AB_BATCHES, build_engine, resolve, this_build, write_summary  # noqa: E402
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


def summarise(base: Side, head: Side, lines: int, seed: int) -> dict[str, Any]:
    """The comparison of one mode: totals per build and the per-batch ratio."""
    log_ratios = [math.log(h / b) for b, h in zip(base.seconds, head.seconds, strict=True)]
    low, high = bootstrap_interval(log_ratios, seed)
    ratios = [math.exp(r) for r in log_ratios]
    return {
        "batches": len(ratios),
        "head_over_base": {
            "median": statistics.median(ratios),
            "geometric_mean": math.exp(statistics.fmean(log_ratios)),
            "geometric_mean_95": [low, high],
            "head_faster_share": sum(r < 1 for r in ratios) / len(ratios),
        },
        "builds": {
            side.label: {
                "apply_s": sum(side.seconds),
                "lines_per_s": lines / sum(side.seconds),
                "median_batch_ms": statistics.median(side.seconds) * 1e3,
                "cpu_user_s": side.user,
                "cpu_system_s": side.system,
            }
            for side in (base, head)
        },
    }


def run_mode(
    mode: str,
    modules: dict[str, Any],
    setup_batches: list[bytes],
    source: BatchSource,
    batches: int,
    compare: bool,
) -> tuple[Side, Side, int]:
    """Applies `batches` timed batches to one engine of each build, alternately."""
    base, head = (Side(label, module.Engine()) for label, module in modules.items())
    for side in (base, head):
        setup(side.engine, setup_batches, f"{side.label} ({mode})")
    if mode == "reserved":
        orders = math.ceil(sum(b.orders for b in source.batches[:batches]) * RESERVE_SLACK)
        for side in (base, head):
            side.engine.reserve_orders(orders)
    quiesce_gc()
    mismatches = 0
    for i, batch in enumerate(source.batches[:batches]):
        order = (base, head) if i % 2 == 0 else (head, base)
        outs = {}
        for side in order:
            out = side.apply(batch.data)
            side.engine.commit(out.batch_seq)
            outs[side.label] = out
        if compare and outs[base.label].encode() != outs[head.label].encode():
            mismatches += 1
        if (i + 1) % 20 == 0 or i + 1 == batches:
            ratio = sum(head.seconds) / sum(base.seconds)
            progress(f"{mode}: batch {i + 1}/{batches}, head/base apply time {ratio:.3f}")
    progress_done(f"{mode}: {batches} batches on each build")
    return base, head, mismatches


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
        head_path = build_engine(head_commit, tmp / "head") if head_commit else head_so
        head_module = import_engine(head_path)
        modules = {base_name: base_module, head_name: head_module}
        summary["base"], summary["head"] = base_name, head_name
        for mode in modes:
            base, head, mismatches = run_mode(
                mode, modules, setup_batches, source, args.batches, not args.no_compare
            )
            result = summarise(base, head, lines, args.seed)
            result["output_mismatches"] = None if args.no_compare else mismatches
            summary["modes"][mode] = result

    print(f"batch_ab: {head_name} against {base_name}, {args.batches} batches, alternating")
    for mode, result in summary["modes"].items():
        r = result["head_over_base"]
        low, high = r["geometric_mean_95"]
        print(
            f"  {mode:9} head/base apply time per batch: median {r['median']:.3f}, "
            f"geometric mean {r['geometric_mean']:.3f} (95 % {low:.3f}-{high:.3f}), "
            f"head faster on {r['head_faster_share']:.0%} of batches"
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
