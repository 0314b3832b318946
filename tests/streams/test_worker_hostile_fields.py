"""The worker's batch step fed canonical usage events with a hostile value at every field: every record becomes
priced events or a dead letter with its reason, never an exception, and the columnar step
(`process_batch_columnar`) gives byte for byte what the dict step it falls back to (`process_batch`) gives.

The events: what the collectors make of every payload of tests/collectors/test_hostile_corpus.py (the conformance
corpus and the collectors payloads) plus one event with every optional field of contract v1. Each value at every
path of an event (the event itself included) takes one hostile value of each kind of that file's KINDS (the member
rotating with the path's index) and a few the worker reads specially (decimal and time texts); every key is also
deleted. Each edited event goes in a message of its own, and again ten to a message (the micro-batch form).

The full product (all 27 values at every path, both forms) ran clean when this file was written (fuzz16,
docs/rounds/testing.md): nothing to fix at this stage.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import orjson
import pytest

from collectors import DialectError, parse_record
from streams.batch import RawRecord
from streams.columnar.equivalence import compare
from streams.pricing import load_price_book
from tests.collectors.test_collectors_robustness import paths
from tests.collectors.test_hostile_corpus import KINDS, MARK, RECORDS, _edited

WORKER_KINDS = KINDS + [[b'"NaN"', b'"-1"', b'"1e400"', b'"0.000000000001"'],  # decimal texts (reported cost)
                        [b'"9999-12-31T23:59:59Z"', b'"0001-01-01T00:00:00+14:00"', b'"2026-02-30T00:00:00Z"'],
                        [b"-0.0", b"1e-320"]]
FULL = {"event_id": "full-1", "ts": "2026-11-01T10:15:00Z", "source": "t", "provider": "openrouter",
        "model": "openai/gpt-4o", "operation": "chat", "status": "ok", "batch": True, "service_tier": "flex",
        "usage_assumption": "a rule", "reported_cost_usd": "0.0035", "latency_ms": 12.5, "ttft_ms": 3,
        "attribution": {"org": "o", "team": "t", "project": "p", "user": "u", "api_key": "k", "feature": "f",
                        "route": "r", "tags": {"a": "b"}},
        "usage": {"input_tokens": 1000, "cached_input_tokens": 100, "cache_write_tokens": 50,
                  "cache_write_1h_tokens": 10, "output_tokens": 10, "reasoning_tokens": 5,
                  "tool_requests": {"web_search": 1}},
        "content": {"prompt": [{"role": "user", "content": "hi"}], "completion": "yo", "tools": [{"type": "function"}]},
        "correlation": {"response_id": "r", "request_id": "q", "trace_id": "t", "span_id": "s"}}


def _canonical_events() -> list[dict[str, Any]]:
    events = [FULL]
    for record in RECORDS.values():
        try:
            events += [orjson.loads(e.model_dump_json(exclude_none=True)) for e in parse_record(record)]
        except DialectError:  # the corpus's dead-letter cases
            continue
    return events


EVENTS = _canonical_events()


@pytest.fixture(scope="module")
def book():
    return load_price_book()


def _edits(event: dict[str, Any]) -> list[bytes]:
    edits = []
    for index, path in enumerate([(), *paths(event)]):
        written = _edited(event, path, orjson.loads(MARK))
        edits += [written.replace(MARK, kind[index % len(kind)], 1) for kind in WORKER_KINDS]
        if path:
            edits.append(_edited(event, path, delete=True))
    return edits


def counted_micro_batches(edits: list[bytes], per_message: int,
                          items: list[int | None] | None = None) -> list[tuple[bytes, int | None]]:
    """JSON arrays of `per_message` edited events, each with its events as the worker decodes it (None: not JSON),
    counted while batching (no message is decoded again to check it); `items`: the edits' `_items` when the caller
    has them. An edit that is no JSON (a lone surrogate escape, a bare NaN) goes alone, so it does not turn its
    neighbours into one not-JSON dead letter."""
    good, bad = [], []
    for edit, count in zip(edits, items if items is not None else map(_items, edits)):
        (good if count is not None else bad).append(edit)
    return ([(b"[" + b",".join(good[i:i + per_message]) + b"]", len(good[i:i + per_message]))
             for i in range(0, len(good), per_message)] + [(edit, None) for edit in bad])


def _items(value: bytes) -> int | None:
    """Events in a message as the worker decodes it (None: not JSON, one dead letter for the message)."""
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return len(decoded) if isinstance(decoded, list) else 1


@functools.cache
def _all_edits() -> tuple[list[bytes], list[int | None]]:
    """Every edit of every event and its events as decoded, once for both message forms (each is read again by
    the worker's two paths, not by the test)."""
    edits = [edit for event in EVENTS for edit in _edits(event)]
    return edits, [_items(edit) for edit in edits]


@pytest.mark.parametrize("per_message", [1, 10])
def test_every_field_of_every_event_hostile_is_priced_or_a_dead_letter(book, per_message):
    edits, items = _all_edits()
    counted = counted_micro_batches(edits, per_message, items) if per_message > 1 else list(zip(edits, items))
    records = [RawRecord(value, "tokenmeter.usage", 0, offset) for offset, (value, _) in enumerate(counted)]
    problems, result = compare(records, book)  # both paths; raises if either does
    assert problems == [], problems[:3]
    assert all(letter["reason"] for letter in result.deadletters)
    out = Counter(offset for _, offset, _ in result.origins)
    out.update(letter["offset"] for letter in result.deadletters)
    for record, (_, count) in zip(records, counted):
        expected = 1 if count is None else count
        assert out[record.offset] >= expected, (record.value[:300], out[record.offset], expected)


def test_the_events_cover_every_field_of_the_contract():
    from tokenmeter.events import Attribution, Usage, UsageEvent

    seen = {key for event in EVENTS for key in event}
    assert seen == set(UsageEvent.model_fields), set(UsageEvent.model_fields) - seen
    assert set(FULL["usage"]) == set(Usage.model_fields) and set(FULL["attribution"]) == set(Attribution.model_fields)
    assert len(EVENTS) > 100
