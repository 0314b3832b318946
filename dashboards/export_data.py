"""Chargeback export: a month and a grouping as CSV, Parquet or a FOCUS 1.x CSV, built by the warehouse stage's
documented `warehouse.export.export_month(warehouse, month, fmt, group_by: list[str], team=None) -> bytes`.

A team user's export is always limited to their team (the `team` argument), whatever the page sent.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timezone
from typing import Any

FORMATS = {  # format -> (file extension, MIME type, label)
    "csv": ("csv", "text/csv", "CSV"),
    "parquet": ("parquet", "application/vnd.apache.parquet", "Parquet"),
    "focus": ("focus.csv", "text/csv", "FOCUS 1.x (CSV)"),
}
TAG_KEYS_SHOWN = 200  # the month's tag keys offered as groupings; any other can be typed
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class ExportUnavailable(RuntimeError):
    """The warehouse stage's exporter is not installed in this build."""


def recent_months(today: date, count: int = 12) -> list[str]:
    months, year, month = [], today.year, today.month
    for _ in range(count):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return months


def grouping_options(tag_keys: list[str], typed: str | None = None, chosen: list[str] | None = None) -> list[dict]:
    """The Export page's "Group by" choices: every dimension the API's `group_by` takes (walk33: the page offered
    eight), the month's tag keys, what is already chosen, and a typed tag key (`tag:owner`, or `owner` offered as
    `tag:owner` when it is no dimension)."""
    from warehouse.queries import DIMENSIONS

    values = list(DIMENSIONS) + [f"tag:{k}" for k in tag_keys if k]
    typed = (typed or "").strip()
    if typed and typed not in DIMENSIONS:
        values.append(typed if typed.startswith("tag:") else f"tag:{typed}")
    values += [c for c in chosen or [] if isinstance(c, str)]
    return [{"label": v.replace("_", " ") if v in DIMENSIONS else v, "value": v}
            for v in dict.fromkeys(v for v in values if v != "tag:")]


def month_tag_keys(wh: Any, month: str) -> list[str]:
    """The tag keys on the month's events that `wh` (team-scoped) may see, sorted, at most TAG_KEYS_SHOWN."""
    if not MONTH.match(month or "") or not "0001-01" <= month <= "9999-11":
        return []
    start = date(int(month[:4]), int(month[5:]), 1)
    end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    sql = ("SELECT DISTINCT arrayJoin(mapKeys(tags)) AS key FROM priced_events WHERE ts >= {since:DateTime64(3, 'UTC')}"
           f" AND ts < {{until:DateTime64(3, 'UTC')}} AND {wh.team_condition()} ORDER BY key LIMIT {TAG_KEYS_SHOWN}")
    frame = wh.query(sql, {"since": datetime.combine(start, time.min, timezone.utc),
                           "until": datetime.combine(end, time.min, timezone.utc)})
    return [k for k in frame["key"].to_list() if k] if frame.height else []


def export_file(wh: Any, month: str, fmt: str, group_by: str | list[str], archived: str = "") -> tuple[str, str, bytes]:
    """(file name, MIME type, bytes). ValueError names a bad argument. `archived`: an archived close of the month
    (as `archived_versions` lists it) instead of the month's current books: the file that close gave."""
    if not MONTH.match(month or "") or not "0001-01" <= month <= "9999-11":  # the months Python's dates can bound
        raise ValueError(f"month must be YYYY-MM (0001-01..9999-11), got {month!r}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    parts = group_by.split(",") if isinstance(group_by, str) else group_by or []  # the page sends a list
    dims = [d.strip() for d in parts if isinstance(d, str) and d.strip()]
    try:
        from warehouse.export import export_month
        from warehouse.queries import check_dimensions
    except ImportError as exc:
        raise ExportUnavailable("chargeback export is not available in this build (warehouse.export missing)") from exc
    if not dims:
        raise ValueError("group_by needs a dimension, e.g. team or tag:cost_center")
    try:  # what `tokenmeter export --group-by` takes (walk33: the API took only the page's eight groupings)
        check_dimensions(dims, "group_by", tags=True)
    except Exception as exc:  # noqa: BLE001 - WarehouseError: the request's words, a 400
        raise ValueError(str(exc)) from None
    from dashboards.finance_panel import app_closes, app_finance

    ext, mimetype, _ = FORMATS[fmt]
    suffix = f"-{_plain(wh.team)}" if wh.team else ""
    by = _plain("-".join(dims))
    if archived:
        return (f"tokenmeter-{month}-as-closed-{_stamp(archived)}-by-{by}{suffix}.{ext}", mimetype,
                _archived_export(wh, month, fmt, dims, archived, app_finance(), app_closes()))
    body = export_month(wh.raw, month, fmt, dims, team=wh.team, finance=app_finance(),  # cost centers, allocation
                        closes=app_closes())  # closed months frozen, corrections in the first open month
    return f"tokenmeter-{month}-by-{by}{suffix}.{ext}", mimetype, body


def _plain(text: str) -> str:
    """A file-name part: a tag key is the user's text (`tag:a"b` would end the header's quoted name; ':' is no
    Windows file name)."""
    return re.sub(r"-+", "-", re.sub(r"[^0-9A-Za-z_.-]", "-", text)).strip("-")[:80] or "total"


def _archived_export(wh: Any, month: str, fmt: str, dims: list[str], archived: str, finance: Any,
                     closes: Any) -> bytes:
    """`tokenmeter export --month M --archived NAME`, for the page and the API (warehouse/archived_close.py)."""
    from warehouse.archived_close import NoSuchArchivedClose, archived_close_view
    from warehouse.export import export_month

    if closes is None:
        raise ValueError("archived closes need the data directory (no closes directory here)")
    try:
        with archived_close_view(closes, month, archived) as (view, _record):
            return export_month(wh.raw, month, fmt, dims, team=wh.team, finance=finance, closes=view)
    except NoSuchArchivedClose as exc:  # the request's: a bad argument. A changed archive (WarehouseError) is the
        raise ValueError(str(exc)) from None  # server's state, as a changed current close: the API's 500 JSON


def _stamp(archived: str) -> str:
    """The UTC stamp of an archived close's name (`.reopened/2026-11-20270105T101500Z` -> 20270105T101500Z)."""
    return re.sub(r"[^0-9A-Za-z]", "", archived.rsplit("-", 1)[-1])[:20] or "archived"


def archived_versions(month: str, closes: Any) -> list[dict[str, str]]:
    """The Export page's "Version" options for `month`: its current books, then each close re-opened since, newest
    first (what finance was sent before a restatement)."""
    from warehouse.month_reopen import reopen_history

    options = [{"label": "current books", "value": ""}]
    for record in reversed([r for r in reopen_history(closes) if r["month"] == month]):
        close = record.get("close") or {}
        by = f" by {close['closed_by']}" if close.get("closed_by") else ""
        options.append({"label": f"as closed {str(close.get('closed_at', '?'))[:10]}{by} (re-opened "
                                 f"{record['reopened_at'][:10]}: {record['reason']})", "value": record["archived"]})
    return options
