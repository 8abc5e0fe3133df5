"""Prometheus metrics of the service (served on --metrics-port at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "orders_rpc_requests", "RPCs handled", ["method", "code"], registry=r
        )
        self.rpc_latency = Histogram(
            "orders_rpc_latency_seconds",
            "RPC latency",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "orders_batch_commands",
            "commands per engine batch",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.engine_seconds = Histogram(
            "orders_engine_seconds", "engine time per batch", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.store_latency = Histogram(
            "orders_store_write_seconds",
            "store write per batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.broker_latency = Histogram(
            "orders_broker_publish_seconds",
            "publish + acks per outbox round",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("orders_queue_depth", "commands waiting", registry=r)
        self.outbox_lag = Gauge(
            "orders_outbox_lag_batches", "persisted batches not yet published", registry=r
        )
        self.events_published = Counter(
            "orders_events_published", "events acknowledged by JetStream", registry=r
        )
        self.store_errors = Counter("orders_store_errors", "failed store writes", registry=r)
        self.broker_errors = Counter("orders_broker_errors", "failed publish rounds", registry=r)
        self.rejected_full = Counter(
            "orders_rejected_queue_full", "RESOURCE_EXHAUSTED answers", registry=r
        )
        self.dropped_expired = Counter(
            "orders_dropped_deadline", "commands dropped: deadline passed in queue", registry=r
        )
        self.dropped_cancelled = Counter(
            "orders_dropped_cancelled", "commands dropped: caller cancelled in queue", registry=r
        )

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, addr="127.0.0.1", registry=self.registry)
