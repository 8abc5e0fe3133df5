"""Fixtures for the SDK unit tests: the FakeOrdersServer (scripted answers), and a NATS
JetStream server for the event-subscription tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
try:  # the SDK is normally installed (pip install -e clients/python); else use the tree
    import orders_client  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "clients" / "python"))

from sdk_fake_server import FakeOrdersServer  # noqa: E402


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeOrdersServer]:
    server = FakeOrdersServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fake(fake_server: FakeOrdersServer) -> FakeOrdersServer:
    """The shared fake, with its script and records cleared for this test."""
    fake_server.service.reset()
    return fake_server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), 1):
            return True
    except OSError:
        return False


def _nats_binary() -> str | None:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    return shutil.which("nats-server")


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """A private nats-server (-js) when the binary is installed, else the stack's NATS
    (ORDERS_NATS_URL); skips when there is neither."""
    binary = _nats_binary()
    if binary is None:
        url = os.environ.get("ORDERS_NATS_URL", "nats://127.0.0.1:4222")
        if not _reachable(url):
            pytest.skip("no nats-server binary and no NATS reachable")
        yield url
        return
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="sdk-nats-") as store:
        process = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"nats://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 10
            while not _reachable(url):
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("the private nats-server did not start")
                time.sleep(0.05)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)
