"""gRPC servicers: translate and delegate.

Write methods receive the raw request bytes (no deserializer) and splice them into an
engine command; the engine validates, decides and encodes the response bytes, which go
back to the caller as they are (no serializer). Read methods parse their small requests
and read from the store. No domain logic lives here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.rpc import status_pb2

from server.errors import (
    STATUS_DETAILS_KEY,
    code_from_number,
    from_order_error,
    invalid_argument,
    status_proto,
)
from server.gen.orders.v1 import orders_pb2
from server.metrics import Metrics
from server.pipeline import BatchPipeline, NotServing, Outcome, QueueFull
from server.store.base import OrderStore, StoreUnavailable
from server.wire import CommandField, encode_command, varint

ORDER_SERVICE = "orders.v1.OrderService"
INVENTORY_SERVICE = "orders.v1.InventoryService"
# Requests one stream may have in the pipeline at once: the stream stops reading (and
# HTTP/2 flow control pushes back on the client) until answers go out.
STREAM_MAX_IN_FLIGHT = 2048
MAX_ID_LEN = 64
_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]+$")
_CLIENT_ID_KEY = "x-client-id"
_AUTHORIZATION_KEY = "authorization"

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[bytes, bytes]
Handler = Callable[[bytes, "Context"], Awaitable[bytes]]


def _id_violation(field: str, value: str, max_len: int = MAX_ID_LEN) -> list[tuple[str, str]]:
    if not value:
        return [(field, "is required")]
    if len(value) > max_len:
        return [(field, f"must be at most {max_len} characters")]
    if not _ID_PATTERN.match(value):
        return [(field, "may contain only A-Z a-z 0-9 . _ : -")]
    return []


# The request message of each write method, parsed only to log a failed call's ids.
_REQUEST_TYPES: dict[str, Any] = {
    "CreateOrder": orders_pb2.CreateOrderRequest,
    "CancelOrder": orders_pb2.CancelOrderRequest,
    "ConfirmOrder": orders_pb2.ConfirmOrderRequest,
    "ShipOrder": orders_pb2.ShipOrderRequest,
    "SetStock": orders_pb2.SetStockRequest,
    "AdjustStock": orders_pb2.AdjustStockRequest,
}


def _log_failure(method: str, request: bytes, status: status_pb2.Status) -> None:
    """One structured line per failed write, with the ids that identify it. Successful
    calls are not logged (they are counted in the metrics); failures are rare and are
    what an operator looks for."""
    ids: dict[str, str] = {}
    message_type = _REQUEST_TYPES.get(method)
    if message_type is not None:
        try:
            message = message_type.FromString(request)
            for field in ("request_id", "order_id", "customer_id", "sku", "location_id"):
                value = getattr(message, field, "")
                if value:
                    ids[field] = str(value)[:MAX_ID_LEN]
        except Exception:  # an undecodable request is itself the failure being logged
            ids["request"] = "undecodable"
    level = logging.WARNING if status.code in _SERVER_SIDE_CODES else logging.INFO
    log.log(
        level,
        "rpc failed",
        extra={
            "method": method,
            "code": code_from_number(status.code).name,
            "detail": status.message[:200],
            **ids,
        },
    )


_SERVER_SIDE_CODES = {
    grpc.StatusCode.UNAVAILABLE.value[0],
    grpc.StatusCode.INTERNAL.value[0],
    grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
}
log = logging.getLogger("server.rpc")


class RpcFailure(Exception):
    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status


class Authenticator:
    """Maps the caller to a client id: bearer token when tokens are configured, else the
    x-client-id metadata (trusted internal network), else a default."""

    def __init__(self, token_clients: dict[str, str], default_client_id: str) -> None:
        self._token_clients = token_clients
        self._default = default_client_id

    def client_id(self, context: Context) -> str:
        metadata = context.invocation_metadata() or ()
        if self._token_clients:
            for key, value in metadata:
                if key == _AUTHORIZATION_KEY and isinstance(value, str):
                    token = value.removeprefix("Bearer ").strip()
                    client = self._token_clients.get(token)
                    if client:
                        return client
            raise RpcFailure(
                status_proto(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing or unknown bearer token",
                    "UNAUTHENTICATED",
                )
            )
        for key, value in metadata:
            if key == _CLIENT_ID_KEY and isinstance(value, str):
                violations = _id_violation("x-client-id", value)
                if violations:
                    raise RpcFailure(invalid_argument(violations))
                return value
        return self._default


class Services:
    def __init__(
        self,
        pipeline: BatchPipeline,
        store: OrderStore,
        auth: Authenticator,
        metrics: Metrics,
        retry_after_ms: int,
    ) -> None:
        self._pipeline = pipeline
        self._store = store
        self._auth = auth
        self._metrics = metrics
        self._retry_after_ms = retry_after_ms

    # ------------------------------------------------------------------ plumbing

    def _fail(self, context: Context, status: status_pb2.Status) -> bytes:
        context.set_code(code_from_number(status.code))
        context.set_details(status.message)
        context.set_trailing_metadata(((STATUS_DETAILS_KEY, status.SerializeToString()),))
        return b""

    def _submit(
        self, context: Context, command: CommandField, request: bytes
    ) -> asyncio.Future[Outcome]:
        client_id = self._auth.client_id(context)
        remaining = context.time_remaining()
        deadline = None if remaining is None else asyncio.get_running_loop().time() + remaining
        try:
            return self._pipeline.submit(encode_command(client_id, command, request), deadline)
        except QueueFull:
            raise RpcFailure(
                status_proto(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "the service is at capacity; retry after the given delay",
                    "QUEUE_FULL",
                    retry_after_ms=self._retry_after_ms,
                )
            ) from None
        except NotServing as exc:
            raise RpcFailure(
                status_proto(
                    grpc.StatusCode.UNAVAILABLE,
                    str(exc),
                    "NOT_SERVING",
                    retry_after_ms=self._retry_after_ms,
                )
            ) from None

    def _outcome_status(self, code: int, payload: bytes) -> status_pb2.Status:
        if code == grpc.StatusCode.UNAVAILABLE.value[0]:
            return status_proto(
                grpc.StatusCode.UNAVAILABLE,
                payload.decode(errors="replace"),
                "STORE_UNAVAILABLE",
                retry_after_ms=self._retry_after_ms,
            )
        if code == grpc.StatusCode.INTERNAL.value[0]:
            return status_proto(grpc.StatusCode.INTERNAL, payload.decode(errors="replace"))
        return from_order_error(code, orders_pb2.OrderError.FromString(payload))

    def _engine_method(self, name: str, command: CommandField) -> Handler:
        async def handle(request: bytes, context: Context) -> bytes:
            started = time.perf_counter()
            try:
                code, payload = await self._submit(context, command, request)
                if code == 0:
                    result = payload
                else:
                    status = self._outcome_status(code, payload)
                    _log_failure(name, request, status)
                    result = self._fail(context, status)
            except RpcFailure as failure:
                code = failure.status.code
                _log_failure(name, request, failure.status)
                result = self._fail(context, failure.status)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED.value[0]
                raise
            finally:
                self._metrics.requests.labels(name, str(code)).inc()
                self._metrics.rpc_latency.labels(name).observe(time.perf_counter() - started)
            return result

        return handle

    def _read_method(
        self,
        name: str,
        parse: Callable[[bytes], Any],
        body: Callable[[Any], Awaitable[bytes]],
    ) -> Handler:
        async def handle(request: bytes, context: Context) -> bytes:
            started = time.perf_counter()
            code = 0
            try:
                self._auth.client_id(context)
                try:
                    message = parse(request)
                except Exception:
                    raise RpcFailure(
                        invalid_argument([("request", "not a valid message")])
                    ) from None
                return await body(message)
            except RpcFailure as failure:
                code = failure.status.code
                return self._fail(context, failure.status)
            except StoreUnavailable as exc:
                code = grpc.StatusCode.UNAVAILABLE.value[0]
                return self._fail(
                    context,
                    status_proto(
                        grpc.StatusCode.UNAVAILABLE,
                        f"store unavailable: {exc}",
                        "STORE_UNAVAILABLE",
                        retry_after_ms=self._retry_after_ms,
                    ),
                )
            finally:
                self._metrics.requests.labels(name, str(code)).inc()
                self._metrics.rpc_latency.labels(name).observe(time.perf_counter() - started)

        return handle

    # ------------------------------------------------------------------ reads

    async def _get_order(self, request: orders_pb2.GetOrderRequest) -> bytes:
        violations = _id_violation("order_id", request.order_id)
        if violations:
            raise RpcFailure(invalid_argument(violations))
        state = await self._store.get_order(request.order_id)
        if state is None:
            raise RpcFailure(
                status_proto(
                    grpc.StatusCode.NOT_FOUND,
                    f"order {request.order_id} not found",
                    "ORDER_NOT_FOUND",
                )
            )
        return state

    async def _list_orders(self, request: orders_pb2.ListOrdersRequest) -> bytes:
        violations = _id_violation("customer_id", request.customer_id)
        if not 0 <= request.page_size <= 1000:
            violations.append(("page_size", "must be between 0 and 1000"))
        if request.status not in orders_pb2.OrderStatus.values():
            violations.append(("status", "unknown status"))
        if violations:
            raise RpcFailure(invalid_argument(violations))
        try:
            page = await self._store.list_orders(
                request.customer_id, request.page_size, request.page_token, int(request.status)
            )
        except ValueError as exc:
            raise RpcFailure(invalid_argument([("page_token", str(exc))])) from None
        # Splice the stored Order bytes into ListOrdersResponse without re-encoding them.
        parts = []
        for state in page.orders:
            parts.append(b"\x0a" + varint(len(state)) + state)
        if page.next_page_token:
            token = page.next_page_token.encode()
            parts.append(b"\x12" + varint(len(token)) + token)
        return b"".join(parts)

    async def _get_stock(self, request: orders_pb2.GetStockRequest) -> bytes:
        violations = _id_violation("sku", request.sku)
        if request.region:
            violations += _id_violation("region", request.region, 32)
        if violations:
            raise RpcFailure(invalid_argument(violations))
        rows = await self._store.get_stock(request.sku)
        if request.region:
            regions = await self._store.location_regions([row[1] for row in rows])
            rows = [row for row in rows if regions.get(row[1]) == request.region]
        response = orders_pb2.GetStockResponse(
            levels=[
                orders_pb2.StockLevel(
                    sku=sku,
                    location_id=location_id,
                    on_hand=on_hand,
                    reserved=reserved,
                    available=on_hand - reserved,
                    version=version,
                )
                for sku, location_id, on_hand, reserved, version in rows
            ]
        )
        return response.SerializeToString()

    # ------------------------------------------------------------------ streaming

    async def _stream_create(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[bytes]:
        client_id = self._auth.client_id(context)
        loop = asyncio.get_running_loop()
        results: asyncio.Queue[bytes | None] = asyncio.Queue()
        in_flight = asyncio.Semaphore(STREAM_MAX_IN_FLIGHT)
        pending: set[asyncio.Task[None]] = set()

        async def one(raw: bytes) -> None:
            try:
                request_id = orders_pb2.CreateOrderRequest.FromString(raw).request_id
            except Exception:
                request_id = ""
            try:
                future = self._pipeline.submit(
                    encode_command(client_id, CommandField.CREATE_ORDER, raw), None
                )
                code, payload = await future
                if code == 0:
                    body = b"\x12" + varint(len(payload)) + payload
                else:
                    status = self._outcome_status(code, payload)
                    body = self._error_item(status)
            except QueueFull:
                body = self._error_item(
                    status_proto(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "at capacity",
                        "QUEUE_FULL",
                        retry_after_ms=self._retry_after_ms,
                    )
                )
            except NotServing as exc:
                body = self._error_item(
                    status_proto(grpc.StatusCode.UNAVAILABLE, str(exc), "NOT_SERVING")
                )
            finally:
                in_flight.release()
            rid = request_id.encode()
            result = b"\x0a" + varint(len(rid)) + rid + body
            await results.put(b"\x0a" + varint(len(result)) + result)

        async def reader() -> None:
            async for raw in requests:
                await in_flight.acquire()
                task = loop.create_task(one(raw))
                pending.add(task)
                task.add_done_callback(pending.discard)
            while pending:
                await asyncio.gather(*list(pending))
            await results.put(None)

        reading = loop.create_task(reader())
        try:
            while True:
                item = await results.get()
                if item is None:
                    break
                yield item
            await reading
        finally:
            reading.cancel()
            for task in list(pending):
                task.cancel()

    @staticmethod
    def _error_item(status: status_pb2.Status) -> bytes:
        from server.gen.orders.v1.orders_pb2 import FieldViolation, OrderError

        error = OrderError(code=status.code, message=status.message)
        for detail in status.details:
            from google.rpc import error_details_pb2

            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                error.field_violations.extend(
                    FieldViolation(field=v.field, description=v.description)
                    for v in bad.field_violations
                )
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                error.reason = info.reason
        encoded = error.SerializeToString()
        return b"\x1a" + varint(len(encoded)) + encoded

    # ------------------------------------------------------------------ registration

    def handlers(self) -> list[grpc.GenericRpcHandler[Any, Any]]:
        engine = self._engine_method
        order_methods = {
            "CreateOrder": engine("CreateOrder", CommandField.CREATE_ORDER),
            "BatchCreateOrders": engine("BatchCreateOrders", CommandField.BATCH_CREATE_ORDERS),
            "CancelOrder": engine("CancelOrder", CommandField.CANCEL_ORDER),
            "ConfirmOrder": engine("ConfirmOrder", CommandField.CONFIRM_ORDER),
            "ShipOrder": engine("ShipOrder", CommandField.SHIP_ORDER),
            "GetOrder": self._read_method(
                "GetOrder", orders_pb2.GetOrderRequest.FromString, self._get_order
            ),
            "ListOrders": self._read_method(
                "ListOrders", orders_pb2.ListOrdersRequest.FromString, self._list_orders
            ),
        }
        inventory_methods = {
            "SetStock": engine("SetStock", CommandField.SET_STOCK),
            "AdjustStock": engine("AdjustStock", CommandField.ADJUST_STOCK),
            "UpsertLocation": engine("UpsertLocation", CommandField.UPSERT_LOCATION),
            "ConfigureRegion": engine("ConfigureRegion", CommandField.CONFIGURE_REGION),
            "Reconcile": engine("Reconcile", CommandField.RECONCILE),
            "GetStock": self._read_method(
                "GetStock", orders_pb2.GetStockRequest.FromString, self._get_stock
            ),
        }
        order_handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            name: grpc.unary_unary_rpc_method_handler(handler)
            for name, handler in order_methods.items()
        }
        order_handlers["StreamCreateOrders"] = grpc.stream_stream_rpc_method_handler(
            self._stream_create
        )
        inventory_handlers = {
            name: grpc.unary_unary_rpc_method_handler(handler)
            for name, handler in inventory_methods.items()
        }
        return [
            grpc.method_handlers_generic_handler(ORDER_SERVICE, order_handlers),
            grpc.method_handlers_generic_handler(INVENTORY_SERVICE, inventory_handlers),
        ]
