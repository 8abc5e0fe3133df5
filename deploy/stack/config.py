"""Settings of the local stack, read from the environment.

Every knob has a default that works on a fresh clone; see docs/local-stack.md for the list.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deploy.stack.errors import StackError

HOST = "127.0.0.1"

#: repository root (deploy/stack/config.py -> parents[2])
REPO_ROOT = Path(__file__).resolve().parents[2]
POM_PATH = REPO_ROOT / "deploy" / "cassandra" / "pom.xml"

_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
_SYNC_INTERVAL_RE = re.compile(r"^(always|\d+(\.\d+)?(ns|us|ms|s|m|h))$")
_HEAP_RE = re.compile(r"^\d+[mMgG]$")

SERVICES: tuple[str, ...] = ("nats", "cassandra")


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not an integer") from None
    if not 0 < value < 65536 and name.endswith("PORT"):
        raise StackError(f"{name}={value} is not a valid TCP port (1-65535)")
    return value


def _float_env(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a number") from None


def cassandra_version(pom: Path = POM_PATH) -> str:
    """The Cassandra version pinned in deploy/cassandra/pom.xml (single source of truth)."""
    try:
        root = ET.parse(pom).getroot()
    except (OSError, ET.ParseError) as exc:
        raise StackError(f"cannot read {pom}: {exc}") from exc
    node = root.find("m:properties/m:cassandra.version", _POM_NS)
    if node is None or not (node.text or "").strip():
        raise StackError(f"{pom} has no <cassandra.version> property")
    return (node.text or "").strip()


@dataclass(frozen=True)
class StackConfig:
    """Where the local services listen and where they keep their files."""

    host: str
    state_dir: Path
    cache_dir: Path
    nats_port: int
    nats_http_port: int
    nats_sync_interval: str
    cql_port: int
    cql_storage_port: int
    cassandra_version: str
    cassandra_heap: str
    cassandra_jmx_port: int | None
    cassandra_start_timeout: float
    cassandra_cds: bool
    nats_start_timeout: float

    # -- derived locations -------------------------------------------------------------------
    @property
    def nats_dir(self) -> Path:
        return self.state_dir / "nats"

    @property
    def cassandra_dir(self) -> Path:
        return self.state_dir / "cassandra"

    @property
    def cassandra_lib_dir(self) -> Path:
        return self.cache_dir / f"cassandra-{self.cassandra_version}" / "lib"

    # -- what clients need ---------------------------------------------------------------------
    @property
    def nats_url(self) -> str:
        return f"nats://{self.host}:{self.nats_port}"

    @property
    def nats_monitor_url(self) -> str:
        return f"http://{self.host}:{self.nats_http_port}"

    @property
    def cql_hosts(self) -> str:
        return self.host

    def client_env(self, only: str | None = None) -> dict[str, str]:
        """Environment variables that point the service and the tests at this stack."""
        out: dict[str, str] = {}
        if only in (None, "nats"):
            out["ORDERS_NATS_URL"] = self.nats_url
        if only in (None, "cassandra"):
            out["ORDERS_CQL_HOSTS"] = self.cql_hosts
            out["ORDERS_CQL_PORT"] = str(self.cql_port)
        return out


def load_config(env: Mapping[str, str] | None = None) -> StackConfig:
    """Build the configuration from ``env`` (default: ``os.environ``)."""
    e: Mapping[str, str] = os.environ if env is None else env

    state_raw = e.get("ORDERS_STATE_DIR", "").strip()
    state_dir = Path(state_raw).expanduser() if state_raw else REPO_ROOT / ".state"
    cache_raw = e.get("ORDERS_CACHE_DIR", "").strip()
    if cache_raw:
        cache_dir = Path(cache_raw).expanduser()
    else:
        xdg = e.get("XDG_CACHE_HOME", "").strip()
        cache_dir = (Path(xdg) if xdg else Path.home() / ".cache") / "orders-service"

    sync = e.get("ORDERS_NATS_SYNC_INTERVAL", "").strip() or "2m"
    if not _SYNC_INTERVAL_RE.match(sync):
        raise StackError(
            f"ORDERS_NATS_SYNC_INTERVAL={sync!r} is not valid: use a duration such as '2m', "
            "'10s', '500ms', or 'always'"
        )

    heap = e.get("ORDERS_CASSANDRA_HEAP", "").strip() or "1G"
    if not _HEAP_RE.match(heap):
        raise StackError(f"ORDERS_CASSANDRA_HEAP={heap!r} is not valid: use e.g. 1G or 768M")

    jmx_raw = e.get("ORDERS_CASSANDRA_JMX_PORT", "").strip()
    jmx_port = _int_env(e, "ORDERS_CASSANDRA_JMX_PORT", 0) if jmx_raw else None

    cfg = StackConfig(
        host=HOST,
        state_dir=state_dir.resolve(),
        cache_dir=cache_dir.resolve(),
        nats_port=_int_env(e, "ORDERS_NATS_PORT", 4222),
        nats_http_port=_int_env(e, "ORDERS_NATS_HTTP_PORT", 8222),
        nats_sync_interval=sync,
        cql_port=_int_env(e, "ORDERS_CQL_PORT", 9042),
        cql_storage_port=_int_env(e, "ORDERS_CQL_STORAGE_PORT", 7000),
        cassandra_version=cassandra_version(),
        cassandra_heap=heap.upper(),
        cassandra_jmx_port=jmx_port,
        cassandra_start_timeout=_float_env(e, "ORDERS_CASSANDRA_START_TIMEOUT", 180.0),
        cassandra_cds=e.get("ORDERS_CASSANDRA_CDS", "1").strip().lower()
        not in ("0", "false", "no", "off"),
        nats_start_timeout=_float_env(e, "ORDERS_NATS_START_TIMEOUT", 20.0),
    )
    ports = {
        "ORDERS_NATS_PORT": cfg.nats_port,
        "ORDERS_NATS_HTTP_PORT": cfg.nats_http_port,
        "ORDERS_CQL_PORT": cfg.cql_port,
        "ORDERS_CQL_STORAGE_PORT": cfg.cql_storage_port,
    }
    if cfg.cassandra_jmx_port is not None:
        ports["ORDERS_CASSANDRA_JMX_PORT"] = cfg.cassandra_jmx_port
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port in seen:
            raise StackError(f"{name} and {seen[port]} are both {port}; give them different ports")
        seen[port] = name
    return cfg
