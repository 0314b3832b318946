"""Chargeback export of one month: CSV, Parquet or a FOCUS 1.3 cost-and-usage file (CSV; rows and metadata
built in warehouse.focus, with cost centers and shared-cost allocation from warehouse.finance).

CSV and Parquet: one row per group (the `group_by` dimensions, any of the report dimensions or `tag:<key>`)
with events, tokens and cost for the month; money as exact decimal strings in CSV and decimal128(38,12) in
Parquet. FOCUS: one row per UTC day, group, provider and model (a charge period is a day), with the FOCUS
columns a usage-based AI charge needs; BilledCost = EffectiveCost = ListCost = ContractedCost = our metered
cost (negotiated overrides are already in it; list prices are not split out). The totals equal
`tokenmeter report` for the same month to the last decimal (both read the same rollup).
"""

from __future__ import annotations

import io
import re
import unicodedata
from pathlib import Path
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from tokenmeter.timefmt import iso_utc
from warehouse.backends import WarehouseError
from warehouse.finance import FinanceConfig, finance_month_frame
from warehouse.focus import FOCUS_COLUMNS, FOCUS_VERSION  # noqa: F401  (re-exported)
from warehouse.focus import focus_rows as build_focus_rows
from warehouse.month_close import closed_months
from warehouse.showback import check_dims, showback

FORMATS = ("focus", "csv", "parquet")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
MEASURES = ("events", "unpriced_events", "input_tokens", "output_tokens", "cached_input_tokens",
            "cache_write_tokens", "reasoning_tokens", "cost_usd")


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """"YYYY-MM" -> [first instant, first instant of the next month) in UTC."""
    match = _MONTH.match(month.strip()) if isinstance(month, str) else None
    if not match or not 1 <= int(match[2]) <= 12:
        raise WarehouseError(f"month: {shown_argument(month)} is not YYYY-MM")
    try:  # year 0 and 9999-12 (its end) are outside Python's dates: a ValueError / OverflowError traceback before
        start = datetime(int(match[1]), int(match[2]), 1, tzinfo=timezone.utc)
        end = (start + timedelta(days=32)).replace(day=1)
    except (ValueError, OverflowError):
        raise WarehouseError(f"month: {shown_argument(month.strip())} is outside 0001-01..9999-11") from None
    return start, end


def shown_argument(value: object, limit: int = 80) -> str:
    """A command-line argument as an error names it: its repr, cut at `limit` characters (a hostile 1 MB argument
    is not echoed whole)."""
    text = value if isinstance(value, str) else str(type(value).__name__)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


# A cell starting with one of these is neutralised: OWASP's = + - @ tab CR LF, NUL (ASVS 5.0 1.2.10), and | % as
# Superset and defusedcsv do (`|` is DDE's `cmd|' /C calc'!A0`).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\x00", "|", "%")
# Inside a cell these may end it for a reader whose list separator they are (`;` in many European locales, tab
# for pasted or TSV-imported data), letting a sign after them start a cell (OWASP): such cells are quoted.
SEPARATORS = (";", "\t")
_QUOTED = (",", '"', "\r", "\n", *SEPARATORS)  # RFC 4180's comma, quote, CR and LF, and the separators above


# A visible ASCII character that is no formula sign: a text starting with one is its own first visible character
# and starts no formula, so the checks below are skipped (most cells of an export: names, ids, dates, numbers).
_PLAIN_FIRST = frozenset(chr(c) for c in range(0x21, 0x7f)) - set(FORMULA_STARTS)


def _starts_a_formula(text: str) -> bool:
    if text[:1] in _PLAIN_FIRST:
        return False
    if text.startswith(FORMULA_STARTS):
        return True
    # Spreadsheets skip white space before a formula (" =1+1" runs): look at the first visible character, past
    # spaces of any kind and invisible format characters (zero-width space, BOM).
    first = next((c for c in text if not (c.isspace() or unicodedata.category(c) == "Cf")), "")
    if first.startswith(FORMULA_STARTS):
        return True
    # Full-width ＝ ＋ － ＠ and the small forms ﹦ ﹢ ﹣ ﹫ fold to the ASCII signs under NFKC (left24: SpreadJS documents
    # that typed or pasted input may start a formula with full-width ＝ ＋ －; for Excel's and Calc's CSV import we
    # found no statement either way, and the quote costs nothing).
    return first > "\x7f" and unicodedata.normalize("NFKC", first).startswith(FORMULA_STARTS)


def safe_text(text: str) -> str:
    """A text cell a spreadsheet will not run (OWASP CSV injection advice): a ' in front when it starts, or its
    first visible character is, a formula sign (FORMULA_STARTS, or one folding to it under NFKC), so
    `=HYPERLINK(...)` or ` =1+1` in a team or tag name shows as text. Text that already starts with ' gets one
    more, so every cell starting with ' had exactly one added and `original_text` reads the stored name back.
    Only for text values: numbers (int, Decimal) are written as they are and stay numbers."""
    if text.startswith("'") or _starts_a_formula(text):
        return "'" + text
    return text


def original_text(cell: str) -> str:
    """A text cell of our CSV as it was stored: one leading ' dropped (safe_text adds exactly one to every text
    cell starting with ' after it)."""
    return cell[1:] if cell.startswith("'") else cell


_NEEDS_QUOTES = re.compile("[" + re.escape("".join(_QUOTED)) + "]")


def _field(cell: str) -> str:
    if _NEEDS_QUOTES.search(cell):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def spreadsheet_csv(columns: list[str], rows: list[list[str]]) -> str:
    """CSV of ready cells, "\n" after every row. A cell holding a comma, quote, CR or LF is quoted (RFC 4180), and so
    is one holding `;` or tab (SEPARATORS). Until walk23 a bare CR went out unquoted (Python's writer quotes only
    the characters of its own line terminator), and Excel and LibreOffice end a row at a bare CR, so a team
    `ops\r=1+1` put `=1+1` at the start of a row of its own; until walk25 `ops;=1+1` was unquoted, two cells in a
    `;`-separated reading. Written here rather than by `csv.writer`, which cannot be told to quote more; for cells
    without `;` or tab the bytes are the writer's (QUOTE_MINIMAL, checked in the tests)."""
    lines = []
    for row in [columns, *rows]:
        lines.append('""' if row == [""] else ",".join(_field(str(cell)) for cell in row))
    return "".join(line + "\n" for line in lines)


def _cell(value: Any) -> str:
    if type(value) is str:  # most cells: the last case below, checked first
        return safe_text(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Decimal):
        return format(value, "f")  # exact, never through float
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, datetime):
        return iso_utc(value, "seconds")
    return safe_text(str(value))


def _csv(columns: list[str], rows: list[list[Any]]) -> bytes:
    return spreadsheet_csv(list(columns), [[_cell(v) for v in row] for row in rows]).encode()


def month_frame(wh, month: str, group_by: list[str], team: str | None = None) -> pl.DataFrame:
    """One row per group for the month: billing_period, the group dims, the measures."""
    start, end = month_bounds(month)
    frame = showback(wh, check_dims(list(group_by), "group_by"), since=start, until=end, team=team)
    return frame.select(pl.lit(month.strip()).alias("billing_period"), *group_by, *MEASURES)


def focus_rows(wh, month: str, group_by: list[str], team: str | None = None,
               finance: FinanceConfig | None = None, closes: Path | None = None) -> list[dict[str, Any]]:
    """FOCUS 1.3 rows (dicts keyed by FOCUS_COLUMNS) for the month: per day, group, provider, model and SKU."""
    start, end = month_bounds(month)
    return build_focus_rows(wh, finance or FinanceConfig(), start, end, group_by, team, closes)


def export_month(warehouse, month: str, fmt: str, group_by: list[str], team: str | None = None,
                 finance: FinanceConfig | None = None, closes: Path | None = None) -> bytes:
    """The month's chargeback as bytes: fmt "focus" (FOCUS 1.3 CSV), "csv" or "parquet"; `team` limits it to
    one team (team-scoped users); `finance` (cost centers, allocation) adds cost-center columns and
    direct / allocated / total cost to CSV and Parquet and Allocated* / x_CostCenter columns to FOCUS."""
    if fmt not in FORMATS:
        raise WarehouseError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    group_by = [g.strip() for g in group_by if g and g.strip()]
    if fmt == "focus":
        rows = focus_rows(warehouse, month, group_by, team, finance, closes)
        return _csv(list(FOCUS_COLUMNS), [[row[c] for c in FOCUS_COLUMNS] for row in rows])
    if finance is None and not closed_months(closes):
        frame = month_frame(warehouse, month, group_by, team)
    else:  # cost center, GL account, owner, direct / allocated / total per group; closed months frozen
        frame = finance_month_frame(warehouse, finance or FinanceConfig(), *month_bounds(month),
                                    check_dims(group_by, "group_by"), team, closes
                                    ).select(pl.lit(month.strip()).alias("billing_period"), pl.all())
    if fmt == "csv":
        return _csv(frame.columns, [list(r) for r in frame.iter_rows()])
    out = io.BytesIO()
    pq.write_table(frame.to_arrow(), out)  # cost_usd stays decimal128(38, 12)
    return out.getvalue()
