"""Chargeback export: a month and a grouping as CSV, Parquet or a FOCUS 1.x CSV, built by the warehouse stage's
documented `warehouse.export.export_month(warehouse, month, fmt, group_by: list[str], team=None) -> bytes`.

A team user's export is always limited to their team (the `team` argument), whatever the page sent.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

FORMATS = {  # format -> (file extension, MIME type, label)
    "csv": ("csv", "text/csv", "CSV"),
    "parquet": ("parquet", "application/vnd.apache.parquet", "Parquet"),
    "focus": ("focus.csv", "text/csv", "FOCUS 1.x (CSV)"),
}
GROUPINGS = ("team", "project", "user", "api_key", "feature", "model", "provider", "org")
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class ExportUnavailable(RuntimeError):
    """The warehouse stage's exporter is not installed in this build."""


def recent_months(today: date, count: int = 12) -> list[str]:
    months, year, month = [], today.year, today.month
    for _ in range(count):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return months


def export_file(wh: Any, month: str, fmt: str, group_by: str) -> tuple[str, str, bytes]:
    """(file name, MIME type, bytes). ValueError names a bad argument."""
    if not MONTH.match(month or "") or not "0001-01" <= month <= "9999-11":  # the months Python's dates can bound
        raise ValueError(f"month must be YYYY-MM (0001-01..9999-11), got {month!r}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    dims = [d for d in group_by.split(",") if d]
    if not dims or any(d not in GROUPINGS for d in dims):
        raise ValueError(f"group_by must be among {', '.join(GROUPINGS)}, got {group_by!r}")
    try:
        from warehouse.export import export_month
    except ImportError as exc:
        raise ExportUnavailable("chargeback export is not available in this build (warehouse.export missing)") from exc
    from dashboards.finance_panel import app_closes, app_finance

    body = export_month(wh.raw, month, fmt, dims, team=wh.team, finance=app_finance(),  # cost centers, allocation
                        closes=app_closes())  # closed months frozen, corrections in the first open month
    ext, mimetype, _ = FORMATS[fmt]
    suffix = f"-{wh.team}" if wh.team else ""
    return f"tokenmeter-{month}-by-{'-'.join(dims)}{suffix}.{ext}", mimetype, body
