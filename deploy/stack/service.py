"""What every local service has in common: pid file, ports, start, wait, stop, status."""

from __future__ import annotations

import abc
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deploy.stack import proc
from deploy.stack.config import StackConfig
from deploy.stack.errors import StackError
from deploy.stack.proc import Progress


@dataclass(frozen=True)
class PortSpec:
    port: int
    env_var: str
    what: str


@dataclass(frozen=True)
class ServiceStatus:
    """A snapshot of one service, as ``status()`` reports it."""

    name: str
    state: str  # "running" | "starting" | "stopped"
    pid: int | None
    endpoints: dict[str, str]
    state_dir: Path
    log_file: Path
    notes: list[str] = field(default_factory=list)
    #: True in what ``up()`` returns for a service that this very call started
    started: bool = False

    @property
    def running(self) -> bool:
        return self.state == "running"


class Service(abc.ABC):
    """One local server process that we start, watch and stop."""

    name: str = "service"

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg

    # -- layout ----------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def state_dir(self) -> Path: ...

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    @abc.abstractmethod
    def log_file(self) -> Path:
        """The log to show when something goes wrong."""

    @abc.abstractmethod
    def ports(self) -> list[PortSpec]: ...

    def endpoints(self) -> dict[str, str]:
        return {p.what: f"{self.cfg.host}:{p.port}" for p in self.ports()}

    # -- what we start ---------------------------------------------------------------------------
    @abc.abstractmethod
    def matches(self, argv: list[str]) -> bool:
        """True if ``argv`` is a process this service (in this state dir) started."""

    @abc.abstractmethod
    def preflight(self) -> None:
        """Check prerequisites (binaries, versions); raise StackError with an install hint."""

    def prepare(self, progress: Progress) -> None:
        """Fetch or generate whatever the process needs (config files, jars)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)

    @abc.abstractmethod
    def argv(self) -> list[str]: ...

    def spawn_env(self) -> dict[str, str] | None:
        return None

    @abc.abstractmethod
    def healthy(self, timeout: float = 2.0) -> bool:
        """True if the service answers real requests."""

    @abc.abstractmethod
    def wait_ready(self, pid: int, started: float, progress: Progress) -> None:
        """Block until healthy; raise StackError if the process dies or the timeout passes."""

    def failure_hint(self) -> str:
        return f"see {self.log_file}; fix the cause and run `python -m deploy.stack up` again"

    # -- state -----------------------------------------------------------------------------------
    def our_pid(self) -> int | None:
        """The pid from our pid file, if that process is alive and is what we started."""
        pid = proc.read_pid(self.pid_file)
        if pid is None or not proc.alive(pid):
            return None
        argv = proc.cmdline(pid)
        if argv is None or not self.matches(argv):
            return None
        return pid

    def status(self, probe_timeout: float = 2.0) -> ServiceStatus:
        notes: list[str] = []
        pid = self.our_pid()
        if pid is None:
            state = "stopped"
            if self.pid_file.exists():
                notes.append(f"stale pid file {self.pid_file} (process gone or not ours)")
        else:
            state = "running" if self.healthy(probe_timeout) else "starting"
        return ServiceStatus(
            name=self.name,
            state=state,
            pid=pid,
            endpoints=self.endpoints(),
            state_dir=self.state_dir,
            log_file=self.log_file,
            notes=notes,
        )

    # -- actions ---------------------------------------------------------------------------------
    def check_ports(self) -> None:
        for spec in self.ports():
            if proc.port_free(self.cfg.host, spec.port):
                continue
            holder = proc.listener_pid(spec.port)
            who = f" by {proc.describe_pid(holder)}" if holder is not None else ""
            hint = (
                f"stop whatever holds it, or pick another port: export {spec.env_var}=<port> "
                "(and use the same environment for `up`, `env`, `status` and the tests)"
            )
            holder_argv = proc.cmdline(holder) if holder is not None else None
            if holder_argv is not None and self.matches(holder_argv):
                hint = (
                    f"that is a {self.name} started from this checkout whose pid file "
                    f"{self.pid_file} is gone; stop it with `kill {holder}` and run `up` again"
                )
            raise StackError(
                f"{self.name}: port {spec.port} ({spec.what}) on {self.cfg.host} is already in "
                f"use{who}",
                hint=hint,
            )

    def start(self, progress: Progress) -> int:
        """Spawn the process (ports must be checked and prepare() done) and write the pid file."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        with self.log_file.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n=== deploy.stack: starting {self.name} at {stamp} ===\n".encode())
        pid = proc.spawn(argv, self.log_file, cwd=self.state_dir, env=self.spawn_env())
        proc.write_pid(self.pid_file, pid)
        return pid

    def stop(self, progress: Progress, timeout: float = 30.0) -> bool:
        """Stop our process if it runs; always clear the pid file. True if something stopped."""
        pid = proc.read_pid(self.pid_file)
        stopped = False
        if pid is not None:
            argv = proc.cmdline(pid)
            if argv is not None and not self.matches(argv):
                progress(
                    f"{self.name}: pid {pid} from {self.pid_file} is not ours "
                    f"({' '.join(argv)[:80]}…); leaving it alone"
                )
            elif argv is not None:
                progress(f"{self.name}: stopping pid {pid}…")
                how = proc.terminate(
                    pid, self.matches, timeout=timeout, progress=progress, name=self.name
                )
                stopped = bool(how)
                if stopped:
                    self.after_stop(how)
        proc.remove_file(self.pid_file)
        return stopped

    def after_stop(self, how: str) -> None:
        """Hook run after our process exited; ``how`` is "terminated" or "killed"."""
        return None

    # -- helpers for wait_ready ------------------------------------------------------------------
    def _died(self, pid: int) -> StackError:
        proc.remove_file(self.pid_file)
        return StackError(
            f"{self.name}: process {pid} exited during start-up",
            details=self._log_excerpt(),
            hint=self.failure_hint(),
        )

    def _log_excerpt(self, lines: int = 30) -> str:
        text = proc.tail(self.log_file, lines)
        if not text:
            return f"(no output in {self.log_file})"
        return f"--- last {lines} lines of {self.log_file} ---\n{text}\n---"

    def _wait_until(
        self,
        pid: int,
        started: float,
        timeout: float,
        check: Callable[[], bool],
        progress: Progress,
        poll: float,
        note_every: float = 10.0,
        timeout_env: str = "",
    ) -> None:
        next_note = started + note_every
        while True:
            if not proc.alive(pid):
                raise self._died(pid)
            if check():
                return
            now = time.monotonic()
            if now - started > timeout:
                raise StackError(
                    f"{self.name}: not ready after {timeout:.0f}s (pid {pid} is still running)",
                    details=self._log_excerpt(),
                    hint=(
                        "it may just be slow: run `python -m deploy.stack up` again to keep "
                        f"waiting{f', or raise {timeout_env}' if timeout_env else ''}; "
                        "`python -m deploy.stack down` stops it"
                    ),
                )
            if now >= next_note:
                progress(f"{self.name}: still starting… {now - started:.0f}s")
                next_note += note_every
            time.sleep(poll)


def which_next_to_python(binary: str) -> str | None:
    """``binary`` from the directory of the running interpreter (the venv's bin), if there."""
    candidate = Path(sys.executable).parent / binary
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return None
