"""google.rpc.Status with BadRequest / ErrorInfo / RetryInfo details, for gRPC errors."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from server.gen.orders.v1 import orders_pb2

ERROR_DOMAIN = "orders.v1"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def status_proto(
    code: grpc.StatusCode,
    message: str,
    reason: str = "",
    violations: Sequence[tuple[str, str]] = (),
    retry_after_ms: int = 0,
    metadata: dict[str, str] | None = None,
) -> status_pb2.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    if violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        status.details.append(packed)
    if reason:
        info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)
        packed = any_pb2.Any()
        packed.Pack(info)
        status.details.append(packed)
    if retry_after_ms:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(retry_after_ms)
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        status.details.append(packed)
    return status


def from_order_error(code: int, error: orders_pb2.OrderError) -> status_pb2.Status:
    return status_proto(
        code_from_number(code),
        error.message,
        error.reason,
        [(v.field, v.description) for v in error.field_violations],
    )


def code_from_number(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def invalid_argument(violations: Sequence[tuple[str, str]]) -> status_pb2.Status:
    summary = "; ".join(f"{f}: {d}" for f, d in violations)
    return status_proto(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"invalid request: {summary}",
        "INVALID_REQUEST",
        violations,
    )
