"""Errors of the orders service as exceptions.

The service answers failures with a google.rpc.Status in the `grpc-status-details-bin`
trailing metadata, carrying BadRequest (field violations), ErrorInfo (a machine-readable
reason, domain "orders.v1") and RetryInfo (how long to wait) details. `from_rpc_error`
turns that into an `OrdersError` subclass chosen by the status code, so callers can write

    try:
        client.confirm_order(order_id)
    except FailedPrecondition as exc:
        if exc.reason == "ILLEGAL_TRANSITION": ...
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from orders_client.gen.orders.v1 import orders_pb2

ERROR_DOMAIN = "orders.v1"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

__all__ = [
    "ERROR_DOMAIN",
    "Aborted",
    "AlreadyExists",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "OrdersError",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "code_from_number",
    "error_class",
    "from_order_error",
    "from_rpc_error",
    "from_status",
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field: a path such as `lines[2].quantity` and what is wrong with it."""

    field: str
    description: str


class OrdersError(Exception):
    """A failed call. Subclasses are chosen by `code`; every one carries the same fields."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        field_violations: Sequence[FieldViolation] = (),
        retry_after: float | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        #: ErrorInfo.reason, e.g. "ILLEGAL_TRANSITION" ("" when the server sent none).
        self.reason = reason
        self.field_violations: list[FieldViolation] = list(field_violations)
        #: RetryInfo.retry_delay in seconds, when the server asked the caller to wait.
        self.retry_after = retry_after
        #: ErrorInfo.metadata.
        self.metadata: dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.reason:
            text += f" [{self.reason}]"
        if self.field_violations:
            text += " (" + "; ".join(f"{v.field}: {v.description}" for v in self.field_violations)
            text += ")"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, message={self.message!r}, "
            f"reason={self.reason!r}, field_violations={self.field_violations!r}, "
            f"retry_after={self.retry_after!r})"
        )


class InvalidArgument(OrdersError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(OrdersError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(OrdersError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(OrdersError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(OrdersError):
    code = grpc.StatusCode.ABORTED


class Unavailable(OrdersError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(OrdersError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(OrdersError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(OrdersError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(OrdersError):
    code = grpc.StatusCode.PERMISSION_DENIED


_CLASSES: dict[grpc.StatusCode, type[OrdersError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        Unavailable,
        ResourceExhausted,
        DeadlineExceeded,
        Unauthenticated,
        PermissionDenied,
    )
}

_CODES_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def code_from_number(number: int) -> grpc.StatusCode:
    return _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def error_class(code: grpc.StatusCode) -> type[OrdersError]:
    return _CLASSES.get(code, OrdersError)


def _make(
    code: grpc.StatusCode,
    message: str,
    reason: str = "",
    violations: Iterable[FieldViolation] = (),
    retry_after: float | None = None,
    metadata: dict[str, str] | None = None,
) -> OrdersError:
    return error_class(code)(
        message,
        code=code,
        reason=reason,
        field_violations=list(violations),
        retry_after=retry_after,
        metadata=metadata,
    )


def from_status(status: status_pb2.Status) -> OrdersError:
    """Build the exception from a google.rpc.Status and its details."""
    reason = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
            metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay
            retry_after = max(0.0, delay.seconds + delay.nanos / 1e9)
    return _make(
        code_from_number(status.code), status.message, reason, violations, retry_after, metadata
    )


def _details_bytes(error: grpc.RpcError) -> bytes | None:
    try:
        # Sync calls give (key, value) tuples, aio calls a Metadata of pairs.
        trailing = cast(Iterable[tuple[str, str | bytes]], error.trailing_metadata() or ())
    except Exception:  # some locally raised errors carry no metadata at all
        return None
    for key, value in trailing:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return value
    return None


def from_rpc_error(error: grpc.RpcError) -> OrdersError:
    """Translate a grpc (sync or aio) error into an `OrdersError`, details included."""
    try:
        code = error.code()
        message = error.details() or ""
    except Exception:  # a bare RpcError without a status: treat as a transport failure
        return Unavailable(str(error) or "transport failure", code=grpc.StatusCode.UNAVAILABLE)
    raw = _details_bytes(error)
    if raw:
        status = status_pb2.Status()
        try:
            status.ParseFromString(raw)
        except DecodeError:
            pass
        else:
            if status.code == code.value[0]:
                result = from_status(status)
                if not result.message:
                    result.message = message
                    result.args = (message,)
                return result
    return _make(code, message)


def from_order_error(error: orders_pb2.OrderError) -> OrdersError:
    """A per-item error of a batch or stream (orders.v1.OrderError) as an exception object."""
    return _make(
        code_from_number(error.code),
        error.message,
        error.reason,
        (FieldViolation(v.field, v.description) for v in error.field_violations),
    )
