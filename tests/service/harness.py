"""Test harness for the service: a server subprocess, a fault-injecting TCP proxy, and
small client helpers. Everything talks over real loopback connections."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import nats
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js.api import ConsumerConfig, DeliverPolicy

from server.gen.orders.v1 import orders_pb2, orders_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
NATS_URL = os.environ.get("ORDERS_NATS_URL", "nats://127.0.0.1:4222")
CQL_HOST = os.environ.get("ORDERS_CQL_HOSTS", "127.0.0.1").split(",")[0]
CQL_PORT = int(os.environ.get("ORDERS_CQL_PORT", "9042"))

SERVER_START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


class TcpProxy:
    """Forwards a loopback port to a real server; `cut()` drops every connection and refuses
    new ones (a network partition), `restore()` heals it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self.open = True

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        self._connections.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        except asyncio.CancelledError:
            pass  # the proxy is closing
        finally:
            self._connections.discard(writer)
            self._connections.discard(up_writer)

    def cut(self) -> None:
        self.open = False
        for writer in list(self._connections):
            with contextlib.suppress(Exception):
                transport = writer.transport
                transport.abort()
        self._connections.clear()

    def restore(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class ServerProcess:
    """`python -m server` as a child process with its own keyspace and stream."""

    cql_port: int
    nats_url: str
    keyspace: str
    stream: str
    subject_prefix: str
    extra_args: Sequence[str] = ()
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    log_path: Path = field(
        default_factory=lambda: Path(f"/tmp/orders-server-{uuid.uuid4().hex[:8]}.log")
    )
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "server",
            "--listen",
            self.address,
            "--metrics-port",
            str(self.metrics_port),
            "--cql-port",
            str(self.cql_port),
            "--cql-keyspace",
            self.keyspace,
            "--nats-url",
            self.nats_url,
            "--stream-name",
            self.stream,
            "--subject-prefix",
            self.subject_prefix,
            "--cql-request-timeout-s",
            "2",
            "--publish-timeout-s",
            "2",
            *self.extra_args,
        ]

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args(),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        await self.wait_serving()

    async def wait_serving(self, timeout_s: float = SERVER_START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"server exited with {self.process.returncode}:\n{self.tail()}"
                    )
                with contextlib.suppress(grpc.aio.AioRpcError):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                await asyncio.sleep(0.2)
        raise AssertionError(f"server not SERVING after {timeout_s} s:\n{self.tail()}")

    async def _wait_exit(self, timeout_s: float) -> bool:
        # Poll instead of Popen.wait(): the proxies run on this event loop, and a server
        # that is draining still needs them.
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self._wait_exit(10)

    async def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (graceful drain) and the exit code; SIGKILL if it hangs."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            if not await self._wait_exit(timeout_s):
                self.process.kill()
                await self._wait_exit(10)
        return int(self.process.returncode)

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            assert isinstance(value, bytes)
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no rich status on {error.code()}: {error.details()}")


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for detail in rich_status(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += [(v.field, v.description) for v in bad.field_violations]
    return found


def reason(error: grpc.aio.AioRpcError) -> str:
    for detail in rich_status(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def retry_delay_ms(error: grpc.aio.AioRpcError) -> int:
    for detail in rich_status(error).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return int(info.retry_delay.ToMilliseconds())
    return 0


class Api:
    """Typed stubs on one channel, plus the setup most tests need."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.orders = orders_pb2_grpc.OrderServiceStub(channel)
        self.inventory = orders_pb2_grpc.InventoryServiceStub(channel)

    async def region(
        self,
        region: str,
        locations: dict[str, int],
        stock: dict[tuple[str, str], int],
        strategy: int = orders_pb2.ALLOCATION_STRATEGY_PRIORITY,
        ttl_s: int = 0,
    ) -> None:
        await self.inventory.ConfigureRegion(
            orders_pb2.ConfigureRegionRequest(
                region=orders_pb2.Region(
                    region=region, strategy=strategy, reservation_ttl_seconds=ttl_s
                )
            ),
            timeout=10,
        )
        # A location belongs to one region for good, so each test's locations get the
        # region as a suffix: "l1" becomes "l1.<region>" (see short_location).
        for location_id, priority in locations.items():
            await self.inventory.UpsertLocation(
                orders_pb2.UpsertLocationRequest(
                    location=orders_pb2.Location(
                        location_id=f"{location_id}.{region}", region=region, priority=priority
                    )
                ),
                timeout=10,
            )
        for (sku, location_id), on_hand in stock.items():
            await self.inventory.SetStock(
                orders_pb2.SetStockRequest(
                    sku=sku, location_id=f"{location_id}.{region}", on_hand=on_hand
                ),
                timeout=10,
            )


def short_location(location_id: str) -> str:
    """The test's own name of a location created by Api.region."""
    return location_id.split(".", 1)[0]


def create_request(
    request_id: str,
    region: str,
    lines: Sequence[tuple[str, int]],
    customer_id: str = "cust-1",
    policy: int = orders_pb2.ALLOCATION_POLICY_SPLIT,
    price: int = 1000,
    currency: str = "EUR",
) -> orders_pb2.CreateOrderRequest:
    return orders_pb2.CreateOrderRequest(
        request_id=request_id,
        customer_id=customer_id,
        region=region,
        policy=policy,
        lines=[
            orders_pb2.OrderLine(sku=sku, quantity=q, unit_price_minor=price, currency=currency)
            for sku, q in lines
        ],
    )


LIVE_STATUSES = {
    orders_pb2.ORDER_STATUS_ALLOCATED,
    orders_pb2.ORDER_STATUS_BACKORDERED,
    orders_pb2.ORDER_STATUS_CONFIRMED,
}


def new_server(cql_proxy: TcpProxy, nats_proxy: TcpProxy, *extra: str) -> ServerProcess:
    name = unique_name("t")
    return ServerProcess(
        cql_port=cql_proxy.port,
        nats_url=f"nats://127.0.0.1:{nats_proxy.port}",
        keyspace=name,
        stream=name.upper(),
        subject_prefix=f"{name}.",
        extra_args=extra,
    )


async def read_stream(server: ServerProcess, settle_s: float = 0.5) -> list[tuple[str, str, bytes]]:
    """Every message in the server's stream: (subject, Nats-Msg-Id, payload), in order."""
    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        subscription = await js.pull_subscribe(
            f"{server.subject_prefix}>",
            durable=None,
            stream=server.stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        messages: list[tuple[str, str, bytes]] = []
        while True:
            try:
                batch = await subscription.fetch(1000, timeout=settle_s)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            for message in batch:
                headers = message.headers or {}
                messages.append((message.subject, headers.get("Nats-Msg-Id", ""), message.data))
                await message.ack()
        await subscription.unsubscribe()
        return messages
    finally:
        await client.close()
