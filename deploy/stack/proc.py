"""Process, pid-file and port helpers (Linux: uses /proc)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

Progress = Callable[[str], None]


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def write_pid(pid_file: Path, pid: int) -> None:
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n", encoding="ascii")
    tmp.replace(pid_file)


def remove_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def cmdline(pid: int) -> list[str] | None:
    """The argv of ``pid``, or None if there is no such process (or it is a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if not raw:  # zombies and kernel threads have an empty cmdline
        return None
    return [part.decode("utf-8", "replace") for part in raw.rstrip(b"\0").split(b"\0")]


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our own exited child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int) -> bool:
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return False
    # state is the field after the ")" that closes the command name
    state = stat.rsplit(")", 1)[-1].split()[0:1]
    return state != ["Z"] and state != ["X"]


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_bindable(host: str, port: int) -> bool:
    """True if we could listen on host:port ourselves (nobody else holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_free(host: str, port: int) -> bool:
    return not port_answers(host, port, timeout=0.3) and port_bindable(host, port)


def listener_pid(port: int) -> int | None:
    """Best effort: the pid of a process listening on TCP ``port`` (any address), else None."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A = LISTEN
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            for fd in (proc_dir / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        return int(proc_dir.name)
        except OSError:
            continue
    return None


def describe_pid(pid: int) -> str:
    argv = cmdline(pid)
    if not argv:
        return f"pid {pid}"
    text = " ".join(argv)
    return f"pid {pid} ({text[:117] + '...' if len(text) > 120 else text})"


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a text file, or '' if it does not exist."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def spawn(
    argv: Sequence[str],
    log_file: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` detached from our session, stdout+stderr appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    return proc.pid


def terminate(
    pid: int,
    is_ours: Callable[[list[str]], bool],
    timeout: float = 30.0,
    progress: Progress | None = None,
    name: str = "process",
) -> str:
    """SIGTERM ``pid`` (only if its cmdline passes ``is_ours``), SIGKILL after ``timeout``.

    Returns "" if there was nothing of ours to stop, "terminated" if it exited after SIGTERM,
    "killed" if it needed SIGKILL.
    """
    argv = cmdline(pid)
    if argv is None or not is_ours(argv):
        return ""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return ""
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if not alive(pid):
            return "terminated"
        if progress is not None and time.monotonic() >= next_note:
            progress(f"{name}: waiting for pid {pid} to exit…")
            next_note += 5.0
        time.sleep(0.1)
    argv = cmdline(pid)
    if argv is not None and is_ours(argv):
        if progress is not None:
            progress(f"{name}: pid {pid} ignored SIGTERM for {timeout:.0f}s, sending SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not alive(pid):
                break
            time.sleep(0.05)
        return "killed"
    return "terminated"
