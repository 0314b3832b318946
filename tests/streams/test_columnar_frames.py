"""Micro-batches decoded straight into a polars frame (streams/columnar/frames.py, frame_price.py): the common
collector shape is priced without a dict per event, and every message polars would read differently from orjson +
pydantic (coerced, duplicated, unknown, null or escaped values, whitespace) is left to the dict path, so results stay
byte-identical to `streams.batch.process_batch`."""

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from streams.batch import RawRecord
from streams.columnar import frames, pipeline
from streams.columnar.equivalence import compare_batch
from streams.pricing import load_price_book
from tokenmeter.events import UsageEvent


@pytest.fixture(scope="module")
def book():
    return load_price_book()


@pytest.fixture(autouse=True)
def frames_for_any_batch(monkeypatch):
    """These batches are small: the frame path takes them all the same (the worker's batches pass the size)."""
    monkeypatch.setattr(pipeline, "FRAME_MIN_BYTES", 0)


NOW = datetime.now(timezone.utc).replace(microsecond=0)


def collector_event(i: int, **extra) -> bytes:
    """One event as collectors write it: `model_dump_json(exclude_none=True)`."""
    event = {"event_id": f"ev-{i}", "ts": (NOW - timedelta(minutes=i)).isoformat(), "source": "litellm",
             "provider": ["openai", "anthropic", "gemini", "openrouter"][i % 4],
             "model": ["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash", "no-such-model"][i % 4],
             "attribution": {"org": "acme", "team": f"team-{i % 3}", "user": f"u{i % 7}"},
             "usage": {"input_tokens": 1000 + i, "cached_input_tokens": i % 500, "output_tokens": 50 + i},
             "latency_ms": 120.5 + i, **extra}
    return UsageEvent.model_validate(event).model_dump_json(exclude_none=True).encode()


def message(events: list[bytes]) -> bytes:
    return b"[" + b",".join(events) + b"]"


def records_of(*values: bytes) -> list[RawRecord]:
    return [RawRecord(v, "tokenmeter.usage", i % 4, 100 + i) for i, v in enumerate(values)]


def test_collector_batches_are_priced_from_the_frame_alone(book, monkeypatch):
    values = [message([collector_event(i + 40 * m) for i in range(40)]) for m in range(3)]
    assert compare_batch(records_of(*values), book) == []

    def no_dicts(*args, **kwargs):
        raise AssertionError("the dict path was taken")

    monkeypatch.setattr(pipeline, "_dict_path", no_dicts)
    monkeypatch.setattr(pipeline, "item_of", no_dicts)
    result = pipeline.process_batch_columnar(records_of(*values), book)
    assert result.events_in == result.priced_count == 120 and not result.deadletters
    assert result.unpriced_count == 30  # the unknown model's rows, written from columns with the resolver's reason


# (text of a collector event, its replacement): polars reads each differently from orjson + pydantic, or the
# message is not certifiable; the message must take the dict path and price exactly as today.
TWISTS = [
    ('"input_tokens":1', '"input_tokens":1.0,"x":1'),  # 1.0 -> 1 for an Int64 field (pydantic takes 1.0 too)
    ('"input_tokens":1', '"input_tokens":1.5,"x":1'),  # 1.5 -> 1 silently in polars, an error in pydantic
    ('"input_tokens":1', '"input_tokens":1e3,"x":1'),
    ('"output_tokens":', '"output_tokens":true,"x":'),  # true -> 1 in polars
    ('"input_tokens":', '"input_tokens":18446744073709551616,"x":'),  # null in polars
    ('"event_id":"ev-1"', '"event_id":42'),  # 42 -> "42" in polars
    ('"event_id":"ev-1"', '"event_id":42,"zz":"pad"'),  # a coerced value and an unknown key, balanced in count
    ('"model":"claude-sonnet-4-5"', '"model":"gpt-4o","model":"claude-sonnet-4-5"'),  # polars keeps the first
    ('"source":', '"unexpected":1,"source":'),
    ('"batch":false', '"batch":null'),
    ('"operation":"chat"', '"operation":null'),
    ('"status":"ok"', '"status" :"ok"'),
    ('"status":"ok"', '"status": "ok"'),
    ('"status":"ok"', '"status":\t"ok"'),
    ('"source":"', '"source":"\\u0041'),
    ('"team":"', '"team":"\\"'),
    ('"tags":{}', '"tags":{"env": "prod"}'),  # compact tags are read since worker7 (test_columnar_tags.py)
    ('"tags":{}', '"tags":[]'),
    ('"tags":{}', '"tags":{},"tags":{}'),
    ('"source":', '"meta":{},"source":'),
    ('"attribution":{', '"attribution":{"department":"x",'),
    ('"usage":{', '"usage":{"tool_requests":{"web_search":2,"x":1},'),  # an unknown kind: dropped by polars
    ('"usage":{', '"usage":{"tool_requests":{"web_search":2,"web_search":3},'),  # polars keeps the first
    ('"usage":{', '"usage":{"tool_requests":null,'),
    ('"usage":{', '"usage":{"tool_requests":[],'),
    ('"usage":{', '"usage":{"tool_requests":{"web_search":"2"},'),
    ('"latency_ms":', '"latency_ms":"5","x":'),
    ('"latency_ms":', '"latency_ms":[5],"x":'),
    (',"batch":', ',"content":{"prompt":"hi"},"batch":'),
    (',"batch":', ',"correlation":{"response_id":5},"batch":'),
    (',"batch":', ',"reported_cost_usd":"0.5","batch":'),
    (',"batch":', ',"service_tier":true,"batch":'),
    ('"output_tokens":', '"output_tokens":0,"output_tokens":'),
    ('"usage":{', '"usage":{"input_tokens":"7",'),
    ('"attribution":{', '"attribution":{"org":{"name":"acme"},"x":{'),
    # strings where the key bound (half the quotes, less `":"`) counts more than keys: in an array, after a space
    ('"event_id":"ev-1"', '"event_id":["ev-1"]'),
    ('"source":', '"labels":["a","b"],"source":'),
    ('"event_id":"ev-1"', '"event_id":42,"x":["a"]'),
    ('"model":"claude-sonnet-4-5"', '"model":"claude-sonnet-4-5","x": "y"'),
    ('"input_tokens":1', '"input_tokens":1,"x":["a",5],"y":1'),
    # a string value starting with `:` holds a `":` of its own: counted above the values read (uncertified)
    ('"source":"litellm"', '"source":":"'),
    ('"source":"litellm"', '"source":":litellm"'),
]


def twisted_values(event_of, old: str, new: str) -> tuple[bytes, bytes, bytes]:
    """Three messages: plain events, then event 1 with `old` replaced by `new` between two plain ones, then the
    first message again under other ids."""
    twisted = event_of(1)
    assert old.encode() in twisted
    twisted = twisted.replace(old.encode(), new.encode(), 1)
    plain = message([event_of(i) for i in range(8, 12)])
    return plain, message([event_of(0), twisted, event_of(2)]), plain.replace(b"ev-", b"ew-")


@pytest.mark.parametrize("old,new", TWISTS, ids=[new for _, new in TWISTS])
def test_a_twisted_value_leaves_its_message_to_the_dict_path(book, old, new):
    values = twisted_values(collector_event, old, new)
    scanned = frames.scan(records_of(*values))
    assert scanned is not None and set(scanned.heights) == {0, 2}  # the twisted message is not read as a frame
    assert compare_batch(records_of(*values), book) == []


@pytest.mark.parametrize("extra", [
    {"status": "error"}, {"operation": "embeddings"}, {"batch": True}, {"service_tier": "priority"},
    {"service_tier": "flex"}, {"usage_assumption": "litellm-cache-writes-in-prompt"},
    {"correlation": {"response_id": "chatcmpl-1", "trace_id": "a" * 32, "span_id": "b" * 16}},
    {"correlation": {}}, {"ttft_ms": 12.0}, {"latency_ms": 0.00001}, {"attribution": {}},
    {"attribution": {"team": "", "org": "x"}}, {"ts": "2026-11-01T10:15:00.5+00:00"},
    {"ts": "2026-11-01T10:15:00.000000-05:30"}, {"ts": "2026-11-01T10:15:00.123456+00:00"},
    {"ts": "2026-11-01T10:15:00-00:00"}, {"ts": "2026-11-01T10:15:00.000000+00:00"}, {"ts": "2026-11-01T10:15:00+00:00"}, {"model": "gpt-4o-2024-08-06"}, {"provider": "azure"},
    {"attribution": {"team": "équipe-日本", "user": "ü"}},
])
def test_certified_rows_of_every_common_shape_price_as_today(book, extra):
    """Valid rows the frame path reads (some it writes from columns, some it hands to the dict path)."""
    rows = [collector_event(i, **extra) if i % 2 else collector_event(i) for i in range(12)]
    if "ts" in extra:  # as written, not as pydantic writes it back
        rows = [orjson.dumps({**orjson.loads(row), "ts": extra["ts"]}) if i % 2 else row for i, row in enumerate(rows)]
    values = (message(rows),)
    scanned = frames.scan(records_of(*values))
    assert scanned is not None and scanned.heights == {0: 12}
    assert compare_batch(records_of(*values), book) == []


@pytest.mark.parametrize("tools", [{"web_search": 2}, {"code_interpreter": 1, "x_search": 100_001}, {},
                                   {"web_fetch": 0}, {"file_search": -1}, {"web_search": 1.5}])
def test_a_message_with_tool_requests_stays_certified_and_their_rows_take_the_dict_path(book, tools):
    """issue 14, arrow18: a message holding a tool request is read as a frame (its other rows priced from columns);
    the rows with tool requests (valid, empty, negative or fractional) are priced or worded as today."""
    rows = [collector_event(i) for i in range(12)]
    for i in (3, 8):
        event = orjson.loads(rows[i])
        event["usage"]["tool_requests"] = tools
        rows[i] = orjson.dumps(event)
    values = (message(rows),)
    scanned = frames.scan(records_of(*values))
    assert scanned is not None and scanned.heights == {0: 12}
    assert compare_batch(records_of(*values), book) == []


def test_tool_requests_are_read_only_in_a_batch_that_names_them():
    """arrow18: reading the 10 tool-request fields for every row cost the worker 5-8 % of its CPU on traffic
    without them; a batch whose text never names them reads the schema without them."""
    plain = frames.scan(records_of(message([collector_event(i) for i in range(4)])))
    assert "tool_requests" not in plain.frame.schema["usage"].to_schema() and "_no_tools" not in plain.frame.columns
    tool = orjson.loads(collector_event(9))
    tool["usage"]["tool_requests"] = {"web_search": 1}
    both = frames.scan(records_of(message([collector_event(i) for i in range(4)]), message([orjson.dumps(tool)])))
    assert both.heights == {0: 4, 1: 1} and both.frame.get_column("_no_tools").to_list() == [True] * 4 + [False]


@pytest.mark.parametrize("old,new", [
    ('"status":"ok"', '"status":"failed"'),
    ('"event_id":"ev-1"', '"event_id":"' + "x" * 513 + '"'),
    ('"event_id":"ev-1"', '"event_id":""'),
    ('"model":"claude-sonnet-4-5"', '"model":""'),
    ('"cached_input_tokens":1', '"cached_input_tokens":999999'),
    ('"output_tokens":51', '"output_tokens":51,"reasoning_tokens":52'),
    ('"input_tokens":1001', '"input_tokens":1000000000001'),
    ('"input_tokens":1001', '"input_tokens":-1'),
    ('"latency_ms":121.5', '"latency_ms":-0.0'),
    ('"ts":"', '"ts":"1999'),
    ('"ts":"', '"ts":"x'),
    ('"usage_assumption":"a"', '"usage_assumption":""'),
])
def test_an_invalid_row_in_a_certified_message_takes_the_per_row_path(book, old, new):
    """Read as a frame, failing the row checks: its dead letter (or priced event) is today's, its neighbours stay."""
    row = collector_event(1, usage_assumption="a")
    assert old.encode() in row, old
    values = (message([collector_event(0), row.replace(old.encode(), new.encode(), 1), collector_event(2)]),)
    assert compare_batch(records_of(*values), book) == []


def test_records_that_are_not_micro_batches_keep_their_dead_letters_in_order(book):
    values = (None, b"{nope", message([collector_event(0)]), orjson.dumps(orjson.loads(collector_event(1))),
              b'[{"event_id":"\xff"}]', b"\xff\xfe", message([collector_event(5)]).replace(b"litellm", b"lite\xc3"),
              b"[]", message([collector_event(2)])[:-1], b"[" + collector_event(3) + b",5]", message([collector_event(4)]))
    records = [RawRecord(v, "tokenmeter.usage", 0, i) for i, v in enumerate(values)]
    scanned = frames.scan(records)
    assert scanned is not None and set(scanned.heights) == {2, 10}
    assert compare_batch(records, book) == []


@pytest.mark.parametrize("broken", ["scan", "write_frame"])
def test_a_failure_of_the_frame_path_leaves_the_batch_to_the_dict_path(book, monkeypatch, broken):
    def fail(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline, broken, fail)
    values = (message([collector_event(i) for i in range(6)]), b"{nope", message([collector_event(9)]))
    assert compare_batch(records_of(*values), book) == []


def test_rows_unpriced_by_their_catalog_version_are_written_from_the_frame(book, monkeypatch):
    """No price for the asked service tier: the book's reason and PriceRef, without a dict per event."""
    values = (message([collector_event(i, service_tier="flex", model="claude-sonnet-4-5", provider="anthropic")
                       for i in range(6)]),)
    assert compare_batch(records_of(*values), book) == []
    monkeypatch.setattr(pipeline, "_dict_path", lambda *a, **k: (_ for _ in ()).throw(AssertionError("dict path")))
    result = pipeline.process_batch_columnar(records_of(*values), book)
    event = result.origins[0][2]
    assert result.unpriced_count == 6 and "flex" in event["unpriced_reason"] and event["price"]["entry"]


def test_small_batches_take_the_dict_path(book, monkeypatch):
    """Below FRAME_MIN_BYTES the frame path's fixed cost per batch is not paid back."""
    monkeypatch.setattr(pipeline, "FRAME_MIN_BYTES", 1_000_000)
    monkeypatch.setattr(pipeline, "scan", lambda *a: (_ for _ in ()).throw(AssertionError("scanned")))
    values = (message([collector_event(i) for i in range(6)]),)
    assert compare_batch(records_of(*values), book) == []


@pytest.mark.parametrize("hostile", [
    b'"extra":' + b"[" * 5000 + b"]" * 5000,  # deeper than orjson reads (1,024): a dead letter today
    b'"tags":' + b'{"k":' * 200 + b'"v"' + b"}" * 200,  # nested tags: not a string map
    b'"tags":{' + b",".join(b'"k%d":"%s"' % (i, b"v" * 1000) for i in range(2000)) + b"}",  # ~2 MB of tags
], ids=["5000-deep", "nested-tags", "2MB-tags"])
def test_a_deep_or_huge_row_in_a_batch_keeps_todays_result(book, hostile):
    """A message polars might read differently (or not at all) beside plain ones: no crash, today's dead letters
    and priced events, byte for byte."""
    row = collector_event(1)
    row = row[:-1] + b"," + hostile + b"}"
    values = (message([collector_event(i) for i in range(8, 12)]), message([collector_event(0), row]))
    assert compare_batch(records_of(*values), book) == []


@pytest.mark.parametrize("certified", [True, False])
@pytest.mark.parametrize("seconds", ["60", "59.5", "00.000001"])
@pytest.mark.parametrize("offset", ["Z", "+05:30", "-00:00"])
def test_event_times_parsed_by_arrow_or_chrono_price_as_today(book, seconds, offset, certified):
    """The columnar paths' event times come from Arrow's ISO parser unless it refuses one of the batch's, then from
    chrono (tokenmeter/iso_times.py, fast20): the same results. A second 60, which chrono took as the next minute's
    first and the per-row path (pydantic) refuses, was priced by the frame path and by the columnar checks of a
    message not certified (a space before a colon) where today's path wrote a dead letter: both regexes now stop at
    59."""
    import pyarrow  # noqa: F401 - loaded, as in an Arrow worker, so the frame path uses Arrow's parser

    hour = (NOW - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    rows = [collector_event(i) for i in range(4)]
    ts = orjson.loads(rows[1])["ts"].encode()
    rows[1] = rows[1].replace(ts, f"{hour}:{seconds}{offset}".encode())
    if not certified:
        rows[0] = rows[0].replace(b'"event_id":', b'"event_id" :', 1)
    values = (message(rows),)
    assert compare_batch(records_of(*values), book) == []


def test_a_chunk_read_on_two_threads_keeps_each_message_in_its_place(book):
    """From 8 certifiable messages on, the second half is read on the reader thread (frames._read_all, fast20): the
    frames come back in message order, and a message polars refuses (in either half) takes the dict path."""
    values = [message([collector_event(i + 5 * m) for i in range(5)]) for m in range(12)]
    values[2] = values[2][:-1] + b",]"  # a trailing comma: polars refuses it (simd-json), orjson too
    values[9] = values[9][:-1] + b",]"
    assert len(values) >= 2 * (frames._SPLIT_MIN // 2)
    assert compare_batch(records_of(*values), book) == []
    scanned = frames.scan(records_of(*values))
    assert sorted(scanned.heights) == [m for m in range(12) if m not in (2, 9)]
    assert scanned.frame.get_column("_rec").unique(maintain_order=True).to_list() == sorted(scanned.heights)


def test_partition_keys_of_every_mix_of_absent_empty_and_set_dimensions_are_todays(book):
    """The key (`dim:value` of the first non-empty of team, org, project, api_key, user) as one prefix and one value
    joined once (inproc29: one concat_str per dimension before); 3**5 attributions in one certified message."""
    from itertools import product

    from streams.columnar.validate import KEY_DIMENSIONS

    rows = []
    for i, picks in enumerate(product((None, "", "v"), repeat=len(KEY_DIMENSIONS))):
        event = orjson.loads(collector_event(i))
        event["attribution"] = {dim: f"{dim}-{i}" if pick == "v" else pick
                                for dim, pick in zip(KEY_DIMENSIONS, picks) if pick is not None}
        rows.append(orjson.dumps(event))
    values = (message(rows),)
    assert frames.scan(records_of(*values)).heights == {0: len(rows)}
    assert compare_batch(records_of(*values), book) == []


def bare_event(i: int) -> bytes:
    """An event with only the fields the bench's traffic sends (app.bench.synthetic_events)."""
    return orjson.dumps({"event_id": f"ev-{i}", "ts": (NOW - timedelta(minutes=i)).isoformat(), "source": "litellm",
                         "provider": "openai", "model": "gpt-4o",
                         "attribution": {"org": "acme", "team": f"team-{i % 3}", "user": f"u{i % 7}"},
                         "usage": {"input_tokens": 1000 + i, "cached_input_tokens": i % 500, "output_tokens": 50}})


def _scan_with_fields(records, sent):  # noqa: ANN001, ANN202
    """frames.scan with the fields learnt so far set to `sent` (both schemas), and the reads it made (full or not)."""
    reads = []
    original = frames._frame_of

    def counting(records, candidates, schema):  # noqa: ANN001, ANN202
        reads.append(schema is frames.SCHEMA or schema is frames.TOOLS_SCHEMA)
        return original(records, candidates, schema)

    for learnt in frames._LEARNT.values():
        learnt.sent, learnt.skip = sent, 0
    frames._frame_of = counting
    try:
        return frames.scan(records), reads
    finally:
        frames._frame_of = original


@pytest.mark.parametrize("extra", [
    {}, {"status": "error"}, {"operation": "embeddings", "batch": True}, {"service_tier": "flex"},
    {"usage_assumption": "litellm-cache-writes-in-prompt"}, {"ttft_ms": 12.0},
    {"attribution": {"org": "acme", "project": "p", "tags": {"env": "prod"}}},
    {"attribution": {"org": "acme", "tags": {}}}, {"correlation": {"response_id": "r-1"}},
    {"usage": {"input_tokens": 10, "cache_write_tokens": 4, "cache_write_1h_tokens": 2, "output_tokens": 5,
               "reasoning_tokens": 3, "tool_requests": {"web_search": 1}}},
], ids=lambda extra: ",".join(extra) or "plain")
def test_frames_read_with_only_the_fields_sent_are_the_frames_read_with_every_field(book, extra):
    """inproc32: polars reads with only the fields the traffic has sent (frames._Fields); a message with a key of
    a field left out makes the chunk be read again with every field, and the frame is the one read with every field
    (schema, values, nulls), whatever was learnt before; the fields it sent are learnt, and the next such chunk is
    read once."""
    plain = records_of(*(message([bare_event(i + 5 * m) for i in range(5)]) for m in range(3)))
    shaped = records_of(*(message([collector_event(i + 5 * m, **(extra if i % 2 else {})) for i in range(5)])
                          for m in range(3)))
    everything, reads = _scan_with_fields(shaped, frozenset())
    assert reads == [True]  # nothing learnt: every field
    assert _scan_with_fields(plain, frozenset())[1] == [True]
    learnt_from_plain = frames._LEARNT[False].sent
    assert ("event_id",) in learnt_from_plain and ("status",) not in learnt_from_plain
    again, reads = _scan_with_fields(shaped, learnt_from_plain)
    assert reads == [False, True]  # fields not sent before (status, operation, ...): read again, every field
    assert again.heights == everything.heights
    assert again.frame.schema == everything.frame.schema and again.frame.equals(everything.frame)
    tools = "tool_requests" in str(extra)
    once_more, reads = _scan_with_fields(shaped, frames._LEARNT[tools].sent)  # now learnt
    assert reads == [False] and once_more.frame.equals(everything.frame)
    alone, reads = _scan_with_fields(plain, frames._LEARNT[False].sent)  # fewer fields than learnt: read once
    assert reads == [False] and alone.frame.equals(_scan_with_fields(plain, frozenset())[0].frame)
    for records in (plain, shaped):  # read with the fields sent, priced byte for byte as the per-event path
        _scan_with_fields(records, frozenset())
        assert compare_batch(records, book) == []


def test_a_twisted_message_read_with_only_the_fields_sent_takes_the_dict_path_as_before(book):
    """The fields sent by plain traffic learnt first: each twist still leaves its message to the dict path."""
    plain = records_of(*(message([bare_event(i + 5 * m) for i in range(5)]) for m in range(3)))
    _scan_with_fields(plain, frozenset())
    sent = frames._LEARNT[False].sent
    for old, new in TWISTS:
        values = twisted_values(collector_event, old, new)
        scanned, _ = _scan_with_fields(records_of(*values), sent)
        assert scanned is not None and set(scanned.heights) == {0, 2}, new
        for learnt in frames._LEARNT.values():
            learnt.sent, learnt.skip = sent, 0
        assert compare_batch(records_of(*values), book) == [], new


def test_chunks_with_messages_not_certified_are_read_twice_once_in_a_while():
    """A chunk read again without a field to learn (a message not certified: here a duplicated key) makes the next
    BACK_OFF chunks be read with every field at once; then the fields sent are tried again."""
    plain = records_of(*(message([bare_event(i + 5 * m) for i in range(5)]) for m in range(3)))
    _scan_with_fields(plain, frozenset())
    sent = frames._LEARNT[False].sent
    twisted = records_of(*twisted_values(bare_event, '"output_tokens":', '"output_tokens":0,"output_tokens":'))
    first, reads = _scan_with_fields(twisted, sent)
    assert reads == [False, True] and set(first.heights) == {0, 2}
    learnt = frames._LEARNT[False]
    assert learnt.sent == sent and learnt.skip == learnt.BACK_OFF
    original, reads = frames._frame_of, []
    frames._frame_of = lambda records, candidates, schema: reads.append(schema is frames.SCHEMA) or original(
        records, candidates, schema)
    try:
        for _ in range(learnt.BACK_OFF + 1):
            assert set(frames.scan(twisted).heights) == {0, 2}
    finally:
        frames._frame_of = original
    assert reads == [True] * learnt.BACK_OFF + [False, True]


USAGE_SHAPES = {  # usage counts a traffic sends (the rest never): checks and lines of the others are left out
    "bench": ("input_tokens", "cached_input_tokens", "output_tokens"),
    "no_cache": ("input_tokens", "output_tokens"),
    "cache_writes_5m": ("input_tokens", "cache_write_tokens", "output_tokens"),
    "cache_writes_1h_only": ("input_tokens", "cache_write_1h_tokens", "output_tokens"),
    "reasoning_no_input": ("output_tokens", "reasoning_tokens"),
    "every_count": ("input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens",
                    "output_tokens", "reasoning_tokens"),
}


def shaped_event(i: int, counts: tuple[str, ...]) -> bytes:
    """A bare event sending only `counts`, each row's values picked to pass or fail the usage checks: within range,
    over MAX_TOKENS, negative, a part over its total (cached or writes over input, 1h over writes, reasoning over
    output), names and dimensions too long."""
    valid = {"input_tokens": 1000 + i, "cached_input_tokens": i % 500, "cache_write_tokens": 10,
             "cache_write_1h_tokens": 5, "output_tokens": 50 + i, "reasoning_tokens": 20}
    values = {name: valid[name] for name in counts}
    twisted = counts[i % len(counts)]
    if i % 7 == 1:
        values[twisted] = 10**12 + 1
    elif i % 7 == 2:
        values[twisted] = -3
    elif i % 7 == 3:  # a part over its total (or a total under its parts)
        values[twisted] = 0 if twisted in ("input_tokens", "output_tokens", "cache_write_tokens") else 10**6
    event = {"event_id": f"ev-{i}" if i % 11 else "x" * 600, "ts": (NOW - timedelta(minutes=i)).isoformat(),
             "source": "litellm", "provider": "openai", "model": "gpt-4o" if i % 13 else "m" * 3000,
             "attribution": {"org": "acme", "team": f"team-{i % 3}" if i % 17 else "t" * 300, "user": f"u{i % 7}"},
             "usage": values}
    return orjson.dumps(event)


@pytest.mark.parametrize("shape", list(USAGE_SHAPES))
def test_checks_and_lines_left_out_for_fields_not_sent_change_no_row(book, shape):
    """inproc36: a frame read with only the fields sent is checked (`row_checks(sent)`), counted (`_kind_totals`)
    and priced (`price_frame`'s lines of token parts 0 in every row) without the fields it lacks; every row passes or
    fails exactly as with every check, and the batch is priced byte for byte as the per-event path."""
    from streams.columnar.frame_price import write_frame
    from streams.columnar.price import price_table
    import polars as pl

    records = records_of(*(message([shaped_event(i + 30 * m, USAGE_SHAPES[shape]) for i in range(30)])
                           for m in range(3)))
    _scan_with_fields(records, frozenset())  # learnt from a full read
    sent = frames._LEARNT[False].sent
    scanned, reads = _scan_with_fields(records, sent)
    assert reads == [False] and scanned.sent == sent  # read with the fields sent
    assert {("usage", name) for name in USAGE_SHAPES[shape]} <= sent
    frame = scanned.frame
    assert (frame.select(frames.row_checks(sent)).to_series().to_list()
            == frame.select(frames.row_checks()).to_series().to_list())
    assert frames._kind_totals(frame, False, False, sent) == frames._kind_totals(frame, False)
    base = pl.Series([0, 30, 60], dtype=pl.Int64)
    now = datetime.now(timezone.utc)
    lean = write_frame(frame, base, price_table(book), now, "2026-01-01T00:00:00Z", False, sent)
    full = write_frame(frame, base, price_table(book), now, "2026-01-01T00:00:00Z", False)
    assert lean.rest == full.rest and lean.rows.equals(full.rows)
    # some rows left to the dict path; some written (a write of 1h without writes fails `1h <= writes` always)
    assert lean.rest and (lean.rows.height > 0 or shape == "cache_writes_1h_only")
    for learnt in frames._LEARNT.values():
        learnt.sent, learnt.skip = sent, 0
    assert compare_batch(records, book) == []
