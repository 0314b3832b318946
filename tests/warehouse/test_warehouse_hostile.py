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


def test_the_workers_priced_corpus_with_hostile_fields_through_accept_is_stored_or_dead_lettered(wh, org):
    """The loader's own entry (`_accept`: polars reads a micro-batch message, `loader_frames` certifies it or the
    dict path decides) fed what the worker really writes: the priced form of every canonical event of
    tests/streams/test_worker_hostile_fields.py, each value at every path replaced by one hostile value of each
    kind of tests/collectors/test_hostile_corpus.py KINDS plus HOSTILE above (rotating with the path's index),
    every key deleted, ten events a message (an edit that is no JSON alone). Every event is stored by the real
    table or dead-lettered with its reason; a message that is not JSON is one dead letter. The full product (31
    values at every path, one and ten a message) ran clean when this test was written (fuzz16,
    docs/rounds/testing.md)."""
    from collections import Counter

    import orjson

    from streams.batch import RawRecord, process_batch
    from streams.pricing import load_price_book
    from tests.collectors.test_collectors_robustness import paths
    from tests.collectors.test_hostile_corpus import KINDS, MARK, _edited
    from tests.streams.test_worker_hostile_fields import EVENTS, counted_micro_batches
    from tokenmeter.commitloop import Batch
    from warehouse.loader import _accept

    kinds = KINDS + [[json.dumps(value).encode() for value in HOSTILE if isinstance(value, str)],
                     [b"NaN", b"-0.0", b"1e-320", b'"0001-01-01T00:00:00Z"']]
    worker = process_batch([RawRecord(orjson.dumps(EVENTS), topics.USAGE, 0, 0)], load_price_book())
    assert not worker.deadletters
    edits = []
    for number, event in enumerate(e for _, value in worker.priced_messages() for e in orjson.loads(value)):
        event["event_id"], event["attribution"]["org"] = f"{org}-{number}", org
        for index, path in enumerate([(), *paths(event)]):
            written = _edited(event, path, orjson.loads(MARK))
            edits += [written.replace(MARK, kind[index % len(kind)], 1) for kind in kinds]
            if path:
                edits.append(_edited(event, path, delete=True))
    counted = counted_micro_batches(edits, 10)  # (message, its events; None: not JSON)
    records = [_record(value, offset) for offset, (value, _) in enumerate(counted)]

    batch = _Batch()
    _accept(Batch(state=batch), records)
    build_priced(batch)
    assert all(letter["reason"] and letter["stage"] == "load" for letter in batch.dead)
    out = Counter(record.offset for _, record in batch.sources)
    out.update(letter["offset"] for letter in batch.dead)
    for record, (_, count) in zip(records, counted):
        expected = 1 if count is None else count
        assert out[record.offset] >= expected, (record.value[:300], out[record.offset], expected)
    ids = set(batch.table.column("event_id").to_pylist())
    stored = wh.insert_table(batch.table)  # what passed really fits the table
    # ids set to hostile texts ("x", "12", ...) may already be stored by the test above (deduplicated on event_id)
    assert len({i for i in ids if i.startswith(org)}) <= stored <= len(ids)
