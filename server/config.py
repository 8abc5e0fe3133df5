"""Service configuration: every setting has a flag, an environment variable and a default.

Precedence: command-line flag > environment variable > default. `python -m server --help`
prints the table; docs/operations.md explains the trade-offs of the important ones.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

ENV_PREFIX = "ORDERS_"
# The engine's order store is provisioned at start (docs/design.md, "Engine memory is
# provisioned"): a million orders reserve ~285 MB, and faulting it in takes 0.1-1 s on the
# development VM, off the event loop and before the service reports SERVING.
DEFAULT_ENGINE_RESERVE_ORDERS = 1_000_000


@dataclass(frozen=True, slots=True)
class Settings:
    # gRPC front end
    listen: str = field(default="127.0.0.1:50051", metadata={"help": "gRPC listen address"})
    metrics_port: int = field(default=9464, metadata={"help": "Prometheus /metrics port (0: off)"})
    # Micro-batcher: a request waits at most batch_max_wait_ms for companions; a batch holds
    # at most batch_max_commands; at most queue_max_commands wait (then RESOURCE_EXHAUSTED).
    batch_max_wait_ms: float = field(default=2.0, metadata={"help": "max wait to fill a batch"})
    batch_max_commands: int = field(default=4096, metadata={"help": "max commands per batch"})
    queue_max_commands: int = field(default=20000, metadata={"help": "bounded queue size"})
    retry_after_ms: int = field(default=50, metadata={"help": "RetryInfo delay when full"})
    # Engine
    engine_id: str = field(default="engine-0", metadata={"help": "journal / watermark owner"})
    expire_interval_ms: int = field(default=1000, metadata={"help": "reservation expiry sweep"})
    engine_reserve_orders: int = field(
        default=DEFAULT_ENGINE_RESERVE_ORDERS,
        metadata={
            "help": "orders to make room for (and fault in) at start, so that the hot path "
            "pays almost no page faults until that many exist; about 270 MB and 0.1-1 s "
            "per million on the dev VM; 0 = grow as orders arrive"
        },
    )
    # CQL store
    cql_hosts: str = field(default="127.0.0.1", metadata={"help": "comma-separated CQL hosts"})
    cql_port: int = field(default=9042, metadata={"help": "CQL native port"})
    cql_keyspace: str = field(default="orders", metadata={"help": "keyspace"})
    cql_consistency: str = field(default="LOCAL_QUORUM", metadata={"help": "read/write CL"})
    cql_replication: str = field(
        default="{'class': 'SimpleStrategy', 'replication_factor': 1}",
        metadata={"help": "replication map used when the keyspace is created"},
    )
    cql_request_timeout_s: float = field(default=5.0, metadata={"help": "per-statement timeout"})
    cql_concurrency: int = field(default=256, metadata={"help": "statements in flight"})
    # JetStream
    nats_url: str = field(default="nats://127.0.0.1:4222", metadata={"help": "NATS URL"})
    stream_name: str = field(default="ORDERS", metadata={"help": "JetStream stream"})
    subject_prefix: str = field(
        default="", metadata={"help": "prefix for every subject (isolates test streams)"}
    )
    stream_replicas: int = field(default=1, metadata={"help": "stream replicas (3 in prod)"})
    stream_duplicate_window_s: float = field(
        default=600.0, metadata={"help": "dedup window (Nats-Msg-Id), seconds"}
    )
    publish_timeout_s: float = field(default=5.0, metadata={"help": "wait for PubAcks"})
    # Security (see docs/operations.md)
    auth_tokens: str = field(
        default="", metadata={"help": "token=client_id pairs, comma separated; empty: no auth"}
    )
    default_client_id: str = field(default="anonymous", metadata={"help": "client without auth"})
    log_level: str = field(default="INFO", metadata={"help": "log level"})

    @property
    def cql_host_list(self) -> list[str]:
        return [h.strip() for h in self.cql_hosts.split(",") if h.strip()]

    @property
    def token_clients(self) -> dict[str, str]:
        pairs = [p.split("=", 1) for p in self.auth_tokens.split(",") if "=" in p]
        return {token.strip(): client.strip() for token, client in pairs}


class ConfigError(ValueError):
    """A setting is out of range; the message names the flag and the variable."""


# (setting, lowest, highest) for every numeric setting.
_RANGES: dict[str, tuple[float, float]] = {
    "metrics_port": (0, 65535),
    "batch_max_wait_ms": (0, 1000),
    "batch_max_commands": (1, 65536),
    "queue_max_commands": (1, 10_000_000),
    "retry_after_ms": (1, 60_000),
    "expire_interval_ms": (10, 3_600_000),
    "engine_reserve_orders": (0, 100_000_000),
    "cql_port": (1, 65535),
    "cql_request_timeout_s": (0.05, 600),
    "cql_concurrency": (1, 10_000),
    "stream_replicas": (1, 5),
    "stream_duplicate_window_s": (1, 7 * 24 * 3600),
    "publish_timeout_s": (0.05, 600),
}
_CONSISTENCY_LEVELS = {
    "ONE",
    "TWO",
    "THREE",
    "QUORUM",
    "ALL",
    "LOCAL_QUORUM",
    "EACH_QUORUM",
    "LOCAL_ONE",
}


def validate(settings: Settings) -> Settings:
    """Raise ConfigError for the first setting out of its range."""
    for name, (low, high) in _RANGES.items():
        value = getattr(settings, name)
        if not low <= value <= high:
            raise ConfigError(
                f"--{name.replace('_', '-')} ({_env_name(name)}) must be between {low:g} and "
                f"{high:g}, got {value!r}"
            )
    if settings.cql_consistency.upper() not in _CONSISTENCY_LEVELS:
        raise ConfigError(
            f"--cql-consistency ({_env_name('cql_consistency')}) must be one of "
            f"{', '.join(sorted(_CONSISTENCY_LEVELS))}, got {settings.cql_consistency!r}"
        )
    if settings.batch_max_commands > settings.queue_max_commands:
        raise ConfigError("--batch-max-commands cannot exceed --queue-max-commands")
    if settings.auth_tokens and not settings.token_clients:
        raise ConfigError("--auth-tokens must be token=client_id pairs, comma separated")
    return settings


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def load_settings(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build Settings from flags and environment (flags win)."""
    environ = dict(os.environ) if env is None else env
    parser = argparse.ArgumentParser(
        prog="python -m server", description="Order processing service (gRPC)."
    )
    defaults = Settings()
    for f in fields(Settings):
        default = getattr(defaults, f.name)
        kind: Any = type(default)
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=kind,
            default=None,
            help=f"{f.metadata.get('help', '')} (env {_env_name(f.name)}, default {default!r})",
        )
    parsed = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    for f in fields(Settings):
        default = getattr(defaults, f.name)
        if parsed[f.name] is not None:
            values[f.name] = parsed[f.name]
        elif _env_name(f.name) in environ:
            raw = environ[_env_name(f.name)]
            try:
                values[f.name] = type(default)(raw)
            except ValueError:
                parser.error(f"{_env_name(f.name)}={raw!r} is not a valid {type(default).__name__}")
    try:
        return validate(Settings(**values))
    except ConfigError as exc:
        parser.error(str(exc))
