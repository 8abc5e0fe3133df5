"""The publishing interface the outbox depends on; jetstream.py implements it."""

from __future__ import annotations

from typing import Protocol


class BrokerUnavailable(Exception):
    """The broker did not acknowledge every event (down, timed out, stream missing)."""


class EventPublisher(Protocol):
    async def publish(self, events: list[tuple[str, str, bytes]]) -> None:
        """Publish (subject, event_id, payload) with event_id as the dedup id, and return
        once the broker acknowledged every one; raise BrokerUnavailable otherwise. Safe to
        call again with the same events: the broker drops duplicates by event_id."""

    async def close(self) -> None: ...
