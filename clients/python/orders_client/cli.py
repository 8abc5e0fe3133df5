"""`orders`: the command-line client of the order service.

    orders [--address HOST:PORT] [--client-id ID] [--token T] [--timeout S] [--json] COMMAND

Tables for people by default; `--json` prints one JSON object per line (protobuf JSON
with the proto field names) for scripts. Exit codes (EXIT_* below): 0 ok, 1 unexpected,
2 usage, 3 invalid argument, 4 not found, 5 conflict (already exists, failed
precondition, aborted), 6 unavailable / deadline exceeded / resource exhausted, 7
authentication or permission, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import grpc

from orders_client import __version__, output
from orders_client._common import DEFAULT_ADDRESS, DEFAULT_TIMEOUT
from orders_client.aio import AsyncOrdersClient
from orders_client.builders import parse_policy, parse_status, parse_strategy
from orders_client.bulk import DEFAULT_MAX_IN_FLIGHT
from orders_client.client import OrdersClient
from orders_client.errors import OrdersError
from orders_client.events import DEFAULT_NATS_URL, DEFAULT_STREAM, subscribe
from orders_client.gen.orders.v1 import orders_pb2
from orders_client.imports import ParsedRow, parse_csv, parse_jsonl, parse_line_spec
from orders_client.progress import Progress

__all__ = ["EXIT_CODES", "build_parser", "exit_code", "main"]

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_INVALID = 3
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5
EXIT_UNAVAILABLE = 6
EXIT_AUTH = 7
EXIT_INTERRUPTED = 130

EXIT_CODES: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: EXIT_OK,
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_INVALID,
    grpc.StatusCode.OUT_OF_RANGE: EXIT_INVALID,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: EXIT_CONFLICT,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_CONFLICT,
    grpc.StatusCode.ABORTED: EXIT_CONFLICT,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: EXIT_UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_AUTH,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_AUTH,
}
PARSE_ERROR_REASON = "CLIENT_PARSE_ERROR"
_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def exit_code(error: OrdersError) -> int:
    return EXIT_CODES.get(error.code, EXIT_UNEXPECTED)


@dataclass
class Context:
    args: argparse.Namespace
    out: TextIO
    err: TextIO

    @property
    def json(self) -> bool:
        return bool(self.args.json)

    def client(self) -> OrdersClient:
        return OrdersClient(
            self.args.address,
            client_id=self.args.client_id,
            token=self.args.token,
            timeout=self.args.timeout,
        )

    def async_client(self) -> AsyncOrdersClient:
        return AsyncOrdersClient(
            self.args.address,
            client_id=self.args.client_id,
            token=self.args.token,
            timeout=self.args.timeout,
        )

    def print(self, text: str) -> None:
        self.out.write(text + "\n")

    def show(self, message: Any, render: Callable[[Any], str]) -> None:
        self.print(output.json_line(message) if self.json else render(message))


# -------------------------------------------------------------------- commands


def _create(ctx: Context) -> int:
    a = ctx.args
    with ctx.client() as client:
        order = client.create_order(
            customer_id=a.customer,
            region=a.region,
            lines=a.line,
            policy=a.policy,
            request_id=a.request_id or None,
        )
    ctx.show(order, output.order_detail)
    return EXIT_OK


def _get(ctx: Context) -> int:
    with ctx.client() as client:
        ctx.show(client.get_order(ctx.args.order_id), output.order_detail)
    return EXIT_OK


def _list(ctx: Context) -> int:
    a = ctx.args
    orders: list[orders_pb2.Order] = []
    token = a.page_token
    with ctx.client() as client:
        while True:
            page = client.list_orders(
                a.customer, status=a.status, page_size=a.page_size, page_token=token
            )
            if ctx.json:
                for order in page.orders:
                    ctx.print(output.json_line(order))
            else:
                orders.extend(page.orders)
            token = page.next_page_token
            if not a.all or not token:
                break
    if not ctx.json:
        ctx.print(output.table(output.ORDER_COLUMNS, output.order_rows(orders)))
    if token:
        ctx.err.write(f"more orders: --page-token {token}\n")
    return EXIT_OK


def _transition(name: str) -> Callable[[Context], int]:
    def run(ctx: Context) -> int:
        with ctx.client() as client:
            if name == "cancel":
                order = client.cancel_order(ctx.args.order_id, ctx.args.reason)
            elif name == "confirm":
                order = client.confirm_order(ctx.args.order_id)
            else:
                order = client.ship_order(ctx.args.order_id)
        ctx.show(order, output.order_detail)
        return EXIT_OK

    return run


def _stock_table(level: orders_pb2.StockLevel) -> str:
    return output.table(output.STOCK_COLUMNS, output.stock_rows([level]))


def _stock_get(ctx: Context) -> int:
    with ctx.client() as client:
        levels = client.get_stock(ctx.args.sku, region=ctx.args.region)
    if ctx.json:
        for level in levels:
            ctx.print(output.json_line(level))
    else:
        ctx.print(output.table(output.STOCK_COLUMNS, output.stock_rows(levels)))
    return EXIT_OK


def _stock_set(ctx: Context) -> int:
    a = ctx.args
    with ctx.client() as client:
        ctx.show(client.set_stock(a.sku, a.location, a.on_hand), _stock_table)
    return EXIT_OK


def _stock_adjust(ctx: Context) -> int:
    a = ctx.args
    with ctx.client() as client:
        ctx.show(client.adjust_stock(a.sku, a.location, a.delta), _stock_table)
    return EXIT_OK


def _location_upsert(ctx: Context) -> int:
    a = ctx.args
    with ctx.client() as client:
        location = client.upsert_location(a.location_id, a.region, a.priority)

    def render(loc: orders_pb2.Location) -> str:
        return output.table(
            ("LOCATION", "REGION", "PRIORITY"), [(loc.location_id, loc.region, loc.priority)]
        )

    ctx.show(location, render)
    return EXIT_OK


def _region_configure(ctx: Context) -> int:
    a = ctx.args
    with ctx.client() as client:
        region = client.configure_region(
            a.region, strategy=a.strategy, reservation_ttl_seconds=a.ttl
        )

    def render(r: orders_pb2.Region) -> str:
        strategy = orders_pb2.AllocationStrategy.Name(r.strategy)
        return output.table(
            ("REGION", "STRATEGY", "TTL_SECONDS"),
            [(r.region, strategy.removeprefix("ALLOCATION_STRATEGY_"), r.reservation_ttl_seconds)],
        )

    ctx.show(region, render)
    return EXIT_OK


def _reconcile(ctx: Context) -> int:
    with ctx.client() as client:
        response = client.reconcile(ctx.args.region, repair=ctx.args.repair)
    ctx.show(response, output.reconcile_text)
    return EXIT_OK


def _watch(ctx: Context) -> int:
    a = ctx.args

    async def run() -> int:
        seen = 0
        subscription = subscribe(
            a.nats,
            stream=a.stream,
            durable=a.durable,
            subject_prefix=a.subject_prefix,
            deliver=a.deliver,
        )
        async with subscription:
            async for event in subscription:
                ctx.print(output.event_line(event, ctx.json))
                ctx.out.flush()
                seen += 1
                if a.count and seen >= a.count:
                    break
        return EXIT_OK

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # nats-py errors share no public base class worth importing
        name = type(exc).__name__
        ctx.err.write(f"error: cannot watch events at {a.nats}: {name}: {exc}\n")
        return EXIT_NOT_FOUND if name == "NotFoundError" else EXIT_UNAVAILABLE


# -------------------------------------------------------------------- import


def _import_format(ctx: Context) -> str | None:
    if ctx.args.format:
        return str(ctx.args.format)
    return _FORMATS.get(Path(ctx.args.file).suffix.lower())


def _open_text(path: str) -> TextIO:
    if path == "-":
        return sys.stdin
    return open(path, encoding="utf-8-sig", newline="")


def _count_rows(path: str, fmt: str) -> int | None:
    if path == "-":
        return None
    with open(path, "rb") as handle:
        count = sum(1 for line in handle if line.strip())
    return max(count - 1, 0) if fmt == "csv" else count


class _Importer:
    def __init__(self, ctx: Context, progress: Progress) -> None:
        self.ctx = ctx
        self.progress = progress
        self.statuses: Counter[str] = Counter()
        self.failed = 0
        self.first_failure: int | None = None
        self._lines: dict[str, deque[int]] = {}

    def requests(self, rows: Iterator[ParsedRow]) -> Iterator[orders_pb2.CreateOrderRequest]:
        for row in rows:
            if row.request is None:
                error = OrdersError(
                    row.error or "unreadable row",
                    code=grpc.StatusCode.INVALID_ARGUMENT,
                    reason=PARSE_ERROR_REASON,
                )
                self.fail(row.line, "", error)
                continue
            self._lines.setdefault(row.request.request_id, deque()).append(row.line)
            yield row.request

    def line_of(self, request_id: str) -> int:
        queue = self._lines[request_id]
        line = queue.popleft()
        if not queue:
            del self._lines[request_id]
        return line

    def fail(self, line: int, request_id: str, error: OrdersError) -> None:
        self.failed += 1
        if self.first_failure is None:
            self.first_failure = exit_code(error)
        if self.ctx.json:
            self.ctx.print(
                output.json_line(
                    {"line": line, "request_id": request_id, "error": output.error_dict(error)}
                )
            )
        else:
            self.progress.message(f"line {line}: {error}")
        self.progress.advance()

    def ok(self, line: int, order: orders_pb2.Order) -> None:
        status = output.status_name(order.status)
        self.statuses[status] += 1
        if self.ctx.json:
            self.ctx.print(
                output.json_line(
                    {
                        "line": line,
                        "request_id": order.request_id,
                        "order_id": order.order_id,
                        "status": status,
                        "version": order.version,
                    }
                )
            )
        self.progress.advance()

    def summary(self) -> None:
        ok = sum(self.statuses.values())
        if self.ctx.json:
            self.ctx.print(
                output.json_line(
                    {
                        "summary": {
                            "rows": ok + self.failed,
                            "ok": ok,
                            "failed": self.failed,
                            "statuses": dict(sorted(self.statuses.items())),
                        }
                    }
                )
            )
            return
        rows: list[tuple[str, int]] = sorted(self.statuses.items())
        rows += [("FAILED", self.failed), ("TOTAL", ok + self.failed)]
        self.ctx.print(output.table(("RESULT", "ROWS"), rows))


def _import(ctx: Context) -> int:
    a = ctx.args
    fmt = _import_format(ctx)
    if fmt is None:
        ctx.err.write("error: cannot tell the format from the file name; pass --format\n")
        return EXIT_USAGE
    try:
        total = _count_rows(a.file, fmt)
        handle = _open_text(a.file)
    except OSError as exc:
        ctx.err.write(f"error: cannot read {a.file}: {exc.strerror or exc}\n")
        return EXIT_USAGE
    parse = parse_csv if fmt == "csv" else parse_jsonl
    progress = Progress(total, ctx.err, label="import", enabled=not a.no_progress)
    importer = _Importer(ctx, progress)
    try:
        with handle:
            requests = importer.requests(parse(handle, generate_ids=a.generate_ids))
            if a.dry_run:
                for _ in requests:
                    importer.statuses["VALID"] += 1
                    progress.advance()
            else:
                asyncio.run(_bulk(ctx, importer, requests))
    finally:
        progress.close()
    importer.summary()
    return importer.first_failure or EXIT_OK


async def _bulk(
    ctx: Context, importer: _Importer, requests: Iterator[orders_pb2.CreateOrderRequest]
) -> None:
    async with ctx.async_client() as client:
        results: AsyncIterator[Any] = client.bulk_create(
            requests, max_in_flight=ctx.args.max_in_flight
        )
        async for result in results:
            line = importer.line_of(result.request_id)
            if result.error is not None:
                importer.fail(line, result.request_id, result.error)
            elif result.order is not None:
                importer.ok(line, result.order)


# -------------------------------------------------------------------- parser


def _line_arg(text: str) -> orders_pb2.OrderLine:
    try:
        return parse_line_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _choice(parse: Callable[[str], object]) -> Callable[[str], str]:
    def check(text: str) -> str:
        try:
            parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return check


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="orders",
        description="Command-line client of the order service (orders.v1).",
        epilog="Exit codes: 0 ok, 1 unexpected, 2 usage, 3 invalid argument, 4 not found, "
        "5 conflict, 6 unavailable/deadline/exhausted, 7 auth, 130 interrupted.",
    )
    parser.add_argument(
        "--address",
        default=env.get("ORDERS_ADDRESS", DEFAULT_ADDRESS),
        help="service address (env ORDERS_ADDRESS; default %(default)s)",
    )
    parser.add_argument(
        "--client-id",
        default=env.get("ORDERS_CLIENT_ID"),
        help="x-client-id when the service has no auth (env ORDERS_CLIENT_ID)",
    )
    parser.add_argument(
        "--token", default=env.get("ORDERS_TOKEN"), help="bearer token (env ORDERS_TOKEN)"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        help="deadline per command in seconds, retries included (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--version", action="version", version=f"orders {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("create", help="create an order")
    p.add_argument("--region", required=True)
    p.add_argument("--customer", required=True, help="customer id")
    p.add_argument(
        "--line",
        action="append",
        required=True,
        type=_line_arg,
        metavar="SKU:QTY:PRICE:CUR",
        help="an order line, price in minor units (repeat for more lines)",
    )
    p.add_argument("--policy", type=_choice(parse_policy), help="single | split | backorder")
    p.add_argument("--request-id", help="idempotency key (default: a new uuid4)")
    p.set_defaults(run=_create)

    p = commands.add_parser("get", help="show an order")
    p.add_argument("order_id")
    p.set_defaults(run=_get)

    p = commands.add_parser("list", help="orders of a customer, newest first")
    p.add_argument("--customer", required=True)
    p.add_argument("--status", type=_choice(parse_status), help="e.g. allocated, confirmed")
    p.add_argument("--page-size", type=int, default=0, help="1..1000 (default: server's)")
    p.add_argument("--page-token", default="")
    p.add_argument("--all", action="store_true", help="follow every page")
    p.set_defaults(run=_list)

    for name, help_text in (
        ("cancel", "cancel an order"),
        ("confirm", "confirm an allocated order"),
        ("ship", "ship a confirmed order"),
    ):
        p = commands.add_parser(name, help=help_text)
        p.add_argument("order_id")
        if name == "cancel":
            p.add_argument("--reason", default="", help="status_reason to record")
        p.set_defaults(run=_transition(name))

    stock = commands.add_parser("stock", help="stock levels").add_subparsers(
        dest="stock_command", required=True, metavar="ACTION"
    )
    p = stock.add_parser("get", help="stock of a SKU at every location")
    p.add_argument("sku")
    p.add_argument("--region", default="")
    p.set_defaults(run=_stock_get)
    p = stock.add_parser("set", help="set on_hand")
    p.add_argument("sku")
    p.add_argument("location")
    p.add_argument("on_hand", type=int)
    p.set_defaults(run=_stock_set)
    p = stock.add_parser("adjust", help="add DELTA (may be negative) to on_hand")
    p.add_argument("sku")
    p.add_argument("location")
    p.add_argument("delta", type=int)
    p.set_defaults(run=_stock_adjust)

    location = commands.add_parser("location", help="fulfilment locations").add_subparsers(
        dest="location_command", required=True, metavar="ACTION"
    )
    p = location.add_parser("upsert", help="create or update a location")
    p.add_argument("location_id")
    p.add_argument("--region", required=True)
    p.add_argument("--priority", type=int, default=0, help="lower is preferred")
    p.set_defaults(run=_location_upsert)

    region = commands.add_parser("region", help="regions").add_subparsers(
        dest="region_command", required=True, metavar="ACTION"
    )
    p = region.add_parser("configure", help="create or update a region")
    p.add_argument("region")
    p.add_argument("--strategy", type=_choice(parse_strategy), help="priority | most-available")
    p.add_argument("--ttl", type=int, default=0, help="reservation TTL, s (0: default)")
    p.set_defaults(run=_region_configure)

    p = commands.add_parser("reconcile", help="check reserved stock against allocations")
    p.add_argument("--region", default="", help="one region (default: all)")
    p.add_argument("--repair", action="store_true", help="fix the drift found")
    p.set_defaults(run=_reconcile)

    p = commands.add_parser("watch", help="print events from JetStream")
    p.add_argument("--nats", default=env.get("ORDERS_NATS_URL", DEFAULT_NATS_URL))
    p.add_argument("--stream", default=env.get("ORDERS_STREAM_NAME", DEFAULT_STREAM))
    p.add_argument("--durable", help="durable consumer name (resume where it stopped)")
    p.add_argument("--subject-prefix", default=env.get("ORDERS_SUBJECT_PREFIX", ""))
    p.add_argument(
        "--from",
        dest="deliver",
        choices=("all", "new", "last"),
        default="new",
        help="where a new consumer starts (default %(default)s)",
    )
    p.add_argument("--count", type=_positive_int, help="stop after N events")
    p.set_defaults(run=_watch)

    p = commands.add_parser("import", help="create orders from a CSV or JSON Lines file")
    p.add_argument("file", help="a .csv or .jsonl file, or - for standard input")
    p.add_argument("--format", choices=("csv", "jsonl"), help="default: from the file name")
    p.add_argument("--max-in-flight", type=_positive_int, default=DEFAULT_MAX_IN_FLIGHT)
    p.add_argument(
        "--generate-ids",
        action="store_true",
        help="give rows without request_id a new one (the import is then not re-runnable)",
    )
    p.add_argument("--dry-run", action="store_true", help="only parse and report bad rows")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_import)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (see the module docstring)."""
    out, err = sys.stdout, sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    ctx = Context(args, out, err)
    try:
        code: int = args.run(ctx)
        return code
    except OrdersError as exc:
        if ctx.json:
            err.write(output.json_line({"error": output.error_dict(exc)}) + "\n")
        else:
            err.write(f"error: {exc.code.name}: {exc.message}")
            err.write(f" [{exc.reason}]\n" if exc.reason else "\n")
            for violation in exc.field_violations:
                err.write(f"  {violation.field}: {violation.description}\n")
        return exit_code(exc)
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `orders list ... | head`
        return EXIT_OK
    except Exception as exc:
        err.write(f"error: unexpected {type(exc).__name__}: {exc}\n")
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
