"""Recovery from the journal against the real Cassandra: a crash after the journal row of
a batch was written but before its rows were (the window the redo log exists for)."""

from __future__ import annotations

import pytest
from harness import (
    CQL_HOST,
    CQL_PORT,
    unique_name,
)

from server import _engine
from server.app import recover
from server.gen.orders.engine.v1 import engine_pb2
from server.gen.orders.v1 import orders_pb2
from server.pipeline import WriteClock
from server.store.base import BatchWrite
from server.store.cql import CqlStore
from server.wire import CommandField, encode_batch, encode_command, encode_int64_field

pytestmark = pytest.mark.integration


def _command(field: CommandField, message: object) -> bytes:
    assert hasattr(message, "SerializeToString")
    return encode_command("client-r", field, message.SerializeToString())


async def test_journal_redo_after_a_crash_between_journal_and_rows(
    real_endpoints: tuple[str, int, str, int],
) -> None:
    store = await CqlStore.connect(
        [CQL_HOST],
        CQL_PORT,
        unique_name("rec"),
        "LOCAL_QUORUM",
        "{'class': 'SimpleStrategy', 'replication_factor': 1}",
    )
    try:
        engine = _engine.Engine()
        clock = WriteClock()
        setup = [
            _command(
                CommandField.CONFIGURE_REGION,
                orders_pb2.ConfigureRegionRequest(region=orders_pb2.Region(region="eu")),
            ),
            _command(
                CommandField.UPSERT_LOCATION,
                orders_pb2.UpsertLocationRequest(
                    location=orders_pb2.Location(location_id="l1", region="eu", priority=1)
                ),
            ),
            _command(
                CommandField.SET_STOCK,
                orders_pb2.SetStockRequest(sku="s1", location_id="l1", on_hand=10),
            ),
        ]
        create = _command(
            CommandField.CREATE_ORDER,
            orders_pb2.CreateOrderRequest(
                request_id="r1",
                customer_id="c1",
                region="eu",
                lines=[orders_pb2.OrderLine(sku="s1", quantity=3, currency="EUR")],
            ),
        )
        writes = []
        for commands in (setup, [create]):
            ts = clock.next()
            out = engine.apply(encode_batch(ts // 1000, commands))
            engine.commit(out.batch_seq)
            writes.append(
                BatchWrite(
                    batch_seq=out.batch_seq,
                    write_time_us=ts,
                    journal_entry=out.journal() + encode_int64_field(3, ts),
                    order_rows=out.order_rows,
                    stock_rows=out.stock_rows,
                    location_rows=out.location_rows,
                    region_rows=out.region_rows,
                    events=out.events,
                )
            )
        await store.write_batch(writes[0])
        # The crash: the second batch's journal row is durable, none of its rows are.
        await store._run([store._journal_statement(writes[1])])
        order_id = orders_pb2.Order.FromString(writes[1].order_rows[0][6]).order_id
        assert await store.get_order(order_id) is None
        entry = engine_pb2.JournalEntry.FromString(writes[1].journal_entry)
        assert [s.reserved for s in entry.changed_stock] == [3], "journal lacks the stock row"

        rebuilt, _, (published, replay) = await recover(store)

        assert published == 0
        assert [seq for seq, _ in replay] == [1, 2], "both unpublished batches are republished"
        stored = await store.get_order(order_id)
        assert stored is not None
        assert orders_pb2.Order.FromString(stored).status == orders_pb2.ORDER_STATUS_ALLOCATED
        assert await store.get_stock("s1") == [("s1", "l1", 10, 3, 2)]
        assert rebuilt.stats()["live_orders"] == 1
        assert rebuilt.stats()["batch_seq"] == 2
        rebuilt.check_invariants()
    finally:
        await store.close()
