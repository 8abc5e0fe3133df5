"""Fixtures for service tests: the real NATS and Cassandra (started by `make test` through
the stack manager), reached through fault-injecting proxies, and server subprocesses."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import (
    CQL_HOST,
    CQL_PORT,
    NATS_URL,
    Api,
    ServerProcess,
    TcpProxy,
    new_server,
)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def real_endpoints() -> tuple[str, int, str, int]:
    nats_host = urlparse(NATS_URL).hostname or "127.0.0.1"
    nats_port = urlparse(NATS_URL).port or 4222
    missing = [
        f"{name} at {host}:{port}"
        for name, host, port in (("Cassandra", CQL_HOST, CQL_PORT), ("NATS", nats_host, nats_port))
        if not _reachable(host, port)
    ]
    if missing:
        pytest.fail(f"not reachable: {', '.join(missing)}; start the stack with `make stack-up`")
    return CQL_HOST, CQL_PORT, nats_host, nats_port


@pytest.fixture(scope="session")
async def cql_proxy(real_endpoints: tuple[str, int, str, int]) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(real_endpoints[0], real_endpoints[1])
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture(scope="session")
async def nats_proxy(real_endpoints: tuple[str, int, str, int]) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(real_endpoints[2], real_endpoints[3])
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture(scope="module")
async def server(cql_proxy: TcpProxy, nats_proxy: TcpProxy) -> AsyncIterator[ServerProcess]:
    process = new_server(cql_proxy, nats_proxy)
    await process.start()
    yield process
    code = await process.terminate()
    assert code == 0, f"server did not stop cleanly ({code}):\n{process.tail()}"


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[Api]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield Api(channel)
