"""Pure-Python reference model of the allocation engine (docs/engine.md).

This is the oracle for the differential tests and the baseline of the benchmark. It is
written for clarity: plain dicts and small dataclasses, one function per rule of the
specification, no clever indexes. It is not product code.

Interface (mirrors the Rust engine where it matters):

    engine = ReferenceEngine()
    result_bytes = engine.apply(batch_bytes)   # EngineBatch in, EngineBatchResult out
    engine.commit(batch_seq) / engine.rollback(batch_seq)

Undo works with a journal per pending batch: before a row is modified for the first time
in a batch its previous value (or "absent") is saved. The journal's keys, in insertion
order, are also exactly the rows the batch touched, in first-touch order, which is what
`changed_*` must list. BatchCreateOrders ALL_OR_NOTHING uses a nested journal (a
savepoint) that is either merged into the batch's journal or undone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import xxhash
from google.protobuf.timestamp_pb2 import Timestamp

from server.gen.orders.engine.v1 import engine_pb2
from server.gen.orders.v1 import events_pb2, orders_pb2

# ------------------------------------------------------------------------------- limits

MAX_LINES_PER_ORDER = 100
MAX_QUANTITY_PER_LINE = 100_000
MAX_UNIT_PRICE_MINOR = 10**12
MAX_ORDER_TOTAL_MINOR = 10**15
MAX_ID_LEN = 64
MAX_REGION_LEN = 32
MAX_REASON_LEN = 256
MAX_ON_HAND = 10**12
MAX_BATCH_CREATE = 1_000
DEFAULT_RESERVATION_TTL_SECONDS = 900
MAX_RESERVATION_TTL_SECONDS = 604_800
MAX_LOCATION_PRIORITY = 1_000_000

# ------------------------------------------------------------------------------- codes

OK = 0
INVALID_ARGUMENT = 3
NOT_FOUND = 5
ALREADY_EXISTS = 6
FAILED_PRECONDITION = 9
ABORTED = 10

# enum values (orders.v1)
ALLOCATED = orders_pb2.ORDER_STATUS_ALLOCATED
BACKORDERED = orders_pb2.ORDER_STATUS_BACKORDERED
REJECTED = orders_pb2.ORDER_STATUS_REJECTED
CONFIRMED = orders_pb2.ORDER_STATUS_CONFIRMED
SHIPPED = orders_pb2.ORDER_STATUS_SHIPPED
CANCELLED = orders_pb2.ORDER_STATUS_CANCELLED
EXPIRED = orders_pb2.ORDER_STATUS_EXPIRED
LIVE_STATUSES = frozenset({ALLOCATED, BACKORDERED, CONFIRMED})

POLICY_SINGLE_LOCATION = orders_pb2.ALLOCATION_POLICY_SINGLE_LOCATION
POLICY_SPLIT = orders_pb2.ALLOCATION_POLICY_SPLIT
POLICY_BACKORDER = orders_pb2.ALLOCATION_POLICY_BACKORDER
KNOWN_POLICIES = frozenset(orders_pb2.AllocationPolicy.values())

STRATEGY_MOST_AVAILABLE = orders_pb2.ALLOCATION_STRATEGY_MOST_AVAILABLE
KNOWN_STRATEGIES = frozenset(orders_pb2.AllocationStrategy.values())
KNOWN_ERROR_POLICIES = frozenset(orders_pb2.BatchErrorPolicy.values())

BATCH_ALL_OR_NOTHING = orders_pb2.BATCH_ERROR_POLICY_ALL_OR_NOTHING

STATUS_NAMES: dict[int, str] = {
    ALLOCATED: "ALLOCATED",
    BACKORDERED: "BACKORDERED",
    REJECTED: "REJECTED",
    CONFIRMED: "CONFIRMED",
    SHIPPED: "SHIPPED",
    CANCELLED: "CANCELLED",
    EXPIRED: "EXPIRED",
}
# An order event's type and subject follow the status the change led to.
EVENT_TYPES: dict[int, int] = {
    ALLOCATED: events_pb2.ORDER_EVENT_TYPE_ALLOCATED,
    BACKORDERED: events_pb2.ORDER_EVENT_TYPE_BACKORDERED,
    REJECTED: events_pb2.ORDER_EVENT_TYPE_REJECTED,
    CONFIRMED: events_pb2.ORDER_EVENT_TYPE_CONFIRMED,
    SHIPPED: events_pb2.ORDER_EVENT_TYPE_SHIPPED,
    CANCELLED: events_pb2.ORDER_EVENT_TYPE_CANCELLED,
    EXPIRED: events_pb2.ORDER_EVENT_TYPE_EXPIRED,
}
STOCK_SUBJECT = "inventory.v1.stock_changed"

ID_RE = re.compile(r"[A-Za-z0-9._:-]+", re.ASCII)

# The engine's list of active codes; ORDERS_ISO4217_PATH overrides it (tests of the model
# itself before the Rust crate has its data file).
ISO4217_PATH = Path(
    os.environ.get(
        "ORDERS_ISO4217_PATH",
        Path(__file__).resolve().parents[2] / "core_rs" / "data" / "iso4217.txt",
    )
)
_iso_codes: frozenset[str] | None = None


def iso4217_codes() -> frozenset[str]:
    """Active ISO 4217 codes from core_rs/data/iso4217.txt (read once, lazily)."""
    global _iso_codes
    if _iso_codes is None:
        codes = set()
        for raw in ISO4217_PATH.read_text(encoding="utf-8").splitlines():
            line = raw.split("#", 1)[0].strip()
            if line:
                codes.add(line)
        _iso_codes = frozenset(codes)
    return _iso_codes


def make_order_id(client_id: str, request_id: str) -> str:
    digest = xxhash.xxh3_128_hexdigest(client_id.encode() + b"\x00" + request_id.encode())
    return "o-" + digest


# ------------------------------------------------------------------------------- rows


@dataclass(slots=True, frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price_minor: int
    currency: str


@dataclass(slots=True)
class Alloc:
    line_index: int
    sku: str
    location_id: str
    quantity: int


@dataclass(slots=True)
class Backorder:
    line_index: int
    sku: str
    quantity: int


@dataclass(slots=True)
class OrderRow:
    order_id: str
    client_id: str
    request_id: str
    customer_id: str
    region: str
    lines: tuple[Line, ...]
    policy: int
    status: int
    version: int
    allocations: list[Alloc]
    backorders: list[Backorder]
    total_minor: int
    currency: str
    create_ms: int
    update_ms: int
    expire_ms: int | None
    status_reason: str

    def copy(self) -> OrderRow:
        return OrderRow(
            order_id=self.order_id,
            client_id=self.client_id,
            request_id=self.request_id,
            customer_id=self.customer_id,
            region=self.region,
            lines=self.lines,
            policy=self.policy,
            status=self.status,
            version=self.version,
            allocations=[
                Alloc(a.line_index, a.sku, a.location_id, a.quantity) for a in self.allocations
            ],
            backorders=[Backorder(b.line_index, b.sku, b.quantity) for b in self.backorders],
            total_minor=self.total_minor,
            currency=self.currency,
            create_ms=self.create_ms,
            update_ms=self.update_ms,
            expire_ms=self.expire_ms,
            status_reason=self.status_reason,
        )

    def backorder_of(self, line_index: int) -> Backorder:
        for b in self.backorders:
            if b.line_index == line_index:
                return b
        raise KeyError(f"{self.order_id}: no backorder for line {line_index}")


@dataclass(slots=True)
class StockRow:
    sku: str
    location_id: str
    on_hand: int = 0
    reserved: int = 0
    version: int = 0

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved

    def copy(self) -> StockRow:
        return StockRow(self.sku, self.location_id, self.on_hand, self.reserved, self.version)


@dataclass(slots=True)
class LocationRow:
    location_id: str
    region: str
    priority: int

    def copy(self) -> LocationRow:
        return LocationRow(self.location_id, self.region, self.priority)


@dataclass(slots=True)
class RegionRow:
    region: str
    strategy: int
    ttl_seconds: int

    def copy(self) -> RegionRow:
        return RegionRow(self.region, self.strategy, self.ttl_seconds)


K = TypeVar("K")
V = TypeVar("V")
StockKey = tuple[str, str]  # (sku, location_id)
QueueKey = tuple[str, str]  # (region, sku)
QueueEntry = tuple[str, int]  # (order_id, line_index)
Violations = list[tuple[str, str]]  # (field path, description), in report order


@dataclass(slots=True)
class Journal:
    """Previous values of every row modified since the journal was opened (None = absent)."""

    orders: dict[str, OrderRow | None] = field(default_factory=dict)
    stock: dict[StockKey, StockRow | None] = field(default_factory=dict)
    locations: dict[str, LocationRow | None] = field(default_factory=dict)
    regions: dict[str, RegionRow | None] = field(default_factory=dict)
    queues: dict[QueueKey, list[QueueEntry] | None] = field(default_factory=dict)
    events: list[engine_pb2.EventEnvelope] = field(default_factory=list)


# ------------------------------------------------------------------------------- errors


class ReferenceStateError(Exception):
    """commit/rollback of a batch that is not pending."""


class CommandError(Exception):
    """A command failed: becomes CommandResult.code/error; nothing of the command stays."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        violations: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.violations = list(violations)

    def to_proto(self) -> orders_pb2.OrderError:
        return orders_pb2.OrderError(
            code=self.code,
            message=self.message,
            reason=self.reason,
            field_violations=[
                orders_pb2.FieldViolation(field=f, description=d) for f, d in self.violations
            ],
        )


def invalid(violations: list[tuple[str, str]]) -> CommandError:
    listed = "; ".join(f"{f}: {d}" for f, d in violations)
    return CommandError(
        INVALID_ARGUMENT, "INVALID_REQUEST", f"invalid request: {listed}", violations
    )


# ------------------------------------------------------------------------------- validation


def check_id(value: str, path: str, max_len: int, out: list[tuple[str, str]]) -> bool:
    """Appends at most one violation for an identifier field; True when valid."""
    if not value:
        out.append((path, "is required"))
        return False
    if len(value.encode()) > max_len:
        out.append((path, f"must be at most {max_len} bytes"))
        return False
    if not ID_RE.fullmatch(value):
        out.append((path, "must contain only the characters [A-Za-z0-9._:-]"))
        return False
    return True


def check_range(value: int, lo: int, hi: int, path: str, out: list[tuple[str, str]]) -> bool:
    if lo <= value <= hi:
        return True
    out.append((path, f"must be between {lo} and {hi}"))
    return False


def validate_create(req: orders_pb2.CreateOrderRequest) -> list[tuple[str, str]]:
    """Every violation of a create, in the order of docs/engine.md "Validation"."""
    out: list[tuple[str, str]] = []
    # 1. identifiers
    check_id(req.request_id, "request_id", MAX_ID_LEN, out)
    check_id(req.customer_id, "customer_id", MAX_ID_LEN, out)
    check_id(req.region, "region", MAX_REGION_LEN, out)
    # 2. line count
    lines = list(req.lines)
    if not lines:
        out.append(("lines", "at least one line is required"))
    elif len(lines) > MAX_LINES_PER_ORDER:
        out.append(("lines", f"at most {MAX_LINES_PER_ORDER} lines"))
    # 3. each line
    iso = iso4217_codes()
    currency_ok: list[bool] = []
    amounts_ok = True
    for i, line in enumerate(lines):
        check_id(line.sku, f"lines[{i}].sku", MAX_ID_LEN, out)
        amounts_ok &= check_range(
            line.quantity, 1, MAX_QUANTITY_PER_LINE, f"lines[{i}].quantity", out
        )
        amounts_ok &= check_range(
            line.unit_price_minor, 0, MAX_UNIT_PRICE_MINOR, f"lines[{i}].unit_price_minor", out
        )
        if line.currency in iso:
            currency_ok.append(True)
        else:
            currency_ok.append(False)
            out.append((f"lines[{i}].currency", "must be an active ISO 4217 currency code"))
    # 4. duplicate SKUs
    first_at: dict[str, int] = {}
    for j, line in enumerate(lines):
        if line.sku in first_at:
            out.append((f"lines[{j}].sku", f"duplicate sku, first at lines[{first_at[line.sku]}]"))
        else:
            first_at[line.sku] = j
    # 5. one currency per order
    if lines:
        currency = lines[0].currency
        for j in range(1, len(lines)):
            if currency_ok[j] and lines[j].currency != currency:
                out.append(
                    (
                        f"lines[{j}].currency",
                        f"all lines must use the currency of lines[0] ({currency})",
                    )
                )
    # 6. policy
    if req.policy not in KNOWN_POLICIES:
        out.append(("policy", f"unknown allocation policy {req.policy}"))
    # 7. total
    if lines and amounts_ok:
        total = sum(line.quantity * line.unit_price_minor for line in lines)
        if total > MAX_ORDER_TOTAL_MINOR:
            out.append(("lines", f"order total exceeds {MAX_ORDER_TOTAL_MINOR} minor units"))
    return out


def normalized_policy(policy: int) -> int:
    return policy or POLICY_SINGLE_LOCATION


def first_body_difference(order: OrderRow, req: orders_pb2.CreateOrderRequest) -> str | None:
    if order.customer_id != req.customer_id:
        return "customer_id"
    if order.region != req.region:
        return "region"
    if order.lines != lines_of(req):
        return "lines"
    if normalized_policy(order.policy) != normalized_policy(req.policy):
        return "policy"
    return None


def lines_of(req: orders_pb2.CreateOrderRequest) -> tuple[Line, ...]:
    return tuple(Line(x.sku, x.quantity, x.unit_price_minor, x.currency) for x in req.lines)


# ------------------------------------------------------------------------------- protos


def timestamp(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.seconds = ms // 1000
    ts.nanos = (ms % 1000) * 1_000_000
    return ts


def order_proto(o: OrderRow) -> orders_pb2.Order:
    msg = orders_pb2.Order(
        order_id=o.order_id,
        request_id=o.request_id,
        customer_id=o.customer_id,
        region=o.region,
        lines=[
            orders_pb2.OrderLine(
                sku=x.sku,
                quantity=x.quantity,
                unit_price_minor=x.unit_price_minor,
                currency=x.currency,
            )
            for x in o.lines
        ],
        policy=o.policy,  # type: ignore[arg-type]
        status=o.status,  # type: ignore[arg-type]
        version=o.version,
        allocations=[
            orders_pb2.Allocation(
                line_index=a.line_index, sku=a.sku, location_id=a.location_id, quantity=a.quantity
            )
            for a in o.allocations
        ],
        backorders=[
            orders_pb2.Backorder(line_index=b.line_index, sku=b.sku, quantity=b.quantity)
            for b in o.backorders
        ],
        total_minor=o.total_minor,
        currency=o.currency,
        status_reason=o.status_reason,
        client_id=o.client_id,
    )
    msg.create_time.CopyFrom(timestamp(o.create_ms))
    msg.update_time.CopyFrom(timestamp(o.update_ms))
    if o.expire_ms is not None:
        msg.expire_time.CopyFrom(timestamp(o.expire_ms))
    return msg


def millis(ts: Timestamp) -> int:
    return int(ts.seconds) * 1000 + int(ts.nanos) // 1_000_000


def order_row(msg: orders_pb2.Order) -> OrderRow:
    """The inverse of order_proto."""
    return OrderRow(
        order_id=msg.order_id,
        client_id=msg.client_id,
        request_id=msg.request_id,
        customer_id=msg.customer_id,
        region=msg.region,
        lines=tuple(Line(x.sku, x.quantity, x.unit_price_minor, x.currency) for x in msg.lines),
        policy=msg.policy,
        status=msg.status,
        version=msg.version,
        allocations=[
            Alloc(a.line_index, a.sku, a.location_id, a.quantity) for a in msg.allocations
        ],
        backorders=[Backorder(b.line_index, b.sku, b.quantity) for b in msg.backorders],
        total_minor=msg.total_minor,
        currency=msg.currency,
        create_ms=millis(msg.create_time),
        update_ms=millis(msg.update_time),
        expire_ms=millis(msg.expire_time) if msg.HasField("expire_time") else None,
        status_reason=msg.status_reason,
    )


def stock_proto(s: StockRow) -> orders_pb2.StockLevel:
    return orders_pb2.StockLevel(
        sku=s.sku,
        location_id=s.location_id,
        on_hand=s.on_hand,
        reserved=s.reserved,
        available=s.available,
        version=s.version,
    )


def location_proto(loc: LocationRow) -> orders_pb2.Location:
    return orders_pb2.Location(
        location_id=loc.location_id, region=loc.region, priority=loc.priority
    )


def region_proto(r: RegionRow) -> orders_pb2.Region:
    return orders_pb2.Region(
        region=r.region,
        strategy=r.strategy,  # type: ignore[arg-type]
        reservation_ttl_seconds=r.ttl_seconds,
    )


# ------------------------------------------------------------------------------- engine


@dataclass(slots=True)
class CreateOutcome:
    order: OrderRow
    replayed: bool
    created_rejected: bool  # a new order stored as REJECTED (ALL_OR_NOTHING treats it as failure)


class ReferenceEngine:
    def __init__(self) -> None:
        self.regions: dict[str, RegionRow] = {}
        self.locations: dict[str, LocationRow] = {}
        self.stock: dict[StockKey, StockRow] = {}
        self.orders: dict[str, OrderRow] = {}
        # FIFO of backordered lines per (region, sku).
        self.queues: dict[QueueKey, list[QueueEntry]] = {}
        self.batch_seq = 0
        self.pending: list[tuple[int, Journal]] = []
        self._journal = Journal()  # innermost open journal during apply()
        self._now = 0

    # ------------------------------------------------------------------ batches

    def apply(self, batch: bytes) -> bytes:
        msg = engine_pb2.EngineBatch.FromString(batch)
        self._now = msg.now_unix_ms
        journal = Journal()
        self._journal = journal
        results = []
        try:
            for cmd in msg.commands:
                results.append(self._run_command(cmd))
        except BaseException:
            self._undo(journal)
            raise
        self.batch_seq += 1
        self.pending.append((self.batch_seq, journal))
        out = engine_pb2.EngineBatchResult(
            batch_seq=self.batch_seq,
            results=results,
            changed_orders=[order_proto(self.orders[k]) for k in journal.orders],
            changed_stock=[stock_proto(self.stock[k]) for k in journal.stock],
            changed_locations=[location_proto(self.locations[k]) for k in journal.locations],
            changed_regions=[region_proto(self.regions[k]) for k in journal.regions],
            events=journal.events,
        )
        return out.SerializeToString()

    def commit(self, batch_seq: int) -> None:
        """Makes batch_seq (and every earlier pending batch) durable."""
        if batch_seq not in [seq for seq, _ in self.pending]:
            raise ReferenceStateError(f"batch {batch_seq} is not pending")
        self.pending = [(seq, j) for seq, j in self.pending if seq > batch_seq]

    def rollback(self, batch_seq: int) -> None:
        """Undoes batch_seq and every later pending batch, newest first."""
        if batch_seq not in [seq for seq, _ in self.pending]:
            raise ReferenceStateError(f"batch {batch_seq} is not pending")
        while self.pending and self.pending[-1][0] >= batch_seq:
            _, journal = self.pending.pop()
            self._undo(journal)
        self.batch_seq = batch_seq - 1

    def pending_batches(self) -> list[int]:
        return [seq for seq, _ in self.pending]

    # ------------------------------------------------------------------ journal

    def _save_order(self, order_id: str) -> None:
        if order_id not in self._journal.orders:
            old = self.orders.get(order_id)
            self._journal.orders[order_id] = None if old is None else old.copy()

    def _save_stock(self, key: StockKey) -> None:
        if key not in self._journal.stock:
            old = self.stock.get(key)
            self._journal.stock[key] = None if old is None else old.copy()

    def _save_location(self, location_id: str) -> None:
        if location_id not in self._journal.locations:
            old = self.locations.get(location_id)
            self._journal.locations[location_id] = None if old is None else old.copy()

    def _save_region(self, region: str) -> None:
        if region not in self._journal.regions:
            old = self.regions.get(region)
            self._journal.regions[region] = None if old is None else old.copy()

    def _save_queue(self, key: QueueKey) -> None:
        if key not in self._journal.queues:
            old = self.queues.get(key)
            self._journal.queues[key] = None if old is None else list(old)

    def _undo(self, journal: Journal) -> None:
        tables: list[tuple[dict, dict]] = [  # type: ignore[type-arg]
            (self.orders, journal.orders),
            (self.stock, journal.stock),
            (self.locations, journal.locations),
            (self.regions, journal.regions),
            (self.queues, journal.queues),
        ]
        for table, saved in tables:
            for key, old in saved.items():
                if old is None:
                    table.pop(key, None)
                else:
                    table[key] = old

    @staticmethod
    def _merge(child: Journal, parent: Journal) -> None:
        """Keeps a savepoint's changes: the parent journal gains the rows it had not saved."""
        merge_saved(child.orders, parent.orders)
        merge_saved(child.stock, parent.stock)
        merge_saved(child.locations, parent.locations)
        merge_saved(child.regions, parent.regions)
        merge_saved(child.queues, parent.queues)
        parent.events.extend(child.events)

    # ------------------------------------------------------------------ events

    def _order_event(self, order: OrderRow) -> None:
        name = STATUS_NAMES[order.status].lower()
        event_id = f"{order.order_id}:{order.version}"
        payload = events_pb2.OrderEvent(
            event_id=event_id,
            type=EVENT_TYPES[order.status],  # type: ignore[arg-type]
            order=order_proto(order),
        )
        payload.event_time.CopyFrom(timestamp(self._now))
        self._journal.events.append(
            engine_pb2.EventEnvelope(
                subject=f"orders.v1.{name}",
                event_id=event_id,
                payload=payload.SerializeToString(),
            )
        )

    def _stock_event(self, row: StockRow, reason: int) -> None:
        event_id = f"stock:{row.sku}@{row.location_id}:{row.version}"
        payload = events_pb2.StockEvent(
            event_id=event_id,
            reason=reason,  # type: ignore[arg-type]
            level=stock_proto(row),
        )
        payload.event_time.CopyFrom(timestamp(self._now))
        self._journal.events.append(
            engine_pb2.EventEnvelope(
                subject=STOCK_SUBJECT, event_id=event_id, payload=payload.SerializeToString()
            )
        )

    # ------------------------------------------------------------------ commands

    def _run_command(self, cmd: engine_pb2.EngineCommand) -> engine_pb2.CommandResult:
        kind = cmd.WhichOneof("command")
        # Violations are reported together: client_id first, then the command's fields
        # (each handler appends its own and raises `invalid` if there are any).
        out: list[tuple[str, str]] = []
        check_id(cmd.client_id, "client_id", MAX_ID_LEN, out)
        # A command that fails leaves nothing behind: run it inside its own savepoint.
        parent = self._journal
        self._journal = Journal()
        try:
            if kind is None:
                out.append(("command", "is required"))
                raise invalid(out)
            result = getattr(self, f"_cmd_{kind}")(cmd.client_id, getattr(cmd, kind), out)
        except CommandError as err:
            self._undo(self._journal)
            self._journal = parent
            return engine_pb2.CommandResult(code=err.code, error=err.to_proto())
        except BaseException:  # a bug of the model: leave the state as it was
            self._undo(self._journal)
            self._journal = parent
            raise
        self._merge(self._journal, parent)
        self._journal = parent
        assert isinstance(result, engine_pb2.CommandResult)
        return result

    # ---- orders

    def _cmd_create_order(
        self, client_id: str, req: orders_pb2.CreateOrderRequest, out: Violations
    ) -> engine_pb2.CommandResult:
        outcome = self._create(client_id, req, out)
        return engine_pb2.CommandResult(
            code=OK, replayed=outcome.replayed, order=order_proto(outcome.order)
        )

    def _cmd_batch_create_orders(
        self, client_id: str, req: orders_pb2.BatchCreateOrdersRequest, out: Violations
    ) -> engine_pb2.CommandResult:
        if len(req.requests) > MAX_BATCH_CREATE:
            out.append(("requests", f"at most {MAX_BATCH_CREATE} requests"))
        if req.error_policy not in KNOWN_ERROR_POLICIES:
            out.append(("error_policy", f"unknown error policy {req.error_policy}"))
        if out:
            raise invalid(out)
        items: list[orders_pb2.CreateOrderResult] = []
        if req.error_policy != BATCH_ALL_OR_NOTHING:
            for item in req.requests:
                items.append(self._create_item(client_id, item))
            return engine_pb2.CommandResult(
                code=OK, batch_create_orders=orders_pb2.BatchCreateOrdersResponse(results=items)
            )
        # ALL_OR_NOTHING: run every create in a savepoint; any failure undoes them all.
        parent = self._journal
        self._journal = Journal()
        outcomes: list[CreateOutcome | CommandError] = []
        for item in req.requests:
            try:
                outcome = self._create(client_id, item, [])
            except CommandError as err:
                outcomes.append(err)
                continue
            if outcome.created_rejected:
                outcomes.append(
                    CommandError(
                        FAILED_PRECONDITION,
                        "INSUFFICIENT_STOCK",
                        "insufficient stock",
                    )
                )
            else:
                outcomes.append(outcome)
        failed = any(isinstance(x, CommandError) for x in outcomes)
        if failed:
            self._undo(self._journal)
            self._journal = parent
            aborted = CommandError(
                ABORTED, "BATCH_ABORTED", "not applied: another request of the batch failed"
            ).to_proto()
            for item, x in zip(req.requests, outcomes, strict=True):
                if isinstance(x, CommandError):
                    items.append(
                        orders_pb2.CreateOrderResult(request_id=item.request_id, error=x.to_proto())
                    )
                else:
                    items.append(
                        orders_pb2.CreateOrderResult(request_id=item.request_id, error=aborted)
                    )
        else:
            self._merge(self._journal, parent)
            self._journal = parent
            for item, x in zip(req.requests, outcomes, strict=True):
                assert isinstance(x, CreateOutcome)
                # The order as it is at the end of the batch (a later item may have
                # been a replay of it: same object, same answer).
                items.append(
                    orders_pb2.CreateOrderResult(
                        request_id=item.request_id, order=order_proto(x.order)
                    )
                )
        return engine_pb2.CommandResult(
            code=OK, batch_create_orders=orders_pb2.BatchCreateOrdersResponse(results=items)
        )

    def _create_item(
        self, client_id: str, req: orders_pb2.CreateOrderRequest
    ) -> orders_pb2.CreateOrderResult:
        try:
            outcome = self._create(client_id, req, [])
        except CommandError as err:
            return orders_pb2.CreateOrderResult(request_id=req.request_id, error=err.to_proto())
        return orders_pb2.CreateOrderResult(
            request_id=req.request_id, order=order_proto(outcome.order)
        )

    def _create(
        self, client_id: str, req: orders_pb2.CreateOrderRequest, out: Violations
    ) -> CreateOutcome:
        """One create; `out` holds the violations found so far (the command's client_id)."""
        out.extend(validate_create(req))
        if out:
            raise invalid(out)
        order_id = make_order_id(client_id, req.request_id)
        existing = self.orders.get(order_id)
        if existing is not None:
            if (existing.client_id, existing.request_id) != (client_id, req.request_id):
                raise CommandError(
                    ALREADY_EXISTS,
                    "ORDER_ID_COLLISION",
                    f"order id {order_id} is already used by another request",
                )
            differing = first_body_difference(existing, req)
            if differing is not None:
                raise CommandError(
                    ALREADY_EXISTS,
                    "REQUEST_ID_REUSED",
                    f"request_id {req.request_id} was already used with a different {differing}",
                )
            return CreateOutcome(existing, replayed=True, created_rejected=False)
        region = self.regions.get(req.region)
        if region is None:
            raise CommandError(
                FAILED_PRECONDITION, "REGION_NOT_FOUND", f"region {req.region} not found"
            )
        lines = lines_of(req)
        order = OrderRow(
            order_id=order_id,
            client_id=client_id,
            request_id=req.request_id,
            customer_id=req.customer_id,
            region=req.region,
            lines=lines,
            policy=req.policy,
            status=REJECTED,
            version=1,
            allocations=[],
            backorders=[],
            total_minor=sum(x.quantity * x.unit_price_minor for x in lines),
            currency=lines[0].currency,
            create_ms=self._now,
            update_ms=self._now,
            expire_ms=None,
            status_reason="",
        )
        self._allocate(order, region)
        self._save_order(order_id)
        self.orders[order_id] = order
        self._order_event(order)
        return CreateOutcome(order, replayed=False, created_rejected=order.status == REJECTED)

    def _region_locations(self, region: str) -> list[LocationRow]:
        """The region's locations by (priority, location_id)."""
        locs = [loc for loc in self.locations.values() if loc.region == region]
        locs.sort(key=lambda loc: (loc.priority, loc.location_id))
        return locs

    def _available(self, sku: str, location_id: str) -> int:
        row = self.stock.get((sku, location_id))
        return 0 if row is None else row.available

    def _allocate(self, order: OrderRow, region: RegionRow) -> None:
        """Decides the order's status and reserves stock (docs/engine.md "Allocation")."""
        candidates = self._region_locations(region.region)

        # 1. one location that can fill every line: the first one in strategy order
        def fills_everything(loc: LocationRow) -> bool:
            return all(self._available(x.sku, loc.location_id) >= x.quantity for x in order.lines)

        ranked = candidates
        if region.strategy == STRATEGY_MOST_AVAILABLE:
            ranked = sorted(
                candidates,
                key=lambda loc: (
                    -sum(self._available(x.sku, loc.location_id) for x in order.lines),
                    loc.priority,
                    loc.location_id,
                ),
            )
        chosen = next((loc for loc in ranked if fills_everything(loc)), None)
        if chosen is not None:
            for i, x in enumerate(order.lines):
                self._reserve(x.sku, chosen.location_id, x.quantity)
                order.allocations.append(Alloc(i, x.sku, chosen.location_id, x.quantity))
            self._set_allocated(order, region)
            return
        policy = normalized_policy(order.policy)
        if policy == POLICY_SINGLE_LOCATION:
            self._set_rejected(order)
            return
        # 2. line by line across locations in priority order
        taken: list[Alloc] = []
        missing: list[Backorder] = []
        for i, x in enumerate(order.lines):
            remaining = x.quantity
            for loc in candidates:
                if remaining == 0:
                    break
                available = self._available(x.sku, loc.location_id)
                if available <= 0:
                    continue
                take = min(remaining, available)
                taken.append(Alloc(i, x.sku, loc.location_id, take))
                remaining -= take
            if remaining > 0:
                missing.append(Backorder(i, x.sku, remaining))
        if not missing:
            for a in taken:
                self._reserve(a.sku, a.location_id, a.quantity)
            order.allocations = taken
            self._set_allocated(order, region)
        elif policy == POLICY_SPLIT:
            self._set_rejected(order)
        else:  # BACKORDER
            for a in taken:
                self._reserve(a.sku, a.location_id, a.quantity)
            order.allocations = taken
            order.backorders = missing
            order.status = BACKORDERED
            for b in missing:
                key = (order.region, b.sku)
                self._save_queue(key)
                self.queues.setdefault(key, []).append((order.order_id, b.line_index))

    def _set_allocated(self, order: OrderRow, region: RegionRow) -> None:
        order.status = ALLOCATED
        order.expire_ms = self._now + region_ttl(region) * 1000

    @staticmethod
    def _set_rejected(order: OrderRow) -> None:
        order.status = REJECTED
        order.status_reason = "INSUFFICIENT_STOCK"

    # ---- stock mutations (every change bumps the row's version)

    def _stock_row_for_write(self, sku: str, location_id: str) -> StockRow:
        key = (sku, location_id)
        self._save_stock(key)
        row = self.stock.get(key)
        if row is None:
            row = StockRow(sku, location_id)
            self.stock[key] = row
        return row

    def _reserve(self, sku: str, location_id: str, quantity: int) -> None:
        row = self._stock_row_for_write(sku, location_id)
        row.reserved += quantity
        row.version += 1

    def _release(self, sku: str, location_id: str, quantity: int) -> None:
        row = self._stock_row_for_write(sku, location_id)
        row.reserved -= quantity
        row.version += 1

    def _serve_backorders(self, sku: str, location_id: str) -> None:
        """Stock of (sku, location) may have become available: the FIFO queue goes first."""
        region = self.locations[location_id].region
        key = (region, sku)
        queue = self.queues.get(key)
        if not queue:
            return
        ttl = region_ttl(self.regions[region])
        still_waiting: list[QueueEntry] = []
        changed = False
        for order_id, line_index in queue:
            available = self._available(sku, location_id)
            if available <= 0:
                still_waiting.append((order_id, line_index))
                continue
            self._save_order(order_id)
            order = self.orders[order_id]
            backorder = order.backorder_of(line_index)
            take = min(backorder.quantity, available)
            self._reserve(sku, location_id, take)
            add_allocation(order, Alloc(line_index, sku, location_id, take))
            backorder.quantity -= take
            if backorder.quantity == 0:
                order.backorders.remove(backorder)
            else:
                still_waiting.append((order_id, line_index))
            changed = True
            order.version += 1
            order.update_ms = self._now
            if not order.backorders:
                order.status = ALLOCATED
                order.expire_ms = self._now + ttl * 1000
            self._order_event(order)
        if changed:
            self._save_queue(key)
            if still_waiting:
                self.queues[key] = still_waiting
            else:
                del self.queues[key]

    # ---- transitions

    def _order_for_transition(self, order_id: str, verb: str, legal: set[int]) -> OrderRow:
        order = self.orders.get(order_id)
        if order is None:
            raise CommandError(NOT_FOUND, "ORDER_NOT_FOUND", f"order {order_id} not found")
        if order.status not in legal:
            raise CommandError(
                FAILED_PRECONDITION,
                "ILLEGAL_TRANSITION",
                f"cannot {verb} an order in status {STATUS_NAMES[order.status]}",
            )
        self._save_order(order_id)
        return order

    def _bump(self, order: OrderRow, status: int) -> None:
        order.status = status
        order.version += 1
        order.update_ms = self._now
        if status != ALLOCATED:
            order.expire_ms = None

    def _cmd_confirm_order(
        self, client_id: str, req: orders_pb2.ConfirmOrderRequest, out: Violations
    ) -> engine_pb2.CommandResult:
        check_id(req.order_id, "order_id", MAX_ID_LEN, out)
        if out:
            raise invalid(out)
        order = self._order_for_transition(req.order_id, "confirm", {ALLOCATED})
        self._bump(order, CONFIRMED)
        self._order_event(order)
        return engine_pb2.CommandResult(code=OK, order=order_proto(order))

    def _cmd_ship_order(
        self, client_id: str, req: orders_pb2.ShipOrderRequest, out: Violations
    ) -> engine_pb2.CommandResult:
        check_id(req.order_id, "order_id", MAX_ID_LEN, out)
        if out:
            raise invalid(out)
        order = self._order_for_transition(req.order_id, "ship", {CONFIRMED})
        for a in order.allocations:
            row = self._stock_row_for_write(a.sku, a.location_id)
            row.on_hand -= a.quantity
            row.reserved -= a.quantity
            row.version += 1
        self._bump(order, SHIPPED)
        self._order_event(order)
        return engine_pb2.CommandResult(code=OK, order=order_proto(order))

    def _cmd_cancel_order(
        self, client_id: str, req: orders_pb2.CancelOrderRequest, out: Violations
    ) -> engine_pb2.CommandResult:
        check_id(req.order_id, "order_id", MAX_ID_LEN, out)
        if len(req.reason.encode()) > MAX_REASON_LEN:
            out.append(("reason", f"must be at most {MAX_REASON_LEN} bytes"))
        if out:
            raise invalid(out)
        order = self._order_for_transition(
            req.order_id, "cancel", {ALLOCATED, BACKORDERED, CONFIRMED}
        )
        for b in order.backorders:
            key = (order.region, b.sku)
            self._save_queue(key)
            queue = [e for e in self.queues.get(key, []) if e[0] != order.order_id]
            if queue:
                self.queues[key] = queue
            else:
                self.queues.pop(key, None)
        self._bump(order, CANCELLED)
        order.status_reason = req.reason or "CANCELLED_BY_CLIENT"
        self._release_and_serve(order)
        return engine_pb2.CommandResult(code=OK, order=order_proto(order))

    def _release_and_serve(self, order: OrderRow) -> None:
        """Releases a dead order's reservations, emits its event, then serves backorders."""
        for a in order.allocations:
            self._release(a.sku, a.location_id, a.quantity)
        self._order_event(order)
        for a in order.allocations:
            self._serve_backorders(a.sku, a.location_id)

    def _cmd_expire_reservations(
        self, client_id: str, req: engine_pb2.ExpireReservations, out: Violations
    ) -> engine_pb2.CommandResult:
        if out:
            raise invalid(out)
        due = [
            o
            for o in self.orders.values()
            if o.status == ALLOCATED and o.expire_ms is not None and o.expire_ms <= self._now
        ]
        due.sort(key=lambda o: (o.expire_ms, o.order_id))
        for order in due:
            self._save_order(order.order_id)
            self._bump(order, EXPIRED)
            order.status_reason = "RESERVATION_EXPIRED"
            self._release_and_serve(order)
        return engine_pb2.CommandResult(
            code=OK, expire_reservations=engine_pb2.ExpireReservationsResult(expired=len(due))
        )

    # ---- stock

    def _location_of(self, location_id: str) -> LocationRow:
        loc = self.locations.get(location_id)
        if loc is None:
            raise CommandError(NOT_FOUND, "LOCATION_NOT_FOUND", f"location {location_id} not found")
        return loc

    def _change_on_hand(self, sku: str, location_id: str, on_hand: int, reason: int) -> StockRow:
        reserved = (
            self.stock[(sku, location_id)].reserved if (sku, location_id) in self.stock else 0
        )
        if on_hand < reserved:
            raise CommandError(
                FAILED_PRECONDITION,
                "STOCK_BELOW_RESERVED",
                f"on_hand {on_hand} would be below reserved {reserved}",
            )
        row = self._stock_row_for_write(sku, location_id)
        grew = on_hand > row.on_hand
        row.on_hand = on_hand
        row.version += 1
        self._stock_event(row, reason)
        if grew:  # available can only have grown if on_hand did
            self._serve_backorders(sku, location_id)
        return row

    def _cmd_set_stock(
        self, client_id: str, req: orders_pb2.SetStockRequest, out: Violations
    ) -> engine_pb2.CommandResult:
        check_id(req.sku, "sku", MAX_ID_LEN, out)
        check_id(req.location_id, "location_id", MAX_ID_LEN, out)
        check_range(req.on_hand, 0, MAX_ON_HAND, "on_hand", out)
        if out:
            raise invalid(out)
        self._location_of(req.location_id)
        row = self._change_on_hand(
            req.sku, req.location_id, req.on_hand, events_pb2.STOCK_EVENT_REASON_SET
        )
        return engine_pb2.CommandResult(code=OK, stock=stock_proto(row))

    def _cmd_adjust_stock(
        self, client_id: str, req: orders_pb2.AdjustStockRequest, out: Violations
    ) -> engine_pb2.CommandResult:
        check_id(req.sku, "sku", MAX_ID_LEN, out)
        check_id(req.location_id, "location_id", MAX_ID_LEN, out)
        check_range(req.delta, -MAX_ON_HAND, MAX_ON_HAND, "delta", out)
        if out:
            raise invalid(out)
        self._location_of(req.location_id)
        key = (req.sku, req.location_id)
        on_hand = (self.stock[key].on_hand if key in self.stock else 0) + req.delta
        if on_hand > MAX_ON_HAND:
            raise invalid([("delta", f"on_hand would exceed {MAX_ON_HAND}")])
        row = self._change_on_hand(
            req.sku, req.location_id, on_hand, events_pb2.STOCK_EVENT_REASON_ADJUSTED
        )
        return engine_pb2.CommandResult(code=OK, stock=stock_proto(row))

    def _cmd_upsert_location(
        self, client_id: str, req: orders_pb2.UpsertLocationRequest, out: Violations
    ) -> engine_pb2.CommandResult:
        loc = req.location
        if not req.HasField("location"):
            out.append(("location", "is required"))
        else:
            check_id(loc.location_id, "location.location_id", MAX_ID_LEN, out)
            check_id(loc.region, "location.region", MAX_REGION_LEN, out)
            check_range(loc.priority, 0, MAX_LOCATION_PRIORITY, "location.priority", out)
        if out:
            raise invalid(out)
        if loc.region not in self.regions:
            raise CommandError(
                FAILED_PRECONDITION, "REGION_NOT_FOUND", f"region {loc.region} not found"
            )
        existing = self.locations.get(loc.location_id)
        if existing is not None and existing.region != loc.region:
            raise CommandError(
                FAILED_PRECONDITION,
                "LOCATION_REGION_IMMUTABLE",
                f"location {loc.location_id} is in region {existing.region}; "
                "its region cannot change",
            )
        self._save_location(loc.location_id)
        row = LocationRow(loc.location_id, loc.region, loc.priority)
        self.locations[loc.location_id] = row
        return engine_pb2.CommandResult(code=OK, location=location_proto(row))

    def _cmd_configure_region(
        self, client_id: str, req: orders_pb2.ConfigureRegionRequest, out: Violations
    ) -> engine_pb2.CommandResult:
        r = req.region
        if not req.HasField("region"):
            out.append(("region", "is required"))
        else:
            check_id(r.region, "region.region", MAX_REGION_LEN, out)
            if r.strategy not in KNOWN_STRATEGIES:
                out.append(("region.strategy", f"unknown allocation strategy {r.strategy}"))
            check_range(
                r.reservation_ttl_seconds,
                0,
                MAX_RESERVATION_TTL_SECONDS,
                "region.reservation_ttl_seconds",
                out,
            )
        if out:
            raise invalid(out)
        self._save_region(r.region)
        row = RegionRow(r.region, r.strategy, r.reservation_ttl_seconds)
        self.regions[r.region] = row
        return engine_pb2.CommandResult(code=OK, region=region_proto(row))

    def _cmd_reconcile(
        self, client_id: str, req: orders_pb2.ReconcileRequest, out: Violations
    ) -> engine_pb2.CommandResult:
        if req.region:
            check_id(req.region, "region", MAX_REGION_LEN, out)
        if out:
            raise invalid(out)
        if req.region and req.region not in self.regions:
            raise CommandError(
                FAILED_PRECONDITION, "REGION_NOT_FOUND", f"region {req.region} not found"
            )
        computed = self.live_reserved()
        rows = [
            row
            for key, row in sorted(self.stock.items())
            if not req.region or self.locations[row.location_id].region == req.region
        ]
        drifts = []
        repaired = False
        for row in rows:
            expected = computed.get((row.sku, row.location_id), 0)
            if expected == row.reserved:
                continue
            drifts.append(
                orders_pb2.StockDrift(
                    sku=row.sku,
                    location_id=row.location_id,
                    recorded_reserved=row.reserved,
                    computed_reserved=expected,
                )
            )
            if req.repair and expected <= row.on_hand:
                row = self._stock_row_for_write(row.sku, row.location_id)
                row.reserved = expected
                row.version += 1
                self._stock_event(row, events_pb2.STOCK_EVENT_REASON_RECONCILED)
                repaired = True
        return engine_pb2.CommandResult(
            code=OK,
            reconcile=orders_pb2.ReconcileResponse(
                rows_checked=len(rows), drifts=drifts, repaired=repaired
            ),
        )

    # ------------------------------------------------------------------ restore

    def restore(
        self,
        regions: Iterable[bytes],
        locations: Iterable[bytes],
        stock: Iterable[bytes],
        orders: Iterable[bytes],
        batch_seq: int = 0,
    ) -> None:
        """Rebuilds the state from persisted rows (docs/engine.md "Restoring state").

        Backorder queues are rebuilt FIFO by (create_time, order_id); `reserved` is taken as
        stored (Reconcile can then detect drift). Nothing is pending afterwards."""
        self.regions = {}
        for data in regions:
            r = orders_pb2.Region.FromString(data)
            self.regions[r.region] = RegionRow(r.region, r.strategy, r.reservation_ttl_seconds)
        self.locations = {}
        for data in locations:
            loc = orders_pb2.Location.FromString(data)
            self.locations[loc.location_id] = LocationRow(loc.location_id, loc.region, loc.priority)
        self.stock = {}
        for data in stock:
            s = orders_pb2.StockLevel.FromString(data)
            self.stock[(s.sku, s.location_id)] = StockRow(
                s.sku, s.location_id, s.on_hand, s.reserved, s.version
            )
        self.orders = {}
        for data in orders:
            row = order_row(orders_pb2.Order.FromString(data))
            self.orders[row.order_id] = row
        self.queues = {}
        waiting = sorted(
            (o for o in self.orders.values() if o.status == BACKORDERED),
            key=lambda o: (o.create_ms, o.order_id),
        )
        for o in waiting:
            for b in o.backorders:
                self.queues.setdefault((o.region, b.sku), []).append((o.order_id, b.line_index))
        self.batch_seq = batch_seq
        self.pending = []

    # ------------------------------------------------------------------ invariants

    def live_reserved(self) -> dict[StockKey, int]:
        """Sum of live allocations per (sku, location)."""
        total: dict[StockKey, int] = {}
        for o in self.orders.values():
            if o.status in LIVE_STATUSES:
                for a in o.allocations:
                    key = (a.sku, a.location_id)
                    total[key] = total.get(key, 0) + a.quantity
        return total

    def check_invariants(self) -> None:
        """I1: reserved == sum of live allocations and 0 <= reserved <= on_hand, plus the
        bookkeeping of orders and backorder queues. Raises AssertionError."""
        live = self.live_reserved()
        for key, row in self.stock.items():
            assert 0 <= row.reserved <= row.on_hand <= MAX_ON_HAND, f"I1 bounds {row}"
            assert row.reserved == live.get(key, 0), f"I1 reserved {row} live={live.get(key, 0)}"
            assert row.location_id in self.locations, f"stock of unknown location {row}"
        for key in live:
            assert key in self.stock, f"allocation without stock row {key}"
        queued: dict[tuple[str, int], QueueKey] = {}
        for qkey, queue in self.queues.items():
            assert queue, f"empty queue kept {qkey}"
            for entry in queue:
                assert entry not in queued, f"line queued twice {entry}"
                queued[entry] = qkey
        for o in self.orders.values():
            filled = [0] * len(o.lines)
            for a in o.allocations:
                assert a.quantity > 0 and a.sku == o.lines[a.line_index].sku
                filled[a.line_index] += a.quantity
            for b in o.backorders:
                assert b.quantity > 0 and b.sku == o.lines[b.line_index].sku
                filled[b.line_index] += b.quantity
            if o.status in (ALLOCATED, BACKORDERED, CONFIRMED):
                for i, x in enumerate(o.lines):
                    assert filled[i] == x.quantity, f"{o.order_id} line {i} filled {filled[i]}"
            if o.status == BACKORDERED:
                assert o.backorders, o
                for b in o.backorders:
                    assert queued.get((o.order_id, b.line_index)) == (o.region, b.sku), o
            else:
                assert not any(e[0] == o.order_id for e in queued), o
            assert (o.expire_ms is not None) == (o.status == ALLOCATED), o


def add_allocation(order: OrderRow, new: Alloc) -> None:
    """Adds stock taken for a backordered line: to the allocation of the same line and
    location if there is one, else after the line's other allocations, so the list stays
    "by line index, then in the order they were taken" (docs/engine.md "Allocation")."""
    for a in order.allocations:
        if a.line_index == new.line_index and a.location_id == new.location_id:
            a.quantity += new.quantity
            return
    at = next(
        (i for i, a in enumerate(order.allocations) if a.line_index > new.line_index),
        len(order.allocations),
    )
    order.allocations.insert(at, new)


def merge_saved(child: dict[K, V], parent: dict[K, V]) -> None:
    for key, old in child.items():
        if key not in parent:
            parent[key] = old


def region_ttl(region: RegionRow) -> int:
    return region.ttl_seconds or DEFAULT_RESERVATION_TTL_SECONDS
