"""Render a query result for people (aligned table) or programs (JSON, CSV), with money printed exactly."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, localcontext
from typing import Any

import orjson
import polars as pl

from tokenmeter.terminal_text import for_terminal

FORMATS = ("table", "json", "csv")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")  # exact: never through float
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


def _is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() or isinstance(dtype, pl.Decimal)


def _say_unpriced(columns: list[str], rows: list[tuple], cells: list[list[str]]) -> None:
    """In the table for people, a group whose every call had no price shows `unpriced` as its cost, not
    0.000000000000 (its cost is unknown, not zero: the dashboard's rule). A group with some priced calls keeps its exact
    priced cost beside its unpriced_events count; JSON and CSV keep the numbers."""
    if not {"events", "unpriced_events", "cost_usd"} <= set(columns):
        return
    events, unpriced, cost = (columns.index(name) for name in ("events", "unpriced_events", "cost_usd"))
    for row, cell in zip(rows, cells):
        if row[events] and row[unpriced] == row[events] and not row[cost]:
            cell[cost] = "unpriced"


ADDITIVE = ("events", "unpriced_events", "cost_usd")  # besides every "*_tokens" column: sums that mean something


def _total_row(df: pl.DataFrame, rows: list[tuple]) -> tuple | None:
    """The values of the table's last line for people: "total" under the first column, the exact sum of each additive
    column (counts, tokens, cost: Decimal, never float), "" under the rest. None when there is nothing to add (one row
    or none, or no additive column); JSON and CSV get no total (programs add their own)."""
    additive = [i for i, name in enumerate(df.columns) if name in ADDITIVE or name.endswith("_tokens")]
    if len(rows) < 2 or not additive or 0 in additive:
        return None
    total: list[Any] = [""] * len(df.columns)
    total[0] = "total"
    with localcontext() as exact:
        exact.prec = 100  # Decimal(38, 12) amounts added without rounding (the default context keeps 28 digits)
        for i in additive:
            values = [row[i] for row in rows if row[i] is not None]
            total[i] = sum(values, Decimal(0)) if isinstance(df.dtypes[i], pl.Decimal) else sum(values)
    return tuple(total)


def render_report(df: pl.DataFrame, fmt: str = "table", *, total: bool = False) -> str:
    """fmt: "table" (aligned, numbers right-aligned), "json" (array of objects, Decimals as strings) or "csv".
    total: the table ends with a total row of the additive columns (`tokenmeter report`); other formats ignore it."""
    if fmt not in FORMATS:
        raise ValueError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    rows = df.rows()
    if fmt == "json":
        return orjson.dumps(
            [{name: _json_value(value) for name, value in zip(df.columns, row)} for row in rows],
            option=orjson.OPT_INDENT_2,
        ).decode()
    if fmt == "csv":
        from warehouse.export import safe_text, spreadsheet_csv  # formula-like text gets a ', CR/LF quoted

        return spreadsheet_csv(df.columns, [[safe_text(v) if isinstance(v, str) else _text(v) for v in row]
                                            for row in rows])
    cells = [[for_terminal(_text(v)) if v != "" else "(none)" for v in row] for row in rows]  # gateways' text
    _say_unpriced(df.columns, rows, cells)
    totals = _total_row(df, rows) if total else None
    sums = None if totals is None else [_text(v) for v in totals]
    if totals is not None:
        _say_unpriced(df.columns, [totals], [sums])  # a total of unpriced calls only is unpriced too
    widths = [max([len(for_terminal(name))] + [len(row[i]) for row in cells + ([sums] if sums else [])])
              for i, name in enumerate(df.columns)]
    right = [_is_numeric(dtype) for dtype in df.dtypes]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    lines = [line([for_terminal(name) for name in df.columns]), line(["-" * w for w in widths])]
    lines += [line(row) for row in cells]
    if sums is not None:
        lines += [line(["-" * w for w in widths]), line(sums)]
    if not rows:
        lines.append("(no rows)")
    return "\n".join(lines) + "\n"
