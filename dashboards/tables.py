"""Helpers for the hand-written queries of the budget, anomaly and reconciliation pages.

Those tables (alerts, budget_status, anomalies, anomaly_acks, provider_usage) are written by other stages; a
fresh warehouse may not have them yet. A missing table reads as "no data yet", anything else is an error.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable

import polars as pl


class TableMissing(LookupError):
    """A table the page reads does not exist yet (its stage has not run or not been migrated)."""


def is_missing_table(exc: BaseException) -> bool:
    text = str(exc)
    return "UNKNOWN_TABLE" in text or "Unknown table" in text or "doesn't exist" in text or "does not exist" in text


def run(query: Callable[..., pl.DataFrame], sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
    try:
        return query(sql, params or {})
    except Exception as exc:  # noqa: BLE001 - turned into TableMissing or re-raised untouched
        if is_missing_table(exc):
            raise TableMissing(str(exc).splitlines()[0][:200]) from exc
        raise


def utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def dec(value: Any) -> Decimal | None:
    if value is None:
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


def json_value(value: Any) -> Any:
    """JSON for the API: Decimal as a decimal string (never a float), times as RFC 3339 UTC."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return utc(value).isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def frame_records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [{k: json_value(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]
