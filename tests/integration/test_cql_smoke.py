"""Smoke test: the CQL store answers prepared writes and reads at the configured consistency."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from cassandra import ConsistencyLevel
from cassandra.cluster import Session

pytestmark = pytest.mark.integration


def test_prepared_write_then_read_round_trip(cql_session: Session, cql_consistency: int) -> None:
    level = ConsistencyLevel.value_to_name[cql_consistency]
    keyspace = f"smoke_{uuid.uuid4().hex[:16]}"
    cql_session.execute(
        f"CREATE KEYSPACE {keyspace} "
        "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    try:
        cql_session.execute(
            f"CREATE TABLE {keyspace}.orders ("
            " order_id uuid PRIMARY KEY,"
            " customer_id text,"
            " total_minor bigint,"
            " currency text,"
            " created_at timestamp,"
            " lines list<text>)"
        )
        insert = cql_session.prepare(
            f"INSERT INTO {keyspace}.orders "
            "(order_id, customer_id, total_minor, currency, created_at, lines) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        select = cql_session.prepare(
            f"SELECT order_id, customer_id, total_minor, currency, created_at, lines "
            f"FROM {keyspace}.orders WHERE order_id = ?"
        )
        insert.consistency_level = cql_consistency
        select.consistency_level = cql_consistency

        order_id = uuid.uuid4()
        # CQL timestamps have millisecond precision: build one that survives the round trip.
        created_at = dt.datetime(2024, 5, 17, 12, 30, 45, 123000)
        written = (order_id, "customer-42", 12_345, "EUR", created_at, ["sku-1 x2", "sku-7 x1"])
        cql_session.execute(insert, written)

        result = cql_session.execute(select, (order_id,))
        row = result.one()
        assert row is not None, f"row {order_id} not found right after writing it"
        assert tuple(row) == written
        assert result.response_future.message.consistency_level == cql_consistency, (
            f"read was not sent at {level}"
        )
    finally:
        cql_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
