"""hostile32: the text columns of every table a command prints for people (`report`, `drift`, `completeness`,
`dedup`, the finance tables, `deadletters summary`: one renderer, `warehouse.report.render_report`) come from what
gateways sent: a model named `gpt-4o\\r\\x1b[2J...` reached the terminal as it was, so a producer could clear the
screen, recolour it, or with a carriage return print its own figures over a row's. `deadletters show` escaped
control characters already (`for_terminal`); the tables now do the same. JSON and CSV keep the value exact."""

from __future__ import annotations

from decimal import Decimal

import orjson
import polars as pl

from warehouse import render_report

HOSTILE = "gpt-4o\r\x1b[2Jsearch      0.00\n\x07\x9b31m"


def _frame() -> pl.DataFrame:
    return pl.DataFrame({"model": [HOSTILE, "gpt-4o-mini"], "events": [1, 2],
                         "cost_usd": [Decimal("9.5"), Decimal("1")]},
                        schema={"model": pl.String, "events": pl.UInt64, "cost_usd": pl.Decimal(38, 12)})


def test_a_table_shows_control_characters_escaped():
    table = render_report(_frame(), "table", total=True)
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7f <= ord(c) < 0xa0 for c in table), repr(table)
    assert len(table.splitlines()) == 6  # header, rule, two rows, rule, total: no row split by the value's newline
    assert "gpt-4o\\x0d\\x1b[2Jsearch      0.00\\n\\x07\\x9b31m" in table


def test_json_and_csv_keep_the_value_exact():
    assert orjson.loads(render_report(_frame(), "json"))[0]["model"] == HOSTILE
    assert f"\"{HOSTILE}\"" in render_report(_frame(), "csv")  # quoted whole (RFC 4180), not escaped
