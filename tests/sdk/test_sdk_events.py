"""Event subscription: typed decoding, dedup by (order_id, version), acks, durability.
The JetStream tests use a private nats-server (or the stack's NATS)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js.api import StreamConfig
from orders_client import events_pb2, orders_pb2, subscribe
from orders_client.events import Event, _RecentKeys, decode_event, dedup_key


def order_event(order_id: str, version: int, kind: int = 1) -> events_pb2.OrderEvent:
    return events_pb2.OrderEvent(
        event_id=f"{order_id}:{version}",
        type=kind,  # type: ignore[arg-type]
        order=orders_pb2.Order(order_id=order_id, version=version),
    )


def stock_event(sku: str, location: str, version: int) -> events_pb2.StockEvent:
    return events_pb2.StockEvent(
        event_id=f"stock:{sku}@{location}:{version}",
        reason=events_pb2.STOCK_EVENT_REASON_SET,
        level=orders_pb2.StockLevel(sku=sku, location_id=location, version=version),
    )


def test_decode_by_subject_and_prefix() -> None:
    data = order_event("o-1", 2).SerializeToString()
    decoded = decode_event("t1.orders.v1.confirmed", data, "t1.")
    assert isinstance(decoded, events_pb2.OrderEvent) and decoded.order.version == 2
    stock = decode_event("inventory.v1.stock_changed", stock_event("A", "l", 3).SerializeToString())
    assert isinstance(stock, events_pb2.StockEvent)
    assert decode_event("payments.v1.paid", data) is None


def test_dedup_keys() -> None:
    assert dedup_key(order_event("o-1", 3)) == ("o-1", 3)
    assert dedup_key(stock_event("A", "loc", 7)) == ("stock:A@loc", 7)


def test_recent_keys_is_a_bounded_lru() -> None:
    seen = _RecentKeys(3)
    assert [seen.add(k) for k in "abc"] == [True, True, True]
    assert seen.add("a") is False  # refreshes a
    assert seen.add("d") is True  # evicts b, the least recently seen
    assert seen.add("b") is True
    assert seen.add("a") is False


async def _publish(url: str, messages: list[tuple[str, bytes]], stream: str, prefix: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        try:
            await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=stream, subjects=[prefix + "orders.v1.>", prefix + "inventory.v1.>"]
                )
            )
        for subject, data in messages:
            await js.publish(subject, data)
    finally:
        await nc.close()


async def _take(events: AsyncIterator[Event], count: int) -> list[Event]:
    got: list[Event] = []
    async for event in events:
        got.append(event)
        if len(got) == count:
            break
    return got


async def test_subscribe_typed_deduplicated_and_durable(nats_url: str) -> None:
    token = uuid.uuid4().hex[:10]
    stream, prefix, durable = f"SDKT_{token}", f"sdkt{token}.", f"sdk-test-{token}"
    await _publish(
        nats_url,
        [
            (prefix + "orders.v1.allocated", order_event("o-1", 1).SerializeToString()),
            (prefix + "orders.v1.allocated", order_event("o-1", 1).SerializeToString()),  # dup
            (prefix + "orders.v1.allocated", b"\xff\xff\xff"),  # undecodable: dropped
            (prefix + "orders.v1.confirmed", order_event("o-1", 2, 4).SerializeToString()),
            (prefix + "inventory.v1.stock_changed", stock_event("A", "l1", 1).SerializeToString()),
        ],
        stream,
        prefix,
    )
    try:
        subscription = subscribe(
            nats_url, stream=stream, durable=durable, subject_prefix=prefix, ack_wait_s=1.0
        )
        async with subscription:
            got = await asyncio.wait_for(_take(subscription, 3), 20)
        assert [type(e).__name__ for e in got] == ["OrderEvent", "OrderEvent", "StockEvent"]
        assert [dedup_key(e) for e in got] == [("o-1", 1), ("o-1", 2), ("stock:A@l1", 1)]
        assert subscription.duplicates == 1

        # The loop stopped inside the body for the stock event: it was not acknowledged,
        # so the durable consumer delivers it again (after ack_wait), then what is new.
        await _publish(
            nats_url,
            [(prefix + "orders.v1.allocated", order_event("o-2", 1).SerializeToString())],
            stream,
            prefix,
        )
        again = subscribe(nats_url, stream=stream, durable=durable, subject_prefix=prefix)
        async with again:
            got = await asyncio.wait_for(_take(again, 2), 20)
        assert sorted(dedup_key(e) for e in got) == [("o-2", 1), ("stock:A@l1", 1)]
    finally:
        nc = await nats.connect(nats_url)
        await nc.jetstream().delete_stream(stream)
        await nc.close()


async def test_ephemeral_subscription_from_new(nats_url: str) -> None:
    token = uuid.uuid4().hex[:10]
    stream, prefix = f"SDKT_{token}", f"sdkt{token}."
    old = [(prefix + "orders.v1.allocated", order_event("o-old", 1).SerializeToString())]
    await _publish(nats_url, old, stream, prefix)
    try:
        subscription = subscribe(nats_url, stream=stream, subject_prefix=prefix, deliver="new")
        async with subscription:
            task = asyncio.ensure_future(_take(subscription, 1))
            await asyncio.sleep(0.5)
            new = [(prefix + "orders.v1.shipped", order_event("o-new", 3, 5).SerializeToString())]
            await _publish(nats_url, new, stream, prefix)
            [event] = await asyncio.wait_for(task, 20)
        assert dedup_key(event) == ("o-new", 3)
    finally:
        nc = await nats.connect(nats_url)
        await nc.jetstream().delete_stream(stream)
        await nc.close()


def test_cli_watch_prints_events(nats_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from orders_client.cli import main

    token = uuid.uuid4().hex[:10]
    stream, prefix = f"SDKT_{token}", f"sdkt{token}."
    messages = [
        (prefix + "orders.v1.allocated", order_event("o-9", 1).SerializeToString()),
        (prefix + "inventory.v1.stock_changed", stock_event("SKU-1", "l1", 4).SerializeToString()),
    ]
    asyncio.run(_publish(nats_url, messages, stream, prefix))
    base = ["watch", "--nats", nats_url, "--stream", stream, "--subject-prefix", prefix]
    try:
        assert main([*base, "--from", "all", "--count", "2"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert "allocated" in lines[0] and "o-9" in lines[0] and "v1" in lines[0]
        assert "stock:set" in lines[1] and "SKU-1@l1" in lines[1]
        assert main(["--json", *base, "--from", "all", "--count", "2"]) == 0
        first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
        assert first["order_event"]["order"]["order_id"] == "o-9"
        assert second["stock_event"]["level"]["version"] == "4"
        assert main([*base[:3], "--stream", "NO_SUCH_STREAM", "--count", "1"]) == 4
    finally:

        async def drop() -> None:
            nc = await nats.connect(nats_url)
            await nc.jetstream().delete_stream(stream)
            await nc.close()

        asyncio.run(drop())
