"""The training run of the engine's profile-guided build (`make build`, deploy/build_engine.sh).

    python bench/pgo_train.py ENGINE_SO [--batches N] [--seed S]

Runs an instrumented build of the engine (the shared library at ENGINE_SO) through what
the service does with it, so that the profile says which paths are hot:

* the standard workload's setup and N create batches from its generator (seed 7 by
  default: the benchmarks use seed 1), on a growing engine and on one whose order store
  was reserved, as `make bench-core` runs them; creates are most of the service's
  traffic, and so most of the profile;
* then, on the reserved engine, a lifecycle phase that reaches every other command and
  outcome: confirm, ship and cancel of the orders created, replays and reused
  request_ids, invalid requests of each kind, batch creates under both error policies,
  restocks that serve backorders, stock writes refused below reserved, reservation
  expiry, reconcile, rollback, and a snapshot read back. A path the training never runs
  would be laid out as cold code, which slows it instead of leaving it as it was.

The instrumented build writes its profile when the process exits. Prints progress only:
it measures nothing.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

from core_bench import BatchSource, import_engine, progress, setup  # noqa: E402
from workloads import (  # noqa: E402
    CMD_CREATE_ORDER,
    CMD_SET_STOCK,
    POLICY_BACKORDER,
    POLICY_SPLIT,
    StandardWorkload,
    WorkloadSpec,
    command,
    create_order_request,
    engine_batch,
    f_int,
    f_msg,
    f_str,
    location_name,
    order_line,
    set_stock_request,
    sku_name,
)

# Enough batches for the state to grow past the caches and the top locations to run
# dry (both change which branches are hot); about a second of apply.
TRAINING_BATCHES = 120
TRAINING_SEED = 7
# Commands per lifecycle batch, and how many such batches: a tenth of the creates'
# commands, so the lifecycle paths are warm in the profile without outweighing them.
LIFECYCLE_BATCH = 1_024
LIFECYCLE_ROUNDS = 40

# More than the standard workload's stock of a SKU (at most 8 x 400 units).
BACKORDERED_QUANTITY = 5_000

# EngineCommand fields not in workloads.py (proto/orders/engine/v1/engine.proto).
CMD_BATCH_CREATE_ORDERS = 11
CMD_CANCEL_ORDER = 12
CMD_CONFIRM_ORDER = 13
CMD_SHIP_ORDER = 14
CMD_ADJUST_STOCK = 21
CMD_RECONCILE = 24
CMD_EXPIRE_RESERVATIONS = 30
BATCH_ERROR_POLICY_EACH = 1
BATCH_ERROR_POLICY_ALL_OR_NOTHING = 2
ORDER_STATUS_ALLOCATED = 1


def lifecycle_batch(
    spec: WorkloadSpec, rng: random.Random, allocated: list[str], round_no: int, now: int
) -> bytes:
    """One batch of commands of every kind but those of the setup, drawn at random."""
    client = "svc-0"
    commands: list[bytes] = []
    for i in range(LIFECYCLE_BATCH):
        kind = rng.randrange(12)
        order_id = allocated[rng.randrange(len(allocated))] if allocated else "o-0"
        sku = sku_name(rng.randrange(spec.skus))
        location = location_name(rng.randrange(spec.locations))
        request_id = f"life-{round_no}-{i}"
        line = order_line(sku, 1 + rng.randrange(3), 100 * (1 + rng.randrange(50)), "EUR")
        if kind == 0:
            commands.append(command(client, CMD_CONFIRM_ORDER, f_str(1, order_id)))
        elif kind == 1:
            commands.append(command(client, CMD_SHIP_ORDER, f_str(1, order_id)))
        elif kind == 2:
            request = f_str(1, order_id) + f_str(2, "customer changed their mind")
            commands.append(command(client, CMD_CANCEL_ORDER, request))
        elif kind == 3:
            # A delta that raises on_hand (backorders are served) or lowers it, at times
            # below reserved (refused).
            delta = rng.choice((5, 50, -1, -500))
            request = f_str(1, sku) + f_str(2, location) + f_int(3, delta)
            commands.append(command("admin", CMD_ADJUST_STOCK, request))
        elif kind == 4:
            on_hand = rng.choice((0, 3, 400))
            commands.append(
                command("admin", CMD_SET_STOCK, set_stock_request(sku, location, on_hand))
            )
        elif kind == 5:
            # Invalid: quantity 0, an unknown currency, a bad id, an unknown region.
            bad = rng.randrange(4)
            lines = [order_line(sku, 0 if bad == 0 else 1, 100, "XXX" if bad == 1 else "EUR")]
            region = "nowhere" if bad == 3 else spec.region
            rid = "bad id!" if bad == 2 else request_id
            request = create_order_request(rid, "cust-1", region, lines, POLICY_SPLIT)
            commands.append(command(client, CMD_CREATE_ORDER, request))
        elif kind == 6:
            # A create, then its replay and a reuse of its request_id with another body.
            # The backorder is for more than any SKU's stock, so it waits for restocks.
            policy = rng.choice((POLICY_SPLIT, POLICY_BACKORDER))
            if policy == POLICY_BACKORDER:
                line = order_line(sku, BACKORDERED_QUANTITY, 100, "EUR")
            request = create_order_request(request_id, "cust-2", spec.region, [line], policy)
            commands.append(command(client, CMD_CREATE_ORDER, request))
            commands.append(command(client, CMD_CREATE_ORDER, request))
            other = create_order_request(request_id, "cust-3", spec.region, [line], policy)
            commands.append(command(client, CMD_CREATE_ORDER, other))
        elif kind == 7:
            items = [
                f_msg(
                    1,
                    create_order_request(
                        f"{request_id}-{j}",
                        "cust-4",
                        spec.region,
                        [order_line(sku_name(rng.randrange(spec.skus)), 1 + j, 250, "EUR")],
                        POLICY_SPLIT,
                    ),
                )
                for j in range(rng.randrange(1, 6))
            ]
            policy = rng.choice((BATCH_ERROR_POLICY_EACH, BATCH_ERROR_POLICY_ALL_OR_NOTHING))
            request = b"".join(items) + f_int(2, policy)
            commands.append(command(client, CMD_BATCH_CREATE_ORDERS, request))
        elif kind == 8:
            # Unknown and malformed order ids.
            target = rng.choice(("o-" + "0" * 32, "not-an-order"))
            commands.append(command(client, CMD_CONFIRM_ORDER, f_str(1, target)))
        else:
            # More confirms, so that ships (which need a confirmed order) find some.
            commands.append(command(client, CMD_CONFIRM_ORDER, f_str(1, order_id)))
    if round_no % 10 == 9:
        commands.append(command("admin", CMD_RECONCILE, f_str(1, spec.region) + f_int(2, 1)))
    if round_no % 20 == 19:
        commands.append(command("admin", CMD_EXPIRE_RESERVATIONS, b""))
    return engine_batch(now, commands)


def allocated_order_ids(out: Any) -> list[str]:
    return [row[0] for row in out.order_rows if row[2] == ORDER_STATUS_ALLOCATED]


def lifecycle(module: Any, engine: Any, spec: WorkloadSpec, allocated: list[str]) -> None:
    rng = random.Random(f"{spec.seed}:lifecycle")
    # Past the reservations' time-to-live (900 s) by the end, so that expiry has work.
    now = spec.start_unix_ms + 3_600_000
    for round_no in range(LIFECYCLE_ROUNDS):
        out = engine.apply(lifecycle_batch(spec, rng, allocated, round_no, now))
        if round_no % 8 == 7:
            engine.rollback(out.batch_seq)
        else:
            engine.commit(out.batch_seq)
        # What the service reads of every batch.
        out.responses, out.order_rows, out.stock_rows, out.events, out.journal()
        now += 60_000
        progress(f"pgo training: lifecycle {round_no + 1}/{LIFECYCLE_ROUNDS}")
    # A restarted service: from a snapshot, and from its rows.
    snapshot = engine.snapshot()
    module.Engine.from_snapshot(snapshot)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("engine", type=Path, help="the instrumented build (a .so file)")
    parser.add_argument("--batches", type=int, default=TRAINING_BATCHES)
    parser.add_argument("--seed", type=int, default=TRAINING_SEED)
    args = parser.parse_args(argv)
    module = import_engine(args.engine)
    spec = WorkloadSpec(seed=args.seed)
    workload = StandardWorkload(spec)
    setup_batches = workload.setup_batches()
    source = BatchSource(workload)
    source.ensure(args.batches)
    orders = sum(b.orders for b in source.batches)
    for reserve in (0, orders):
        engine = module.Engine()
        setup(engine, setup_batches, "pgo training")
        if reserve:
            engine.reserve_orders(reserve)
        allocated: list[str] = []
        for i, batch in enumerate(source.batches):
            out = engine.apply(batch.data)
            engine.commit(out.batch_seq)
            out.encode()
            if i % 10 == 0:
                allocated += allocated_order_ids(out)
        if reserve:
            lifecycle(module, engine, spec, allocated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
