"""Fixtures for the integration tests: real NATS JetStream and Cassandra from the local stack.

Connection settings come from the environment, with defaults that match `python -m deploy.stack`:

    ORDERS_NATS_URL          nats://127.0.0.1:4222
    ORDERS_CQL_HOSTS         127.0.0.1            (comma-separated)
    ORDERS_CQL_PORT          9042
    ORDERS_CQL_CONSISTENCY   LOCAL_QUORUM

If a service does not answer, the tests FAIL (never skip): start the stack first with
`make stack-up` (or `python -m deploy.stack up`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import nats
import pytest
import pytest_asyncio
from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

START_HINT = "start the local stack first: `make stack-up` (or `python -m deploy.stack up`)"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "integration: talks to the real NATS and Cassandra started by the stack manager",
    )


@dataclass(frozen=True)
class CqlSettings:
    hosts: list[str]
    port: int
    consistency_name: str
    consistency: int


@pytest.fixture(scope="session")
def nats_url() -> str:
    return os.environ.get("ORDERS_NATS_URL", "").strip() or "nats://127.0.0.1:4222"


@pytest.fixture(scope="session")
def cql_settings() -> CqlSettings:
    hosts = [
        h.strip()
        for h in (os.environ.get("ORDERS_CQL_HOSTS", "") or "127.0.0.1").split(",")
        if h.strip()
    ]
    raw_port = os.environ.get("ORDERS_CQL_PORT", "").strip() or "9042"
    try:
        port = int(raw_port)
    except ValueError:
        pytest.fail(f"ORDERS_CQL_PORT={raw_port!r} is not an integer", pytrace=False)
    name = (os.environ.get("ORDERS_CQL_CONSISTENCY", "").strip() or "LOCAL_QUORUM").upper()
    if name not in ConsistencyLevel.name_to_value:
        valid = ", ".join(sorted(ConsistencyLevel.name_to_value))
        pytest.fail(f"ORDERS_CQL_CONSISTENCY={name!r} is not one of: {valid}", pytrace=False)
    return CqlSettings(hosts, port, name, ConsistencyLevel.name_to_value[name])


@pytest.fixture(scope="session")
def cql_consistency(cql_settings: CqlSettings) -> int:
    """The driver's ConsistencyLevel value from ORDERS_CQL_CONSISTENCY (default LOCAL_QUORUM)."""
    return cql_settings.consistency


@pytest.fixture(scope="session")
def cql_session(cql_settings: CqlSettings) -> Iterator[Session]:
    """A driver session to the stack's Cassandra; fails the test run if it cannot connect."""
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
        consistency_level=cql_settings.consistency,
        request_timeout=30.0,  # DDL on a 2-core machine can take a few seconds
    )
    cluster = Cluster(
        contact_points=cql_settings.hosts,
        port=cql_settings.port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=5.0,
        control_connection_timeout=5.0,
    )
    error: str | None = None
    try:
        session = cluster.connect()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    if error is not None:
        cluster.shutdown()
        pytest.fail(
            f"Cassandra is not reachable at {cql_settings.hosts} port {cql_settings.port} "
            f"({error}).\n{START_HINT}; or point ORDERS_CQL_HOSTS / ORDERS_CQL_PORT at a "
            "running node.",
            pytrace=False,
        )
    try:
        yield session
    finally:
        cluster.shutdown()


@pytest_asyncio.fixture
async def nats_client(nats_url: str) -> AsyncIterator[NatsClient]:
    """A connected NATS client; fails the test if the server does not answer."""

    async def _quiet_error(_exc: Exception) -> None:
        return None

    error: str | None = None
    try:
        # max_reconnect_attempts must be > 0: nats-py treats 0 as "retry the first connect
        # forever". wait_for is a second guard so an unreachable server fails fast.
        nc = await asyncio.wait_for(
            nats.connect(
                nats_url,
                connect_timeout=3,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.5,
                error_cb=_quiet_error,
            ),
            timeout=15,
        )
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    if error is not None:
        pytest.fail(
            f"NATS is not reachable at {nats_url} ({error}).\n"
            f"{START_HINT}; or point ORDERS_NATS_URL at a running server.",
            pytrace=False,
        )
    try:
        yield nc
    finally:
        await nc.drain()


@pytest_asyncio.fixture
async def jetstream(nats_client: NatsClient) -> JetStreamContext:
    """The JetStream context; fails the test if JetStream is not enabled on the server."""
    js = nats_client.jetstream()
    error: str | None = None
    try:
        await js.account_info()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    if error is not None:
        pytest.fail(
            f"JetStream is not available on {nats_client.connected_url} ({error}); "
            "the stack's nats-server runs with JetStream enabled.",
            pytrace=False,
        )
    return js
