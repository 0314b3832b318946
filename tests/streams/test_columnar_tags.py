"""Tagged attributions on the frame path (streams/columnar/frames.py, frame_price.py): a collector's
`"tags":{"env":"prod",...}` no longer sends its whole message to the dict path. The tags object is taken as its own
text where orjson would write exactly that text back (a compact map of strings to strings, no duplicate key); any
other tags take the dict path, and every result stays byte-identical to `streams.batch.process_batch`."""

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from streams.batch import MAX_PRICED_EVENT_BYTES
from streams.columnar import frames, pipeline
from streams.columnar.equivalence import compare_batch
from tests.streams.test_columnar_frames import (book, frames_for_any_batch, message,  # noqa: F401 (fixtures)
                                               records_of, twisted_values)
from tokenmeter.events import MAX_ATTRIBUTION_CHARS, MAX_TAGS, UsageEvent


NOW = datetime.now(timezone.utc).replace(microsecond=0)


def tagged_event(i: int, tags: dict | None = None, **extra) -> bytes:
    """One event as collectors write it (`model_dump_json(exclude_none=True)`), with tags."""
    attribution = {"org": "acme", "team": f"team-{i % 3}", "user": f"u{i % 7}",
                   "tags": {"env": ["prod", "staging"][i % 2], "region": "eu-west-1"} if tags is None else tags}
    event = {"event_id": f"ev-{i}", "ts": (NOW - timedelta(minutes=i)).isoformat(), "source": "kong",
             "provider": ["openai", "anthropic", "gemini", "openrouter"][i % 4],
             "model": ["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash", "no-such-model"][i % 4],
             "attribution": attribution,
             "usage": {"input_tokens": 1000 + i, "cached_input_tokens": i % 500, "output_tokens": 50 + i},
             "latency_ms": 120.0 + i, **extra}
    return UsageEvent.model_validate(event).model_dump_json(exclude_none=True).encode()


def no_dicts(*args, **kwargs):
    raise AssertionError("the dict path was taken")


def test_tagged_batches_are_priced_from_the_frame_alone(book, monkeypatch):
    values = [message([tagged_event(i + 40 * m, tags=None if i % 3 else {}) for i in range(40)]) for m in range(3)]
    values.append(message([tagged_event(200 + i, tags={"k": f"v{i}", "a": "b"}) for i in range(5)]).replace(
        b',"tags":{}', b""))  # no tags key at all beside tags of other shapes
    assert compare_batch(records_of(*values), book) == []
    monkeypatch.setattr(pipeline, "_dict_path", no_dicts)
    monkeypatch.setattr(pipeline, "item_of", no_dicts)
    result = pipeline.process_batch_columnar(records_of(*values), book)
    assert result.events_in == result.priced_count == 125 and not result.deadletters
    tags = [event["attribution"]["tags"] for _, _, event in result.origins]
    assert tags[1] == {"env": "staging", "region": "eu-west-1"} and tags[0] == {} and tags[-1] == {"k": "v4", "a": "b"}


@pytest.mark.parametrize("tags", [
    {"route": "/v1/{id}", "q": "a,b:c", "brace": "}", "open": "{"},  # JSON punctuation inside the strings
    {"équipe": "日本", "emoji": "\U0001f600"},  # written as is by orjson
    {"": ""},
    {f"k{i}": "v" * 50 for i in range(128)},  # MAX_TAGS (cap33)
    {"tags": "tags", "org": "not-a-dimension"},
], ids=["punctuation", "non-ascii", "empty-strings", "128-tags", "tag-named-tags"])
def test_tags_of_every_string_shape_are_written_from_the_frame(book, monkeypatch, tags):
    values = (message([tagged_event(i, tags=tags if i % 2 else None) for i in range(8)]),)
    assert frames.scan(records_of(*values)).heights == {0: 8}
    assert compare_batch(records_of(*values), book) == []
    monkeypatch.setattr(pipeline, "item_of", no_dicts)
    assert pipeline.process_batch_columnar(records_of(*values), book).priced_count == 8


# (text in a tagged event, its replacement): tags polars cannot hand over as orjson's own text. The message (or,
# for a duplicate key, the row) takes the dict path and prices exactly as today, or gets today's dead letter.
TWISTS = [
    ('"env":"staging"', '"env":"staging","env":"prod"'),  # duplicate key: pydantic keeps the last value
    ('"env":"staging"', '"env": "staging"'),
    ('"env":"staging"', '"env":"staging" '),
    ('"env":"staging"', '"env":5'),
    ('"env":"staging"', '"env":null'),
    ('"env":"staging"', '"env":{"a":"b"}'),
    ('"env":"staging"', '"env":["a"]'),
    ('"env":"staging"', '"env":"st\\"aging"'),
    ('"env":"staging"', '"env":"st\\u0061ging"'),
    ('"env":"staging"', '"env":true'),
    ('"tags":{', '"tags":{},"tags":{'),
    ('"attribution":{', '"tags":{"x":"y"},"attribution":{'),  # unknown top-level key named tags
    ('"usage":{', '"usage":{"tags":{"x":"y"},'),
    ('"tags":{', '"tags":{"a":"b"},"team2":{'),
    ('"tags":{"env":"staging","region":"eu-west-1"}', '"tags":null'),
    ('"tags":{"env":"staging","region":"eu-west-1"}', '"tags":"env"'),
]


@pytest.mark.parametrize("old,new", TWISTS, ids=[new for _, new in TWISTS])
def test_a_twisted_tags_object_keeps_todays_result(book, old, new):
    values = twisted_values(tagged_event, old, new)
    scanned = frames.scan(records_of(*values))
    assert scanned is not None and {0, 2} <= set(scanned.heights)
    assert compare_batch(records_of(*values), book) == []


def test_tags_past_their_bounds_keep_todays_dead_letter(book):
    """Tags the contract bounds (cap33: a priced event too large to send was the only limit before, at ~256 KB of
    tags) are lettered alike on the frame path, whether the bytes decide (a long value, many tags) or only the
    characters do (a value of at most 1,024 characters in more bytes: the dict path counts them)."""
    sizes = (MAX_PRICED_EVENT_BYTES - 1500, MAX_ATTRIBUTION_CHARS + 1, MAX_ATTRIBUTION_CHARS)
    rows = [tagged_event(i, tags={"blob": "x"}).replace(b'"blob":"x"', b'"blob":"' + b"x" * n + b'"')
            for i, n in enumerate(sizes)]
    rows += [tagged_event(5, tags={"blob": "é" * MAX_ATTRIBUTION_CHARS}),  # 2,048 bytes: priced
             tagged_event(6, tags={f"k{i}": "v" for i in range(MAX_TAGS)}).replace(b'"k0":"v"', b'"k0":"v","kk":"v"')]
    values = (message([tagged_event(9), *rows]),)
    assert frames.scan(records_of(*values)).heights == {0: 6}
    assert compare_batch(records_of(*values), book) == []
    result = pipeline.process_batch_columnar(records_of(*values), book)
    assert [letter["reason"].split(",")[0] for letter in result.deadletters] == [
        "invalid event: attribution.tags: Value error"] * 3
    assert result.priced_count == 3


def test_tagged_and_untagged_messages_mix_with_bad_records_in_order(book):
    values = (message([tagged_event(i) for i in range(5)]), b"{nope",
              message([tagged_event(5, tags={})]).replace(b',"tags":{}', b""),
              orjson.dumps(orjson.loads(tagged_event(6))), message([tagged_event(7, tags={"a": "1"}),
                                                                  tagged_event(8, tags={"b": "2", "c": "3"})]))
    scanned = frames.scan(records_of(*values))
    assert set(scanned.heights) == {0, 2, 4}
    assert compare_batch(records_of(*values), book) == []
