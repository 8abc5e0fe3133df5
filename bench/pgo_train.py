"""The training run of a profile-guided build of the engine (bench/pgo_ab.sh).

    python bench/pgo_train.py ENGINE_SO [--batches N] [--seed S]

Applies the standard workload's setup and N create batches from its generator (seed 7
by default: the benchmarks use seed 1) to a fresh engine of the instrumented build at
ENGINE_SO, then the same batches to an engine whose order store was reserved, as
`make bench-core` runs them. The instrumented build writes its profile when the
process exits. Prints nothing but progress: it measures nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

from core_bench import BatchSource, import_engine, setup  # noqa: E402
from workloads import StandardWorkload, WorkloadSpec  # noqa: E402

# Enough batches for the state to grow past the caches and the top locations to run
# dry (both change which branches are hot); about a second of apply.
TRAINING_BATCHES = 120
TRAINING_SEED = 7


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("engine", type=Path, help="the instrumented build (a .so file)")
    parser.add_argument("--batches", type=int, default=TRAINING_BATCHES)
    parser.add_argument("--seed", type=int, default=TRAINING_SEED)
    args = parser.parse_args(argv)
    module = import_engine(args.engine)
    workload = StandardWorkload(WorkloadSpec(seed=args.seed))
    setup_batches = workload.setup_batches()
    source = BatchSource(workload)
    source.ensure(args.batches)
    orders = sum(b.orders for b in source.batches)
    for reserve in (0, orders):
        engine = module.Engine()
        setup(engine, setup_batches, "pgo training")
        if reserve:
            engine.reserve_orders(reserve)
        for batch in source.batches:
            out = engine.apply(batch.data)
            engine.commit(out.batch_seq)
            out.encode()
    return 0


if __name__ == "__main__":
    sys.exit(main())
