"""The importable API: ``config()``, ``up()``, ``down()``, ``status()``, ``client_env()``."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping

from deploy.stack.cassandra_service import CassandraService
from deploy.stack.config import SERVICES, StackConfig, load_config
from deploy.stack.errors import StackError
from deploy.stack.nats_service import NatsService
from deploy.stack.proc import Progress
from deploy.stack.service import Service, ServiceStatus

Only = str | Iterable[str] | None


def _print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _quiet(_line: str) -> None:
    return None


def config(env: Mapping[str, str] | None = None) -> StackConfig:
    """Ports, URLs and folders of the local stack (from ``env``, default ``os.environ``)."""
    return load_config(env)


def _names(only: Only) -> list[str]:
    if only is None:
        return list(SERVICES)
    wanted = [only] if isinstance(only, str) else list(only)
    unknown = [n for n in wanted if n not in SERVICES]
    if unknown:
        raise StackError(f"unknown service(s) {unknown}; choose from {list(SERVICES)}")
    return [n for n in SERVICES if n in wanted]


def services(cfg: StackConfig, only: Only = None) -> list[Service]:
    """The selected services, in start-up dependency order (NATS, then Cassandra)."""
    table: dict[str, Service] = {"nats": NatsService(cfg), "cassandra": CassandraService(cfg)}
    return [table[n] for n in _names(only)]


def up(
    only: Only = None,
    *,
    cfg: StackConfig | None = None,
    progress: Progress | None = _print_progress,
    on_started: Callable[[str], None] | None = None,
) -> list[ServiceStatus]:
    """Start the selected services unless they already run; return when all answer requests.

    Idempotent: a service whose pid file names a live process of ours that answers is left
    alone. ``on_started(name)`` is called as soon as a process is spawned (also when it
    later fails to become ready), so callers can stop exactly what they started.
    Raises StackError (message + hint) on missing prerequisites, busy ports, or a start-up
    that fails or times out.
    """
    cfg = cfg or config()
    say = progress or _quiet
    selected = services(cfg, only)
    t0 = time.monotonic()

    to_start: list[Service] = []
    waiting: list[tuple[Service, int, float]] = []
    for svc in selected:
        pid = svc.our_pid()
        if pid is not None:
            if svc.healthy():
                say(f"{svc.name}: already running (pid {pid}) on {_where(svc)}; nothing to do")
            else:
                say(f"{svc.name}: pid {pid} is running but not ready yet; waiting for it")
                waiting.append((svc, pid, time.monotonic()))
            continue
        if svc.pid_file.exists():
            say(f"{svc.name}: removing stale pid file {svc.pid_file}")
            svc.pid_file.unlink(missing_ok=True)
        to_start.append(svc)

    # Check everything before starting anything, so a missing prerequisite starts nothing.
    for svc in to_start:
        svc.preflight()
    for svc in to_start:
        svc.check_ports()
    for svc in to_start:
        svc.prepare(say)
    # Slowest first: Cassandra boots while NATS starts and is checked.
    for svc in sorted(to_start, key=lambda s: s.name != "cassandra"):
        started = time.monotonic()
        pid = svc.start(say)
        if on_started is not None:
            on_started(svc.name)
        say(f"{svc.name}: started pid {pid}, waiting until it answers on {_where(svc)}…")
        waiting.append((svc, pid, started))

    failures: list[StackError] = []
    for svc, pid, started in sorted(waiting, key=lambda w: w[0].name == "cassandra"):
        try:
            svc.wait_ready(pid, started, say)
        except StackError as exc:
            failures.append(exc)
            continue
        say(f"{svc.name}: ready on {_where(svc)} ({time.monotonic() - started:.1f}s)")
    if failures:
        if len(failures) == 1:
            raise failures[0]
        raise StackError(
            "several services failed to start",
            details="\n\n".join(str(f) for f in failures),
        )
    if to_start or waiting:
        say(f"stack up in {time.monotonic() - t0:.1f}s")
    started_names = {svc.name for svc in to_start}
    return [
        dataclasses.replace(svc.status(), started=svc.name in started_names) for svc in selected
    ]


def down(
    only: Only = None,
    *,
    wipe: bool = False,
    cfg: StackConfig | None = None,
    progress: Progress | None = _print_progress,
    timeout: float = 30.0,
) -> None:
    """Stop the selected services that we started (pid file + matching cmdline).

    ``wipe=True`` also deletes their state (data, logs, generated config) under ``.state/``.
    The jar cache is never touched.
    """
    cfg = cfg or config()
    say = progress or _quiet
    for svc in reversed(services(cfg, only)):
        if svc.stop(say, timeout=timeout):
            say(f"{svc.name}: stopped")
        else:
            say(f"{svc.name}: not running")
        if wipe:
            target = svc.state_dir.resolve()
            if cfg.state_dir.resolve() not in target.parents:
                raise StackError(f"refusing to wipe {target}: it is not inside {cfg.state_dir}")
            if target.exists():
                shutil.rmtree(target)
                say(f"{svc.name}: wiped {target}")


def status(only: Only = None, *, cfg: StackConfig | None = None) -> list[ServiceStatus]:
    """What runs where: one ServiceStatus per selected service (probes the ports)."""
    cfg = cfg or config()
    return [svc.status() for svc in services(cfg, only)]


def client_env(only: Only = None, *, cfg: StackConfig | None = None) -> dict[str, str]:
    """ORDERS_NATS_URL, ORDERS_CQL_HOSTS, ORDERS_CQL_PORT for the selected services."""
    cfg = cfg or config()
    out: dict[str, str] = {}
    for name in _names(only):
        out.update(cfg.client_env(name))
    return out


def _where(svc: Service) -> str:
    return ", ".join(f"{what} {addr}" for what, addr in svc.endpoints().items())
