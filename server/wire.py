"""Packing commands into an EngineBatch without decoding the requests in Python.

An embedded protobuf message is a length-delimited field, so the raw request bytes a
servicer received can be spliced into `EngineCommand` as they are. This module writes the
few framing bytes by hand; tests/test_wire.py proves the result parses as the generated
`EngineBatch` with the same contents.
"""

from __future__ import annotations

from enum import IntEnum

_WIRE_VARINT = 0
_WIRE_LEN = 2


class CommandField(IntEnum):
    """Field numbers of EngineCommand's oneof (proto/orders/engine/v1/engine.proto)."""

    CREATE_ORDER = 10
    BATCH_CREATE_ORDERS = 11
    CANCEL_ORDER = 12
    CONFIRM_ORDER = 13
    SHIP_ORDER = 14
    SET_STOCK = 20
    ADJUST_STOCK = 21
    UPSERT_LOCATION = 22
    CONFIGURE_REGION = 23
    RECONCILE = 24
    EXPIRE_RESERVATIONS = 30


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    if value < 0:
        raise ValueError("varint takes non-negative integers only")
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _tag(field_number: int, wire_type: int) -> bytes:
    return varint((field_number << 3) | wire_type)


_CLIENT_ID_TAG = _tag(1, _WIRE_LEN)
_NOW_TAG = _tag(1, _WIRE_VARINT)
_COMMAND_TAG = _tag(2, _WIRE_LEN)
_COMMAND_TAGS = {f: _tag(f, _WIRE_LEN) for f in CommandField}


def encode_command(client_id: str, command: CommandField, request: bytes) -> bytes:
    """EngineCommand{client_id, <command> = request} from a serialised request message."""
    client = client_id.encode()
    return b"".join(
        (
            _CLIENT_ID_TAG,
            varint(len(client)),
            client,
            _COMMAND_TAGS[command],
            varint(len(request)),
            request,
        )
    )


def encode_batch(now_unix_ms: int, commands: list[bytes]) -> bytes:
    """EngineBatch{now_unix_ms, commands} from encoded EngineCommands."""
    parts = [_NOW_TAG, varint(now_unix_ms)]
    for command in commands:
        parts.append(_COMMAND_TAG)
        parts.append(varint(len(command)))
        parts.append(command)
    return b"".join(parts)


def encode_int64_field(field_number: int, value: int) -> bytes:
    """One varint field (non-negative), for appending to an already encoded message."""
    return _tag(field_number, _WIRE_VARINT) + varint(value)
