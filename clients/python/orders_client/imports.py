"""Parsing orders to import from CSV or JSON Lines, row by row, with line numbers.

CSV: a header, then one order per row. Columns (any order; `request_id` and `policy`
optional, nothing else allowed):

    request_id,customer_id,region,policy,lines
    r-1,c-1,eu,split,SKU-1:2:1999:EUR;SKU-2:1:500:EUR

`lines` holds `SKU:QUANTITY:UNIT_PRICE_MINOR:CURRENCY` items separated by `;`. Prices are
integer minor units (1999 = 19.99 EUR): a decimal point is an error, never rounded.

JSON Lines: one CreateOrderRequest per line in protobuf JSON (snake_case or camelCase
names, enums by name), e.g.

    {"request_id": "r-1", "customer_id": "c-1", "region": "eu", "policy": "split",
     "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price_minor": 1999, "currency": "EUR"}]}

with two shorthands: `policy` may be single/split/backorder, and a line may be the string
"SKU-1:2:1999:EUR". Blank lines (and, in JSON Lines, lines starting with #) are skipped.

Every row is parsed on its own: a bad row becomes a `ParsedRow` with `error` set (and its
1-based line number); it never stops the others.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from orders_client.builders import new_request_id, parse_policy
from orders_client.gen.orders.v1 import orders_pb2

__all__ = [
    "CSV_COLUMNS",
    "ParsedRow",
    "format_line_spec",
    "parse_csv",
    "parse_jsonl",
    "parse_line_spec",
    "parse_lines_field",
]

CSV_COLUMNS = ("request_id", "customer_id", "region", "policy", "lines")
_REQUIRED_CSV = ("customer_id", "region", "lines")
LINE_SEPARATOR = ";"
_INTEGER = re.compile(r"^-?[0-9]+$")
_NON_NEGATIVE = re.compile(r"^[0-9]+$")


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """One row of an import file: a request, or why it could not be read."""

    line: int
    request: orders_pb2.CreateOrderRequest | None
    error: str | None = None


def parse_line_spec(text: str) -> orders_pb2.OrderLine:
    """`SKU:QUANTITY:UNIT_PRICE_MINOR:CURRENCY` -> OrderLine (the SKU may contain ':').
    Raises ValueError with a readable message."""
    parts = text.strip().rsplit(":", 3)
    if len(parts) != 4:
        raise ValueError(f"line {text.strip()!r} is not SKU:QUANTITY:UNIT_PRICE_MINOR:CURRENCY")
    sku, quantity, price, currency = (p.strip() for p in parts)
    if not sku:
        raise ValueError(f"line {text.strip()!r} has no SKU")
    if not _INTEGER.match(quantity):
        raise ValueError(f"quantity {quantity!r} is not an integer")
    if not _NON_NEGATIVE.match(price):
        hint = " (use integer minor units, e.g. 1999 for 19.99)" if "." in price else ""
        raise ValueError(f"unit price {price!r} is not a non-negative integer{hint}")
    if not currency:
        raise ValueError(f"line {text.strip()!r} has no currency")
    if not -(2**63) <= int(quantity) < 2**63 or int(price) >= 2**63:
        raise ValueError(f"line {text.strip()!r}: number out of range")
    return orders_pb2.OrderLine(
        sku=sku, quantity=int(quantity), unit_price_minor=int(price), currency=currency
    )


def format_line_spec(line: orders_pb2.OrderLine) -> str:
    return f"{line.sku}:{line.quantity}:{line.unit_price_minor}:{line.currency}"


def parse_lines_field(text: str) -> list[orders_pb2.OrderLine]:
    """`A:1:100:EUR;B:2:50:EUR` -> [OrderLine, OrderLine]."""
    items = [item for item in text.split(LINE_SEPARATOR) if item.strip()]
    if not items:
        raise ValueError("no order lines")
    return [parse_line_spec(item) for item in items]


def _fill_id(request: orders_pb2.CreateOrderRequest, generate_ids: bool) -> str | None:
    if request.request_id:
        return None
    if generate_ids:
        request.request_id = new_request_id()
        return None
    return "request_id is required (or import with --generate-ids)"


def parse_csv(lines: Iterable[str], *, generate_ids: bool = False) -> Iterator[ParsedRow]:
    """Rows of a CSV file (an iterable of text lines, as from open(newline="")); a row is
    reported at the line it starts on."""
    reader = csv.reader(lines)
    header: list[str] | None = None
    start = 1
    try:
        for row in reader:
            number, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in row]
                problem = _header_problem(header)
                if problem:
                    yield ParsedRow(number, None, "bad header: " + problem)
                    return
                continue
            yield _csv_row(number, header, row, generate_ids)
    except csv.Error as exc:
        yield ParsedRow(start, None, f"unreadable CSV: {exc}")


def _header_problem(header: list[str]) -> str:
    unknown = [c for c in header if c not in CSV_COLUMNS]
    missing = [c for c in _REQUIRED_CSV if c not in header]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    problems = []
    if unknown:
        problems.append(f"unknown columns {', '.join(unknown)}")
    if missing:
        problems.append(f"missing columns {', '.join(missing)}")
    if duplicated:
        problems.append(f"duplicated columns {', '.join(duplicated)}")
    return "; ".join(problems)


def _csv_row(number: int, header: list[str], row: list[str], generate_ids: bool) -> ParsedRow:
    if len(row) != len(header):
        return ParsedRow(number, None, f"expected {len(header)} fields, found {len(row)}")
    fields = dict(zip(header, (cell.strip() for cell in row), strict=True))
    try:
        request = orders_pb2.CreateOrderRequest(
            request_id=fields.get("request_id", ""),
            customer_id=fields["customer_id"],
            region=fields["region"],
            policy=parse_policy(fields.get("policy", "")),
            lines=parse_lines_field(fields["lines"]),
        )
    except ValueError as exc:
        return ParsedRow(number, None, str(exc))
    problem = _fill_id(request, generate_ids)
    return ParsedRow(number, None if problem else request, problem)


def _shorthands(value: dict[str, Any]) -> dict[str, Any]:
    result = dict(value)
    policy = result.get("policy")
    if isinstance(policy, str) and not policy.upper().startswith("ALLOCATION_POLICY_"):
        result["policy"] = int(parse_policy(policy))
    lines = result.get("lines")
    if isinstance(lines, list):
        result["lines"] = [
            json_format.MessageToDict(parse_line_spec(item)) if isinstance(item, str) else item
            for item in lines
        ]
    return result


def parse_jsonl(lines: Iterable[str], *, generate_ids: bool = False) -> Iterator[ParsedRow]:
    """Rows of a JSON Lines file."""
    for number, text in enumerate(lines, start=1):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            value = json.loads(stripped)
            if not isinstance(value, dict):
                raise ValueError("each line must be a JSON object")
            request = orders_pb2.CreateOrderRequest()
            json_format.ParseDict(_shorthands(value), request)
        except (ValueError, json_format.ParseError, RecursionError) as exc:
            yield ParsedRow(number, None, _one_line(str(exc)))
            continue
        problem = _fill_id(request, generate_ids)
        yield ParsedRow(number, None if problem else request, problem)


def _one_line(text: str) -> str:
    return " ".join(text.split())
