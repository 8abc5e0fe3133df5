"""The `orders` command line, run in-process (main(argv)) against the FakeOrdersServer:
tables, --json, exit codes, and the import command."""

from __future__ import annotations

import io
import json
from pathlib import Path

import grpc
import pytest
from orders_client import orders_pb2
from orders_client.cli import main
from orders_client.progress import Progress
from sdk_fake_server import FakeError, FakeOrdersServer


def run(
    fake: FakeOrdersServer, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    code = main(["--address", fake.address, "--timeout", "3", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_create_prints_an_order_table(
    fake: FakeOrdersServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        fake,
        capsys,
        "--client-id",
        "cli",
        "create",
        "--region",
        "eu",
        "--customer",
        "c-1",
        "--line",
        "SKU-1:2:1999:EUR",
        "--line",
        "SKU-22:1:500:EUR",
        "--policy",
        "split",
        "--request-id",
        "req-1",
    )
    assert code == 0, err
    fields = dict(line.split(None, 1) for line in out.split("\n\n")[0].splitlines())
    assert fields["order_id"] == "o-req-1"
    assert fields["status"] == "ALLOCATED"
    assert fields["policy"] == "SPLIT"
    assert fields["total"] == "4498 EUR (minor units)"
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("LINE"))
    row = next(line for line in lines if "SKU-22" in line)
    # Aligned columns: each value ends where its header ends (numbers right-aligned).
    start = header.index("QUANTITY")
    assert row[start : start + len("QUANTITY")] == "       1"  # numbers right-aligned
    assert row[header.index("SKU") :].startswith("SKU-22 ")  # text left-aligned
    call = fake.service.calls_to("CreateOrder")[0]
    assert call.metadata["x-client-id"] == "cli"
    assert call.request.policy == orders_pb2.ALLOCATION_POLICY_SPLIT
    assert [line.sku for line in call.request.lines] == ["SKU-1", "SKU-22"]


def test_create_json(fake: FakeOrdersServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        fake, capsys, "--json", "create", "--region", "eu", "--customer", "c", "--line", "A:1:5:EUR"
    )
    assert code == 0
    [order] = json_lines(out)
    assert order["status"] == "ORDER_STATUS_ALLOCATED"
    assert order["total_minor"] == "5"  # int64 as a string: protobuf JSON
    assert str(order["order_id"]).startswith("o-")


def test_get_not_found_exits_4(fake: FakeOrdersServer, capsys: pytest.CaptureFixture[str]) -> None:
    fake.service.script["GetOrder"].append(
        FakeError(grpc.StatusCode.NOT_FOUND, "order o-x not found", "ORDER_NOT_FOUND")
    )
    code, out, err = run(fake, capsys, "get", "o-x")
    assert code == 4
    assert out == ""
    assert "NOT_FOUND: order o-x not found [ORDER_NOT_FOUND]" in err


def test_invalid_argument_exits_3_with_violations(
    fake: FakeOrdersServer, capsys: pytest.CaptureFixture[str]
) -> None:
    error = FakeError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid request",
        "INVALID_REQUEST",
        [("lines[0].currency", "unknown currency XXX")],
    )
    fake.service.script["CreateOrder"].append(error)
    args = ("create", "--region", "eu", "--customer", "c", "--line", "A:1:5:XXX")
    code, _, err = run(fake, capsys, *args)
    assert code == 3
    assert "lines[0].currency: unknown currency XXX" in err
    fake.service.script["CreateOrder"].append(error)
    code, _, err = run(fake, capsys, "--json", *args)
    assert code == 3
    payload = json.loads(err)
    assert payload["error"]["code"] == "INVALID_ARGUMENT"
    assert payload["error"]["field_violations"] == [
        {"field": "lines[0].currency", "description": "unknown currency XXX"}
    ]


@pytest.mark.parametrize(
    ("command", "method", "code", "reason", "exit_code"),
    [
        ("confirm", "ConfirmOrder", grpc.StatusCode.FAILED_PRECONDITION, "ILLEGAL_TRANSITION", 5),
        ("ship", "ShipOrder", grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE", 6),
        ("cancel", "CancelOrder", grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", 7),
        ("confirm", "ConfirmOrder", grpc.StatusCode.PERMISSION_DENIED, "", 7),
        ("ship", "ShipOrder", grpc.StatusCode.INTERNAL, "", 1),
    ],
)
def test_exit_codes(
    fake: FakeOrdersServer,
    capsys: pytest.CaptureFixture[str],
    command: str,
    method: str,
    code: grpc.StatusCode,
    reason: str,
    exit_code: int,
) -> None:
    fake.service.script[method].append(FakeError(code, "nope", reason))
    assert run(fake, capsys, command, "o-1")[0] == exit_code


def test_already_exists_is_a_conflict(
    fake: FakeOrdersServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.service.script["CreateOrder"].append(
        FakeError(grpc.StatusCode.ALREADY_EXISTS, "request_id reused", "REQUEST_ID_REUSED")
    )
    code, _, _ = run(
        fake, capsys, "create", "--region", "e", "--customer", "c", "--line", "A:1:1:EUR"
    )
    assert code == 5


def test_usage_errors_exit_2(fake: FakeOrdersServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(fake, capsys, "frobnicate")[0] == 2
    assert run(fake, capsys, "create", "--region", "eu")[0] == 2
    code, _, err = run(
        fake, capsys, "create", "--region", "eu", "--customer", "c", "--line", "A:1:9.99:EUR"
    )
    assert code == 2 and "minor units" in err
    assert run(fake, capsys, "list", "--customer", "c", "--status", "lost")[0] == 2
    assert main(["--help"]) == 0
    capsys.readouterr()
    assert fake.service.calls == []


def test_unreachable_service_exits_6(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--address", "127.0.0.1:1", "--timeout", "1", "get", "o-1"])
    assert code == 6
    assert "UNAVAILABLE" in capsys.readouterr().err or code == 6


def test_list_table_json_and_paging(
    fake: FakeOrdersServer, capsys: pytest.CaptureFixture[str]
) -> None:
    pages = [
        orders_pb2.ListOrdersResponse(
            orders=[
                orders_pb2.Order(
                    order_id="o-aaaaaaaa",
                    customer_id="c-1",
                    status=orders_pb2.ORDER_STATUS_CONFIRMED,
                    version=2,
                    total_minor=1234,
                    currency="EUR",
                )
            ],
            next_page_token="p2",
        ),
        orders_pb2.ListOrdersResponse(
            orders=[orders_pb2.Order(order_id="o-b", customer_id="c-1", version=1)]
        ),
    ]
    fake.service.script["ListOrders"].extend(pages[:1])
    code, out, err = run(fake, capsys, "list", "--customer", "c-1", "--status", "confirmed")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == [
        "ORDER_ID",
        "STATUS",
        "CUSTOMER",
        "REGION",
        "LINES",
        "TOTAL",
        "VERSION",
        "CREATED",
    ]
    assert "o-aaaaaaaa" in row and "CONFIRMED" in row and "1234 EUR" in row
    assert "--page-token p2" in err
    fake.service.script["ListOrders"].extend(pages)
    code, out, err = run(fake, capsys, "--json", "list", "--customer", "c-1", "--all")
    assert [o["order_id"] for o in json_lines(out)] == ["o-aaaaaaaa", "o-b"]
    assert err == ""


def test_stock_location_region_reconcile(
    fake: FakeOrdersServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(fake, capsys, "stock", "get", "SKU-1", "--region", "eu")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["SKU", "LOCATION", "ON_HAND", "RESERVED", "AVAILABLE", "VERSION"]
    assert len(lines) == 3 and len({len(line) for line in lines[1:]}) == 1  # aligned
    code, out, _ = run(fake, capsys, "--json", "stock", "set", "SKU-1", "loc-a", "40")
    assert code == 0 and json_lines(out)[0]["on_hand"] == "40"
    code, out, _ = run(fake, capsys, "stock", "adjust", "SKU-1", "loc-a", "-5")
    assert code == 0 and "95" in out
    assert fake.service.calls_to("AdjustStock")[0].request.delta == -5
    code, out, _ = run(
        fake, capsys, "location", "upsert", "loc-a", "--region", "eu", "--priority", "2"
    )
    assert code == 0 and "loc-a" in out and "eu" in out
    code, out, _ = run(
        fake, capsys, "region", "configure", "eu", "--strategy", "most-available", "--ttl", "60"
    )
    assert code == 0 and "MOST_AVAILABLE" in out and "60" in out
    fake.service.script["Reconcile"].append(
        orders_pb2.ReconcileResponse(
            rows_checked=9,
            drifts=[
                orders_pb2.StockDrift(
                    sku="A", location_id="l", recorded_reserved=3, computed_reserved=2
                )
            ],
            repaired=True,
        )
    )
    code, out, _ = run(fake, capsys, "reconcile", "--region", "eu", "--repair")
    assert code == 0 and "rows checked: 9" in out and "repaired: yes" in out
    assert fake.service.calls_to("Reconcile")[0].request.repair


def test_import_csv_reports_bad_rows_by_line(
    fake: FakeOrdersServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "request_id,customer_id,region,policy,lines\n"
        "r-1,c-1,eu,split,A:1:100:EUR\n"
        "r-2,c-2,eu,,A:1:1.50:EUR\n"
        "r-3,c-3,eu,,A:2:100:EUR;B:1:1:EUR\n"
        "r-4,c-4,eu,,A:1:1:EUR\n"
    )
    fake.service.stream.item_errors["r-4"] = __import__("collections").deque(
        [FakeError(grpc.StatusCode.FAILED_PRECONDITION, "no such region", "REGION_NOT_FOUND")]
    )
    code, out, err = run(fake, capsys, "import", str(path), "--max-in-flight", "2")
    assert code == 3  # the first failure (line 3) is a bad row
    assert "line 3: INVALID_ARGUMENT" in err and "minor units" in err
    assert "line 5: FAILED_PRECONDITION" in err and "REGION_NOT_FOUND" in err
    assert "import: 100% (4/4" in err  # not a TTY: plain progress lines
    table = dict(line.split() for line in out.splitlines()[1:])
    assert table == {"ALLOCATED": "2", "FAILED": "2", "TOTAL": "4"}
    assert sorted(r.request_id for r in fake.service.stream_requests) == ["r-1", "r-3", "r-4"]


def test_import_jsonl_json_output(
    fake: FakeOrdersServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "orders.jsonl"
    rows = [
        {"request_id": f"r-{i}", "customer_id": "c", "region": "eu", "lines": ["A:1:1:EUR"]}
        for i in range(30)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    code, out, err = run(fake, capsys, "--json", "import", str(path), "--no-progress")
    assert code == 3
    objects = json_lines(out)
    summary = objects[-1]["summary"]
    assert summary == {"rows": 31, "ok": 30, "failed": 1, "statuses": {"ALLOCATED": 30}}
    results = objects[:-1]
    assert sorted(
        int(str(o["request_id"]).removeprefix("r-")) for o in results if "order_id" in o
    ) == list(range(30))
    [bad] = [o for o in results if "error" in o]
    assert bad["line"] == 31 and bad["error"]["reason"] == "CLIENT_PARSE_ERROR"  # type: ignore[index]
    assert err == ""
    for o in results:
        if "order_id" in o:
            assert o["line"] == int(str(o["request_id"]).removeprefix("r-")) + 1


def test_import_all_good_exits_0_and_dry_run_sends_nothing(
    fake: FakeOrdersServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("customer_id,region,lines\nc,eu,A:1:1:EUR\nc,eu,B:1:1:EUR\n")
    code, out, err = run(fake, capsys, "import", str(path), "--dry-run")
    assert code == 3 and "request_id is required" in err
    code, out, _ = run(fake, capsys, "import", str(path), "--dry-run", "--generate-ids")
    assert code == 0 and "VALID" in out
    assert fake.service.stream_requests == []
    code, out, _ = run(fake, capsys, "import", str(path), "--generate-ids")
    assert code == 0 and len(fake.service.stream_requests) == 2
    assert run(fake, capsys, "import", str(tmp_path / "orders.txt"))[0] == 2
    assert run(fake, capsys, "import", str(tmp_path / "missing.csv"))[0] == 2


def test_progress_on_a_terminal_redraws_in_place() -> None:
    stream = io.StringIO()
    now = [0.0]
    progress = Progress(4, stream, label="import", tty=True, clock=lambda: now[0])
    for _ in range(4):
        now[0] += 1.0
        progress.advance()
    progress.message("line 3: bad")
    progress.close()
    text = stream.getvalue()
    assert text.count("\n") == 2  # the message and the final newline
    assert "\r" in text and "100.0%" in text and "line 3: bad" in text


def test_progress_without_terminal_prints_every_ten_percent() -> None:
    stream = io.StringIO()
    progress = Progress(1000, stream, label="import", tty=False)
    for _ in range(1000):
        progress.advance()
    progress.close()
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == [f"{p}%" for p in range(10, 101, 10)]
