"""Smoke test: JetStream dedup by Nats-Msg-Id, durable pull consumer, ack bookkeeping."""

from __future__ import annotations

import uuid

import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def test_dedup_then_durable_pull_and_ack(jetstream: JetStreamContext) -> None:
    suffix = uuid.uuid4().hex[:12]
    stream = f"SMOKE_{suffix.upper()}"
    subject = f"smoke.{suffix}.orders.v1.allocated"
    durable = "smoke-consumer"
    msg_id = f"{uuid.uuid4()}:1"  # the service's event id shape: <order_id>:<version>

    await jetstream.add_stream(
        name=stream,
        subjects=[subject],
        storage=StorageType.FILE,
        duplicate_window=120.0,  # seconds
    )
    try:
        first = await jetstream.publish(subject, b"event-v1", headers={"Nats-Msg-Id": msg_id})
        assert first.stream == stream
        assert not first.duplicate
        again = await jetstream.publish(subject, b"event-v1", headers={"Nats-Msg-Id": msg_id})
        assert again.duplicate is True, f"second publish of {msg_id} was not deduplicated"
        assert again.seq == first.seq

        info = await jetstream.stream_info(stream)
        assert info.state.messages == 1

        sub = await jetstream.pull_subscribe(
            subject,
            durable=durable,
            stream=stream,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30.0),
        )
        msgs = await sub.fetch(1, timeout=5)
        assert len(msgs) == 1
        msg = msgs[0]
        assert msg.data == b"event-v1"
        assert msg.headers is not None and msg.headers.get("Nats-Msg-Id") == msg_id
        assert msg.metadata.sequence.stream == first.seq

        before = await jetstream.consumer_info(stream, durable)
        assert before.num_ack_pending == 1
        await msg.ack_sync()

        after = await jetstream.consumer_info(stream, durable)
        assert after.ack_floor is not None
        assert after.ack_floor.stream_seq == first.seq
        assert after.num_ack_pending == 0
        assert after.num_pending == 0
        await sub.unsubscribe()
    finally:
        await jetstream.delete_stream(stream)
