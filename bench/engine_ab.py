"""Compare the engine of two commits on the Rust-only replay, interleaved.

    python bench/engine_ab.py BASE [--runs N] [--replay DIR] [--out bench/results/engine_ab.json]

`core_ab.py` compares builds through the Python binding; this compares them in Rust
alone, on exactly the batches `make bench-core` times: `bench_engine` with
`BENCH_REPLAY` (see docs/engine.md, Performance). It builds the `bench_engine`
example of BASE in a detached worktree and of the working tree, then runs the two
alternately (each round in the other order than the one before), each round once on
a fresh engine and once with the order store reserved (`BENCH_RESERVE=1`), pinned to
CPU 0. It prints the median, mean and range of the apply time, of the median batch
time (which a short disturbance of the VM does not move) and of user and system CPU,
per build and mode.

The replayed batches come from `--replay DIR` (written by `core_bench.py
--dump-batches DIR`), or are dumped once into a temporary directory first (644
batches, as `core_ab.py` uses).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

from core_ab import (  # noqa: E402
    AB_BATCHES,
    build_in_worktree,
    resolve,
    round_order,
    this_build,
    write_summary,
)

EXAMPLE = "examples/bench_engine"
MODES = {"fresh": {}, "reserved": {"BENCH_RESERVE": "1"}}

# What bench_engine prints, and the figure each line gives.
PATTERNS: dict[str, re.Pattern[str]] = {
    "apply_s": re.compile(r"^apply \(.*\): ([0-9.]+) s", re.M),
    "median_batch_ms": re.compile(r"^MEDIAN BATCH: ([0-9.]+) ms", re.M),
    "user_s": re.compile(r"^CPU: ([0-9.]+) s user", re.M),
    "system_s": re.compile(r"^CPU: .*, ([0-9.]+) s system", re.M),
}


def parse_run(output: str) -> dict[str, float]:
    """The figures of one bench_engine run; every one must be there."""
    figures = {}
    for name, pattern in PATTERNS.items():
        found = pattern.search(output)
        if found is None:
            raise ValueError(f"bench_engine printed no {name}:\n{output[-2000:]}")
        figures[name] = float(found.group(1))
    return figures


def build_this_tree() -> Path:
    """The working tree's bench_engine (cargo's own target directory)."""
    print("building bench_engine of the working tree", file=sys.stderr)
    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "--example", "bench_engine"],
        cwd=ROOT,
        check=True,
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / EXAMPLE


def dump_batches(directory: Path) -> None:
    print(f"dumping the standard workload's {AB_BATCHES} batches", file=sys.stderr)
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "core_bench.py"),
            "--batches",
            str(AB_BATCHES),
            "--reference-batches",
            "1",
            "--dump-batches",
            str(directory),
            "--out",
            str(directory / "core.json"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def run_once(binary: Path, replay: Path, mode_env: dict[str, str]) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    env.update(mode_env, BENCH_REPLAY=str(replay))
    completed = subprocess.run(
        ["taskset", "-c", "0", str(binary)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_run(completed.stdout + completed.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("base", help="the commit to compare against")
    parser.add_argument("--runs", type=int, default=6, help="rounds (each build, each mode)")
    parser.add_argument("--replay", type=Path, metavar="DIR", help="batches to replay")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "engine_ab.json")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    with tempfile.TemporaryDirectory(prefix="engine_ab-") as tmp:
        work = Path(tmp)
        replay = args.replay
        if replay is None:
            replay = work / "batches"
            dump_batches(replay)
        base = resolve(args.base)
        builds = {
            base: build_in_worktree(base, work, ["--example", "bench_engine"], EXAMPLE),
            this_build(): build_this_tree(),
        }
        results: dict[str, dict[str, list[dict[str, float]]]] = {
            name: {mode: [] for mode in MODES} for name in builds
        }
        for run in range(1, args.runs + 1):
            for name in round_order(list(builds), run):
                binary = builds[name]
                for mode, mode_env in MODES.items():
                    print(f"engine_ab: round {run}/{args.runs}: {name}, {mode}", file=sys.stderr)
                    results[name][mode].append(run_once(binary, replay, mode_env))

    summary: dict[str, Any] = {"benchmark": "engine_ab", "runs": args.runs, "builds": results}
    print(f"engine_ab: {args.runs} alternating bench_engine replay(s) per build and mode")
    print(f"  {'':28}" + "".join(f"{name:>34}" for name in builds))
    for mode in MODES:
        for figure in PATTERNS:
            cells = []
            for name in builds:
                values = [r[figure] for r in results[name][mode]]
                median, mean = statistics.median(values), statistics.fmean(values)
                cells.append(f"{median:.3f} / {mean:.3f} ({min(values):.3f}-{max(values):.3f})")
            print(f"  {mode + ' ' + figure:28}" + "".join(f"{cell:>34}" for cell in cells))
    print("  (median / mean (range))")
    write_summary(args.out, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
