"""trust34: a source, provider, model, operation or service tier past its bound (tokenmeter/events.py TEXT_BOUNDS)
was priced by the worker (only the 256 KB event limit held them). It is now a dead letter naming the field, its size
and the limit, on the per-event step and alike on the columnar step's frame and dict paths (JSON and Arrow output)."""

from __future__ import annotations

import orjson
import pytest
from columnar_bounds_support import lettered_alike, messages_of_500
from test_batch import event  # same directory (pytest's rootdir-relative import)

from streams import load_book, process_batch
from streams.batch import RawRecord
from tokenmeter.events import MAX_MODEL_CHARS, MAX_NAME_CHARS, TEXT_BOUNDS
from tokenmeter.settings import load_settings


@pytest.fixture(scope="module")
def book():
    return load_book(load_settings())


def _hostile() -> list[dict]:
    return [event(90_000 + n, **{name: "x" * (bound + 1)}) for n, (name, bound) in enumerate(TEXT_BOUNDS.items())]


def _at_bounds() -> list[dict]:
    return [event(80_000, source="s" * MAX_NAME_CHARS, provider="p" * MAX_NAME_CHARS, model="m" * MAX_MODEL_CHARS,
                  operation="o" * MAX_NAME_CHARS, service_tier="t" * MAX_NAME_CHARS),
            event(80_001, model="\u00e9" * MAX_MODEL_CHARS),  # more bytes than the bound, characters within it
            event(80_002, provider="bedrock",
                  model="converse/arn:aws:bedrock:eu-west-1:474668406012:inference-profile/eu.amazon.nova-lite-v1:0")]


def test_the_per_event_step_letters_each_naming_field_size_and_limit(book):
    result = process_batch([RawRecord(orjson.dumps([event(1), *_hostile(), *_at_bounds()]), "tokenmeter.usage", 0, 3)],
                           book)
    reasons = [d["reason"] for d in result.deadletters]
    assert len(reasons) == len(TEXT_BOUNDS), reasons
    for reason, (name, bound) in zip(reasons, TEXT_BOUNDS.items()):
        assert reason.startswith(f"invalid event: {name}: Value error, {bound + 1} characters, at most {bound}"), reason
    assert [e["event_id"] for _, _, e in result.origins] == ["e1", "e80000", "e80001", "e80002"]


def _records() -> tuple[list[RawRecord], list[str]]:
    """Messages of 500 events, the hostile ones (and ones at the bounds, priced) inside the third."""
    events = [event(i, team=f"t{i % 7}") for i in range(3000)]
    hostile = _hostile()
    events[1010:1010] = hostile + _at_bounds()
    return messages_of_500(events), [e["event_id"] for e in hostile]


@pytest.mark.parametrize("small", [False, True], ids=["frames", "dicts"])
def test_the_columnar_step_letters_them_alike(book, small):
    records, hostile = _records()
    lettered_alike(records, book, hostile, small)
