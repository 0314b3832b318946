"""Hostile priced events at the loader's door (real chDB): every field of a valid PricedEvent set to each hostile
value is either stored by the real table or refused with a reason (the loader's dead letter); nothing else."""

from __future__ import annotations

import json
from types import SimpleNamespace

from tokenmeter import topics
from warehouse.loader import _Batch, parse_record


def _deep(depth: int = 300) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE = [
    2**64 - 1, 2**70, -1, 10**12 + 1, "221360928884514619392", "1E+999999", "NaN", "Infinity", 1e308,
    float("inf"), float("nan"), True, None, [], {}, {"a": {"b": 1}}, _deep(), "x" * 300_000,
    "9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "", "0.0000000000001",
]


def _flatten(event: dict, prefix: str = "") -> list[str]:
    names = []
    for key, value in event.items():
        names.append(prefix + key)
        if isinstance(value, dict):
            names += _flatten(value, f"{prefix}{key}.")
    return names


def _with(event: dict, path: str, value) -> dict:
    copy = json.loads(json.dumps(event))
    node = copy
    *parents, last = path.split(".")
    for name in parents:
        node = node[name]
    node[last] = value
    return copy


def _record(value: bytes, offset: int) -> SimpleNamespace:
    return SimpleNamespace(topic=topics.PRICED, partition=0, offset=offset, value=value)


def test_every_hostile_field_of_a_priced_event_is_stored_or_dead_lettered(wh, org, make_event):
    valid = make_event(f"{org}-v", org)
    batch = _Batch()
    sent = 0
    for path in _flatten(valid):
        for value in HOSTILE:
            event = _with(valid, path, value)
            event["event_id"] = event["event_id"] if path == "event_id" else f"{org}-{sent}"
            try:
                payload = json.dumps(event).encode()  # NaN/Infinity become the bare words JSON forbids
            except (TypeError, ValueError):
                continue
            parse_record(_record(payload, sent), batch)  # never raises
            sent += 1
    parse_record(_record(b"[" * 5000 + b"]" * 5000, sent), batch)  # deeper than the JSON parser allows
    parse_record(_record(b"\xff\xfe not utf-8", sent + 1), batch)
    assert len(batch.rows) + len(batch.dead) >= sent + 2
    assert all(letter["reason"] and letter["stage"] == "load" for letter in batch.dead)
    rows = [row for row, _, _ in batch.rows]
    assert wh.insert_rows(rows) == len({row["event_id"] for row in rows})  # what passed really fits the table
    reasons = " | ".join(letter["reason"] for letter in batch.dead)
    for field in ("usage.input_tokens", "cost_usd", "ts", "invalid JSON"):
        assert field in reasons
