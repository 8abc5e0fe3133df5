"""Run the order service in the background for `make run`: start, stop, status.

    python -m deploy.service start   # idempotent; waits until health says SERVING
    python -m deploy.service stop    # SIGTERM (graceful drain), only the pid we started
    python -m deploy.service status

State (pid file and log) lives in .state/server/. Settings come from ORDERS_* variables,
as for `python -m server` (see `python -m server --help`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.stack.proc import alive, cmdline, read_pid, remove_file, write_pid

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / os.environ.get("ORDERS_STATE_DIR", ".state") / "server"
PID_FILE = STATE_DIR / "server.pid"
LOG_FILE = STATE_DIR / "server.log"
LISTEN = os.environ.get("ORDERS_LISTEN", "127.0.0.1:50051")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 40.0


def _ours(pid: int) -> bool:
    argv = cmdline(pid) or []
    return alive(pid) and "server" in argv and "-m" in argv


def running_pid() -> int | None:
    pid = read_pid(PID_FILE)
    return pid if pid is not None and _ours(pid) else None


def serving(timeout_s: float = 1.0) -> bool:
    try:
        with grpc.insecure_channel(LISTEN) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def start() -> int:
    pid = running_pid()
    if pid is not None:
        print(f"server: already running (pid {pid}) on {LISTEN}; nothing to do")
        return 0
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with LOG_FILE.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "server"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    write_pid(PID_FILE, process.pid)
    print(f"server: starting (pid {process.pid}), log {LOG_FILE.relative_to(ROOT)}", end="")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            print()
            tail = LOG_FILE.read_text(errors="replace").splitlines()[-20:]
            print("error: the server exited while starting; last log lines:", *tail, sep="\n")
            remove_file(PID_FILE)
            return 1
        if serving():
            print(f"\nserver: SERVING on {LISTEN}")
            return 0
        print(".", end="", flush=True)
        time.sleep(0.5)
    print(f"\nerror: not SERVING after {START_TIMEOUT_S:.0f} s; see {LOG_FILE}")
    return 1


def stop() -> int:
    pid = running_pid()
    if pid is None:
        print("server: not running")
        remove_file(PID_FILE)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.2)
    if alive(pid):
        print(f"server: pid {pid} did not drain in {STOP_TIMEOUT_S:.0f} s; killing it")
        os.kill(pid, signal.SIGKILL)
    remove_file(PID_FILE)
    print(f"server: stopped (pid {pid})")
    return 0


def status() -> int:
    pid = running_pid()
    if pid is None:
        print("server: not running")
        return 3
    state = "SERVING" if serving() else "NOT_SERVING"
    print(f"server: running (pid {pid}) on {LISTEN}, {state}; log {LOG_FILE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.service", description=__doc__)
    parser.add_argument("command", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    return {"start": start, "stop": stop, "status": status}[args.command]()


if __name__ == "__main__":
    raise SystemExit(main())
