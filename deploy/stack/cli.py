"""``python -m deploy.stack up|down|status|env [--only nats|cassandra]``."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence

from deploy.stack import api
from deploy.stack.cassandra_service import CassandraService
from deploy.stack.config import SERVICES, StackConfig
from deploy.stack.errors import StackError
from deploy.stack.service import ServiceStatus

EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3  # like LSB `status`: some selected service is not running


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--only",
        choices=SERVICES,
        help="act on one service only (default: all)",
    )
    common.add_argument("-q", "--quiet", action="store_true", help="no progress lines")

    p = argparse.ArgumentParser(
        prog="python -m deploy.stack",
        description=(
            "Local NATS JetStream + Cassandra for development and integration tests. "
            "State lives in .state/ of the checkout; see docs/local-stack.md."
        ),
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    u = sub.add_parser(
        "up", parents=[common], help="start the services (no-op if they already run)"
    )
    u.add_argument(
        "--started-file",
        metavar="FILE",
        help=(
            "append the names of the services this call started (not those already running) "
            "to FILE, one per line, as soon as each is spawned; lets a wrapper stop only those"
        ),
    )
    d = sub.add_parser("down", parents=[common], help="stop the services we started")
    d.add_argument(
        "--wipe",
        action="store_true",
        help="also delete their data, logs and generated config under .state/ (not the jar cache)",
    )
    d.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait after SIGTERM before SIGKILL (default 30)",
    )
    sub.add_parser(
        "status", parents=[common], help="show what runs where (exit 3 if something is down)"
    )
    sub.add_parser(
        "env",
        parents=[common],
        help='print shell exports for clients and tests: eval "$(python -m deploy.stack env)"',
    )
    return p


def _print_status(cfg: StackConfig, statuses: Sequence[ServiceStatus]) -> None:
    for st in statuses:
        head = f"{st.name}: {st.state}"
        if st.pid is not None:
            head += f" (pid {st.pid})"
        if st.name == "cassandra" and st.running:
            version = CassandraService(cfg).release_version(timeout=3.0)
            if version:
                head += f", Cassandra {version}"
        print(head)
        for what, addr in st.endpoints.items():
            print(f"  {what:<11} {addr}")
        if st.name == "nats":
            print(f"  {'url':<11} {cfg.nats_url}")
            print(f"  {'sync':<11} jetstream sync_interval={cfg.nats_sync_interval}")
        print(f"  {'state dir':<11} {st.state_dir}")
        print(f"  {'log':<11} {st.log_file}")
        for note in st.notes:
            print(f"  note: {note}")


def _recorder(path: str) -> Callable[[str], None]:
    def record(name: str) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{name}\n")

    return record


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    progress = None if args.quiet else api._print_progress
    try:
        cfg = api.config()
        if args.command == "up":
            api.up(
                args.only,
                cfg=cfg,
                progress=progress,
                on_started=_recorder(args.started_file) if args.started_file else None,
            )
        elif args.command == "down":
            api.down(args.only, wipe=args.wipe, cfg=cfg, progress=progress, timeout=args.timeout)
        elif args.command == "status":
            statuses = api.status(args.only, cfg=cfg)
            _print_status(cfg, statuses)
            return 0 if all(s.running for s in statuses) else EXIT_NOT_RUNNING
        elif args.command == "env":
            for key, value in api.client_env(args.only, cfg=cfg).items():
                print(f"export {key}={shlex.quote(value)}")
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(
            "interrupted (a server already spawned keeps running: `python -m deploy.stack "
            "status` shows it, `down` stops it)",
            file=sys.stderr,
        )
        return 130
    return 0
