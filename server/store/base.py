"""The storage interface the service depends on; the CQL adapter implements it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class StoreUnavailable(Exception):
    """The store did not confirm a write or a read (down, timed out, not enough replicas).

    The outcome of a failed write is unknown: it may have landed. Callers must treat it as
    not acknowledged and write the same rows again (writes are idempotent)."""


@dataclass(slots=True)
class BatchWrite:
    """Everything one engine batch asks the store to write, with one write timestamp."""

    batch_seq: int
    write_time_us: int
    journal_entry: bytes
    # order_id, customer_id, status, version, create_ms, update_ms, serialized Order
    order_rows: list[tuple[str, str, int, int, int, int, bytes]]
    # sku, location_id, on_hand, reserved, version
    stock_rows: list[tuple[str, str, int, int, int]]
    location_rows: list[bytes]
    region_rows: list[bytes]
    # subject, event_id, payload
    events: list[tuple[str, str, bytes]]


@dataclass(slots=True)
class StoredState:
    """The persisted rows an engine is rebuilt from (serialized protobuf messages)."""

    regions: list[bytes] = field(default_factory=list)
    locations: list[bytes] = field(default_factory=list)
    stock: list[bytes] = field(default_factory=list)
    orders: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class OrderPage:
    orders: list[bytes]
    next_page_token: str


class OrderStore(Protocol):
    async def write_batch(self, write: BatchWrite) -> None:
        """Journal first, then every row; raises StoreUnavailable."""

    async def redo_journal_entry(self, entry: bytes) -> None:
        """Re-apply one journal entry's rows with its original write time."""

    async def journal_after(self, batch_seq: int) -> list[bytes]:
        """Journal entries with batch_seq > the given one, in order."""

    async def get_watermark(self, name: str) -> int: ...

    async def set_watermark(self, name: str, batch_seq: int) -> None: ...

    async def load_state(self) -> StoredState: ...

    async def get_order(self, order_id: str) -> bytes | None: ...

    async def list_orders(
        self, customer_id: str, page_size: int, page_token: str, status: int
    ) -> OrderPage: ...

    async def get_stock(self, sku: str) -> list[tuple[str, str, int, int, int]]: ...

    async def location_regions(self, location_ids: list[str]) -> dict[str, str]: ...

    async def close(self) -> None: ...
