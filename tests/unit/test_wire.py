"""The hand-written EngineBatch framing parses as the generated message, for any input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.gen.orders.engine.v1 import engine_pb2
from server.gen.orders.v1 import orders_pb2
from server.wire import CommandField, encode_batch, encode_command, varint

_ids = st.text(alphabet="abcXYZ019._:-", min_size=0, max_size=80)


@given(st.integers(min_value=1, max_value=2**63 - 1))
def test_varint_matches_protobuf(value: int) -> None:
    # (0 is the proto3 default, which protobuf omits; the framing writes it and it parses.)
    message = engine_pb2.EngineBatch(now_unix_ms=value)
    assert b"\x08" + varint(value) == message.SerializeToString()
    assert engine_pb2.EngineBatch.FromString(b"\x08" + varint(0)).now_unix_ms == 0


@given(
    now=st.integers(min_value=0, max_value=2**62),
    creates=st.lists(
        st.tuples(_ids, _ids, st.lists(st.tuples(_ids, st.integers(0, 10**6)), max_size=5)),
        max_size=20,
    ),
)
def test_spliced_batch_equals_generated(
    now: int, creates: list[tuple[str, str, list[tuple[str, int]]]]
) -> None:
    expected = engine_pb2.EngineBatch(now_unix_ms=now)
    commands = []
    for client_id, request_id, lines in creates:
        request = orders_pb2.CreateOrderRequest(
            request_id=request_id,
            lines=[orders_pb2.OrderLine(sku=sku, quantity=q) for sku, q in lines],
        )
        expected.commands.append(
            engine_pb2.EngineCommand(client_id=client_id, create_order=request)
        )
        commands.append(
            encode_command(client_id, CommandField.CREATE_ORDER, request.SerializeToString())
        )
    parsed = engine_pb2.EngineBatch.FromString(encode_batch(now, commands))
    assert parsed == expected


def test_every_command_field_matches_the_proto() -> None:
    oneof = engine_pb2.EngineCommand.DESCRIPTOR.oneofs_by_name["command"]
    numbers = {f.name: f.number for f in oneof.fields}
    assert {c.name.lower(): c.value for c in CommandField} == numbers
