"""The worker's priced messages in the Arrow format (TOKENMETER_PRICED_FORMAT=arrow; issue 14, loader11): written from
the frame path's columns (streams/columnar/arrow_encode.py) or converted from the JSON messages, each Arrow message
holds the events of the JSON message it replaces, cut at the same place, and decodes to the very dicts orjson gives
for that JSON."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest

from app.bench_worker import tag
from streams.batch import RawRecord, process_batch
from streams.columnar import process_batch_columnar
from streams.columnar.arrow_encode import arrow_messages
from streams.columnar.bench import records_of, traffic
from streams.columnar.framed import FramedResult
from streams.columnar.mixed_arrow import ArrowResult
from streams.pricing import load_price_book
from tokenmeter.microbatch import MAX_MESSAGE_BYTES
from tokenmeter.priced_wire import ARROW_HEADERS, decode_priced

pytestmark = pytest.mark.slow(seconds=6)


@pytest.fixture(scope="module")
def book():
    return load_price_book()


def _assert_same_messages(result) -> None:  # noqa: ANN001
    as_json, as_arrow = result.messages("json"), result.messages("arrow")
    assert [key for key, _ in as_arrow] == [key for key, _ in as_json]  # the same cuts, keys in the same order
    for (_, json_value), (_, arrow_value) in zip(as_json, as_arrow):
        decoded = decode_priced(arrow_value, ARROW_HEADERS)
        assert decoded == orjson.loads(json_value)
        assert orjson.dumps(decoded) == json_value  # the same keys in the same order, the same numbers


@pytest.mark.parametrize("tags", [0.0, 0.3])
def test_frame_path_batches_are_written_from_columns_as_their_json(book, tags):
    """Collector micro-batches (unknown models, service tiers, batch calls, latencies, tags): the frame path writes
    every row, and its Arrow messages decode to the JSON's dicts."""
    records = records_of(tag(traffic(12_000, seed=3), tags))
    result = process_batch_columnar(records, book)
    assert isinstance(result, FramedResult) and result.priced_count == 12_000
    assert result.unpriced_count > 0
    assert arrow_messages(result._rows, *result._arrow) is not None  # noqa: SLF001 - written from the columns
    _assert_same_messages(result)


def test_other_batches_convert_their_json_messages(book):
    """Correlated and reported-cost events (the dict path), invalid records, and the per-event step: the JSON
    messages converted, with the same cuts and dicts."""
    records = records_of(traffic(3_000, seed=4, correlated=0.5, reported=0.2))
    records += [RawRecord(b"{nope", "tokenmeter.usage", 0, 999), RawRecord(orjson.dumps([{"event_id": "x"}]),
                                                                          "tokenmeter.usage", 0, 1000)]
    for step in (process_batch_columnar, process_batch):
        result = step(records, book)
        assert not isinstance(result, FramedResult) and len(result.deadletters) == 2
        _assert_same_messages(result)


@pytest.mark.parametrize("mix", ["invalid record", "reported costs", "correlated and tool requests",
                                 "tool requests in every message"])
def test_an_arrow_workers_mixed_batches_take_the_written_rows_columns(book, mix):
    """A batch the frame path wrote only in part (a message it does not take beside messages it writes), priced by a
    worker writing Arrow: the written rows' Arrow columns are taken and only the other rows are converted from their
    JSON (arrow14; before, every JSON message was converted), with the JSON's cuts and dicts."""
    records = records_of(tag(traffic(6_000, seed=6, correlated=0.3), 0.3))
    if mix == "invalid record":
        records.insert(3, RawRecord(b"{nope", "tokenmeter.usage", 0, 999))
    elif mix == "reported costs":  # one message whose events carry a provider-reported cost
        records.insert(5, records_of(traffic(400, seed=7, reported=0.5))[0])
    elif mix == "correlated and tool requests":
        events = traffic(300, seed=8, correlated=1.0)
        for event in events[::3]:
            event["usage"]["tool_requests"] = {"web_search": 2}
        records.insert(7, records_of(events)[0])
    else:  # the frame path takes none of the messages: the dict-fed path's rows give their columns (arrow14)
        events = tag(traffic(6_000, seed=9, correlated=0.3), 0.3)
        for event in events[::100]:
            event["usage"]["tool_requests"] = {"web_search": 1}
        records = records_of(events)
    result = process_batch_columnar(records, book, priced_format="arrow")
    assert isinstance(result, ArrowResult)
    assert result._parts.converted < result.priced_count // 10  # noqa: SLF001 - most rows written from columns
    as_arrow = result.messages("arrow")  # before anything reads the JSON: from the parts' columns, no JSON text
    as_json = result.messages("json")
    assert [key for key, _ in as_arrow] == [key for key, _ in as_json]
    for (_, json_value), (_, arrow_value) in zip(as_json, as_arrow):
        assert decode_priced(arrow_value, ARROW_HEADERS) == orjson.loads(json_value)


def test_messages_cut_by_size_are_cut_alike(book):
    """A JSON message that would reach MAX_MESSAGE_BYTES is cut by size (`_frame`): the frame path then converts the
    JSON messages, so the Arrow ones keep those cuts."""
    events = traffic(3_000, seed=5)
    for event in events:  # ~2 KB priced events: 500 of one key are more than MAX_MESSAGE_BYTES
        event["attribution"] = {**event["attribution"], "team": "one-team", "feature": "f" * 1000,
                                "project": "p" * 400}  # each within the attribution bounds (cap33)
    result = process_batch_columnar(records_of(events), book)
    assert isinstance(result, FramedResult)
    assert arrow_messages(result._rows, *result._arrow) is None  # noqa: SLF001 - left to the conversion
    sizes = [len(value) for _, value in result.messages("json")]
    assert max(sizes) <= MAX_MESSAGE_BYTES and min(len(orjson.loads(v)) for _, v in result.messages("json")) < 500
    _assert_same_messages(result)


def _mixed_records() -> list[RawRecord]:
    """Tool requests in every message (the frame path hands those rows to the dict path: arrow18), a message of
    reported costs, an invalid record and an invalid event: every kind of row a mixed batch holds."""
    events = tag(traffic(6_000, seed=11, correlated=0.3), 0.3)
    for event in events[::100]:
        event["usage"]["tool_requests"] = {"web_search": 1}
    records = records_of(events)
    records.insert(2, records_of(traffic(400, seed=12, reported=0.5))[0])
    records.insert(4, RawRecord(b"{nope", "tokenmeter.usage", 0, 999))
    records.insert(6, RawRecord(orjson.dumps([{"event_id": "x"}]), "tokenmeter.usage", 0, 1000))
    return records + records_of(tag(traffic(8_000, seed=13), 0.3))  # messages the frame path writes


def _timeless(letters: list[dict]) -> list[dict]:
    return [{k: v for k, v in letter.items() if k != "at"} for letter in letters]


def test_an_arrow_workers_mixed_batch_writes_no_json_text(book, monkeypatch):
    """arrow16: an Arrow worker's mixed batch writes no JSON text for its Arrow messages (arrow14 wrote the text of
    every row written from columns, the frame path's and the dict-fed path's, and gathered the messages event by
    event from it); its dead letters, counts, keys, origins and events are the JSON worker's."""
    from streams.columnar import frame_price, pipeline

    written_rows = []

    def counting(encode):  # noqa: ANN001, ANN202 - the real encoder, its rows counted
        def encode_priced(frame, *args, **kwargs):  # noqa: ANN001, ANN202
            written_rows.append(frame.height)
            return encode(frame, *args, **kwargs)
        return encode_priced

    monkeypatch.setattr(pipeline, "encode_priced", counting(pipeline.encode_priced))
    monkeypatch.setattr(frame_price, "encode_priced", counting(frame_price.encode_priced))
    records, now = _mixed_records(), datetime.now(timezone.utc)
    as_arrow = process_batch_columnar(records, book, now, priced_format="arrow")
    arrow_messages = as_arrow.messages("arrow")
    assert sum(written_rows) == 0 and as_arrow.priced_count > 13_000
    as_json = process_batch_columnar(records, book, now)
    assert sum(written_rows) > 13_000  # the JSON worker writes them
    assert _timeless(as_arrow.deadletters) == _timeless(as_json.deadletters) and len(as_json.deadletters) == 2
    for count in ("events_in", "priced_count", "unpriced_count", "assumed_count"):
        assert getattr(as_arrow, count) == getattr(as_json, count)
    json_messages = as_json.messages("json")
    assert [key for key, _ in arrow_messages] == [key for key, _ in json_messages]
    for (_, json_value), (_, arrow_value) in zip(json_messages, arrow_messages):
        assert orjson.dumps(decode_priced(arrow_value, ARROW_HEADERS)) == json_value
    assert list(as_arrow.origins) == list(as_json.origins)
    assert as_arrow.keys_in_order == as_json.keys_in_order and as_arrow.priced == as_json.priced


def test_messages_of_one_part_are_sliced_and_those_mixing_parts_taken_alike(book):
    """arrow18: a message whose rows all come from one part is a slice of that part's table, only the rows of
    messages mixing parts are taken; both kinds decode to the JSON worker's messages, in its order."""
    import numpy as np

    from streams.columnar.arrow_encode import message_cuts

    records, now = _mixed_records(), datetime.now(timezone.utc)
    as_arrow = process_batch_columnar(records, book, now, priced_format="arrow")
    assert isinstance(as_arrow, ArrowResult)
    index, parts = as_arrow._index, as_arrow._parts
    order, cuts = message_cuts(index.get_column("key"), index.get_column("_bytes"))
    starts = [part.get_column("_src")[0] for part in parts.index]
    part_of = np.searchsorted(starts, index.get_column("_src").to_numpy()[order], side="right") - 1
    ends = np.cumsum([count for _, count in cuts])
    kinds = [len(set(part_of[end - count:end])) for end, (_, count) in zip(ends, cuts)]
    assert len(parts.index) == 3 and kinds.count(1) >= 10 and sum(kind > 1 for kind in kinds) >= 5
    arrow_messages = as_arrow.messages("arrow")  # before the JSON is read (which materialises the result)
    json_messages = process_batch_columnar(records, book, now).messages("json")
    assert [key for key, _ in arrow_messages] == [key for key, _ in json_messages]
    for (_, json_value), (_, arrow_value) in zip(json_messages, arrow_messages):
        assert orjson.dumps(decode_priced(arrow_value, ARROW_HEADERS)) == json_value


def test_a_failure_of_the_frame_path_leaves_an_arrow_workers_batch_to_the_dict_path(book, monkeypatch):
    """A bug in the frame path (write_frame raising) must not stop an Arrow worker's batch either: its rows take the
    dict path, with the JSON worker's events and dead letters (arrow16: the empty written rows added to the parts)."""
    from streams.columnar import pipeline

    records, now = _mixed_records(), datetime.now(timezone.utc)
    as_json = process_batch_columnar(records, book, now)

    def fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline, "write_frame", fail)
    as_arrow = process_batch_columnar(records, book, now, priced_format="arrow")
    assert _timeless(as_arrow.deadletters) == _timeless(as_json.deadletters)
    assert as_arrow.priced_count == as_json.priced_count > 13_000
    json_messages = as_json.messages("json")
    arrow_messages = as_arrow.messages("arrow")
    assert [key for key, _ in arrow_messages] == [key for key, _ in json_messages]
    for (_, json_value), (_, arrow_value) in zip(json_messages, arrow_messages):
        assert orjson.dumps(decode_priced(arrow_value, ARROW_HEADERS)) == json_value


@pytest.mark.parametrize("values", [[b"{nope"], [orjson.dumps([{"event_id": "x"}])], []],
                         ids=["not JSON", "invalid event", "no record"])
def test_an_arrow_workers_batch_without_priced_events_has_no_messages(book, values):
    """Only dead letters (or nothing): no priced message in either format, the same letters (arrow16: the Arrow
    worker's result of no part must not fail, or the worker would retry the batch for ever)."""
    records = [RawRecord(value, "tokenmeter.usage", 0, i) for i, value in enumerate(values)]
    as_arrow = process_batch_columnar(records, book, priced_format="arrow")
    as_json = process_batch_columnar(records, book)
    assert as_arrow.messages("arrow") == as_json.messages("json") == []
    assert _timeless(as_arrow.deadletters) == _timeless(as_json.deadletters) and len(as_json.deadletters) == len(values)
    assert list(as_arrow.origins) == [] and as_arrow.priced_count == 0


def test_a_stream_is_the_stream_writers_bytes(book):
    """arrow19: `write_stream` assembles a message from the schema's message, each batch's `serialize` and the
    end-of-stream marker; the bytes are the stream writer's for every kind of table the worker writes (a worker
    table's slices, its dicts' table, parts concatenated, a take across them, no rows); another schema is refused
    as the writer refuses it."""
    import pyarrow as pa

    from tokenmeter import priced_arrow

    def by_the_writer(table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, priced_arrow.SCHEMA) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    result = process_batch_columnar(_mixed_records(), book, priced_format="arrow")
    parts = result._parts
    assert len(parts.rows) == 3  # the frame path's rows, the dict-fed rows written from columns, the dicts
    columns = parts.tables[0](parts.rows[0])  # written_table of the frame path's rows
    dicts = priced_arrow.from_events(parts.rows[2])
    both = pa.concat_tables([columns.slice(10, 300), dicts.slice(5, 40), columns.slice(900, 7)])
    tables = [columns.slice(777, 500), columns.slice(0, 1), dicts, both, both.take(pa.array([0, 305, 2, 346, 7])),
              both.combine_chunks(), priced_arrow.SCHEMA.empty_table(), columns.slice(50, 0)]
    for table in tables:
        assert priced_arrow.write_stream(table) == by_the_writer(table)
        assert priced_arrow.read_table(priced_arrow.write_stream(table)).equals(table.combine_chunks())
    other = columns.drop_columns(["priced_at"])
    with pytest.raises(pa.ArrowInvalid):
        by_the_writer(other)
    with pytest.raises(pa.ArrowInvalid):
        priced_arrow.write_stream(other)


def test_written_tables_of_two_price_tables_carry_each_tables_refs(book):
    """arrow19: a price table's PriceRefs become Arrow once per table (`arrow_encode._refs_array`); another table's
    refs, or refs grown since, are never read from an earlier table's array."""
    import copy

    from streams.columnar.arrow_encode import written_table
    from streams.columnar.price import price_table

    import polars as pl

    result = process_batch_columnar(records_of(traffic(3_000, seed=5)), book, priced_format="arrow")
    rows, refs = result._rows.filter(pl.col("reason_json").is_null()), price_table(book).refs  # priced: a PriceRef
    assert rows.height > 2_000
    first = written_table(rows, refs, "2026-12-06T00:00:00Z").column("price").to_pylist()
    other = copy.deepcopy(refs)
    for ref in other:
        ref["catalog_version"] = "another"
    second = written_table(rows, other, "2026-12-06T00:00:00Z").column("price").to_pylist()
    assert {ref["catalog_version"] for ref in second} == {"another"}
    assert [{**ref, "catalog_version": "another"} for ref in first] == second
    grown = list(refs)
    written_table(rows, grown, "2026-12-06T00:00:00Z")
    vid = rows.get_column("vid")[0]
    grown[vid] = {**grown[vid], "catalog_version": "grown"}
    grown.append({"entry": "x", "effective_from": "2026-01-01", "catalog_version": "new"})  # a new version
    assert written_table(rows, grown, "2026-12-06T00:00:00Z").column("price")[0].as_py()["catalog_version"] == "grown"


def test_a_message_carries_only_its_own_rows(book):
    """inproc32: an Arrow message's bytes are its rows' own, whatever else its batch held. The frame path's rows had
    `usage.tool_requests` as `pa.nulls` of a map: a map child as long as the whole batch, which `serialize` wrote
    whole into every message sliced from it (4 bytes per row of the batch: ~253 bytes a row in the bench's messages
    of ~450 events; a message of one event from a 28,000-row chunk ~112 KB). The first segment's messages are now
    the same rows in the same bytes, but for the alignment padding of a string buffer ending a table (tens of
    bytes), in a batch of one segment and in one of three."""
    from tokenmeter import priced_arrow

    events, now = traffic(15_000, seed=5), datetime.now(timezone.utc)
    small = process_batch_columnar(records_of(events[:5_000]), book, now, priced_format="arrow").messages("arrow")
    large = process_batch_columnar(records_of(events), book, now, priced_format="arrow").messages("arrow")
    assert len(large) > len(small) > 5
    for (key, alone), (same_key, within) in zip(small, large):
        rows = priced_arrow.read_table(alone)
        assert key == same_key and priced_arrow.read_table(within).equals(rows)
        assert abs(len(within) - len(alone)) <= 1_024, (len(within), len(alone))  # 40,000 more before
        assert len(alone) < 600 * rows.num_rows + 8_000, (len(alone), rows.num_rows)
