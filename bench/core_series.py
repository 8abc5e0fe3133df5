"""Several `make bench-core` runs in a row, summarised: the engine target's figure with
the VM's noise shown rather than hidden.

    python bench/core_series.py [--runs N] [--pause S] [--out bench/results/core_series.json]

On the development VM the same build's `core_bench` figure moves by ~10 % from one hour
to the next (docs/engine.md, Performance), and the provisioned engine sits within that
distance of its 5 M lines/s target, so one run decides nothing. This runs
`bench/core_bench.py` N times (each in its own process, fresh engines), optionally
pausing between runs to sample more of the VM's phases, and reports every run's
figures, their median and range, and how many runs met each target. Every run's own
JSON is kept beside the summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

from core_ab import figure  # noqa: E402
from core_bench import TARGET_LINES_PER_S, TARGET_SPEEDUP, git_commit  # noqa: E402

# (key in the summary, path in core_bench's JSON, target or None)
FIGURES: list[tuple[str, tuple[str, ...], float | None]] = [
    ("lines_per_s", ("lines_per_s",), TARGET_LINES_PER_S),
    ("growing_lines_per_s", ("growing", "lines_per_s"), TARGET_LINES_PER_S),
    ("growing_system_s", ("growing", "cpu_seconds", "system"), None),
    ("speedup_vs_reference", ("speedup_vs_reference",), TARGET_SPEEDUP),
]


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, range and target count of each figure over the runs."""
    summary: dict[str, Any] = {}
    for key, path, target in FIGURES:
        values = [figure(r, path) for r in results]
        entry: dict[str, Any] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "runs": values,
        }
        if target is not None:
            entry["target"] = target
            entry["runs_meeting_target"] = sum(v >= target for v in values)
            entry["median_meets_target"] = statistics.median(values) >= target
        summary[key] = entry
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=6, help="core_bench runs (default 6)")
    parser.add_argument(
        "--pause", type=float, default=0.0, metavar="S", help="seconds to wait between runs"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "core_series.json")
    args, bench_args = parser.parse_known_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.pause < 0:
        parser.error("--pause must not be negative")

    run_dir = args.out.with_suffix("")
    run_dir.mkdir(parents=True, exist_ok=True)
    # The folder holds one series: an earlier, longer one's extra runs would read as this one's.
    for stale in run_dir.glob("run-*.json"):
        stale.unlink()
    results: list[dict[str, Any]] = []
    for run in range(1, args.runs + 1):
        if run > 1 and args.pause:
            time.sleep(args.pause)
        out = run_dir / f"run-{run}.json"
        command = [sys.executable, str(ROOT / "bench" / "core_bench.py"), "--out", str(out)]
        subprocess.run(command + bench_args, check=True, stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text())
        results.append(result)
        print(
            f"core_series: run {run}/{args.runs} at {result['timestamp']}: "
            f"{result['lines_per_s'] / 1e6:.2f} M lines/s provisioned, "
            f"{result['growing']['lines_per_s'] / 1e6:.2f} M growing, "
            f"{result['speedup_vs_reference']:.0f}x",
            file=sys.stderr,
        )

    summary = {
        "benchmark": "core_series",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_commit(),
        "engine_build": results[0]["engine_build"],
        "engine_profile": results[0].get("engine_profile", "none"),
        "workload": results[0]["workload"]["description"],
        "runs": args.runs,
        "pause_s": args.pause,
        "run_timestamps": [r["timestamp"] for r in results],
        # Relative to this file's folder, so that a clone can read them.
        "run_files": [f"{run_dir.name}/run-{i}.json" for i in range(1, args.runs + 1)],
        "figures": summarise(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")

    print(
        f"core series: {args.runs} runs of make bench-core ({summary['engine_build']} build, "
        f"profile {summary['engine_profile']})"
    )
    for key, _, target in FIGURES:
        entry = summary["figures"][key]
        # Throughputs as whole numbers, seconds and ratios with two decimals.
        spec = ",.0f" if entry["median"] >= 1000 else ",.2f"
        line = f"  {key:<22} median {entry['median']:>11{spec}}  range {entry['min']:{spec}}"
        line += f" - {entry['max']:{spec}}"
        if target is not None:
            line += f"  (target {target:,.0f}: met in {entry['runs_meeting_target']}/{args.runs})"
        print(line)
    print(f"  written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
