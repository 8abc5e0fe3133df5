"""Markdown report and PNG plots from bench/results/*.json.

    python bench/report.py [--results bench/results]

Writes report.md, throughput.png (orders/s over time, one panel per scenario) and
latency.png (p50/p95/p99 per scenario). Reads summary.json if present for the target table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SKIP = {"summary", "core"}
ORDER = [
    "echo",
    "cql_ceiling",
    "baseline_steady",
    "baseline_flash_sale",
    "service_steady",
    "service_half",
    "flash_sale",
    "spike",
    "batch",
    "locust_mix",
]


def load_results(results: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(results.glob("*.json")):
        if path.stem in SKIP:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "scenario" in data:
            found[str(data["scenario"])] = data
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], 99), kv[0])))


def plot_throughput(results: dict[str, dict[str, Any]], out: Path) -> None:
    series = {k: v for k, v in results.items() if v.get("timeline")}
    n = max(1, len(series))
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, (name, data) in zip(axes.flat, series.items(), strict=False):
        ax.set_visible(True)
        timeline = data["timeline"]
        per_call = float(data.get("batch_size") or 1)
        t = [row[0] for row in timeline]
        ok = [row[1] * per_call for row in timeline]
        ax.plot(t, ok, label="ok/s", color="tab:blue")
        if len(timeline[0]) > 2:
            errors = [row[2] * per_call for row in timeline]
            if any(errors):
                ax.plot(t, errors, label="errors/s", color="tab:red")
            p99 = [row[4] for row in timeline]
            twin = ax.twinx()
            twin.plot(t, p99, label="p99 ms", color="tab:orange", linestyle="--")
            twin.set_ylabel("p99 ms", fontsize=8)
        unit = "writes/s" if data.get("kind") == "cql_insert" else "orders/s"
        ax.set_title(f"{name}: {data.get('orders_per_s')} {unit}", fontsize=9)
        ax.set_xlabel("s", fontsize=8)
        ax.set_ylabel(unit, fontsize=8)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def plot_latency(results: dict[str, dict[str, Any]], out: Path) -> None:
    names = [k for k, v in results.items() if v.get("p99_ms") is not None]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names) + 2), 3.6))
    width = 0.27
    for i, (key, color) in enumerate(
        (("p50_ms", "tab:green"), ("p95_ms", "tab:blue"), ("p99_ms", "tab:red"))
    ):
        values = [float(results[n].get(key) or 0) for n in names]
        ax.bar(
            [x + (i - 1) * width for x in range(len(names))],
            values,
            width,
            label=key.removesuffix("_ms"),
            color=color,
        )
    ax.axhline(20, color="grey", linestyle=":", label="20 ms (p99 target at half load)")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("latency, ms (log)")
    if names:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("latency percentiles per scenario")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
    return str(value)


def render_markdown(results: dict[str, dict[str, Any]], summary: dict[str, Any] | None) -> str:
    lines = ["# Service benchmark report", ""]
    if summary:
        machine = summary.get("machine", {})
        lines += [
            f"Mode `{summary.get('mode')}`, generated {summary.get('generated_at')}, "
            f"{machine.get('cpu_count')} CPUs, load average at the end "
            f"{_fmt(machine.get('loadavg_at_end'))}. The load generator, the servers, "
            "Cassandra and NATS all share these cores: every figure is a lower bound of what "
            "each part does alone, and ratios measured in the same run are the meaningful "
            "numbers.",
            "",
            "## Against the architecture's targets",
            "",
            "| check | measured | target | pass | detail |",
            "|---|---|---|---|---|",
        ]
        for name, check in summary.get("checks", {}).items():
            verdict = {True: "yes", False: "**no**", None: "-"}[check.get("pass")]
            lines.append(
                f"| {name} | {_fmt(check.get('value'))} | {check.get('target')} | {verdict} "
                f"| {check.get('detail', '')} |"
            )
        lines.append("")
    lines += [
        "## Scenarios",
        "",
        "| scenario | kind | callers | orders/s | calls/s | p50 ms | p95 ms | p99 ms "
        "| errors by code | oversold units | client CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        callers = r.get("concurrency")
        if r.get("rate"):
            callers = f"{callers} max, {r['rate']:.0f}/s open loop"
        if r.get("phases"):
            callers = " → ".join(str(p[1]) for p in r["phases"])
        lines.append(
            f"| {name} | {r.get('kind')} | {callers} | {_fmt(r.get('orders_per_s'))} "
            f"| {_fmt(r.get('calls_per_s', r.get('writes_per_s')))} | {_fmt(r.get('p50_ms'))} "
            f"| {_fmt(r.get('p95_ms'))} | {_fmt(r.get('p99_ms'))} "
            f"| {_fmt(r.get('errors_by_code'))} | {_fmt(r.get('oversold_units'))} "
            f"| {_fmt(r.get('client_cpu_s'))} |"
        )
    checks = [(n, r["store_check"]) for n, r in results.items() if r.get("store_check")]
    if checks:
        lines += [
            "",
            "## Store check after each run",
            "",
            "Read straight from Cassandra: stock rows and every stored order; oversold = "
            "sum of max(0, live allocations - on_hand) per (sku, location).",
            "",
            "| scenario | orders stored | by status | on hand | reserved | allocated (live) "
            "| oversold | reserved > on_hand | drift rows |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, c in checks:
            lines.append(
                f"| {name} | {c.get('orders_scanned')} | {_fmt(c.get('orders_by_status'))} "
                f"| {c.get('on_hand_units')} | {c.get('reserved_units')} "
                f"| {c.get('allocated_live_units')} | {c.get('oversold_units')} "
                f"| {c.get('reserved_over_on_hand_units')} | {c.get('reserved_drift_rows')} |"
            )
    metrics = [(n, r["server_metrics"]) for n, r in results.items() if r.get("server_metrics")]
    if metrics:
        lines += [
            "",
            "## Inside the service (its Prometheus metrics over each run, per engine batch)",
            "",
            "| scenario | batches | commands per batch | engine ms | store write ms "
            "| publish round ms | queue-full answers |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in metrics:
            lines.append(
                f"| {name} | {_fmt(m.get('batches'))} | {_fmt(m.get('mean_batch_commands'))} "
                f"| {_fmt(m.get('mean_engine_ms'))} | {_fmt(m.get('mean_store_write_ms'))} "
                f"| {_fmt(m.get('mean_publish_round_ms'))} "
                f"| {_fmt(m.get('rejected_queue_full'))} |"
            )
    lines += [
        "",
        "## Plots",
        "",
        "Per second: blue = OK orders/s (writes/s for the CQL ceiling; orders, not calls, "
        "for batch), red = errors/s (only when there were any), orange dashed = p99 ms "
        "(right axis).",
        "",
        "![throughput over time](throughput.png)",
        "",
        "![latency percentiles](latency.png)",
        "",
        "How to read and reproduce: [docs/benchmarks.md](../../docs/benchmarks.md).",
        "",
    ]
    return "\n".join(lines)


def write_report(results_dir: Path) -> Path:
    results = load_results(results_dir)
    summary_path = results_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    plot_throughput(results, results_dir / "throughput.png")
    plot_latency(results, results_dir / "latency.png")
    out = results_dir / "report.md"
    out.write_text(render_markdown(results, summary))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description="markdown + PNG report from bench/results")
    p.add_argument("--results", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args()
    print(write_report(Path(args.results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
