"""Record topics -> warehouse tables: validation and flattening of alerts, alert deliveries, enforcement
records, anomalies, anomaly acks and provider usage (contracts: tokenmeter/records.py and
collectors/provider_usage/common.py). A record that does not fit raises RecordRowError naming the field; the
loader dead-letters it with that reason. Money and amounts are exact: a value with more decimals than its
column holds is refused, never rounded (percentages and anomaly measures are rounded: they are not money).
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any, Callable

import orjson
import pyarrow as pa

from tokenmeter import topics
from tokenmeter.deadletters import letter_source

UTC_MS = pa.timestamp("ms", tz="UTC")
MONEY = pa.decimal128(38, 12)
STR_MAP = pa.map_(pa.string(), pa.string())


class RecordRowError(ValueError):
    """A record that cannot be stored; the message names the field."""


# DateTime64 columns hold 1900-01-01 .. 2299-12-31; a time outside would be clamped silently, so it is refused.
EARLIEST_TIME = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST_TIME = datetime(2299, 12, 31, tzinfo=timezone.utc)
MAX_NUMBER_CHARS = 100  # a decimal string longer than this cannot fit Decimal(38, s) anyway


def _text(record: dict[str, Any], name: str, required: bool = False) -> str:
    value = record.get(name)
    if value is None:
        if required:
            raise RecordRowError(f"{name}: required")
        return ""
    if not isinstance(value, str):
        raise RecordRowError(f"{name}: expected a string, got {type(value).__name__}")
    if required and not value:
        raise RecordRowError(f"{name}: must not be empty")
    return value


def _time(record: dict[str, Any], name: str, required: bool = True) -> datetime | None:
    value = record.get(name)
    if value is None:
        if required:
            raise RecordRowError(f"{name}: required (RFC 3339 time)")
        return None
    if not isinstance(value, str):
        raise RecordRowError(f"{name}: expected an RFC 3339 time string, got {_short(value)}")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise RecordRowError(f"{name}: {value!r:.60} is not an RFC 3339 time") from None
    try:
        moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    except OverflowError:
        raise RecordRowError(f"{name}: {value!r:.60} is out of range") from None
    if not EARLIEST_TIME <= moment <= LATEST_TIME:
        raise RecordRowError(f"{name}: {value!r:.60} is outside {EARLIEST_TIME.year}..{LATEST_TIME.year}")
    return moment


def _decimal(record: dict[str, Any], name: str, scale: int = 12, *, required: bool = True, rounded: bool = False,
             digits: int = 38) -> Decimal | None:
    value = record.get(name)
    if value is None:
        if required:
            raise RecordRowError(f"{name}: required (decimal string)")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise RecordRowError(f"{name}: expected a decimal string, got {_short(value)}")  # floats are refused
    text = str(value).strip() if isinstance(value, str) else None
    if text is not None and len(text) > MAX_NUMBER_CHARS:
        raise RecordRowError(f"{name}: {value!r:.60} is too long for a number ({len(text)} characters)")
    try:
        amount = Decimal(text if text is not None else value)
    except (InvalidOperation, ValueError):
        raise RecordRowError(f"{name}: {value!r:.60} is not a decimal number") from None
    if not amount.is_finite():
        raise RecordRowError(f"{name}: {value!r:.60} is not finite")
    # Size first, then quantize in a context wide enough for any value that fits the column: the default
    # 28-digit context raised InvalidOperation on e.g. 221360928884514619392 quantized to 12 places.
    if abs(amount) >= Decimal(10) ** (digits - scale):
        raise RecordRowError(f"{name}: {value!r:.60} is too large for Decimal({digits}, {scale})")
    with localcontext() as context:
        context.prec = digits + 2
        exact = amount.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP if rounded else ROUND_HALF_EVEN)
    if exact != amount and not rounded:
        raise RecordRowError(f"{name}: {value!r:.60} has more than {scale} decimal places")
    if abs(exact) >= Decimal(10) ** (digits - scale):  # rounded up to the limit
        raise RecordRowError(f"{name}: {value!r:.60} is too large for Decimal({digits}, {scale})")
    return exact


def _count(record: dict[str, Any], name: str, bits: int = 64) -> int:
    value = record.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
        raise RecordRowError(f"{name}: expected a non-negative integer below 2^{bits}, got {_short(value)}")
    return value


def _scope(record: dict[str, Any], name: str = "scope") -> list[tuple[str, str]]:
    value = record.get(name) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise RecordRowError(f"{name}: expected an object of strings, got {_short(value)}")
    return list(value.items())


def _short(value: Any) -> str:
    """A bounded description of a hostile value (repr of a 300-deep list would recurse, of 5 MB would flood)."""
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'} of {len(value)} items"
    return f"{str(value)[:80]!r}"


def _json_text(record: dict[str, Any], name: str, value: Any) -> str:
    try:
        return orjson.dumps(value, default=str).decode()
    except (TypeError, orjson.JSONEncodeError, RecursionError) as exc:
        raise RecordRowError(f"{name}: cannot be stored as JSON ({exc})") from None


def _plain(record: dict[str, Any], name: str) -> str:
    """A scalar provider field as text ('' when absent); objects and arrays are refused."""
    value = record.get(name)
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise RecordRowError(f"{name}: expected a scalar, got {_short(value)}")
    return "true" if value is True else "false" if value is False else str(value)


def alert_row(record: dict[str, Any], now: datetime) -> dict[str, Any]:
    details = record.get("details") or {}
    if not isinstance(details, dict):
        raise RecordRowError("details: expected an object")
    budget = details.get("budget")
    if isinstance(details.get("notify"), list):  # records written before routes had their secret store
        from streams.alerts.routes import mask_notify

        details = {**details, "notify": mask_notify([str(n) for n in details["notify"]])}
    return {
        **{name: _text(record, name, required=name in ("id", "source", "action", "severity"))
           for name in ("id", "source", "kind", "action", "severity", "dedup_key", "title", "summary", "dashboard_url")},
        "at": _time(record, "at"), "scope": _scope(record), "budget": budget if isinstance(budget, str) else "",
        "details": _json_text(record, "details", details), "inserted_at": now,
    }


def delivery_row(record: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        **{name: _text(record, name, required=name in ("alert_id", "route", "status"))
           for name in ("alert_id", "route", "target", "status", "last_error")},
        "attempts": _count(record, "attempts", 32), "http_status": _count(record, "http_status", 16),
        "at": _time(record, "at"),
        # which route of the alert (several of one kind differ here); records written before it: the kind
        "route_id": _text(record, "route_id") or _text(record, "route", required=True),
    }


def enforcement_row(record: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "budget": _text(record, "budget", required=True), "scope": _scope(record),
        "action": _text(record, "action", required=True), "reason": _text(record, "reason"),
        "until": _time(record, "until", required=False), "metric": _text(record, "metric", required=True),
        "spend": _decimal(record, "spend"), "limit_amount": _decimal(record, "limit"),
        "percent": _decimal(record, "percent", 2, rounded=True, digits=18),
        "period_key": _text(record, "period_key"), "period_start": _time(record, "period_start"),
        "period_end": _time(record, "period_end"), "projected": _decimal(record, "projected", required=False),
        "expected_breach_at": _time(record, "expected_breach_at", required=False),
        "updated_at": _time(record, "updated_at"),
        # reservations (issue 15; absent from records written before them)
        "held": _decimal(record, "held", required=False), "headroom": _decimal(record, "headroom", required=False),
        "open_reservations": _count(record, "open_reservations", 32),
        "reservations_expired": _count(record, "reservations_expired"),
        # pending | counted | unknown (seed32, walk33; absent from records written before: '')
        "spend_before_definition": _text(record, "spend_before_definition"),
    }


def anomaly_row(record: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        **{name: _text(record, name, required=name in ("id", "kind"))
           for name in ("id", "kind", "scope_dim", "scope_value", "severity", "unit", "status", "explanation")},
        **{name: _decimal(record, name, rounded=True) for name in ("observed", "expected", "expected_low",
                                                                     "expected_high")},
        "start_at": _time(record, "start"), "end_at": _time(record, "end"), "detected_at": _time(record, "detected_at"),
        "unpriced": record.get("unpriced") is True,  # optional (migration 0019): records before it have none
    }


def ack_row(record: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        **{name: _text(record, name, required=name in ("anomaly_id", "action"))
           for name in ("anomaly_id", "kind", "scope_dim", "scope_value", "action", "by", "note")},
        "mute_until": _time(record, "mute_until", required=False), "at": _time(record, "at"),
    }


_PROVIDER_TEXT = ("project_id", "workspace_id", "api_key_id", "user_id", "service_tier", "line_item", "token_type",
                  "cost_type", "description")
_PROVIDER_COUNTS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens",
                    "output_tokens", "requests")


def provider_usage_row(record: dict[str, Any], now: datetime) -> dict[str, Any]:
    kind = _text(record, "kind", required=True)
    if kind not in ("usage", "cost"):
        raise RecordRowError(f"kind: expected usage or cost, got {kind!r:.60}")
    model = _text(record, "model")
    line_item = _text(record, "line_item")
    if not model and line_item:  # OpenAI cost line items read "<model>, input" / "<model>, output"
        model = line_item.split(",")[0].strip()
    return {
        "id": _text(record, "id", required=True), "provider": _text(record, "provider", required=True),
        "kind": kind, "bucket_start": _time(record, "bucket_start"), "bucket_end": _time(record, "bucket_end"),
        "bucket_width": _text(record, "bucket_width"), "model": model,
        **{name: _plain(record, name) for name in _PROVIDER_TEXT},
        "batch": _plain(record, "batch"),
        "context_window": _plain(record, "context_window"),
        **{name: _count(record, name) for name in _PROVIDER_COUNTS},
        "cost_usd": _decimal(record, "cost_usd", required=False) or Decimal(0),
        "group_fields": _json_text(record, "group", record.get("group") or {}),
        "fetched_at": _time(record, "fetched_at"),
    }


def deadletter_row(record: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A dead letter (tokenmeter/deadletters.py shape) never fails to store: a letter about a letter that could
    not be stored would loop. Unreadable fields become "" / 0 / the load time."""
    def text(name: str, limit: int = 200) -> str:
        value = record.get(name)
        return value[:limit] if isinstance(value, str) else ""

    def number(name: str) -> int:
        value = record.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63 else -1

    try:
        at = _time(record, "at") or now
    except RecordRowError:
        at = now
    stage = text("stage") or "unknown"
    return {"at": at, "stage": stage, "source": letter_source(record),
            "reason": text("reason", 1000), "topic": text("topic"), "partition": number("partition"),
            "offset": number("offset"), "payload_sha256": text("payload_sha256", 64), "loaded_at": now,
            "replayed_from": text("replayed_from")}


HOLD_STATUSES = ("held", "settled", "released", "expired")


def hold_log_row(record: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A step of a reservation hold's life (streams/budgets/holds.py `hold_log_record`)."""
    status = _text(record, "status", required=True)
    if status not in HOLD_STATUSES:
        raise RecordRowError(f"status: expected one of {', '.join(HOLD_STATUSES)}, got {status!r:.60}")
    metric = _text(record, "metric") or "cost_usd"
    if metric not in ("cost_usd", "tokens"):
        raise RecordRowError(f"metric: expected cost_usd or tokens, got {metric!r:.60}")
    return {**{name: _text(record, name, required=True) for name in ("reservation_id", "budget", "request_id")},
            "status": status, "metric": metric, "amount": _decimal(record, "amount"),
            "settled_amount": _decimal(record, "settled_amount", required=False),
            "created_at": _time(record, "created_at"), "expires_at": _time(record, "expires_at"),
            "at": _time(record, "at")}


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema(list(fields))


def _strings(*names: str) -> list[tuple[str, pa.DataType]]:
    return [(name, pa.string()) for name in names]


# topic -> (table, row builder, Arrow schema in table column names)
TABLES: dict[str, tuple[str, Callable[[dict[str, Any], datetime], dict[str, Any]], pa.Schema]] = {
    topics.ALERTS: ("alerts", alert_row, _schema(
        *_strings("id", "source", "kind", "action", "severity", "dedup_key", "title", "summary"),
        ("at", UTC_MS), ("scope", STR_MAP), *_strings("budget", "details", "dashboard_url"),
        ("inserted_at", UTC_MS))),
    topics.ALERT_DELIVERIES: ("alert_route_deliveries", delivery_row, _schema(  # view -> alert_deliveries
        *_strings("alert_id", "route", "target", "status"), ("attempts", pa.uint32()),
        ("last_error", pa.string()), ("http_status", pa.uint16()), ("at", UTC_MS), ("route_id", pa.string()))),
    topics.ENFORCEMENT: ("budget_status", enforcement_row, _schema(
        ("budget", pa.string()), ("scope", STR_MAP), *_strings("action", "reason"), ("until", UTC_MS),
        ("metric", pa.string()), ("spend", MONEY), ("limit_amount", MONEY), ("percent", pa.decimal128(18, 2)),
        ("period_key", pa.string()), ("period_start", UTC_MS), ("period_end", UTC_MS), ("projected", MONEY),
        ("expected_breach_at", UTC_MS), ("updated_at", UTC_MS), ("held", MONEY), ("headroom", MONEY),
        ("open_reservations", pa.uint32()), ("reservations_expired", pa.uint64()),
        ("spend_before_definition", pa.string()))),
    topics.ANOMALIES: ("anomalies", anomaly_row, _schema(
        *_strings("id", "kind", "scope_dim", "scope_value", "severity"),
        *[(n, MONEY) for n in ("observed", "expected", "expected_low", "expected_high")], ("unit", pa.string()),
        ("start_at", UTC_MS), ("end_at", UTC_MS), *_strings("status", "explanation"), ("detected_at", UTC_MS),
        ("unpriced", pa.bool_()))),
    topics.ANOMALY_ACKS: ("anomaly_acks", ack_row, _schema(
        *_strings("anomaly_id", "kind", "scope_dim", "scope_value", "action", "by", "note"),
        ("mute_until", UTC_MS), ("at", UTC_MS))),
    topics.PROVIDER_USAGE: ("provider_usage", provider_usage_row, _schema(
        *_strings("id", "provider", "kind"), ("bucket_start", UTC_MS), ("bucket_end", UTC_MS),
        *_strings("bucket_width", "model", *_PROVIDER_TEXT[:5], "batch", "context_window"),
        *[(n, pa.uint64()) for n in _PROVIDER_COUNTS], ("cost_usd", MONEY), *_strings(*_PROVIDER_TEXT[5:]),
        ("group_fields", pa.string()), ("fetched_at", UTC_MS))),
    topics.BUDGET_HOLD_LOG: ("budget_holds", hold_log_row, _schema(
        *_strings("reservation_id", "budget", "request_id", "status", "metric"), ("amount", MONEY),
        ("settled_amount", MONEY), ("created_at", UTC_MS), ("expires_at", UTC_MS), ("at", UTC_MS))),
    topics.DEADLETTER: ("dead_letters", deadletter_row, _schema(
        ("at", UTC_MS), *_strings("stage", "source", "reason", "topic"), ("partition", pa.int64()),
        ("offset", pa.int64()), ("payload_sha256", pa.string()), ("loaded_at", UTC_MS),
        ("replayed_from", pa.string()))),
}
RECORD_TOPICS = tuple(TABLES)


def record_to_row(topic: str, item: Any, now: datetime | None = None) -> tuple[str, dict[str, Any]]:
    """(table, row) for one decoded record of a record topic; raises RecordRowError."""
    if not isinstance(item, dict):
        raise RecordRowError(f"record: expected a JSON object, got {type(item).__name__}")
    table, build, _ = TABLES[topic]
    try:
        row = build(item, now or datetime.now(timezone.utc))
    except RecordRowError:
        raise
    except Exception as exc:  # any other failure on hostile input is this record's problem, never the loader's
        raise RecordRowError(f"cannot be stored ({type(exc).__name__}: {str(exc)[:200]})") from None
    try:  # low-volume topics: checking the Arrow conversion per record keeps a bad one out of the batch insert
        rows_to_table(topic, [row])
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
        raise RecordRowError(f"does not fit table {table}: {exc}") from None
    return table, row


def rows_to_table(topic: str, rows: list[dict[str, Any]]) -> pa.Table:
    schema = TABLES[topic][2]
    return pa.Table.from_pydict({name: [row[name] for row in rows] for name in schema.names}, schema=schema)
