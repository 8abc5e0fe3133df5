"""Typed stub of the compiled allocation engine (core_rs, built by maturin).

Semantics: docs/engine.md. Wire format: proto/orders/engine/v1/engine.proto.
"""

from typing import final

__all__ = [
    "BUILD_CPU_LEVEL",
    "BUILD_PROFILE",
    "BatchDecodeError",
    "BatchOutput",
    "Engine",
    "EngineBugError",
    "EngineError",
    "EngineStateError",
    "SnapshotError",
]

BUILD_CPU_LEVEL: str
"""The CPU level this build was compiled for: "x86-64-v4" (AVX-512) or "baseline"
(any x86-64 CPU); server/engine_build.py chooses between the two."""

BUILD_PROFILE: str
"""The profile this build was optimised with ("engine-" and a key of what it was
trained on: deploy/build_engine.sh), or "none" (ENGINE_PGO=0, or a plain cargo build)."""

class EngineError(Exception):
    """Base of every engine error."""

class BatchDecodeError(EngineError):
    """The batch bytes are not a valid EngineBatch."""

class SnapshotError(EngineError):
    """Snapshot or restore input is invalid."""

class EngineStateError(EngineError):
    """Wrong commit / rollback seq, or a snapshot while batches are pending."""

class EngineBugError(EngineError):
    """A caught Rust panic or a broken invariant: a bug. The message has the details.

    After a panic inside apply/commit/rollback the engine refuses further calls
    (raises EngineBugError) until it is restored.
    """

@final
class BatchOutput:
    """Everything one Engine.apply produced.

    Complete when apply returns; each list attribute is built on first access
    and then cached (the same list object is returned every time).
    """

    @property
    def batch_seq(self) -> int: ...
    @property
    def responses(self) -> list[tuple[int, bytes]]:
        """Per command: (grpc code, payload).

        Code 0: the serialised response message (Order for create/cancel/confirm/
        ship, BatchCreateOrdersResponse, StockLevel, Location, Region,
        ReconcileResponse, ExpireReservationsResult); else a serialised
        orders.v1.OrderError.
        """
    @property
    def replayed(self) -> list[bool]:
        """Per command: True when a create was answered from the stored order."""
    @property
    def order_rows(self) -> list[tuple[str, str, int, int, int, int, bytes]]:
        """(order_id, customer_id, status, version, create_time_ms, update_time_ms,
        serialised Order): the final state of every order the batch changed,
        in first-touch order."""
    @property
    def stock_rows(self) -> list[tuple[str, str, int, int, int]]:
        """(sku, location_id, on_hand, reserved, version), first-touch order."""
    @property
    def location_rows(self) -> list[bytes]:
        """Serialised orders.v1.Location rows the batch changed."""
    @property
    def region_rows(self) -> list[bytes]:
        """Serialised orders.v1.Region rows the batch changed."""
    @property
    def events(self) -> list[tuple[str, str, bytes]]:
        """(subject, event_id, payload): serialised OrderEvent / StockEvent, in order."""
    def encode(self) -> bytes:
        """The whole EngineBatchResult, serialised."""
    def journal(self) -> bytes:
        """The serialised JournalEntry {batch_seq, events}."""

@final
class Engine:
    """The allocation engine of one inventory partition (not thread-safe:
    call it from one thread at a time)."""

    def __init__(self) -> None: ...
    def apply(self, batch: bytes) -> BatchOutput:
        """Applies one serialised EngineBatch; the GIL is released while the
        batch is decoded, applied and encoded. The batch stays pending until
        commit / rollback. Raises BatchDecodeError."""
    def commit(self, batch_seq: int) -> None:
        """Batches <= batch_seq become durable (their undo logs are dropped).
        Raises EngineStateError if batch_seq is not pending."""
    def rollback(self, batch_seq: int) -> None:
        """Undoes batch batch_seq and every later pending batch, newest first;
        the next batch reuses batch_seq. Raises EngineStateError if batch_seq is
        not pending."""
    def pending(self) -> list[int]:
        """Sequence numbers of the pending batches, oldest first."""
    def snapshot(self) -> bytes:
        """The serialised EngineSnapshot. Raises EngineStateError while batches
        are pending."""
    @staticmethod
    def from_snapshot(data: bytes) -> Engine:
        """An engine with exactly the state of a snapshot (queue order included).
        Raises SnapshotError."""
    def restore(
        self,
        regions: list[bytes],
        locations: list[bytes],
        stock: list[bytes],
        orders: list[bytes],
        batch_seq: int = 0,
    ) -> None:
        """Replaces the whole state (pending batches included) with one rebuilt
        from persisted rows: serialised Region, Location, StockLevel and Order
        messages. Backorder queues are rebuilt in (create_time, order_id) order.
        Raises SnapshotError."""
    def reserve_orders(self, orders: int) -> None:
        """Makes room for `orders` more orders and faults that memory in now, so
        that creating them does not pay for fresh pages on the hot path (the
        JVM's AlwaysPreTouch trade: slower start, steadier latency). Takes
        0.1-1 s per million orders on the development VM, depending on the day."""
    def check_invariants(self) -> None:
        """Raises EngineBugError describing the first broken invariant (I1:
        0 <= reserved <= on_hand and reserved == sum of live allocations;
        backorder queues and expiry index consistent with the orders)."""
    def stats(self) -> dict[str, int]:
        """orders, live_orders, stock_rows, locations, regions, pending_batches, batch_seq."""
