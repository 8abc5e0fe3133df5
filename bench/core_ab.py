"""Compare the engine of two commits on `core_bench`, interleaved.

    python bench/core_ab.py BASE [HEAD] [--runs N] [--batches N] [--out bench/results/core_ab.json]
                            [-- core_bench options]

Wall time on the development VM moves by a third within hours, so figures taken at
different times do not compare. This builds the engine extension of each commit (a
detached git worktree, `cargo rustc --release ... --crate-type cdylib`), then runs
`bench/core_bench.py --engine-module` for BASE, HEAD, HEAD, BASE, BASE, HEAD, ... (each
round in the other order than the one before, so neither build always runs first)
with the current harness and workload, the same number of batches each time
(`--batches`), and prints the median and range of each figure per commit.
HEAD defaults to the working tree, built the same way (portable, without the profile
`make build` compiles with, so that neither side has a gain the other lacks).
Both commits must have the current engine API (`Engine.reserve_orders`, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

from core_bench import git_commit  # noqa: E402

# Timed batches of every run: the same work for both builds. A run of a fixed time
# would give the faster build more batches, and later batches are slower (a larger
# state, emptier top locations), which hid part of its lead. 644 is about what
# `make bench-core` applies in its 3 s on the development VM.
AB_BATCHES = 644

# (label, path in core_bench's JSON, scale, unit)
FIGURES: list[tuple[str, tuple[str, ...], float, str]] = [
    ("lines/s, provisioned engine", ("lines_per_s",), 1e-6, "M"),
    ("lines/s, growing engine", ("growing", "lines_per_s"), 1e-6, "M"),
    # Per user-mode CPU second: time the VM's host takes the core away is not
    # counted here.
    ("lines per user CPU second, growing", ("growing", "lines_per_user_cpu_s"), 1e-6, "M"),
    ("system CPU per million orders, growing (s)", ("system_s_per_m_orders",), 1.0, ""),
    ("speedup vs reference", ("speedup_vs_reference",), 1.0, "x"),
]


def build_in_worktree(
    commit: str, work: Path, cargo_args: list[str], artifact: str, subcommand: str = "build"
) -> Path:
    """Runs `cargo <subcommand> --release <cargo_args>` on `commit` in a detached worktree
    under `work` and returns a copy of `artifact` (a path under the target's release
    directory), named after the commit."""
    tree = work / f"tree-{commit}"
    target = work / f"target-{commit}"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--force", str(tree), commit],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        print(f"building {artifact} of {commit}", file=sys.stderr)
        subprocess.run(
            ["cargo", subcommand, "--quiet", "--release", *cargo_args],
            cwd=tree,
            env={**os.environ, "CARGO_TARGET_DIR": str(target)},
            check=True,
        )
        copy = work / f"{commit}-{Path(artifact).name}"
        shutil.copy(target / "release" / artifact, copy)
        return copy
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True
        )


def round_order(names: list[str], run: int) -> list[str]:
    """The order of the builds in round `run` (from 1): as given in odd rounds,
    reversed in even ones. In a fixed order the position in a round cannot be told
    apart from the build; alternating spreads any position effect over both builds."""
    return names if run % 2 == 1 else names[::-1]


def build_engine(commit: str, work: Path) -> Path:
    """The engine extension of `commit` (its lib_engine.so), built as `make build`'s
    maturin builds it (the cdylib alone), without a profile. `cargo build --lib` also
    builds the rlib, which gave different machine code (1.4 % more text) and, in
    one-process A/A runs of bench/batch_ab.py, an engine 2-9 % faster than the one
    `make build` makes, so a comparison with the working tree's build was biased by
    how each was built."""
    return build_in_worktree(commit, work, ENGINE_CARGO_ARGS, "lib_engine.so", subcommand="rustc")


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Writes a comparison's JSON summary and says where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"  written {path}")


# The cargo arguments of the engine extension as `make build` compiles it.
ENGINE_CARGO_ARGS = ["-p", "core_rs", "--lib", "--features", "python", "--crate-type", "cdylib"]


def plain_build_of_this_tree() -> Path:
    """The working tree's engine built as BASE is: portable and without a profile.
    `make build`'s own engine is profile-guided (deploy/build_engine.sh), which BASE's
    is not; comparing the two would credit HEAD with the profile's 2-4 %."""
    target = ROOT / "target" / "ab-plain"
    print("building the working tree's engine without a profile", file=sys.stderr)
    subprocess.run(
        ["cargo", "rustc", "--quiet", "--release", *ENGINE_CARGO_ARGS],
        cwd=ROOT,
        env={**os.environ, "CARGO_TARGET_DIR": str(target), "RUSTFLAGS": ""},
        check=True,
    )
    return target / "release" / "lib_engine.so"


def resolve(ref: str) -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def this_build() -> str:
    """The label of the working tree's build: HEAD's commit, and whether tracked files
    differ from it (then the build may not be HEAD's)."""
    state = git_commit()
    if state is None:
        return "this build"
    return f"build of {state['commit'][:7]}" + (" (dirty)" if state["dirty"] else "")


def figure(result: dict[str, Any], path: tuple[str, ...]) -> float:
    if path == ("system_s_per_m_orders",):
        growing = result["growing"]
        return float(growing["cpu_seconds"]["system"]) / float(result["orders"]) * 1e6
    value: Any = result
    for key in path:
        value = value[key]
    return float(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("base", help="the commit to compare against")
    parser.add_argument("head", nargs="?", help="default: the working tree's build")
    parser.add_argument("--runs", type=int, default=3, help="core_bench runs per commit")
    parser.add_argument(
        "--batches",
        type=int,
        default=AB_BATCHES,
        help="timed batches per core_bench run, the same for both commits (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "core_ab.json")
    argv = sys.argv[1:] if argv is None else argv
    # Everything after "--" goes to core_bench unchanged.
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    bench_args = argv[split + 1 :]
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    with tempfile.TemporaryDirectory(prefix="core_ab-") as tmp:
        work = Path(tmp)
        base = resolve(args.base)
        # Both sides built alike: portable, without a profile (plain_build_of_this_tree).
        builds: dict[str, Path] = {base: build_engine(base, work)}
        head = resolve(args.head) if args.head else this_build()
        builds[head] = build_engine(head, work) if args.head else plain_build_of_this_tree()
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in builds}
        for run in range(1, args.runs + 1):
            for name in round_order(list(builds), run):
                module = builds[name]
                out = work / f"{name}-{run}.json"
                command = [
                    sys.executable,
                    str(ROOT / "bench" / "core_bench.py"),
                    "--out",
                    str(out),
                    "--batches",
                    str(args.batches),
                    "--engine-module",
                    str(module),
                ]
                print(f"core_ab: run {run}/{args.runs}: {name}", file=sys.stderr)
                subprocess.run(command + bench_args, check=True, stdout=subprocess.DEVNULL)
                results[name].append(json.loads(out.read_text()))

    summary: dict[str, Any] = {
        "benchmark": "core_ab",
        "runs": args.runs,
        "batches_per_run": args.batches,
        "commits": {},
    }
    print(
        f"core_ab: {args.runs} interleaved core_bench run(s) of {args.batches} batches per "
        "commit; median (range)"
    )
    print(f"  {'':34}" + "".join(f"{name:>26}" for name in results))
    for label, path, scale, unit in FIGURES:
        cells = []
        for name, runs in results.items():
            values = [figure(r, path) for r in runs]
            summary["commits"].setdefault(name, {})[label] = values
            median = statistics.median(values) * scale
            low, high = min(values) * scale, max(values) * scale
            cells.append(f"{median:.2f}{unit} ({low:.2f}-{high:.2f})")
        print(f"  {label:34}" + "".join(f"{cell:>26}" for cell in cells))
    write_summary(args.out, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
