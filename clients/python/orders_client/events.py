"""Subscribe to the service's events in NATS JetStream as typed, deduplicated messages.

    async with subscribe("nats://127.0.0.1:4222", durable="billing") as events:
        async for event in events:
            if isinstance(event, events_pb2.OrderEvent):
                print(event.order.order_id, event.order.version, event.type)

- Subjects `<prefix>orders.v1.*` carry `OrderEvent`, `<prefix>inventory.v1.*` `StockEvent`
  (the prefix is the server's subject_prefix option, "" in production).
- A pull consumer on stream ORDERS: `durable="name"` survives restarts and resumes where
  it stopped; without one, an ephemeral consumer is used (removed by the server when idle).
- Each message is acknowledged when the loop asks for the next event, i.e. after the body
  of your `async for` finished with it: a crash mid-way means redelivery, never loss.
- Delivery is at least once; duplicates (the same (order_id, version), or the same stock
  row version) within the last `DEDUP_WINDOW` keys are acknowledged and skipped.
- A payload that does not decode is terminated (never redelivered) and logged.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable
from types import TracebackType
from typing import Any

from google.protobuf.message import DecodeError

from orders_client.gen.orders.v1 import events_pb2

__all__ = [
    "DEDUP_WINDOW",
    "DEFAULT_NATS_URL",
    "DEFAULT_STREAM",
    "Event",
    "EventSubscription",
    "decode_event",
    "dedup_key",
    "subscribe",
]

log = logging.getLogger(__name__)

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_STREAM = "ORDERS"
#: How many recent event keys are remembered to drop duplicates (an LRU window).
DEDUP_WINDOW = 100_000
#: Messages asked for per pull request, and how long one pull waits.
FETCH_BATCH = 256
FETCH_TIMEOUT_S = 1.0
#: An ephemeral consumer is deleted by the server after this long without a client.
EPHEMERAL_INACTIVE_S = 30.0
ORDER_SUBJECT = "orders.v1."
STOCK_SUBJECT = "inventory.v1."

Event = events_pb2.OrderEvent | events_pb2.StockEvent


def decode_event(subject: str, data: bytes, prefix: str = "") -> Event | None:
    """The typed event for a message, or None for a subject this SDK does not know.
    Raises DecodeError for a payload that is not the message its subject promises."""
    name = subject[len(prefix) :] if prefix and subject.startswith(prefix) else subject
    if name.startswith(ORDER_SUBJECT):
        return events_pb2.OrderEvent.FromString(data)
    if name.startswith(STOCK_SUBJECT):
        return events_pb2.StockEvent.FromString(data)
    return None


def dedup_key(event: Event) -> tuple[str, int]:
    """(order_id, version) for order events; ("stock:<sku>@<location>", version) for stock."""
    if isinstance(event, events_pb2.OrderEvent):
        return event.order.order_id, event.order.version
    return f"stock:{event.level.sku}@{event.level.location_id}", event.level.version


class _RecentKeys:
    """A bounded LRU set."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def add(self, key: Hashable) -> bool:
        """True if the key is new (and remember it); False for a duplicate."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return True


class EventSubscription:
    """An async iterator of typed events from one JetStream pull consumer."""

    def __init__(
        self,
        nats_url: str = DEFAULT_NATS_URL,
        *,
        stream: str = DEFAULT_STREAM,
        durable: str | None = None,
        subject_prefix: str = "",
        deliver: str = "all",
        dedup_window: int = DEDUP_WINDOW,
        ack_wait_s: float = 30.0,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        if deliver not in ("all", "new", "last"):
            raise ValueError("deliver must be 'all', 'new' or 'last'")
        self.nats_url = nats_url
        self.stream = stream
        self.durable = durable
        self.subject_prefix = subject_prefix
        self.deliver = deliver
        self.ack_wait_s = ack_wait_s
        self._connect_options = dict(connect_options or {})
        self._seen = _RecentKeys(dedup_window)
        self._nc: Any = None
        self._sub: Any = None
        self._iterator: AsyncIterator[Event] | None = None
        #: Duplicates skipped so far.
        self.duplicates = 0

    @property
    def subjects(self) -> list[str]:
        return [self.subject_prefix + "orders.v1.>", self.subject_prefix + "inventory.v1.>"]

    async def __aenter__(self) -> EventSubscription:
        await self._connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        if self._iterator is None:
            self._iterator = self._events()
        return self._iterator

    async def close(self) -> None:
        """Stop: the last yielded event is acked only if the loop asked for another."""
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    async def _connect(self) -> Any:
        if self._nc is not None:
            return self._sub
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        policy = {
            "all": DeliverPolicy.ALL,
            "new": DeliverPolicy.NEW,
            "last": DeliverPolicy.LAST,
        }[self.deliver]
        self._nc = await nats.connect(self.nats_url, **self._connect_options)
        js = self._nc.jetstream()
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=policy,
            filter_subjects=self.subjects,
            ack_wait=self.ack_wait_s,
            inactive_threshold=None if self.durable else EPHEMERAL_INACTIVE_S,
        )
        self._sub = await js.pull_subscribe(
            self.subjects[0], durable=self.durable, stream=self.stream, config=config
        )
        return self._sub

    async def _events(self) -> AsyncIterator[Event]:
        from nats.errors import TimeoutError as NatsTimeout

        sub = await self._connect()
        try:
            while True:
                try:
                    messages = await sub.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT_S)
                except NatsTimeout:
                    continue
                for msg in messages:
                    try:
                        event = decode_event(msg.subject, msg.data, self.subject_prefix)
                    except DecodeError:
                        log.warning("dropping undecodable event on %s", msg.subject)
                        await msg.term()
                        continue
                    if event is None or not self._seen.add(dedup_key(event)):
                        if event is not None:
                            self.duplicates += 1
                        await msg.ack()
                        continue
                    yield event
                    await msg.ack()
        finally:
            await self.close()


def subscribe(
    nats_url: str = DEFAULT_NATS_URL,
    *,
    stream: str = DEFAULT_STREAM,
    durable: str | None = None,
    subject_prefix: str = "",
    deliver: str = "all",
    dedup_window: int = DEDUP_WINDOW,
    ack_wait_s: float = 30.0,
    connect_options: dict[str, Any] | None = None,
) -> EventSubscription:
    """Events of the service as typed messages; see the module docstring.
    `deliver` ("all", "new", "last") and `ack_wait_s` (redelivery of unacknowledged
    events) apply when the consumer is first created."""
    return EventSubscription(
        nats_url,
        stream=stream,
        durable=durable,
        subject_prefix=subject_prefix,
        deliver=deliver,
        dedup_window=dedup_window,
        ack_wait_s=ack_wait_s,
        connect_options=connect_options,
    )
