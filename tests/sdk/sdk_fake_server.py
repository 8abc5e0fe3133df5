"""FakeOrdersServer: an in-process grpc.aio server with scripted answers, for SDK unit tests.

It tests the *client* (deadlines, retries, error mapping, backpressure), not the service:
every answer is canned or scripted per test. It runs on its own event loop in a thread,
so blocking code (the sync client, the CLI's main()) and asyncio tests can both call it.
The real service is exercised by the service and integration tests.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from orders_client.gen.orders.v1 import orders_pb2, orders_pb2_grpc

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass
class FakeError:
    """A rich error answer, encoded exactly as the real server does (server/errors.py)."""

    code: grpc.StatusCode
    message: str = "fake error"
    reason: str = ""
    violations: Sequence[tuple[str, str]] = ()
    retry_after_ms: int = 0

    def status(self) -> status_pb2.Status:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.violations
                ]
            )
            packed = any_pb2.Any()
            packed.Pack(bad)
            status.details.append(packed)
        if self.reason:
            packed = any_pb2.Any()
            packed.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain="orders.v1"))
            status.details.append(packed)
        if self.retry_after_ms:
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(self.retry_after_ms)
            packed = any_pb2.Any()
            packed.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
            status.details.append(packed)
        return status

    def order_error(self) -> orders_pb2.OrderError:
        return orders_pb2.OrderError(
            code=self.code.value[0],
            message=self.message,
            reason=self.reason,
            field_violations=[
                orders_pb2.FieldViolation(field=f, description=d) for f, d in self.violations
            ],
        )


@dataclass
class Slow:
    """Answer `reply` after `seconds`."""

    seconds: float
    reply: Any = None


@dataclass
class RecordedCall:
    method: str
    request: Any
    metadata: dict[str, str]
    time_remaining: float | None


@dataclass
class StreamBehaviour:
    """How the fake answers StreamCreateOrders."""

    # Each request is answered after uniform(min_delay, max_delay) seconds (out of order).
    min_delay: float = 0.0
    max_delay: float = 0.0
    # request_id -> errors for its first attempts (one popped per attempt).
    item_errors: dict[str, deque[FakeError]] = field(default_factory=dict)
    # Abort the stream with this error after this many answers, in `abort_streams` streams.
    abort_after: int | None = None
    abort_streams: int = 1
    abort_with: FakeError = field(
        default_factory=lambda: FakeError(grpc.StatusCode.UNAVAILABLE, "stream broken")
    )
    # Answer nothing at all (to test the stall timeout), once.
    hang_once: bool = False


def order_for(request: orders_pb2.CreateOrderRequest) -> orders_pb2.Order:
    total = sum(line.quantity * line.unit_price_minor for line in request.lines)
    return orders_pb2.Order(
        order_id="o-" + request.request_id,
        request_id=request.request_id,
        customer_id=request.customer_id,
        region=request.region,
        lines=request.lines,
        policy=request.policy,
        status=orders_pb2.ORDER_STATUS_ALLOCATED,
        version=1,
        total_minor=total,
        currency=request.lines[0].currency if request.lines else "",
        client_id="fake",
    )


class FakeOrdersService(
    orders_pb2_grpc.OrderServiceServicer, orders_pb2_grpc.InventoryServiceServicer
):
    """Both services; answers come from `script[method]` (FIFO) or a canned default."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.script: dict[str, deque[Any]] = defaultdict(deque)
        self.calls: list[RecordedCall] = []
        self.stream = StreamBehaviour()
        self.stream_requests: list[orders_pb2.CreateOrderRequest] = []
        self.stream_calls = 0
        self.max_unanswered = 0

    def calls_to(self, method: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method]

    # ---------------------------------------------------------------- unary

    async def _answer(self, method: str, request: Any, context: Any, default: Any) -> Any:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        self.calls.append(RecordedCall(method, request, metadata, context.time_remaining()))
        queue = self.script[method]
        reply = queue.popleft() if queue else default
        if isinstance(reply, Slow):
            await asyncio.sleep(reply.seconds)
            reply = reply.reply if reply.reply is not None else default
        if isinstance(reply, FakeError):
            status = reply.status()
            await context.abort(
                reply.code,
                reply.message,
                trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
            )
        assert isinstance(reply, Message)
        return reply

    async def CreateOrder(self, request: Any, context: Any) -> Any:
        return await self._answer("CreateOrder", request, context, order_for(request))

    async def BatchCreateOrders(self, request: Any, context: Any) -> Any:
        default = orders_pb2.BatchCreateOrdersResponse(
            results=[
                orders_pb2.CreateOrderResult(request_id=r.request_id, order=order_for(r))
                for r in request.requests
            ]
        )
        return await self._answer("BatchCreateOrders", request, context, default)

    async def GetOrder(self, request: Any, context: Any) -> Any:
        default = orders_pb2.Order(
            order_id=request.order_id, status=orders_pb2.ORDER_STATUS_ALLOCATED, version=1
        )
        return await self._answer("GetOrder", request, context, default)

    async def ListOrders(self, request: Any, context: Any) -> Any:
        default = orders_pb2.ListOrdersResponse(
            orders=[orders_pb2.Order(order_id="o-1", customer_id=request.customer_id, version=1)]
        )
        return await self._answer("ListOrders", request, context, default)

    def _transition(self, request: Any, status: int, version: int) -> orders_pb2.Order:
        return orders_pb2.Order(order_id=request.order_id, status=status, version=version)  # type: ignore[arg-type]

    async def CancelOrder(self, request: Any, context: Any) -> Any:
        default = self._transition(request, orders_pb2.ORDER_STATUS_CANCELLED, 2)
        return await self._answer("CancelOrder", request, context, default)

    async def ConfirmOrder(self, request: Any, context: Any) -> Any:
        default = self._transition(request, orders_pb2.ORDER_STATUS_CONFIRMED, 2)
        return await self._answer("ConfirmOrder", request, context, default)

    async def ShipOrder(self, request: Any, context: Any) -> Any:
        default = self._transition(request, orders_pb2.ORDER_STATUS_SHIPPED, 3)
        return await self._answer("ShipOrder", request, context, default)

    async def SetStock(self, request: Any, context: Any) -> Any:
        default = orders_pb2.StockLevel(
            sku=request.sku,
            location_id=request.location_id,
            on_hand=request.on_hand,
            available=request.on_hand,
            version=1,
        )
        return await self._answer("SetStock", request, context, default)

    async def AdjustStock(self, request: Any, context: Any) -> Any:
        default = orders_pb2.StockLevel(
            sku=request.sku,
            location_id=request.location_id,
            on_hand=100 + request.delta,
            available=100 + request.delta,
            version=2,
        )
        return await self._answer("AdjustStock", request, context, default)

    async def GetStock(self, request: Any, context: Any) -> Any:
        default = orders_pb2.GetStockResponse(
            levels=[
                orders_pb2.StockLevel(
                    sku=request.sku, location_id="loc-a", on_hand=10, reserved=3, available=7
                ),
                orders_pb2.StockLevel(
                    sku=request.sku, location_id="warehouse-b", on_hand=5, available=5
                ),
            ]
        )
        return await self._answer("GetStock", request, context, default)

    async def UpsertLocation(self, request: Any, context: Any) -> Any:
        return await self._answer("UpsertLocation", request, context, request.location)

    async def ConfigureRegion(self, request: Any, context: Any) -> Any:
        return await self._answer("ConfigureRegion", request, context, request.region)

    async def Reconcile(self, request: Any, context: Any) -> Any:
        default = orders_pb2.ReconcileResponse(rows_checked=4)
        return await self._answer("Reconcile", request, context, default)

    # ---------------------------------------------------------------- stream

    async def StreamCreateOrders(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[orders_pb2.StreamCreateOrderResult]:
        self.stream_calls += 1
        behaviour = self.stream
        if behaviour.hang_once:
            behaviour.hang_once = False
            async for _ in request_iterator:
                pass
            await asyncio.sleep(3600)
        answers: asyncio.Queue[orders_pb2.CreateOrderRequest | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        state = {"received": 0, "answered": 0}
        all_answered = asyncio.Event()

        async def read() -> None:
            async for request in request_iterator:
                self.stream_requests.append(request)
                state["received"] += 1
                unanswered = state["received"] - state["answered"]
                self.max_unanswered = max(self.max_unanswered, unanswered)
                delay = random.uniform(behaviour.min_delay, behaviour.max_delay)
                loop.call_later(delay, answers.put_nowait, request)
            # Wait for every answer, then end the response stream.
            while state["answered"] < state["received"]:
                all_answered.clear()
                await all_answered.wait()
            answers.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                request = await answers.get()
                if request is None:
                    break
                if (
                    behaviour.abort_after is not None
                    and behaviour.abort_streams > 0
                    and state["answered"] >= behaviour.abort_after
                ):
                    behaviour.abort_streams -= 1
                    error = behaviour.abort_with
                    await context.abort(
                        error.code,
                        error.message,
                        trailing_metadata=(
                            (STATUS_DETAILS_KEY, error.status().SerializeToString()),
                        ),
                    )
                errors = behaviour.item_errors.get(request.request_id)
                if errors:
                    result = orders_pb2.CreateOrderResult(
                        request_id=request.request_id, error=errors.popleft().order_error()
                    )
                else:
                    result = orders_pb2.CreateOrderResult(
                        request_id=request.request_id, order=order_for(request)
                    )
                state["answered"] += 1
                if state["answered"] == state["received"]:
                    all_answered.set()
                yield orders_pb2.StreamCreateOrderResult(result=result)
        finally:
            reader.cancel()


class FakeOrdersServer:
    """Runs FakeOrdersService on 127.0.0.1:<free port> in a thread with its own loop."""

    def __init__(self) -> None:
        self.service = FakeOrdersService()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    async def _start(self) -> None:
        server = grpc.aio.server()
        orders_pb2_grpc.add_OrderServiceServicer_to_server(self.service, server)
        orders_pb2_grpc.add_InventoryServiceServicer_to_server(self.service, server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
