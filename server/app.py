"""Wiring: connect the store and the broker, recover, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer  # what health.aio re-exports
from grpc_reflection.v1alpha import reflection

from server import _engine
from server.broker.jetstream import JetStreamPublisher
from server.config import Settings
from server.gen.orders.engine.v1 import engine_pb2

# events_pb2 is imported so that events.proto is in the descriptor pool reflection serves.
from server.gen.orders.v1 import events_pb2, orders_pb2  # noqa: F401
from server.metrics import Metrics
from server.pipeline import PUBLISHED_WATERMARK, BatchPipeline, EngineHost, Outbox, WriteClock
from server.servicers import INVENTORY_SERVICE, ORDER_SERVICE, Authenticator, Services
from server.store.base import StoreUnavailable
from server.store.cql import CqlStore

log = logging.getLogger("server")

# Upper bound for finishing queued work, and again for publishing, on SIGTERM.
DRAIN_TIMEOUT_S = 10.0
# A BatchCreateOrders of 1000 large orders fits.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_CONCURRENT_STREAMS = 65_536
_SERVICE_NAMES = (ORDER_SERVICE, INVENTORY_SERVICE)


class OrderServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._health: HealthServicer | None = None
        self._server: grpc.aio.Server | None = None
        self._stopping = asyncio.Event()

    async def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if self._health is None:
            return
        for name in ("", *_SERVICE_NAMES):
            await self._health.set(name, status)

    async def run(self) -> None:
        s = self.settings
        self._health = HealthServicer()
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
                # With the default limit, a client that opens thousands of concurrent calls
                # on one connection sees some of them fail as CANCELLED (refused streams)
                # before the server ever sees them. Admission is the bounded queue's job:
                # it answers RESOURCE_EXHAUSTED with RetryInfo instead.
                ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
            ]
        )
        self._server = server
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        await self._set_serving(False)
        names = (
            orders_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,
            orders_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)

        started = time.perf_counter()
        store = await self._connect_store()
        publisher = await JetStreamPublisher.connect(
            s.nats_url,
            s.stream_name,
            s.stream_replicas,
            s.stream_duplicate_window_s,
            s.publish_timeout_s,
            s.subject_prefix,
        )
        engine, clock, replay = await recover(store)
        if s.engine_reserve_orders:
            # Off the event loop: faulting the memory in takes up to a second per million.
            started = time.perf_counter()
            await asyncio.to_thread(engine.reserve_orders, s.engine_reserve_orders)
            log.info(
                "engine order store reserved",
                extra={
                    "orders": s.engine_reserve_orders,
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
        host = EngineHost(engine)
        outbox = Outbox(store, publisher, self.metrics)
        outbox.published_seq = replay[0]
        outbox.start()
        for batch_seq, events in replay[1]:
            outbox.enqueue(batch_seq, events)
        pipeline = BatchPipeline(
            host,
            store,
            outbox,
            self.metrics,
            clock,
            max_batch_commands=s.batch_max_commands,
            max_queue_commands=s.queue_max_commands,
            max_wait_s=s.batch_max_wait_ms / 1000,
            expire_interval_s=s.expire_interval_ms / 1000,
        )
        services = Services(
            pipeline,
            store,
            Authenticator(s.token_clients, s.default_client_id),
            self.metrics,
            s.retry_after_ms,
        )
        server.add_generic_rpc_handlers(services.handlers())
        port = server.add_insecure_port(s.listen)
        if port == 0:
            raise RuntimeError(f"cannot listen on {s.listen}")
        self.metrics.serve(s.metrics_port)

        def on_store_health(healthy: bool) -> None:
            asyncio.get_running_loop().create_task(self._set_serving(healthy))

        pipeline.on_health_change = on_store_health
        await server.start()
        pipeline.start()
        await self._set_serving(True)
        log.info(
            "serving",
            extra={
                "listen": s.listen,
                "metrics_port": s.metrics_port,
                "startup_s": round(time.perf_counter() - started, 3),
                "engine": engine.stats(),
                # Which build of the engine this CPU got (server/engine_build.py).
                "engine_build": _engine.BUILD_CPU_LEVEL,
                # The profile it was optimised with (deploy/build_engine.sh), or "none".
                "engine_profile": _engine.BUILD_PROFILE,
                "republishing_batches": len(replay[1]),
            },
        )

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        await self._stopping.wait()

        log.info("draining")
        await self._set_serving(False)
        await pipeline.drain(DRAIN_TIMEOUT_S)
        published = await outbox.wait_idle(DRAIN_TIMEOUT_S)
        await server.stop(grace=5.0)
        await outbox.close()
        host.close()
        await publisher.close()
        await store.close()
        log.info("stopped", extra={"all_events_published": published})

    async def _connect_store(self) -> CqlStore:
        """The store is needed to recover: wait for it (NOT_SERVING meanwhile)."""
        s = self.settings
        backoff = 0.5
        while True:
            try:
                return await CqlStore.connect(
                    s.cql_host_list,
                    s.cql_port,
                    s.cql_keyspace,
                    s.cql_consistency,
                    s.cql_replication,
                    engine_id=s.engine_id,
                    concurrency=s.cql_concurrency,
                    timeout_s=s.cql_request_timeout_s,
                )
            except StoreUnavailable as exc:
                log.warning("store unavailable, retrying in %.1f s: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def stop(self) -> None:
        self._stopping.set()


async def recover(
    store: CqlStore,
) -> tuple[_engine.Engine, WriteClock, tuple[int, list[tuple[int, list[tuple[str, str, bytes]]]]]]:
    """Redo journal entries past the published watermark, rebuild the engine from the
    stored rows, and return what must be republished."""
    published = await store.get_watermark(PUBLISHED_WATERMARK)
    entries = await store.journal_after(published)
    replay: list[tuple[int, list[tuple[str, str, bytes]]]] = []
    floor_us = 0
    last_seq = published
    for entry in entries:
        # Rows of a batch whose journal is durable may be partly missing (crash between
        # the journal write and the row writes): write them again, with the original
        # timestamp so newer data always wins.
        await store.redo_journal_entry(entry)
        journal = engine_pb2.JournalEntry.FromString(entry)
        replay.append(
            (journal.batch_seq, [(e.subject, e.event_id, e.payload) for e in journal.events])
        )
        floor_us = max(floor_us, journal.write_time_us)
        last_seq = max(last_seq, journal.batch_seq)
    state = await store.load_state()
    engine = _engine.Engine()
    engine.restore(state.regions, state.locations, state.stock, state.orders, last_seq)
    engine.check_invariants()
    log.info(
        "recovered",
        extra={
            "published_watermark": published,
            "journal_entries": len(entries),
            "orders": len(state.orders),
            "stock_rows": len(state.stock),
        },
    )
    return engine, WriteClock(floor_us), (published, replay)
