"""Reproducible engine workloads, pre-encoded as EngineBatch bytes.

The standard workload (docs: bench/core_bench.py --help):

* one region ("bench", PRIORITY strategy, default TTL) with 8 locations;
* 100,000 SKUs x 8 locations of stock, set up front with SetStock commands in setup
  batches (not timed);
* batches of 4,096 CreateOrder commands, 1-5 lines per order (mean 3, distinct SKUs),
  quantity 1-3; 5% of the orders include one of 10 hot SKUs; policies 85%
  SINGLE_LOCATION, 10% SPLIT, 5% BACKORDER; 4 client ids, 100,000 customers; every
  order has a unique request_id, its body is drawn from a pool of 131,072 random bodies;
* everything drawn from random.Random seeded with the workload seed.

Batches are encoded by hand (a few lines of protobuf wire format below) because building
millions of protobuf objects in Python would take minutes; `tests` check that the bytes
equal what the generated protobuf classes produce.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass

# ----------------------------------------------------------------------------- wire format


def _varint_slow(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_SMALL_VARINTS = [_varint_slow(i) for i in range(1 << 14)]


def varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative int64 values use ten bytes (two's complement)."""
    if 0 <= value < 1 << 14:
        return _SMALL_VARINTS[value]
    return _varint_slow(value)


def tag(field_number: int, wire_type: int) -> bytes:
    return varint((field_number << 3) | wire_type)


def f_bytes(field_number: int, data: bytes) -> bytes:
    """A length-delimited field (string, bytes or embedded message); omitted when empty."""
    if not data:
        return b""
    return tag(field_number, 2) + varint(len(data)) + data


def f_str(field_number: int, value: str) -> bytes:
    return f_bytes(field_number, value.encode())


def f_int(field_number: int, value: int) -> bytes:
    """A varint field; omitted when 0 (proto3 default)."""
    if value == 0:
        return b""
    return tag(field_number, 0) + varint(value)


def f_msg(field_number: int, data: bytes) -> bytes:
    """An embedded message field that is present even when empty."""
    return tag(field_number, 2) + varint(len(data)) + data


# EngineCommand oneof field numbers (proto/orders/engine/v1/engine.proto)
CMD_CREATE_ORDER = 10
CMD_SET_STOCK = 20
CMD_UPSERT_LOCATION = 22
CMD_CONFIGURE_REGION = 23


def engine_batch(now_unix_ms: int, commands: list[bytes]) -> bytes:
    return f_int(1, now_unix_ms) + b"".join(f_msg(2, c) for c in commands)


def command(client_id: str, field_number: int, request: bytes) -> bytes:
    return f_str(1, client_id) + f_msg(field_number, request)


def order_line(sku: str, quantity: int, unit_price_minor: int, currency: str) -> bytes:
    return f_str(1, sku) + f_int(2, quantity) + f_int(3, unit_price_minor) + f_str(4, currency)


def create_order_request(
    request_id: str, customer_id: str, region: str, lines: list[bytes], policy: int
) -> bytes:
    return (
        f_str(1, request_id)
        + f_str(2, customer_id)
        + f_str(3, region)
        + b"".join(f_msg(4, line) for line in lines)
        + f_int(5, policy)
    )


def set_stock_request(sku: str, location_id: str, on_hand: int) -> bytes:
    return f_str(1, sku) + f_str(2, location_id) + f_int(3, on_hand)


def upsert_location_request(location_id: str, region: str, priority: int) -> bytes:
    return f_msg(1, f_str(1, location_id) + f_str(2, region) + f_int(3, priority))


def configure_region_request(region: str, strategy: int, ttl_seconds: int) -> bytes:
    return f_msg(1, f_str(1, region) + f_int(2, strategy) + f_int(3, ttl_seconds))


# ----------------------------------------------------------------------------- workload

POLICY_SINGLE_LOCATION = 1
POLICY_SPLIT = 2
POLICY_BACKORDER = 3
STRATEGY_PRIORITY = 1


@dataclass(frozen=True)
class WorkloadSpec:
    seed: int = 1
    skus: int = 100_000
    locations: int = 8
    region: str = "bench"
    batch_size: int = 4_096  # orders per timed batch
    setup_batch_size: int = 8_192  # SetStock commands per setup batch
    hot_skus: int = 10
    hot_fraction: float = 0.05  # of orders that include one hot SKU
    body_pool: int = 131_072  # distinct order bodies orders are drawn from
    # orders per line count 1..5 (mean 3)
    line_count_weights: tuple[int, ...] = (1, 2, 4, 2, 1)
    # SINGLE_LOCATION, SPLIT, BACKORDER
    policy_weights: tuple[int, int, int] = (85, 10, 5)
    max_quantity: int = 3
    normal_on_hand: tuple[int, int] = (0, 400)  # per (sku, location), uniform
    hot_on_hand: int = 10_000_000
    clients: int = 4
    customers: int = 100_000
    currency: str = "EUR"
    start_unix_ms: int = 1_700_000_000_000
    batch_interval_ms: int = 10

    def describe(self) -> str:
        mean_lines = sum((i + 1) * w for i, w in enumerate(self.line_count_weights)) / sum(
            self.line_count_weights
        )
        return (
            f"{self.batch_size} CreateOrder/batch, {mean_lines:.1f} lines/order (1-5), "
            f"{self.skus} SKUs x {self.locations} locations in one region (PRIORITY), "
            f"{self.hot_fraction:.0%} of orders on {self.hot_skus} hot SKUs, policies "
            f"SINGLE/SPLIT/BACKORDER {'/'.join(map(str, self.policy_weights))}%, "
            f"bodies drawn from a pool of {self.body_pool}, no expiry commands, "
            f"seed {self.seed}"
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class OrderBatch:
    data: bytes  # a serialised EngineBatch
    orders: int
    lines: int


def sku_name(index: int) -> str:
    return f"sku-{index:06d}"


def location_name(index: int) -> str:
    return f"loc-{index}"


class StandardWorkload:
    """Deterministic setup batches and an endless stream of create batches."""

    def __init__(self, spec: WorkloadSpec | None = None) -> None:
        self.spec = spec or WorkloadSpec()
        self._bodies: list[tuple[bytes, int]] | None = None

    def setup_batches(self) -> list[bytes]:
        """Region, locations and all stock (SetStock), in batches. Not timed."""
        spec = self.spec
        rng = random.Random(f"{spec.seed}:stock")
        now = spec.start_unix_ms - 1_000
        first = [
            command(
                "admin",
                CMD_CONFIGURE_REGION,
                configure_region_request(spec.region, STRATEGY_PRIORITY, 0),
            )
        ]
        first += [
            command(
                "admin",
                CMD_UPSERT_LOCATION,
                upsert_location_request(location_name(i), spec.region, i),
            )
            for i in range(spec.locations)
        ]
        batches = [engine_batch(now, first)]
        lo, hi = spec.normal_on_hand
        stock_commands: list[bytes] = []
        for s in range(spec.skus):
            sku = sku_name(s)
            for loc in range(spec.locations):
                on_hand = spec.hot_on_hand if s < spec.hot_skus else rng.randint(lo, hi)
                stock_commands.append(
                    command(
                        "admin",
                        CMD_SET_STOCK,
                        set_stock_request(sku, location_name(loc), on_hand),
                    )
                )
        for start in range(0, len(stock_commands), spec.setup_batch_size):
            batches.append(engine_batch(now, stock_commands[start : start + spec.setup_batch_size]))
        return batches

    def order_bodies(self) -> list[tuple[bytes, int]]:
        """The pool of encoded order bodies (every CreateOrderRequest field but request_id)
        and their line counts. Drawing orders from a large pool instead of generating every
        order afresh keeps encoding millions of orders in Python to seconds; the engine
        cannot tell (no caching by body is possible: every order has its own request_id)."""
        if self._bodies is not None:
            return self._bodies
        spec = self.spec
        rng = random.Random(f"{spec.seed}:bodies")
        sku_fields = [f_str(1, sku_name(s)) for s in range(spec.skus)]
        currency_field = f_str(4, spec.currency)
        region_field = f_str(3, spec.region)
        count_cum = list(itertools.accumulate(spec.line_count_weights))
        policy_cum = list(itertools.accumulate(spec.policy_weights))
        policies = (POLICY_SINGLE_LOCATION, POLICY_SPLIT, POLICY_BACKORDER)
        normal_skus = spec.skus - spec.hot_skus
        bodies: list[tuple[bytes, int]] = []
        for _ in range(spec.body_pool):
            n = 1 + bisect.bisect_right(count_cum, rng.random() * count_cum[-1])
            chosen: list[int] = []
            if rng.random() < spec.hot_fraction:
                chosen.append(rng.randrange(spec.hot_skus))
            while len(chosen) < n:
                s = spec.hot_skus + rng.randrange(normal_skus)
                if s not in chosen:
                    chosen.append(s)
            lines = [
                sku_fields[s]
                + f_int(2, 1 + rng.randrange(spec.max_quantity))
                + f_int(3, 100 * (1 + rng.randrange(5_000)))
                + currency_field
                for s in chosen
            ]
            policy = policies[bisect.bisect_right(policy_cum, rng.random() * policy_cum[-1])]
            body = (
                f_str(2, f"cust-{rng.randrange(spec.customers)}")
                + region_field
                + b"".join(f_msg(4, line) for line in lines)
                + f_int(5, policy)
            )
            bodies.append((body, n))
        self._bodies = bodies
        return bodies

    def order_batches(self) -> Iterator[OrderBatch]:
        """Create batches, forever; the n-th batch is the same for a given spec."""
        spec = self.spec
        bodies = self.order_bodies()
        rng = random.Random(f"{spec.seed}:orders")
        client_fields = [f_str(1, f"svc-{c}") for c in range(spec.clients)]
        create_tag = tag(CMD_CREATE_ORDER, 2)
        for batch_no in itertools.count():
            now = spec.start_unix_ms + batch_no * spec.batch_interval_ms
            commands: list[bytes] = []
            lines_total = 0
            for i in range(spec.batch_size):
                body, n = bodies[int(rng.random() * len(bodies))]
                request = f_str(1, f"w{spec.seed}-{batch_no:06d}-{i:04d}") + body
                commands.append(
                    client_fields[i % spec.clients] + create_tag + varint(len(request)) + request
                )
                lines_total += n
            yield OrderBatch(engine_batch(now, commands), spec.batch_size, lines_total)
