"""Hostile priced events at the loader's door (real chDB): every field of a valid PricedEvent set to each hostile
value is either stored by the real table or refused with a reason (the loader's dead letter); nothing else."""

from __future__ import annotations

import json
from types import SimpleNamespace

from tokenmeter import topics
from warehouse.loader import _Batch, build_priced, parse_record


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
    build_priced(batch)
    assert len(batch.sources) + len(batch.dead) >= sent + 2
    assert all(letter["reason"] and letter["stage"] == "load" for letter in batch.dead)
    stored = wh.insert_table(batch.table)  # what passed really fits the table
    assert stored == len({event_id for event_id in batch.table.column("event_id").to_pylist()})
    reasons = " | ".join(letter["reason"] for letter in batch.dead)
    for field in ("usage.input_tokens", "cost_usd", "ts", "invalid JSON"):
        assert field in reasons


def test_rows_the_warehouse_refuses_are_found_by_halving_and_dead_lettered(wh, org, make_event, monkeypatch):
    """A row the table cannot hold while the warehouse answers would be retried forever; the loader halves the
    batch down to the refused rows and dead-letters only them (the fault is injected into the real warehouse)."""
    from warehouse.backends import WarehouseError
    from warehouse.loader import _store_priced

    events = [make_event(f"{org}-{i}", org, team="poison" if i in (3, 17) else "ok") for i in range(40)]
    batch = _Batch()
    for offset, event in enumerate(events):
        parse_record(_record(json.dumps(event).encode(), offset), batch)
    real_insert = wh.insert_table

    def refusing(table):
        if "poison" in table.column("team").to_pylist():
            raise WarehouseError("statement failed: Code: 27. Cannot parse input")
        return real_insert(table)

    monkeypatch.setattr(wh, "insert_table", refusing)
    build_priced(batch)
    assert _store_priced(wh, batch) == 38
    assert sorted(letter["payload"]["event_id"] for letter in batch.dead) == [f"{org}-17", f"{org}-3"]
    assert all("refused by the warehouse" in letter["reason"] for letter in batch.dead)
    assert wh.spend([], filters={"org": [org]})["events"].to_list() == [38]
