"""The loader's polars path (warehouse.loader_frames: priced micro-batches read into columns, certified per message)
gives exactly what the dict path gives (orjson per message, then arrow_rows.build_batch): the same table rows in the
same order, the same (event, record) per row, the same dead letters in the same order, and the same stored rows,
rollups and dedupe tables, on the worker's own bytes and on randomised byte- and value-level mutations of them."""

from __future__ import annotations

import json
import random
import re
from types import SimpleNamespace

import orjson
import pytest

from tests.warehouse.test_arrow_rows import _steady, hostile_batch, priced  # noqa: F401 (fixture)
from tests.warehouse.test_loader_columnar_equivalence import _contents, _empty
from tokenmeter import topics
from tokenmeter.commitloop import Batch
from tokenmeter.microbatch import frame
from warehouse.arrow_rows import rows_to_table
from warehouse.loader import _accept, _Batch, _store_priced, build_priced, parse_record
from warehouse.loader_frames import certify, read_message

pytestmark = pytest.mark.slow(seconds=35)


@pytest.fixture(scope="module")
def worker_bytes(priced):  # noqa: F811
    """Each priced event as the worker's encoder wrote it (priced is orjson's decoding of these bytes; orjson's
    re-encoding of the decoded dict is byte-identical for the worker's output)."""
    return [orjson.dumps(event) for event in priced]


def _records(messages: list[bytes]) -> list[SimpleNamespace]:
    return [SimpleNamespace(topic=topics.PRICED, partition=0, offset=offset, value=value)
            for offset, value in enumerate(messages)]


def _old(records) -> _Batch:
    batch = _Batch()
    for record in records:
        parse_record(record, batch)  # the dict path: orjson per message, then arrow_rows
    build_priced(batch)
    return batch


def _new(records) -> _Batch:
    batch = _Batch()
    _accept(Batch(state=batch), records)
    build_priced(batch)
    return batch


def _letters(batch: _Batch) -> list[tuple]:
    return [(_steady(d["reason"]), d["offset"], orjson.dumps(d.get("payload"), default=str)) for d in batch.dead]


def _assert_same(old: _Batch, new: _Batch) -> None:
    assert _letters(new) == _letters(old)
    assert (old.table is None) == (new.table is None)
    if old.table is not None:
        assert new.table.schema == old.table.schema
        assert new.table.equals(old.table)
    assert [(item, record.offset) for item, record in new.sources] == [
        (item, record.offset) for item, record in old.sources]


# Byte-level mutations of one worker message: each must leave the polars reading uncertified or read exactly.
def _byte_mutations(message: bytes) -> list[bytes]:
    events = orjson.loads(message)
    first = orjson.dumps(events[0])
    rest = message[len(first) + 1:]  # ',' ... ']'
    swaps = [
        (b'":"', b'" :"'), (b'"event_id":"', b'"event_id":"\\u0041'), (b'"source":', b'"source":null,"source":'),
        (b'"model":"', b'"model":"x","model":"'), (b'"usage":{', b'"usage":{"extra":1,'),
        (b'"usage":{', b'"usage":{"tool_requests":{"web_search":2},'),
        (b'"input_tokens":', b'"input_tokens":5.0,"x_tokens":'), (b'"provider":"', b'"bogus":"x","provider":"'),
        (b'"tags":{}', b'"tags":{"a":"}"}'), (b'"tags":{}', b'"tags":{"a":1}'), (b'"tags":{}', b'"tags":{"k":"{v}"}'),
        (b'"tags":{}', b'"tags":{"b":"2","a":"1","b":"3"}'), (b'"tags":{}', b'"tags":{"z":"1","a":"2"}'),
        (b'"tags":{}', b'"tags":null'), (b'"tags":{}', b'"tags":{"a":"x","b":["y"]}'), (b'"tags":{}', b''),
        (b'"attribution":{', b'"attribution":{"tags":{},'), (b'"attribution":{', b'"attribution":{"tags":null,'),
        (b'"cost_usd":"', b'"cost_usd":5,"x":"'), (b'"cost_usd":"', b'"cost_usd":"\xd9\xa3","y":"'),
        (b'"batch":false', b'"batch":0'), (b'"batch":false', b'"batch":"false"'),
        (b'"batch":false', b'"batch":true,"latency_ms":-0'), (b'"batch":false', b'"batch":false,"ttft_ms":9007199254740993'),
        (b'"batch":false', b'"batch":false,"ttft_ms":1e400'), (b'"batch":false', b'"batch":false,"latency_ms":-0.0'),
        (b'"batch":false', b'"batch":false,"content":{"prompt":"x"}'),
        (b'"cost_breakdown":{', b'"cost_breakdown":{"zz":"1",'), (b'"cost_breakdown":{', b'"cost_breakdown":{"output":"1",'),
        (b'"cost_breakdown":{', b'"cost_breakdown":{"input":"1.5e3",'),
        (b'"pricing_status":"priced"', b'"pricing_status":"PRICED"'), (b'"status":"ok"', b'"status":"error"'),
        (b'"status":"ok"', b'"status":null'), (b'"ts":"', b'"ts":"2026-01-01T10:00:60Z","t0":"'),
        (b'"priced_at":"', b'"priced_at":"2026-02-30T00:00:00Z","p0":"'), (b'"price":{', b'"price":{"bogus":"1",'),
        (b'"price":{"entry":"', b'"price":{"entry":5,"e":"'), (b'"usage":{"input_tokens":', b'"usage":{"input_tokens":-'),
        (b'"output_tokens":', b'"output_tokens":18446744073709551616,"o":'),
    ]
    out = []
    for pattern, replacement in (  # the first two cost lines, tool counts, tags swapped: the map keeps the bytes' order
            (rb'"(cost_breakdown|tool_requests|tags)":\{("[a-z_0-9]+":[^,}]+),("[a-z_0-9]+":[^,}]+)', rb'"\1":{\3,\2'),
            (rb'"tool_requests":\{', rb'"tool_requests":{"grounding_queries":0,'),
            (rb'"usage":\{', rb'"usage":{"tool_requests":{"web_fetch":1,"web_search":0},')):
        out += [re.sub(pattern, replacement, first, count=1) + rest, re.sub(pattern, replacement, message)]
    for old, new in swaps:
        if old in first:
            out.append(first.replace(old, new, 1) + rest)
            out.append(message.replace(old, new))  # every event of the message
    pretty = orjson.dumps(events, option=orjson.OPT_INDENT_2)
    out += [pretty, message[:-1], message + b" ", message + b"x", b"[]", b"[1,2]", first, b"[" + first + b",null]",
            message.replace(b'"', b"\xff", 1), b"\xef\xbb\xbf" + message, b"[" * 5000 + b"]" * 5000,
            message.replace(b"}]", b',"event_id":"dup"}]')]
    return out


@pytest.fixture(scope="module")
def hostile(priced):  # noqa: F811
    return hostile_batch(priced)


def _value_messages(items: list, rng: random.Random) -> list[bytes]:
    """Value-level variants (hostile_batch: every mutation of arrow_rows' own test) in messages of 1-40 events."""
    items = list(items)
    rng.shuffle(items)
    messages, start = [], 0
    while start < len(items):
        size = rng.randint(1, 40)
        # json, not orjson: the variants hold integers beyond 64 bits, NaN and infinities (written as the bare words)
        messages += frame([json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
                           for item in items[start:start + size]], max_events=size)
        start += size
    return messages


def test_worker_messages_are_certified_and_taken_as_columns(worker_bytes):
    """Every row arrow_rows takes as columns is taken here too, in messages without an escape (the corpus's
    hostile strings with escapes, 28 of ~5,000, leave their whole message to the dict path)."""
    plain = [event for event in worker_bytes if b"\\" not in event]
    messages = list(frame(plain, max_events=100))
    frames = [read_message(m) for m in messages]
    assert all(f is not None for f in frames)
    batch = certify(messages, frames)
    _, taken, _ = rows_to_table([orjson.loads(event) for event in plain])
    assert batch.ok.sum() >= 0.99 * len(taken) and len(taken) > 3000  # correlated rows: the dict path in both
    _assert_same(_old(_records(messages)), _new(_records(messages)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_polars_path_equals_dict_path_on_randomised_hostile_windows(worker_bytes, hostile, seed):
    rng = random.Random(seed)
    events = rng.sample(worker_bytes, 1500)
    clean = list(frame(events, max_events=rng.randint(20, 120)))
    small = list(frame(rng.sample(worker_bytes, 60), max_events=rng.randint(5, 30)))
    mutated = [variant for message in rng.sample(small, 2) for variant in _byte_mutations(message)]
    values = _value_messages(hostile, rng)
    records = clean + mutated + rng.sample(values, len(values) // 8)
    rng.shuffle(records)
    old, new = _old(_records(records)), _new(_records(records))
    _assert_same(old, new)
    assert len(old.dead) > 50 and old.table.num_rows > 1000


def test_mixed_window_keeps_todays_dead_letter_order(worker_bytes):
    """Record-topic letters on arrival, priced ones where decoding on arrival had put them, row letters last."""
    good = list(frame(worker_bytes[:60], max_events=30))
    bad_row = frame([orjson.dumps({**orjson.loads(worker_bytes[0]), "cost_usd": "x"})] + worker_bytes[1:5])
    records = [SimpleNamespace(topic=topics.ALERTS, partition=0, offset=0, value=b"{not json"),
               SimpleNamespace(topic=topics.PRICED, partition=0, offset=1, value=good[0]),
               SimpleNamespace(topic=topics.PRICED, partition=0, offset=2, value=b"[1,"),
               SimpleNamespace(topic=topics.PRICED, partition=0, offset=3, value=next(iter(bad_row))),
               SimpleNamespace(topic=topics.ALERTS, partition=0, offset=4, value=b"[5]"),
               SimpleNamespace(topic=topics.PRICED, partition=0, offset=5, value=good[1])]
    old, new = _old(records), _new(records)
    _assert_same(old, new)
    assert [d["offset"] for d in new.dead] == [0, 2, 4, 3]


def test_polars_path_stores_what_the_dict_path_stores(wh, worker_bytes, priced):  # noqa: F811
    """Stored rows, every rollup, dedupe tables and dead letters, old path then new path on the same window."""
    rng = random.Random(14)
    march = [orjson.dumps({**orjson.loads(b), "ts": "2026-03" + orjson.loads(b)["ts"][7:]}) for b in worker_bytes]
    clean = list(frame(march[::2], max_events=50))
    records = clean + [v for m in clean[:2] for v in _byte_mutations(m)]
    records += _value_messages(hostile_batch([orjson.loads(b) for b in march[::8]]), rng)[:30]
    records += clean[:3]  # redelivered: the dedupe keeps the first copy
    results = {}
    for name, path in (("old", _old), ("new", _new)):
        _empty(wh)
        batch = path(_records(records))
        _store_priced(wh, batch)
        results[name] = (_contents(wh), _letters(batch))
    assert results["new"] == results["old"]
    assert sum(len(v) for v in results["new"][0].values()) > 1000


def test_expired_rows_get_the_same_dead_letters_with_their_events(wh, worker_bytes, monkeypatch):
    """Rows older than the raw retention: the polars path decodes their messages only now, for the letters."""
    old_rows = [orjson.dumps({**orjson.loads(b), "ts": "2026-03" + orjson.loads(b)["ts"][7:]}) for b in worker_bytes[:150]]
    fresh = [b for b in worker_bytes[150:400] if orjson.loads(b)["ts"] >= "2026-11-20"]
    records = list(frame(old_rows[:75] + fresh + old_rows[75:], max_events=40))
    monkeypatch.setattr(wh, "retention_days", 30)
    results = {}
    for name, path in (("old", _old), ("new", _new)):
        _empty(wh)
        batch = path(_records(records))
        stored = _store_priced(wh, batch)
        results[name] = (stored, _letters(batch), _contents(wh, ("priced_events",))["priced_events"])
    assert results["new"] == results["old"]
    assert sum("older than the raw retention" in letter[0] for letter in results["new"][1]) >= 100


@pytest.mark.parametrize("ts", ["2999-01-01T00:00:00Z", "1999-01-01T00:00:00Z", "2026-02-30T00:00:00Z"])
def test_a_window_whose_every_certified_row_fails_its_time_checks(worker_bytes, ts):
    """Every row polars took is refused by build_table's ts check (far future, before the earliest, no such day):
    the window's table then had no row, and the tags map of no row failed with ArrowNotImplementedError (a string
    index), which crashed the loader. The rows take the dict path and get its dead letters."""
    plain = [orjson.dumps({**event, "ts": ts}) for event in map(orjson.loads, worker_bytes[:80])
             if event.get("correlation") is None]
    records = _records(list(frame(plain, max_events=40)))
    old, new = _old(records), _new(records)
    _assert_same(old, new)
    assert len(new.dead) == len(plain)
