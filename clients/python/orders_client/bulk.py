"""Bulk creation over the StreamCreateOrders stream, with backpressure.

Both drivers (a generator for the sync client, an async generator for the asyncio one)
share `BulkCore`, which holds the bookkeeping:

- backpressure: never more than `max_in_flight` requests sent and not yet answered (the
  source iterable is only read when there is room, so memory stays bounded whatever its
  size);
- results are matched to their requests by request_id (the stream may answer out of
  order); a request without a request_id gets a fresh one before it is first sent;
- a per-item error is a `CreateResult` with `.error` set, not an exception. Items that
  failed with UNAVAILABLE or RESOURCE_EXHAUSTED are resent later with the same request_id
  (creates are idempotent), jittered, at most `policy.max_attempts` times in all;
- if the stream itself breaks with a retryable status, a new stream is opened and the
  unanswered requests are resent (same request_ids). Otherwise (or when the attempts are
  used up) every unanswered request is yielded as a failed result, then the stream's
  error is raised;
- a stream in which nothing is answered for `stall_timeout` seconds while requests are
  outstanding counts as broken with DEADLINE_EXCEEDED (the bulk equivalent of a deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
)
from dataclasses import dataclass
from typing import Any, Protocol, cast

import grpc
from grpc import aio

from orders_client.builders import with_request_id
from orders_client.errors import (
    DeadlineExceeded,
    OrdersError,
    Unavailable,
    from_order_error,
    from_rpc_error,
)
from orders_client.gen.orders.v1 import orders_pb2, orders_pb2_grpc
from orders_client.retry import RetryPolicy, is_retryable

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "BulkCore", "CreateResult"]

DEFAULT_MAX_IN_FLIGHT = 1000
# How often a waiting driver re-checks for a stalled stream, as a fraction of the timeout.
_STALL_CHECK_FRACTION = 0.25

Metadata = tuple[tuple[str, str], ...]


class _Cancellable(Protocol):
    def cancel(self) -> bool: ...


def _cancel(call: object) -> None:
    cast(_Cancellable, call).cancel()


@dataclass(frozen=True, slots=True)
class CreateResult:
    """The outcome of one create of a batch or bulk stream: an order or an error."""

    request: orders_pb2.CreateOrderRequest
    order: orders_pb2.Order | None
    error: OrdersError | None
    #: How many times the request was sent (1 unless it was retried).
    attempts: int = 1

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def ok(self) -> bool:
        return self.error is None


def result_from_proto(
    request: orders_pb2.CreateOrderRequest, result: orders_pb2.CreateOrderResult, attempts: int
) -> CreateResult:
    outcome = result.WhichOneof("outcome")
    if outcome == "order":
        return CreateResult(request, result.order, None, attempts)
    if outcome == "error":
        return CreateResult(request, None, from_order_error(result.error), attempts)
    error = OrdersError(
        "the service sent a result without an outcome", code=grpc.StatusCode.UNKNOWN
    )
    return CreateResult(request, None, error, attempts)


@dataclass(slots=True)
class _Item:
    request: orders_pb2.CreateOrderRequest
    attempts: int = 0


class BulkCore:
    """Pure bookkeeping of a bulk create (no I/O, no locking: the drivers provide those)."""

    def __init__(
        self,
        policy: RetryPolicy,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.policy = policy
        self.max_in_flight = max_in_flight
        self.clock = clock
        self._pending: dict[str, deque[_Item]] = {}
        self.unanswered = 0
        self._retries: list[tuple[float, int, _Item]] = []
        self._seq = itertools.count()
        self.stream_failures = 0
        self.last_progress = clock()
        self.input_done = False

    # ---------------------------------------------------------------- sending

    def has_room(self) -> bool:
        return self.unanswered < self.max_in_flight

    def new_item(self, request: orders_pb2.CreateOrderRequest) -> _Item:
        return _Item(with_request_id(request))

    def pop_due_retry(self, now: float) -> _Item | None:
        if self._retries and self._retries[0][0] <= now:
            return heapq.heappop(self._retries)[2]
        return None

    def next_retry_in(self, now: float) -> float | None:
        return max(0.0, self._retries[0][0] - now) if self._retries else None

    def mark_sent(self, item: _Item) -> None:
        if self.unanswered == 0:
            self.last_progress = self.clock()
        item.attempts += 1
        self._pending.setdefault(item.request.request_id, deque()).append(item)
        self.unanswered += 1

    def finished(self) -> bool:
        """Input exhausted, everything answered, nothing waiting to be resent."""
        return self.input_done and self.unanswered == 0 and not self._retries

    def stalled(self, timeout: float | None) -> bool:
        return (
            timeout is not None
            and self.unanswered > 0
            and self.clock() - self.last_progress > timeout
        )

    # ---------------------------------------------------------------- receiving

    def on_result(self, result: orders_pb2.CreateOrderResult) -> CreateResult | None:
        """Record one answer; returns the result to hand out, or None if it will be resent."""
        queue = self._pending.get(result.request_id)
        if not queue:
            raise OrdersError(
                f"the service answered an unknown request_id {result.request_id!r}",
                code=grpc.StatusCode.INTERNAL,
            )
        item = queue.popleft()
        if not queue:
            del self._pending[result.request_id]
        self.unanswered -= 1
        now = self.clock()
        self.last_progress = now
        self.stream_failures = 0
        outcome = result_from_proto(item.request, result, item.attempts)
        error = outcome.error
        if (
            error is not None
            and item.attempts < self.policy.max_attempts
            and is_retryable(error, idempotent=True)
        ):
            self._schedule(item, now + self.policy.delay(error, item.attempts))
            return None
        return outcome

    def on_stream_error(self, error: OrdersError) -> tuple[list[CreateResult], bool]:
        """The stream broke. Returns (results to hand out, whether to open a new stream)."""
        items = [item for queue in self._pending.values() for item in queue]
        self._pending.clear()
        self.unanswered = 0
        self.stream_failures += 1
        now = self.clock()
        retry = (
            is_retryable(error, idempotent=True) and self.stream_failures < self.policy.max_attempts
        )
        failed: list[CreateResult] = []
        for item in items:
            if retry and item.attempts < self.policy.max_attempts:
                self._schedule(item, now + self.policy.delay(error, self.stream_failures))
            else:
                failed.append(CreateResult(item.request, None, error, item.attempts))
        if not retry:
            # Give up: what waited for a resend is reported as failed too.
            while self._retries:
                item = heapq.heappop(self._retries)[2]
                failed.append(CreateResult(item.request, None, error, item.attempts))
        return failed, retry

    def stream_delay(self, error: OrdersError) -> float:
        """The wait before reopening the stream after its `stream_failures`-th failure."""
        return self.policy.delay(error, self.stream_failures)

    def _schedule(self, item: _Item, due: float) -> None:
        heapq.heappush(self._retries, (due, next(self._seq), item))


def _stall_error(timeout: float) -> OrdersError:
    return DeadlineExceeded(
        f"no result from the stream within {timeout:g} s",
        code=grpc.StatusCode.DEADLINE_EXCEEDED,
    )


_EARLY_END = "the stream ended before every request was answered"


# -------------------------------------------------------------------- sync driver


def bulk_create_sync(
    stub: orders_pb2_grpc.OrderServiceStub,
    requests: Iterable[orders_pb2.CreateOrderRequest],
    *,
    metadata: Metadata,
    policy: RetryPolicy,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    stall_timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[CreateResult]:
    """Stream `requests`; yields one CreateResult per request, in answer order."""
    core = BulkCore(policy, max_in_flight)
    cond = threading.Condition()
    source = iter(requests)
    input_error: list[BaseException] = []

    while True:
        stop = threading.Event()

        def request_iterator(
            stop: threading.Event = stop,
        ) -> Iterator[orders_pb2.CreateOrderRequest]:
            while True:
                pull = False
                item: _Item | None = None
                with cond:
                    while True:
                        if stop.is_set():
                            return
                        item = core.pop_due_retry(core.clock()) if core.has_room() else None
                        if item is not None:
                            core.mark_sent(item)
                            break
                        if core.has_room() and not core.input_done:
                            pull = True
                            break
                        if core.finished():
                            return
                        cond.wait(core.next_retry_in(core.clock()))
                if pull:
                    try:
                        request = next(source)
                    except StopIteration:
                        with cond:
                            core.input_done = True
                            cond.notify_all()
                        continue
                    except BaseException as exc:  # the caller's iterable failed
                        input_error.append(exc)
                        stop.set()
                        return
                    with cond:
                        item = core.new_item(request)
                        core.mark_sent(item)
                assert item is not None
                yield item.request

        call = stub.StreamCreateOrders(request_iterator(), metadata=metadata)
        reading = threading.Event()
        stalled = threading.Event()

        def watchdog(
            stop: threading.Event = stop,
            reading: threading.Event = reading,
            stalled: threading.Event = stalled,
            call: object = call,
        ) -> None:
            if stall_timeout is None:
                return
            while not stop.wait(stall_timeout * _STALL_CHECK_FRACTION):
                with cond:
                    if reading.is_set() and core.stalled(stall_timeout):
                        stalled.set()
                        _cancel(call)
                        return

        guard = threading.Thread(target=watchdog, name="orders-bulk-watchdog", daemon=True)
        guard.start()
        responses = iter(call)
        error: OrdersError
        try:
            while True:
                reading.set()
                try:
                    response = next(responses)
                except StopIteration:
                    response = None
                finally:
                    reading.clear()
                if input_error:
                    raise input_error[0]
                if response is None:
                    with cond:
                        if core.finished():
                            return
                    error = Unavailable(_EARLY_END, code=grpc.StatusCode.UNAVAILABLE)
                    break
                with cond:
                    result = core.on_result(response.result)
                    cond.notify_all()
                if result is not None:
                    yield result
        except grpc.RpcError as exc:
            if input_error:
                raise input_error[0] from None
            error = _stall_error(stall_timeout or 0) if stalled.is_set() else from_rpc_error(exc)
        finally:
            stop.set()
            with cond:
                cond.notify_all()
            _cancel(call)
        with cond:
            failed, retry = core.on_stream_error(error)
        yield from failed
        if not retry:
            raise error
        sleep(core.stream_delay(error))


# -------------------------------------------------------------------- asyncio driver

# grpc.aio replaces the status of a stream with this when a write races with the server
# ending the call (grpc/aio/_call.py, `_write`): the real status is lost, nothing says the
# requests were not received, so it is a broken stream like UNAVAILABLE (creates are
# idempotent, resending them is safe).
_AIO_WRITE_RACE = "Internal error from Core"


def _stream_error(exc: grpc.RpcError) -> OrdersError:
    error = from_rpc_error(exc)
    if error.code == grpc.StatusCode.INTERNAL and error.message == _AIO_WRITE_RACE:
        return Unavailable(
            "the stream ended while a request was being sent",
            code=grpc.StatusCode.UNAVAILABLE,
        )
    return error


async def _iterate(
    requests: Iterable[orders_pb2.CreateOrderRequest]
    | AsyncIterable[orders_pb2.CreateOrderRequest],
) -> AsyncGenerator[orders_pb2.CreateOrderRequest, None]:
    if isinstance(requests, AsyncIterable):
        async for request in requests:
            yield request
    else:
        for request in requests:
            yield request


async def bulk_create_async(
    stub: orders_pb2_grpc.OrderServiceAsyncStub,
    requests: Iterable[orders_pb2.CreateOrderRequest]
    | AsyncIterable[orders_pb2.CreateOrderRequest],
    *,
    metadata: Metadata,
    policy: RetryPolicy,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    stall_timeout: float | None = None,
) -> AsyncIterator[CreateResult]:
    """Stream `requests`; yields one CreateResult per request, in answer order."""
    core = BulkCore(policy, max_in_flight)
    source = _iterate(requests)
    wake = asyncio.Event()
    check = None if stall_timeout is None else stall_timeout * _STALL_CHECK_FRACTION

    async def write_all(
        call: aio.StreamStreamCall[
            orders_pb2.CreateOrderRequest, orders_pb2.StreamCreateOrderResult
        ],
    ) -> None:
        while True:
            item = core.pop_due_retry(core.clock()) if core.has_room() else None
            if item is None and core.has_room() and not core.input_done:
                try:
                    request = await anext(source)
                except StopAsyncIteration:
                    core.input_done = True
                    continue
                item = core.new_item(request)
            if item is not None:
                core.mark_sent(item)
                if call.done():  # ended by the server: the reader reports why
                    return
                await call.write(item.request)
                continue
            if core.finished():
                await call.done_writing()
                return
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), core.next_retry_in(core.clock()))

    try:
        while True:
            call = stub.StreamCreateOrders(None, metadata=metadata)
            writer = asyncio.ensure_future(write_all(call))
            read: asyncio.Future[Any] | None = None
            error: OrdersError | None = None
            try:
                while True:
                    if read is None:
                        read = asyncio.ensure_future(call.read())
                    waiting: set[asyncio.Future[Any]] = {read}
                    if not writer.done():
                        waiting.add(writer)
                    done, _ = await asyncio.wait(
                        waiting, timeout=check, return_when=asyncio.FIRST_COMPLETED
                    )
                    if writer in done:
                        failure = writer.exception()
                        if failure is not None and not isinstance(
                            failure, (grpc.RpcError, asyncio.InvalidStateError)
                        ):
                            raise failure  # the caller's iterable failed
                    if read not in done:
                        if stall_timeout is not None and core.stalled(stall_timeout):
                            error = _stall_error(stall_timeout)
                            break
                        continue
                    try:
                        response = read.result()
                    except grpc.RpcError as exc:
                        error = _stream_error(exc)
                        break
                    finally:
                        read = None
                    if not isinstance(response, orders_pb2.StreamCreateOrderResult):  # EOF
                        if core.finished():
                            return
                        error = Unavailable(_EARLY_END, code=grpc.StatusCode.UNAVAILABLE)
                        break
                    result = core.on_result(response.result)
                    wake.set()
                    if result is not None:
                        yield result
            finally:
                call.cancel()
                for task in (writer, read):
                    if task is not None and not task.done():
                        task.cancel()
                for task in (writer, read):
                    if task is not None:
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await task
            assert error is not None
            failed, retry = core.on_stream_error(error)
            for result in failed:
                yield result
            if not retry:
                raise error
            await asyncio.sleep(core.stream_delay(error))
    finally:
        await source.aclose()
