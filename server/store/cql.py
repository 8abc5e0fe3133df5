"""CQL adapter (ScyllaDB in production, Cassandra 5 locally) for `OrderStore`.

Data model (docs/design.md, "Storage"):
- `orders`: partition = order_id. Static columns hold the current order; one clustering row
  per version holds that version's event. A change is one single-partition unlogged batch,
  so the order and its event land atomically.
- `orders_by_customer`: ((customer_id, month bucket), created_at DESC, order_id) for paged
  listing, denormalised with the order's state.
- `stock`: one row per (sku, location), written only by the owning engine.
- `journal`: one row per engine batch, ((engine_id, seq bucket), batch_seq): the outbox and
  redo log. Found after a crash from the published watermark, without scanning.
Every write of a batch carries the batch's write timestamp (USING TIMESTAMP), so a redo of
an old entry can never overwrite newer data, and concurrent writes resolve in batch order.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cassandra import ConsistencyLevel, DriverException
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    ResponseFuture,
    Session,
)
from cassandra.connection import ConnectionException
from cassandra.policies import ExponentialReconnectionPolicy, RoundRobinPolicy
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from server.gen.orders.engine.v1 import engine_pb2
from server.gen.orders.v1 import events_pb2, orders_pb2
from server.store.base import BatchWrite, OrderPage, StoredState, StoreUnavailable

# One journal partition holds this many consecutive batches: bounded partitions, and the
# entries after a watermark are found by reading at most a few partitions.
JOURNAL_BUCKET_SIZE = 10_000
# Listing walks month buckets back from now; older orders are not listed.
LISTING_MAX_MONTHS = 24
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
# What the driver raises when the cluster is unreachable, slow or short of replicas: all of
# it means "not confirmed", never a bug in the caller.
STORE_FAILURES: tuple[type[BaseException], ...] = (
    DriverException,
    NoHostAvailable,
    ConnectionException,
    OSError,
)
# Journal rows expire after a week: far longer than any outage the outbox must cover.
JOURNAL_TTL_S = 7 * 24 * 3600

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS orders (
        order_id text,
        version bigint,
        customer_id text static,
        status int static,
        current_version bigint static,
        created_at timestamp static,
        updated_at timestamp static,
        state blob static,
        event_subject text,
        event blob,
        PRIMARY KEY (order_id, version)
    ) WITH CLUSTERING ORDER BY (version DESC)""",
    """CREATE TABLE IF NOT EXISTS orders_by_customer (
        customer_id text,
        bucket int,
        created_at timestamp,
        order_id text,
        status int,
        state blob,
        PRIMARY KEY ((customer_id, bucket), created_at, order_id)
    ) WITH CLUSTERING ORDER BY (created_at DESC, order_id ASC)""",
    """CREATE TABLE IF NOT EXISTS stock (
        sku text,
        location_id text,
        on_hand bigint,
        reserved bigint,
        version bigint,
        PRIMARY KEY ((sku), location_id)
    )""",
    """CREATE TABLE IF NOT EXISTS locations (
        location_id text PRIMARY KEY,
        state blob
    )""",
    """CREATE TABLE IF NOT EXISTS regions (
        region text PRIMARY KEY,
        state blob
    )""",
    f"""CREATE TABLE IF NOT EXISTS journal (
        engine_id text,
        bucket bigint,
        batch_seq bigint,
        entry blob,
        PRIMARY KEY ((engine_id, bucket), batch_seq)
    ) WITH default_time_to_live = {JOURNAL_TTL_S}""",
    """CREATE TABLE IF NOT EXISTS watermarks (
        engine_id text,
        name text,
        batch_seq bigint,
        PRIMARY KEY (engine_id, name)
    )""",
]


def month_bucket(unix_ms: int) -> int:
    moment = datetime.fromtimestamp(unix_ms / 1000, tz=UTC)
    return moment.year * 100 + moment.month


def previous_month(bucket: int) -> int:
    year, month = divmod(bucket, 100)
    return (year - 1) * 100 + 12 if month == 1 else year * 100 + month - 1


def _ms_to_datetime(unix_ms: int) -> datetime:
    return datetime.fromtimestamp(unix_ms / 1000, tz=UTC)


class _ConcurrentWrites:
    """Runs statements with at most `limit` in flight, entirely on driver threads, and
    signals the asyncio loop once at the end (not once per statement)."""

    def __init__(
        self,
        session: Session,
        statements: Sequence[tuple[Any, Sequence[Any] | None]],
        limit: int,
        loop: asyncio.AbstractEventLoop,
        timeout_s: float,
    ) -> None:
        self._session = session
        self._statements = statements
        self._limit = limit
        self._loop = loop
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._next = 0
        self._done = 0
        self._failed: BaseException | None = None
        self.future: asyncio.Future[None] = loop.create_future()

    def start(self) -> None:
        if not self._statements:
            self.future.set_result(None)
            return
        for _ in range(min(self._limit, len(self._statements))):
            self._launch_next()

    def _launch_next(self) -> None:
        with self._lock:
            if self._failed is not None or self._next >= len(self._statements):
                return
            index = self._next
            self._next += 1
        statement, params = self._statements[index]
        try:
            response: ResponseFuture = self._session.execute_async(
                statement, params, timeout=self._timeout_s
            )
        except Exception as exc:  # the driver can raise synchronously (no hosts)
            self._finish(exc)
            return
        response.add_callbacks(self._on_success, self._on_error)

    def _on_success(self, _rows: Any) -> None:
        with self._lock:
            self._done += 1
            finished = self._done == len(self._statements)
        if finished:
            self._finish(None)
        else:
            self._launch_next()

    def _on_error(self, exc: BaseException) -> None:
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        with self._lock:
            if exc is not None:
                if self._failed is not None:
                    return
                self._failed = exc
        self._loop.call_soon_threadsafe(self._resolve, exc)

    def _resolve(self, exc: BaseException | None) -> None:
        if self.future.done():
            return
        if exc is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(exc)


class CqlStore:
    """`OrderStore` over the scylla-driver. Create with `await CqlStore.connect(...)`."""

    def __init__(
        self,
        cluster: Cluster,
        session: Session,
        engine_id: str,
        consistency: int,
        concurrency: int,
        timeout_s: float,
    ) -> None:
        self._engine_id = engine_id
        self._cluster = cluster
        self._session = session
        self._consistency = consistency
        self._concurrency = concurrency
        self._timeout_s = timeout_s
        self._prepared: dict[str, PreparedStatement] = {}

    # ------------------------------------------------------------------ setup

    @classmethod
    async def connect(
        cls,
        hosts: list[str],
        port: int,
        keyspace: str,
        consistency: str,
        replication: str,
        engine_id: str = "engine-0",
        concurrency: int = 256,
        timeout_s: float = 5.0,
    ) -> CqlStore:
        level = ConsistencyLevel.name_to_value.get(consistency.upper())
        if level is None:
            raise ValueError(f"unknown consistency level {consistency!r}")

        def blocking_connect() -> tuple[Cluster, Session]:
            # Request settings go in the default execution profile: the driver's legacy
            # Cluster/Session parameters are deprecated and cannot be mixed with profiles.
            # (Consistency is set per prepared statement, see _prepare_all.)
            requests = ExecutionProfile(
                load_balancing_policy=RoundRobinPolicy(), request_timeout=timeout_s
            )
            cluster = Cluster(
                contact_points=hosts,
                port=port,
                protocol_version=4,
                execution_profiles={EXEC_PROFILE_DEFAULT: requests},
                # Reconnect within seconds after an outage (the default backs off to 10 min).
                reconnection_policy=ExponentialReconnectionPolicy(0.2, 2.0),
                connect_timeout=timeout_s,
                control_connection_timeout=timeout_s,
            )
            session = cluster.connect()
            session.execute(
                f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication}"
            )
            session.set_keyspace(keyspace)
            for statement in SCHEMA:
                session.execute(statement)
            return cluster, session

        try:
            cluster, session = await asyncio.to_thread(blocking_connect)
        except STORE_FAILURES as exc:
            raise StoreUnavailable(f"cannot connect to CQL at {hosts}:{port}: {exc}") from exc
        store = cls(cluster, session, engine_id, level, concurrency, timeout_s)
        await asyncio.to_thread(store._prepare_all)
        return store

    def _prepare_all(self) -> None:
        statements = {
            "journal": "INSERT INTO journal (engine_id, bucket, batch_seq, entry) "
            "VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
            "order_state": "INSERT INTO orders (order_id, customer_id, status, current_version, "
            "created_at, updated_at, state) VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
            "order_event": "INSERT INTO orders (order_id, version, event_subject, event) "
            "VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
            "by_customer": "INSERT INTO orders_by_customer (customer_id, bucket, created_at, "
            "order_id, status, state) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
            "stock": "INSERT INTO stock (sku, location_id, on_hand, reserved, version) "
            "VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?",
            "location": "INSERT INTO locations (location_id, state) VALUES (?, ?) "
            "USING TIMESTAMP ?",
            "region": "INSERT INTO regions (region, state) VALUES (?, ?) USING TIMESTAMP ?",
            "watermark_set": "UPDATE watermarks SET batch_seq = ? WHERE engine_id = ? AND name = ?",
            "watermark_get": "SELECT batch_seq FROM watermarks WHERE engine_id = ? AND name = ?",
            "journal_read": "SELECT batch_seq, entry FROM journal WHERE engine_id = ? "
            "AND bucket = ? AND batch_seq > ?",
            "order_get": "SELECT state FROM orders WHERE order_id = ? LIMIT 1",
            "list": "SELECT state, status FROM orders_by_customer WHERE customer_id = ? "
            "AND bucket = ?",
            "location_get": "SELECT location_id, state FROM locations WHERE location_id IN ?",
            "stock_get": "SELECT sku, location_id, on_hand, reserved, version FROM stock "
            "WHERE sku = ?",
        }
        for name, text in statements.items():
            prepared = self._session.prepare(text)
            prepared.consistency_level = self._consistency
            self._prepared[name] = prepared

    async def close(self) -> None:
        await asyncio.to_thread(self._cluster.shutdown)

    # ------------------------------------------------------------------ writes

    async def _run(self, statements: Sequence[tuple[Any, Sequence[Any] | None]]) -> None:
        runner = _ConcurrentWrites(
            self._session,
            statements,
            self._concurrency,
            asyncio.get_running_loop(),
            self._timeout_s,
        )
        runner.start()
        try:
            await runner.future
        except STORE_FAILURES as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def _row_statements(self, write: BatchWrite) -> list[tuple[Any, Sequence[Any] | None]]:
        ts = write.write_time_us
        p = self._prepared
        events_by_order: dict[str, list[tuple[int, str, bytes]]] = {}
        for subject, event_id, payload in write.events:
            if subject.startswith("orders."):
                event_order_id, _, event_version = event_id.rpartition(":")
                events_by_order.setdefault(event_order_id, []).append(
                    (int(event_version), subject, payload)
                )
        statements: list[tuple[Any, Sequence[Any] | None]] = []
        for order_id, customer_id, status, version, create_ms, update_ms, state in write.order_rows:
            group = BatchStatement(
                batch_type=BatchType.UNLOGGED, consistency_level=self._consistency
            )
            group.add(
                p["order_state"],
                (
                    order_id,
                    customer_id,
                    status,
                    version,
                    _ms_to_datetime(create_ms),
                    _ms_to_datetime(update_ms),
                    state,
                    ts,
                ),
            )
            for version_of_event, event_subject, event_payload in events_by_order.get(order_id, ()):
                group.add(
                    p["order_event"],
                    (order_id, version_of_event, event_subject, event_payload, ts),
                )
            statements.append((group, None))
            statements.append(
                (
                    p["by_customer"],
                    (
                        customer_id,
                        month_bucket(create_ms),
                        _ms_to_datetime(create_ms),
                        order_id,
                        status,
                        state,
                        ts,
                    ),
                )
            )
        for sku, location_id, on_hand, reserved, stock_version in write.stock_rows:
            statements.append(
                (p["stock"], (sku, location_id, on_hand, reserved, stock_version, ts))
            )
        for location in write.location_rows:
            parsed = orders_pb2.Location.FromString(location)
            statements.append((p["location"], (parsed.location_id, location, ts)))
        for region in write.region_rows:
            parsed_region = orders_pb2.Region.FromString(region)
            statements.append((p["region"], (parsed_region.region, region, ts)))
        return statements

    def _journal_statement(self, write: BatchWrite) -> tuple[Any, Sequence[Any] | None]:
        return (
            self._prepared["journal"],
            (
                self._engine_id,
                write.batch_seq // JOURNAL_BUCKET_SIZE,
                write.batch_seq,
                write.journal_entry,
                write.write_time_us,
            ),
        )

    async def write_batch(self, write: BatchWrite) -> None:
        # The journal first: once it is durable, a crash can be repaired by redoing it.
        await self._run([self._journal_statement(write)])
        await self._run(self._row_statements(write))

    async def redo_journal_entry(self, entry: bytes) -> None:
        await self._run(self._row_statements(batch_write_from_journal(entry)))

    async def journal_after(self, batch_seq: int) -> list[bytes]:
        # Batch numbers are contiguous, so after the watermark's own bucket the entries
        # continue in the next buckets until the first empty one.
        entries: list[bytes] = []
        bucket = batch_seq // JOURNAL_BUCKET_SIZE
        first = True
        while True:
            rows = await self._query(
                self._prepared["journal_read"], (self._engine_id, bucket, batch_seq)
            )
            found = sorted((int(row.batch_seq), bytes(row.entry)) for row in rows)
            if not found and not first:
                return entries
            entries.extend(entry for _, entry in found)
            first = False
            bucket += 1

    async def get_watermark(self, name: str) -> int:
        rows = await self._query(self._prepared["watermark_get"], (self._engine_id, name))
        return int(rows[0].batch_seq) if rows else 0

    async def set_watermark(self, name: str, batch_seq: int) -> None:
        await self._run([(self._prepared["watermark_set"], (batch_seq, self._engine_id, name))])

    # ------------------------------------------------------------------ reads

    async def _query(self, statement: Any, params: Sequence[Any] | None) -> list[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()

        def on_success(rows: Any) -> None:
            loop.call_soon_threadsafe(_set_if_pending, future, list(rows or []), None)

        def on_error(exc: BaseException) -> None:
            loop.call_soon_threadsafe(_set_if_pending, future, None, exc)

        try:
            response = self._session.execute_async(statement, params, timeout=self._timeout_s)
            response.add_callbacks(on_success, on_error)
            return await future
        except STORE_FAILURES as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def get_order(self, order_id: str) -> bytes | None:
        rows = await self._query(self._prepared["order_get"], (order_id,))
        if not rows or rows[0].state is None:
            return None
        return bytes(rows[0].state)

    async def list_orders(
        self, customer_id: str, page_size: int, page_token: str, status: int
    ) -> OrderPage:
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        cursor = decode_page_token(page_token) if page_token else None
        bucket = cursor["bucket"] if cursor else month_bucket(int(time.time() * 1000))
        paging_state = bytes.fromhex(cursor["paging"]) if cursor and cursor["paging"] else None
        oldest = bucket
        for _ in range(LISTING_MAX_MONTHS):
            oldest = previous_month(oldest)
        if cursor:
            oldest = cursor["oldest"]
        collected: list[bytes] = []
        while bucket > oldest:
            statement = self._prepared["list"].bind((customer_id, bucket))
            statement.fetch_size = size - len(collected)
            result = await asyncio.to_thread(
                functools.partial(
                    self._session.execute,
                    statement,
                    timeout=self._timeout_s,
                    paging_state=paging_state,
                )
            )
            page_rows = list(result.current_rows)
            for row in page_rows:
                if status == 0 or row.status == status:
                    collected.append(bytes(row.state))
            paging_state = result.paging_state
            if paging_state is None:
                bucket = previous_month(bucket)
            if len(collected) >= size:
                break
        if bucket <= oldest:
            return OrderPage(collected, "")
        token = encode_page_token(
            {
                "bucket": bucket,
                "paging": paging_state.hex() if paging_state else "",
                "oldest": oldest,
            }
        )
        return OrderPage(collected, token)

    async def get_stock(self, sku: str) -> list[tuple[str, str, int, int, int]]:
        rows = await self._query(self._prepared["stock_get"], (sku,))
        return [(r.sku, r.location_id, r.on_hand, r.reserved, r.version) for r in rows]

    async def location_regions(self, location_ids: list[str]) -> dict[str, str]:
        if not location_ids:
            return {}
        rows = await self._query(self._prepared["location_get"], (list(set(location_ids)),))
        return {
            row.location_id: orders_pb2.Location.FromString(bytes(row.state)).region for row in rows
        }

    async def load_state(self) -> StoredState:
        def blocking_load() -> StoredState:
            state = StoredState()
            cl = self._consistency
            for row in self._session.execute(_simple("SELECT state FROM regions", cl)):
                state.regions.append(bytes(row.state))
            for row in self._session.execute(_simple("SELECT state FROM locations", cl)):
                state.locations.append(bytes(row.state))
            for row in self._session.execute(
                _simple("SELECT sku, location_id, on_hand, reserved, version FROM stock", cl)
            ):
                level = orders_pb2.StockLevel(
                    sku=row.sku,
                    location_id=row.location_id,
                    on_hand=row.on_hand,
                    reserved=row.reserved,
                    available=row.on_hand - row.reserved,
                    version=row.version,
                )
                state.stock.append(level.SerializeToString())
            for row in self._session.execute(
                _simple("SELECT DISTINCT order_id, state FROM orders", cl)
            ):
                if row.state is not None:
                    state.orders.append(bytes(row.state))
            return state

        try:
            return await asyncio.to_thread(blocking_load)
        except STORE_FAILURES as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc


def _simple(query: str, consistency: int) -> Any:
    from cassandra.query import SimpleStatement

    return SimpleStatement(query, consistency_level=consistency, fetch_size=5000)


def _set_if_pending(
    future: asyncio.Future[list[Any]], value: list[Any] | None, exc: BaseException | None
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value or [])


def encode_page_token(cursor: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursor, separators=(",", ":")).encode()).decode()


def decode_page_token(token: str) -> dict[str, Any]:
    """Raises ValueError on a token this service did not issue."""
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError) as exc:
        raise ValueError("page_token is not a token this service issued") from exc
    if (
        not isinstance(cursor, dict)
        or not isinstance(cursor.get("bucket"), int)
        or not isinstance(cursor.get("paging"), str)
        or not isinstance(cursor.get("oldest"), int)
    ):
        raise ValueError("page_token is not a token this service issued")
    return cursor


def batch_write_from_journal(entry: bytes) -> BatchWrite:
    """Rebuild the rows of a batch from its journal entry (orders from their events)."""
    journal = engine_pb2.JournalEntry.FromString(entry)
    final: dict[str, orders_pb2.Order] = {}
    events: list[tuple[str, str, bytes]] = []
    for envelope in journal.events:
        events.append((envelope.subject, envelope.event_id, envelope.payload))
        if envelope.subject.startswith("orders."):
            event = events_pb2.OrderEvent.FromString(envelope.payload)
            final[event.order.order_id] = event.order
    order_rows = [
        (
            order.order_id,
            order.customer_id,
            int(order.status),
            order.version,
            order.create_time.ToMilliseconds(),
            order.update_time.ToMilliseconds(),
            order.SerializeToString(),
        )
        for order in final.values()
    ]
    return BatchWrite(
        batch_seq=journal.batch_seq,
        write_time_us=journal.write_time_us,
        journal_entry=entry,
        order_rows=order_rows,
        stock_rows=[
            (s.sku, s.location_id, s.on_hand, s.reserved, s.version) for s in journal.changed_stock
        ],
        location_rows=[loc.SerializeToString() for loc in journal.changed_locations],
        region_rows=[reg.SerializeToString() for reg in journal.changed_regions],
        events=events,
    )
