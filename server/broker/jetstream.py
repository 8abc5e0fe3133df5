"""NATS JetStream adapter: stream ORDERS, subjects orders.v1.* and inventory.v1.*.

Publishing uses publish_async (many messages in flight, one wait for all acks) with the
event id as `Nats-Msg-Id`, so a republish after a crash is dropped by the stream's
duplicate window (configuration: `stream_duplicate_window_s`). The broker being down
never stops the service: the first connection is made lazily and retried on every
publish round, and the nats client reconnects by itself afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from server.broker.base import BrokerUnavailable

STREAM_SUBJECTS = ["orders.v1.>", "inventory.v1.>"]
MSG_ID_HEADER = "Nats-Msg-Id"
# publish_async keeps at most this many messages in flight per connection.
MAX_PENDING_PUBLISHES = 20_000

log = logging.getLogger(__name__)


class JetStreamPublisher:
    def __init__(
        self,
        url: str,
        stream: str,
        replicas: int,
        duplicate_window_s: float,
        timeout_s: float,
        subject_prefix: str = "",
    ) -> None:
        self._url = url
        self._stream = stream
        self._replicas = replicas
        self._duplicate_window_s = duplicate_window_s
        self._timeout_s = timeout_s
        self._prefix = subject_prefix
        self._client: Client | None = None
        self._js: JetStreamContext | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        stream: str,
        replicas: int,
        duplicate_window_s: float,
        timeout_s: float,
        subject_prefix: str = "",
    ) -> JetStreamPublisher:
        """A publisher; connected now if the broker answers, else on a later publish."""
        publisher = cls(url, stream, replicas, duplicate_window_s, timeout_s, subject_prefix)
        try:
            await publisher._ensure_connected()
        except BrokerUnavailable as exc:
            log.warning("broker unavailable at start, events will wait in the outbox: %s", exc)
        return publisher

    @property
    def subjects(self) -> list[str]:
        return [self._prefix + subject for subject in STREAM_SUBJECTS]

    async def _ensure_connected(self) -> JetStreamContext:
        if self._js is not None and self._client is not None and self._client.is_connected:
            return self._js
        if self._client is not None and not self._client.is_closed:
            # Connected once: the client is reconnecting on its own.
            raise BrokerUnavailable("reconnecting to NATS")

        async def on_error(exc: Exception) -> None:
            log.warning("nats: %s", exc)

        try:
            client = await nats.connect(
                self._url,
                connect_timeout=self._timeout_s,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                error_cb=on_error,
            )
        except Exception as exc:
            raise BrokerUnavailable(f"cannot connect to NATS at {self._url}: {exc}") from exc
        js = client.jetstream(
            timeout=self._timeout_s, publish_async_max_pending=MAX_PENDING_PUBLISHES
        )
        config = StreamConfig(
            name=self._stream,
            subjects=self.subjects,
            storage=StorageType.FILE,
            num_replicas=self._replicas,
            duplicate_window=self._duplicate_window_s,
        )
        try:
            try:
                await js.stream_info(self._stream)
                await js.update_stream(config)
            except NotFoundError:
                await js.add_stream(config)
        except Exception as exc:
            await client.close()
            raise BrokerUnavailable(f"cannot set up stream {self._stream}: {exc}") from exc
        self._client, self._js = client, js
        return js

    async def publish(self, events: list[tuple[str, str, bytes]]) -> None:
        if not events:
            return
        js = await self._ensure_connected()
        futures: list[asyncio.Future[Any]] = []
        try:
            for subject, event_id, payload in events:
                futures.append(
                    await js.publish_async(
                        self._prefix + subject,
                        payload,
                        headers={MSG_ID_HEADER: event_id},
                        wait_stall=self._timeout_s,
                    )
                )
            done = await asyncio.wait_for(
                asyncio.gather(*futures, return_exceptions=True), self._timeout_s
            )
        except Exception as exc:
            for future in futures:
                future.cancel()
            raise BrokerUnavailable(f"publish failed: {type(exc).__name__}: {exc}") from exc
        failures = [r for r in done if isinstance(r, BaseException)]
        if failures:
            raise BrokerUnavailable(
                f"{len(failures)} of {len(events)} publishes failed: {failures[0]!r}"
            )

    async def close(self) -> None:
        if self._client is None:
            return
        try:
            await asyncio.wait_for(self._client.drain(), self._timeout_s)
        except Exception:  # closing a broken connection is best effort
            await self._client.close()
