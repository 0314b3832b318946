"""Strict, field-naming conversions for the loosely typed values gateways emit.

Real logs drift: token counts arrive as numbers or numeric strings, statuses as int or string, timestamps as
epoch seconds, milliseconds, nanoseconds or text. Every helper here accepts the documented drift and rejects
anything else with a DialectError naming the field, so nothing is silently read as zero.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

from collectors.errors import DialectError, join_path

_INT_TEXT = re.compile(r"^\s*[+-]?\d+(\.0*)?\s*$")


def to_int(value: Any, path: str, *, allow_negative: bool = False) -> int | None:
    """An integer from an int, an integral float or a numeric string; None stays None (field absent)."""
    if value is None:
        return None
    if type(value) is str and value.isdecimal() and value.isascii():  # OTLP's int64 text: what the regex takes
        number = int(value)
    elif isinstance(value, bool):
        raise DialectError(f"expected an integer, got boolean {value!r}", path)
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise DialectError(f"expected an integer, got {value!r}", path)
        number = int(value)
    elif isinstance(value, str):
        if not _INT_TEXT.match(value):
            raise DialectError(f"expected an integer, got string {value!r}", path)
        number = int(float(value)) if "." in value else int(value)
    else:
        raise DialectError(f"expected an integer, got {type(value).__name__}", path)
    if number < 0 and not allow_negative:
        raise DialectError(f"must not be negative, got {number}", path)
    return number


def to_tokens(value: Any, path: str) -> int:
    """A token count: a non-negative integer, 0 when absent."""
    return to_int(value, path) or 0


def to_float(value: Any, path: str, *, allow_negative: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise DialectError(f"expected a number, got boolean {value!r}", path)
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise DialectError(f"expected a number, got string {value!r}", path) from None
    else:
        raise DialectError(f"expected a number, got {type(value).__name__}", path)
    if not math.isfinite(number):
        raise DialectError(f"expected a finite number, got {value!r}", path)
    if number < 0 and not allow_negative:
        raise DialectError(f"must not be negative, got {number}", path)
    return number


def epoch_to_datetime(number: float, path: str) -> datetime:
    """Epoch in s, ms, us or ns, told apart by magnitude (unambiguous for dates 1973..5138)."""
    magnitude = abs(number)
    if magnitude >= 1e17:
        seconds = number / 1e9
    elif magnitude >= 1e14:
        seconds = number / 1e6
    elif magnitude >= 1e11:
        seconds = number / 1e3
    else:
        seconds = number
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise DialectError(f"timestamp {number!r} is out of range", path) from None


def to_datetime(value: Any, path: str) -> datetime | None:
    """An aware datetime from epoch numbers (any unit), numeric strings or ISO-8601 text (naive means UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise DialectError(f"expected a timestamp, got boolean {value!r}", path)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise DialectError(f"expected a timestamp, got {value!r}", path)
        return epoch_to_datetime(value, path)
    if isinstance(value, str):
        text = value.strip()
        try:
            return epoch_to_datetime(float(text), path)
        except ValueError:
            pass
        try:
            # Python 3.11 reads "2025-01-24 09:20:46.847371", "...T...Z" and offsets alike.
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise DialectError(f"expected an epoch number or ISO-8601 timestamp, got {value!r}", path) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    raise DialectError(f"expected a timestamp, got {type(value).__name__}", path)


def to_str(value: Any, path: str) -> str | None:
    """A non-empty string, or None; numbers are accepted as their text (ids are often numeric)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise DialectError(f"expected a string, got boolean {value!r}", path)
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise DialectError(f"expected a string, got {type(value).__name__}", path)
    return value.strip() or None


def as_dict(value: Any, path: str, *, optional: bool = True) -> dict[str, Any]:
    """A JSON object; `null`/absent gives {} when optional."""
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        got = "null" if value is None else type(value).__name__
        raise DialectError(f"expected an object, got {got}", path)
    return value


def as_list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DialectError(f"expected an array, got {type(value).__name__}", path)
    return value


def dig(record: Any, dotted: str) -> Any:
    """Value at `a.b.0.c` (digits index lists), or None when any step is missing."""
    return dig_steps(record, dotted.split("."))


def dig_steps(record: Any, steps: tuple[str, ...] | list[str]) -> Any:
    """`dig` with the path already split (selectors are split once per mapping, not per record)."""
    current = record
    for step in steps:
        if isinstance(current, dict):
            current = current.get(step)
        elif isinstance(current, list) and step.lstrip("-").isdigit():
            index = int(step)
            current = current[index] if -len(current) <= index < len(current) else None
        else:
            return None
        if current is None:
            return None
    return current


def first_present(record: dict[str, Any], *keys: str) -> tuple[str | None, Any]:
    """(key, value) of the first key whose value is not None, so spellings are tried in order, never summed."""
    for key in keys:
        value = record.get(key)
        if value is not None:
            return key, value
    return None, None


# Field readers for the hot paths of the parsers: the value of `record[key]` converted as the helper above would,
# with the error path (`path` + `name`) built only when the value is not of the common type. A record's dozen
# fields would otherwise each build a path string that is almost never shown.

def dict_field(record: dict[str, Any], key: str, path: str, name: str | None = None) -> dict[str, Any]:
    """`as_dict(record.get(key), join_path(path, name or key))`."""
    value = record.get(key)
    return value if type(value) is dict else as_dict(value, join_path(path, name or key))


def str_field(record: dict[str, Any], key: str, path: str, name: str | None = None) -> str | None:
    """`to_str(record.get(key), join_path(path, name or key))`."""
    value = record.get(key)
    if type(value) is str:
        return value.strip() or None
    return None if value is None else to_str(value, join_path(path, name or key))


def float_field(record: dict[str, Any], key: str, path: str, name: str | None = None) -> float | None:
    """`to_float(record.get(key), join_path(path, name or key))`."""
    value = record.get(key)
    if (type(value) is int or (type(value) is float and math.isfinite(value))) and value >= 0:
        return float(value)
    return None if value is None else to_float(value, join_path(path, name or key))


def int_field(record: dict[str, Any], key: str, path: str, name: str | None = None) -> int | None:
    """`to_int(record.get(key), join_path(path, name or key))` (non-negative)."""
    value = record.get(key)
    if type(value) is str and value.isdecimal() and value.isascii():
        return int(value)
    if type(value) is int and value >= 0:
        return value
    return None if value is None else to_int(value, join_path(path, name or key))
