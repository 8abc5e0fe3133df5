"""The write path: bounded queue → micro-batch → engine → store → answer → publish.

One `BatchPipeline` owns one engine (one inventory partition). Batches run one at a time:
while a batch is in the engine or the store, new commands queue up and form the next,
larger batch, so batching adapts to load without a tuning knob beyond the maximum wait.

Failure handling (docs/design.md, "Failures"):
- The store write of a batch fails ⇒ its callers get UNAVAILABLE (nothing acknowledged),
  and the pipeline rolls *forward*: it keeps writing the same rows (same write timestamp,
  idempotent) until the store confirms, refusing new commands meanwhile. A failed write may
  have landed, so undoing the batch in the engine could contradict the store; finishing it
  cannot. Retries of the failed requests then get the stored result (idempotency).
- The broker fails ⇒ orders are still accepted and stored; events wait in the outbox (in
  memory, and durably in the journal) and go out in order when the broker is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from server import _engine
from server.broker.base import BrokerUnavailable, EventPublisher
from server.metrics import Metrics
from server.store.base import BatchWrite, OrderStore, StoreUnavailable
from server.wire import CommandField, encode_batch, encode_command, encode_int64_field

log = logging.getLogger(__name__)

# Backoff while the store or the broker is down.
RETRY_INITIAL_S = 0.05
RETRY_MAX_S = 2.0
PUBLISHED_WATERMARK = "published"
_EXPIRE_COMMAND = encode_command("system", CommandField.EXPIRE_RESERVATIONS, b"")
_JOURNAL_WRITE_TIME_FIELD = 3


class QueueFull(Exception):
    """The bounded queue is full: answer RESOURCE_EXHAUSTED with RetryInfo."""


class NotServing(Exception):
    """Recovering, draining, or the store is down: answer UNAVAILABLE."""


Outcome = tuple[int, bytes]
# Code used for callers whose batch could not be made durable.
OUTCOME_STORE_UNAVAILABLE: Outcome = (14, b"store unavailable: the request was not acknowledged")


@dataclass(slots=True)
class PendingCommand:
    command: bytes
    future: asyncio.Future[Outcome]
    # loop.time() after which nobody waits for the answer; None = no deadline
    deadline: float | None


class WriteClock:
    """Strictly increasing microsecond timestamps for CQL writes (and batch times)."""

    def __init__(self, floor_us: int = 0) -> None:
        self._last = floor_us

    def next(self) -> int:
        now = time.time_ns() // 1000
        self._last = max(now, self._last + 1)
        return self._last


class EngineHost:
    """The engine and the one thread it runs on (the GIL is released inside apply)."""

    def __init__(self, engine: _engine.Engine) -> None:
        self.engine = engine
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")

    async def apply(self, batch: bytes) -> _engine.BatchOutput:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.engine.apply, batch)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class Outbox:
    """Publishes each batch's events in batch order, then advances the published watermark."""

    def __init__(self, store: OrderStore, publisher: EventPublisher, metrics: Metrics) -> None:
        self._store = store
        self._publisher = publisher
        self._metrics = metrics
        self._queue: deque[tuple[int, list[tuple[str, str, bytes]]]] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.published_seq = 0
        self.latest_seq = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox")

    def enqueue(self, batch_seq: int, events: list[tuple[str, str, bytes]]) -> None:
        self._queue.append((batch_seq, events))
        self.latest_seq = max(self.latest_seq, batch_seq)
        self._idle.clear()
        self._wakeup.set()
        self._metrics.outbox_lag.set(self.latest_seq - self.published_seq)

    async def wait_idle(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        backoff = RETRY_INITIAL_S
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # Publish everything queued so far in one go (one wait for all acks).
            batches = list(self._queue)
            events = [event for _, batch_events in batches for event in batch_events]
            started = time.perf_counter()
            try:
                await self._publisher.publish(events)
                last_seq = batches[-1][0]
                await self._store.set_watermark(PUBLISHED_WATERMARK, last_seq)
            except Exception as exc:  # the outbox must outlive any failure
                # BrokerUnavailable / StoreUnavailable are expected; anything else is a bug,
                # logged with its traceback, and retried like an outage rather than
                # silently ending publication.
                if not isinstance(exc, BrokerUnavailable | StoreUnavailable):
                    log.exception("outbox: unexpected failure")
                self._metrics.broker_errors.inc()
                log.warning(
                    "outbox: %s; %d batches waiting",
                    exc,
                    len(self._queue),
                    extra={"outbox_batches": len(self._queue)},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
                continue
            backoff = RETRY_INITIAL_S
            self._metrics.broker_latency.observe(time.perf_counter() - started)
            self._metrics.events_published.inc(len(events))
            for _ in batches:
                self._queue.popleft()
            self.published_seq = last_seq
            self._metrics.outbox_lag.set(self.latest_seq - self.published_seq)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class BatchPipeline:
    def __init__(
        self,
        host: EngineHost,
        store: OrderStore,
        outbox: Outbox,
        metrics: Metrics,
        clock: WriteClock,
        max_batch_commands: int,
        max_queue_commands: int,
        max_wait_s: float,
        expire_interval_s: float,
    ) -> None:
        self._host = host
        self._store = store
        self._outbox = outbox
        self._metrics = metrics
        self._clock = clock
        self._max_batch = max_batch_commands
        self._max_queue = max_queue_commands
        self._max_wait_s = max_wait_s
        self._expire_interval_s = expire_interval_s
        self._last_expire = 0.0
        self._queue: deque[PendingCommand] = deque()
        self._has_work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.accepting = False
        self.store_healthy = True
        self.on_health_change: Callable[[bool], None] | None = None

    def start(self) -> None:
        self.accepting = True
        self._task = asyncio.create_task(self._run(), name="batch-pipeline")

    def submit(self, command: bytes, deadline: float | None) -> asyncio.Future[Outcome]:
        """Queue an encoded EngineCommand; the future resolves to (code, payload)."""
        if not self.accepting or not self.store_healthy:
            raise NotServing(
                "not serving: " + ("store unavailable" if self.accepting else "draining")
            )
        if len(self._queue) >= self._max_queue:
            self._metrics.rejected_full.inc()
            raise QueueFull()
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append(PendingCommand(command, future, deadline))
        self._metrics.queue_depth.set(len(self._queue))
        self._has_work.set()
        return future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue and not self.accepting:
                return  # drained
            if not self._queue:
                self._has_work.clear()
                try:
                    await asyncio.wait_for(self._has_work.wait(), self._expire_interval_s)
                except TimeoutError:
                    # Idle: still sweep expired reservations on time.
                    await self._process([])
                    continue
            # Give companions a moment to arrive unless the batch is already full.
            if len(self._queue) < self._max_batch and self._max_wait_s > 0:
                await asyncio.sleep(self._max_wait_s)
            items: list[PendingCommand] = []
            now = loop.time()
            while self._queue and len(items) < self._max_batch:
                item = self._queue.popleft()
                if item.deadline is not None and item.deadline <= now:
                    # Nobody waits for this answer: spend no work on it.
                    self._metrics.dropped_expired.inc()
                    item.future.cancel()
                    continue
                if item.future.done():
                    self._metrics.dropped_cancelled.inc()
                    continue  # the caller went away (cancelled)
                items.append(item)
            self._metrics.queue_depth.set(len(self._queue))
            if items:
                await self._process(items)

    async def _process(self, items: list[PendingCommand]) -> None:
        loop = asyncio.get_running_loop()
        write_time_us = self._clock.next()
        commands = [item.command for item in items]
        sweep = loop.time() - self._last_expire >= self._expire_interval_s
        if sweep:
            self._last_expire = loop.time()
            commands.insert(0, _EXPIRE_COMMAND)
        if not commands:
            return
        batch = encode_batch(write_time_us // 1000, commands)
        started = time.perf_counter()
        try:
            output = await self._host.apply(batch)
        except _engine.EngineError as exc:
            # A bug (or a malformed command): answer INTERNAL, keep serving.
            log.error("engine rejected a batch: %s", exc)
            for item in items:
                if not item.future.done():
                    item.future.set_result((13, f"engine error: {exc}".encode()))
            return
        self._metrics.engine_seconds.observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(len(items))
        responses = output.responses[1:] if sweep else output.responses
        if (
            not output.order_rows
            and not output.stock_rows
            and not output.events
            and not (output.location_rows or output.region_rows)
        ):
            # Nothing changed (reads, replays, rejected input): nothing to persist.
            self._host.engine.commit(output.batch_seq)
            self._answer(items, responses)
            return
        journal = output.journal() + encode_int64_field(_JOURNAL_WRITE_TIME_FIELD, write_time_us)
        write = BatchWrite(
            batch_seq=output.batch_seq,
            write_time_us=write_time_us,
            journal_entry=journal,
            order_rows=output.order_rows,
            stock_rows=output.stock_rows,
            location_rows=output.location_rows,
            region_rows=output.region_rows,
            events=output.events,
        )
        await self._persist(write, items)
        self._host.engine.commit(output.batch_seq)
        if items and not all(item.future.done() for item in items):
            self._answer(items, responses)
        self._outbox.enqueue(output.batch_seq, output.events)

    async def _persist(self, write: BatchWrite, items: list[PendingCommand]) -> None:
        backoff = RETRY_INITIAL_S
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                await self._store.write_batch(write)
            except StoreUnavailable as exc:
                attempt += 1
                self._metrics.store_errors.inc()
                if attempt == 1:
                    log.error("store write failed, rolling forward: %s", exc)
                    for item in items:
                        if not item.future.done():
                            item.future.set_result(OUTCOME_STORE_UNAVAILABLE)
                    self._set_store_healthy(False)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
                continue
            self._metrics.store_latency.observe(time.perf_counter() - started)
            if attempt:
                log.info("store is back after %d failed attempts", attempt)
                self._set_store_healthy(True)
            return

    def _set_store_healthy(self, healthy: bool) -> None:
        self.store_healthy = healthy
        if not healthy:
            # Everything queued would only wait for a store that is down.
            while self._queue:
                item = self._queue.popleft()
                if not item.future.done():
                    item.future.set_result(OUTCOME_STORE_UNAVAILABLE)
        if self.on_health_change is not None:
            self.on_health_change(healthy)

    @staticmethod
    def _answer(items: list[PendingCommand], responses: list[Outcome]) -> None:
        for item, outcome in zip(items, responses, strict=True):
            if not item.future.done():
                item.future.set_result(outcome)

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting, finish what is queued (answer, persist), then stop the loop."""
        self.accepting = False
        self._has_work.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            log.error("drain: queue not empty after %.1f s; stopping anyway", timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
