"""The frame path decides its size cuts without writing JSON text (issue 14, arrow14): a worker sending Arrow never
writes the text nothing sends, and the cuts stay the ones the text gives (text_size.text_bound is an upper bound of
each row's JSON bytes, and only rows or messages the bound cannot clear have their text written)."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import polars as pl
import pytest

from app.bench_worker import tag
from streams.batch import MAX_PRICED_EVENT_BYTES, RawRecord
from streams.columnar import process_batch_columnar
from streams.columnar.bench import records_of, traffic
from streams.columnar.corpus import Corpus, padding_tags
from streams.columnar.decode import decode_records
from streams.columnar.frame_price import write_frame
from streams.columnar.framed import FramedResult
from streams.columnar.frames import scan
from streams.columnar.price import price_table
from streams.columnar.text_size import FLOAT_TEXT_MAX
from streams.pricing import load_price_book
from tests.streams.test_priced_arrow_worker import _assert_same_messages
from tokenmeter.events import MAX_TOKENS
from tokenmeter.microbatch import MAX_EVENTS_PER_MESSAGE, MAX_MESSAGE_BYTES

pytestmark = pytest.mark.slow(seconds=8)


@pytest.fixture(scope="module")
def book():
    return load_price_book()


def _written(records: list[RawRecord], book):  # noqa: ANN001, ANN202 - frame_price.Written
    """The frame path's written rows of a batch, as pipeline._process gets them."""
    scanned = scan(records)
    assert scanned is not None
    decoded = decode_records(records, scanned.heights)
    now = datetime.now(timezone.utc)
    return write_frame(scanned.frame, pl.Series(decoded.first_item, dtype=pl.Int64), price_table(book), now,
                       now.isoformat().replace("+00:00", "Z"), write_text=False)


def _widest(book) -> list[dict]:  # noqa: ANN001
    """Events whose numbers are written at their widest: counts of MAX_TOKENS, latencies of the longest texts the
    frame path writes, every attribution dimension, tags, a tier, an assumption, an unpriced model."""
    base = traffic(1, seed=9)[0]
    latencies = [0.00012345678901234567, 999999999999999.0, 123456789012345.67, 0.1234567890123456, 1e-4]
    events = []
    for i, latency in enumerate(latencies):
        events.append({**base, "event_id": f"wide-{i}", "latency_ms": latency, "ttft_ms": latencies[-1 - i],
                       "model": "no-such-model" if i % 2 else base["model"], "service_tier": "priority",
                       "usage_assumption": "assumed", "batch": True,
                       "attribution": {dim: f"{dim}-value" for dim in ("org", "team", "project", "user", "api_key",
                                                                       "feature", "route")} | {"tags": {"k": "v"}},
                       "usage": {"input_tokens": MAX_TOKENS, "cached_input_tokens": MAX_TOKENS,
                                 "cache_write_tokens": 0, "output_tokens": MAX_TOKENS,
                                 "reasoning_tokens": MAX_TOKENS}})
    assert max(len(orjson.dumps(x)) for x in latencies) <= FLOAT_TEXT_MAX
    return events


def test_the_bound_is_never_below_the_text(book):
    """On the randomised corpus (every shape the frame path writes) and on the widest numbers: bound >= the JSON
    text's bytes, and at most ~120 bytes above it (so messages are still decided without text)."""
    corpus = Corpus(book, seed=21)
    batches = [list(corpus.records(4_000)) for _ in range(3)] + [records_of(_widest(book), per_message=5),
                                                                   records_of(tag(traffic(4_000, seed=2), 0.5))]
    rows = 0
    for records in batches:
        written = _written(records, book)
        bound = written.rows.get_column("_size_bound")
        exact = written.texts().str.len_bytes().cast(pl.Int64)
        slack = bound - exact
        assert slack.min() >= 0, written.rows.filter(slack < 0).head(3)
        assert slack.max() <= 200
        rows += written.rows.height
    assert rows > 5_000


def test_the_bound_of_the_dict_fed_rows_is_never_below_their_text(book):
    """arrow16: an Arrow worker's rows written from columns on the dict-fed path (batches under FRAME_MIN_BYTES,
    messages the frame path does not take) are cut by the same bound, counted over their attribution's JSON text:
    bound >= the text's bytes on the randomised corpus, the widest numbers and tagged traffic with tool requests."""
    corpus = Corpus(book, seed=23)
    tools = tag(traffic(2_000, seed=3), 0.5)
    for event in tools[::7]:
        event["usage"]["tool_requests"] = {"web_search": 1}
    batches = [list(corpus.records(1_500)) for _ in range(3)] + [records_of(_widest(book), per_message=5),
                                                                   records_of(tools)]
    rows = 0
    for records in batches:
        result = process_batch_columnar(records, book, priced_format="arrow")
        parts = result._parts  # noqa: SLF001 - mixed_arrow.ArrowParts
        for index, texts in zip(parts.index, parts.texts):
            slack = index.get_column("_bytes") - pl.Series(list(map(len, texts())), dtype=pl.Int64)
            assert slack.min() >= 0 and slack.max() <= 200
            rows += index.height
    assert rows > 6_000


def test_a_worker_sending_arrow_writes_no_json_text(book):
    """The frame path's Arrow messages are written without the JSON text (it was written for every row before,
    for the size cuts); its JSON messages and origins still read the very text."""
    records = records_of(tag(traffic(6_000, seed=3), 0.3))
    result = process_batch_columnar(records, book, priced_format="arrow")
    assert isinstance(result, FramedResult)
    result.messages("arrow")
    written = result._texts.__self__  # noqa: SLF001 - the batch's frame_price.Written
    assert not written.texts_written
    _assert_same_messages(result)  # JSON messages: the text is written now
    assert written.texts_written
    # a JSON worker's batch writes the text at once, and its size column is the text's bytes
    as_json = process_batch_columnar(records, book)
    assert as_json._texts.__self__.texts_written  # noqa: SLF001
    assert as_json._rows.get_column("_size_bound").equals(  # noqa: SLF001
        as_json._texts().str.len_bytes().cast(pl.Int64), check_names=False)


def test_rows_at_the_event_size_cut_are_cut_as_their_text_says(book):
    """Events whose JSON is just under, at and just over MAX_PRICED_EVENT_BYTES: the bound reaches the cut for all
    of them, their text decides (a dead letter only over it), in both formats."""
    base = traffic(1, seed=4)[0]
    # tags of 4-byte characters make them so (every text is bounded since cap33 and trust34)
    probe = process_batch_columnar(records_of([{**base, "attribution": {"team": "t", "tags": {"p00": ""}}}]), book)
    overhead = len(next(iter(probe.priced.values()))[0])
    events = [{**base, "event_id": f"edge-{delta}", "attribution": {"team": "t", "tags": padding_tags(
                   MAX_PRICED_EVENT_BYTES - overhead - len(f"edge-{delta}") + len(base["event_id"]) + delta)}}
              for delta in (-1, 0, 1, 2)]
    records = [RawRecord(orjson.dumps(events + traffic(3_000, seed=6)), "tokenmeter.usage", 0, 0)]
    for priced_format in ("arrow", "json"):
        result = process_batch_columnar(records, book, priced_format=priced_format)
        assert [letter["reason"].split(":")[0] for letter in result.deadletters] == ["event too large"] * 2
        sizes = sorted(len(v) for values in result.priced.values() for v in values if b"edge-" in v)
        assert sizes == [MAX_PRICED_EVENT_BYTES - 1, MAX_PRICED_EVENT_BYTES]
        _assert_same_messages(process_batch_columnar(records, book, priced_format=priced_format))


def test_messages_the_bound_cannot_clear_are_cut_by_their_text(book):
    """500 events of one key whose JSON message is just under MAX_MESSAGE_BYTES while the bound's is over: the
    exact bytes decide, the Arrow messages are still written from the columns, cut as the JSON is."""
    events = traffic(MAX_EVENTS_PER_MESSAGE, seed=8)
    for event in events:
        event["attribution"] = {"team": "one-team"}
        event.pop("service_tier", None), event.pop("batch", None)
    probe = process_batch_columnar(records_of(events), book)
    texts = next(iter(probe.priced.values()))
    per_event = ((MAX_MESSAGE_BYTES - 2 - sum(map(len, texts)) - len(texts) - 30) // len(texts)
                 - len('"project":"",') - len('"feature":"",'))
    for event in events:  # two values: each within the attribution bounds (cap33)
        event["attribution"]["project"] = "p" * (per_event // 2)
        event["attribution"]["feature"] = "f" * (per_event - per_event // 2)
    result = process_batch_columnar(records_of(events), book, priced_format="arrow")
    assert isinstance(result, FramedResult)
    bound = result._rows.get_column("_size_bound").sum() + len(events) + 1  # noqa: SLF001
    assert bound > MAX_MESSAGE_BYTES  # the bound alone would hand the batch to the conversion
    as_json = result.messages("json")
    assert len(as_json) == 1 and len(as_json[0][1]) < MAX_MESSAGE_BYTES
    _assert_same_messages(result)


def test_a_rows_bound_does_not_depend_on_the_rest_of_its_batch(book):  # noqa: ANN001
    """text_bound leaves out the pieces of columns null in every row of the batch (inproc28): each row's bound is the
    one it gets beside rows that have those fields (a latency, a tier, an assumption, an unpriced model, every line)."""
    plain = traffic(300, seed=28)
    for event in plain:
        for name in ("latency_ms", "ttft_ms", "service_tier", "usage_assumption"):
            event.pop(name, None)
    full = _widest(book)
    alone = _written([RawRecord(orjson.dumps(plain), "tokenmeter.usage", 0, 0)], book).rows
    beside = _written([RawRecord(orjson.dumps(plain), "tokenmeter.usage", 0, 0),
                       RawRecord(orjson.dumps(full), "tokenmeter.usage", 0, 1)], book).rows
    assert alone.height == 300 and beside.height > 300
    assert alone.get_column("latency_ms").null_count() == 300
    assert alone.get_column("_size_bound").to_list() == beside.get_column("_size_bound").head(300).to_list()
