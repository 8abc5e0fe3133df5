"""Which location served each created order, batch by batch, on a dumped workload.

    python bench/core_bench.py --batches 644 --dump-batches DIR
    python bench/served_locations.py DIR [--every 160]

Replays DIR's setup and timed batches through the engine (`server._engine`, from
`make build`) and, for every `--every`-th timed batch and the last, prints the share of
its changed orders whose allocations are all at one location, by that location. It
shows how far down the priority list allocation reaches as the top locations run dry,
which is what the warm-up's stock-row prefetch has to cover (docs/engine.md,
Performance, step 20).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from core_bench import import_engine, read_framed  # noqa: E402

from server.gen.orders.engine.v1 import engine_pb2  # noqa: E402


def served_by(result: bytes) -> Counter[str]:
    """Changed orders by the one location that serves them ("several" or "none" else)."""
    counts: Counter[str] = Counter()
    for order in engine_pb2.EngineBatchResult.FromString(result).changed_orders:
        locations = {a.location_id for a in order.allocations}
        key = "none" if not locations else "several" if len(locations) > 1 else locations.pop()
        counts[key] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("dump", type=Path, help="a core_bench --dump-batches directory")
    parser.add_argument("--every", type=int, default=160, help="report every N-th batch")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error("--every must be at least 1")
    engine = import_engine().Engine()
    for batch in read_framed(args.dump / "setup.bin"):
        engine.commit(engine.apply(batch).batch_seq)
    timed = read_framed(args.dump / "timed.bin")
    for i, batch in enumerate(timed):
        out = engine.apply(batch)
        engine.commit(out.batch_seq)
        if i % args.every == 0 or i == len(timed) - 1:
            counts = served_by(out.encode())
            total = sum(counts.values())
            shares = ", ".join(
                f"{name} {100 * n / total:.0f} %" for name, n in sorted(counts.items())
            )
            print(f"batch {i}: {shares}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
