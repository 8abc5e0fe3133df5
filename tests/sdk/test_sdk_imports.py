"""Parsing of import files (CSV, JSON Lines) and of SKU:QTY:PRICE:CUR line specs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from orders_client import orders_pb2
from orders_client.imports import (
    format_line_spec,
    parse_csv,
    parse_jsonl,
    parse_line_spec,
    parse_lines_field,
)

skus = st.text(alphabet="ABCXYZabcxyz0123456789._:-", min_size=1, max_size=64).filter(
    lambda s: s.strip() == s
)
currencies = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3)
order_lines = st.builds(
    orders_pb2.OrderLine,
    sku=skus,
    quantity=st.integers(-(2**63), 2**63 - 1),
    unit_price_minor=st.integers(0, 2**63 - 1),
    currency=currencies,
)


@given(order_lines)
def test_line_spec_round_trips(line: orders_pb2.OrderLine) -> None:
    assert parse_line_spec(format_line_spec(line)) == line


@given(st.text(max_size=200))
def test_line_spec_parser_only_raises_value_error(text: str) -> None:
    try:
        line = parse_line_spec(text)
    except ValueError as exc:
        assert str(exc)
    else:
        assert line.sku and line.currency


@given(st.lists(order_lines, min_size=1, max_size=5))
def test_lines_field_round_trips(lines: list[orders_pb2.OrderLine]) -> None:
    text = ";".join(format_line_spec(line) for line in lines)
    assert parse_lines_field(text) == lines


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SKU:1:19.99:EUR", "minor units"),
        ("SKU:one:100:EUR", "not an integer"),
        ("SKU:1:100", "SKU:QUANTITY"),
        (":1:100:EUR", "no SKU"),
        ("SKU:1:100:", "no currency"),
        ("SKU:1:-5:EUR", "non-negative"),
        ("SKU:1:99999999999999999999:EUR", "out of range"),
    ],
)
def test_bad_line_specs(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_line_spec(text)


def test_sku_may_contain_colons() -> None:
    assert parse_line_spec("a:b:3:100:EUR").sku == "a:b"


CSV = """request_id,customer_id,region,policy,lines
r-1,c-1,eu,split,A:2:100:EUR;B:1:50:EUR

r-2,c-2,eu,,A:1:19.99:EUR
r-3,c-3,eu,sideways,A:1:100:EUR
r-4,c-4,eu,backorder
"r-5","c-5","eu","single","A:1:1:EUR"
,c-6,eu,split,A:1:1:EUR
"""


def test_csv_rows_and_errors_with_line_numbers() -> None:
    rows = list(parse_csv(CSV.splitlines(keepends=True)))
    assert [r.line for r in rows] == [2, 4, 5, 6, 7, 8]
    good = {r.line: r.request for r in rows if r.request is not None}
    bad = {r.line: r.error for r in rows if r.error is not None}
    assert set(good) == {2, 7}
    first = good[2]
    assert first is not None
    assert first.request_id == "r-1" and first.policy == orders_pb2.ALLOCATION_POLICY_SPLIT
    assert [(line.sku, line.quantity) for line in first.lines] == [("A", 2), ("B", 1)]
    assert "minor units" in (bad[4] or "")
    assert "sideways" in (bad[5] or "")
    assert "expected 5 fields" in (bad[6] or "")
    assert "request_id is required" in (bad[8] or "")


def test_csv_generate_ids() -> None:
    rows = list(parse_csv(CSV.splitlines(keepends=True), generate_ids=True))
    last = rows[-1]
    assert last.line == 8 and last.request is not None and len(last.request.request_id) == 32


def test_csv_multiline_row_is_reported_where_it_starts() -> None:
    text = 'customer_id,region,lines\n"c\n1",eu,bad\nc2,eu,A:1:1:EUR\n'
    rows = list(parse_csv(text.splitlines(keepends=True), generate_ids=True))
    assert [r.line for r in rows] == [2, 4]
    assert rows[0].error and rows[1].request is not None


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("customer_id,region", "missing columns lines"),
        ("customer_id,region,lines,colour", "unknown columns colour"),
        ("customer_id,region,lines,lines", "duplicated columns lines"),
    ],
)
def test_csv_bad_header(header: str, message: str) -> None:
    rows = list(parse_csv([header + "\n", "c,eu,A:1:1:EUR\n"]))
    assert len(rows) == 1 and rows[0].line == 1
    assert rows[0].error is not None and message in rows[0].error


@given(st.lists(st.lists(st.text(max_size=20), max_size=6), max_size=8))
def test_csv_parser_never_raises(rows: list[list[str]]) -> None:
    text = "\n".join(",".join(row) for row in rows)
    for row in parse_csv(text.splitlines(keepends=True)):
        assert (row.request is None) != (row.error is None)


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "request_id": st.text(alphabet="abc123-", min_size=1, max_size=10),
                "customer_id": st.text(alphabet="abc", min_size=1, max_size=5),
                "region": st.sampled_from(["eu", "us"]),
                "lines": st.lists(order_lines.map(format_line_spec), min_size=1, max_size=3),
                "policy": st.sampled_from(["single", "split", "backorder"]),
            }
        ),
        max_size=5,
    )
)
def test_csv_round_trips_generated_rows(rows: list[dict[str, object]]) -> None:
    lines = ["request_id,customer_id,region,policy,lines\n"]
    for row in rows:
        lines.append(
            f"{row['request_id']},{row['customer_id']},{row['region']},{row['policy']},"
            f'"{";".join(row["lines"])}"\n'  # type: ignore[arg-type]
        )
    parsed = list(parse_csv(lines))
    assert [p.line for p in parsed] == list(range(2, 2 + len(rows)))
    for row, result in zip(rows, parsed, strict=True):
        assert result.request is not None, result.error
        assert result.request.request_id == row["request_id"]
        assert [format_line_spec(line) for line in result.request.lines] == row["lines"]


def test_jsonl_rows_and_errors() -> None:
    lines = [
        json.dumps(
            {
                "request_id": "r-1",
                "customer_id": "c",
                "region": "eu",
                "policy": "split",
                "lines": ["A:1:100:EUR", {"sku": "B", "quantity": 2, "unitPriceMinor": 5}],
            }
        ),
        "",
        "# a comment",
        "{not json",
        json.dumps({"request_id": "r-3", "customer_id": "c", "colour": "red"}),
        json.dumps([1, 2]),
        json.dumps({"customer_id": "c", "region": "eu", "lines": []}),
        json.dumps({"request_id": "r-9", "policy": "ALLOCATION_POLICY_BACKORDER"}),
    ]
    rows = list(parse_jsonl(lines))
    assert [r.line for r in rows] == [1, 4, 5, 6, 7, 8]
    first = rows[0].request
    assert first is not None and first.policy == orders_pb2.ALLOCATION_POLICY_SPLIT
    assert [(line.sku, line.unit_price_minor) for line in first.lines] == [("A", 100), ("B", 5)]
    assert rows[1].error and rows[2].error and "colour" in rows[2].error
    assert rows[3].error == "each line must be a JSON object"
    assert rows[4].error is not None and "request_id" in rows[4].error
    assert rows[5].request is not None
    assert rows[5].request.policy == orders_pb2.ALLOCATION_POLICY_BACKORDER


@given(st.lists(st.text(max_size=60), max_size=10))
def test_jsonl_parser_never_raises(lines: list[str]) -> None:
    for row in parse_jsonl(lines):
        assert (row.request is None) != (row.error is None)
