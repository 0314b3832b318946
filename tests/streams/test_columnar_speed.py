"""The columnar path's speed work (issue 14, worker5) keeps today's output: timestamps rewritten as a column,
whole micro-batches framed at once, and the batch assembled without a per-event loop where every row is common."""

import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import polars as pl
import pytest

from streams.batch import RawRecord
from streams.columnar.equivalence import compare_batch
from streams.columnar.validate import CANONICAL_TS, PARSEABLE_TS, _pydantic_column, _pydantic_text
from streams.pricing import load_price_book


@pytest.fixture(scope="module")
def book():
    return load_price_book()


def _random_timestamps(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        moment = datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=rng.randrange(10**14))
        text = moment.strftime("%Y-%m-%dT%H:%M:%S")
        digits = rng.choice([0, 0, 1, 2, 3, 6])
        if digits:
            fraction = rng.choice([f"{moment.microsecond:06d}", "000000", "500000", "000100"])[:digits]
            text += "." + fraction
        text += rng.choice(["Z", "+00:00", "-00:00", "+05:30", "-08:00", "+23:59"])
        out.append(text)
    return out


def test_timestamps_rewritten_as_a_column_match_pydantic_row_by_row():
    texts = [t for t in _random_timestamps(20_000, 5)] + ["2026-11-01T10:15:00.000-00:00", "2026-11-01T10:15:00Z"]
    series = pl.Series("ts", texts, dtype=pl.String)
    assert series.str.contains(PARSEABLE_TS).all()
    canonical = (series.str.contains(CANONICAL_TS) & ~series.str.contains(r"\.000000")
                 & ~series.str.ends_with("+00:00") & ~series.str.ends_with("-00:00"))
    assert _pydantic_column(series, canonical).to_list() == [_pydantic_text(t) for t in texts]


def test_a_batch_mixing_timestamp_forms_is_byte_identical(book):
    events = [{"event_id": f"e{i}", "ts": ts, "source": "t", "provider": "openai", "model": "gpt-4o",
               "attribution": {"team": f"t{i % 3}"}, "usage": {"input_tokens": 1000 + i, "output_tokens": 10}}
              for i, ts in enumerate(_random_timestamps(2_000, 9) + ["yesterday", "2026-02-30T00:00:00Z"])]
    records = [RawRecord(orjson.dumps(events[i:i + 500]), "tokenmeter.usage", 0, i) for i in range(0, len(events), 500)]
    assert compare_batch(records, book) == []


def test_priced_messages_are_framed_as_microbatch_frames_them():
    from streams.batch import _frame
    from tokenmeter import microbatch

    rng = random.Random(11)
    for _ in range(100):
        n = rng.choice([0, 1, 499, 500, 501, 1000, 1234, rng.randrange(1600)])
        big = rng.choice([600, 3_400, 3_700, 5_000])  # some runs of 500 exceed the 900 KB cut, some do not
        events = [b'{"e":"' + b"x" * rng.randrange(big) + b'"}' for _ in range(n)]
        if rng.random() < 0.1 and events:
            events[rng.randrange(n)] = b"y" * 950_000  # an event larger than a message on its own
        assert list(_frame(events)) == list(microbatch.frame(events))
    edge = [b"x" * 1799] * 499 + [b"x" * 1797]  # 2 + 499 * 1799 + 1797 + 500 == 900,000: one message; 1 more: two
    assert list(_frame(edge)) == list(microbatch.frame(edge)) and len(list(_frame(edge))) == 1
    edge[-1] += b"x"
    assert list(_frame(edge)) == list(microbatch.frame(edge)) and len(list(_frame(edge))) == 2



def test_priced_messages_framed_by_polars_are_the_python_framing():
    """framed.frame_messages (a batch written whole from the frame) against BatchResult.priced_messages: segments of
    PRICED_SEGMENT_EVENTS, keys in order of first appearance, 500 per message; None where `_frame` would cut by size."""
    from streams.batch import PRICED_SEGMENT_EVENTS, BatchResult
    from streams.columnar.framed import frame_messages

    rng = random.Random(12)
    framed_by_polars = cut_by_size = 0
    one_per_key = 0  # batches whose keys have at most 500 events per segment (framed.py's group_by, inproc17)
    for _ in range(40):
        n = rng.choice([1, 499, 500, 501, PRICED_SEGMENT_EVENTS - 1, PRICED_SEGMENT_EVENTS + 1, rng.randrange(12_000)])
        keys = [f"team:{rng.randrange(rng.choice([1, 3, 40]))}".encode() for _ in range(n)]
        big = rng.choice([0, 0, 1_790, 1_830])  # runs of 500 events around the 900 KB cut
        texts = [f'{{"e":{i},"x":"{"x" * max(0, big - rng.randrange(30))}"}}' for i in range(n)]
        python = BatchResult()
        for key, text in zip(keys, texts):
            python.priced[key].append(text.encode())
        python.keys_in_order = list(keys)
        expected = list(python.priced_messages())
        got = frame_messages(pl.Series(keys, dtype=pl.Binary), pl.Series(texts, dtype=pl.String))
        if got is None:  # a message would reach the cut: only when the Python framing cut one by size
            assert any(len(message) > 800_000 for _, message in expected)
            cut_by_size += 1
            continue
        framed_by_polars += 1
        assert got == expected
        segments = [Counter(keys[i:i + PRICED_SEGMENT_EVENTS]) for i in range(0, n, PRICED_SEGMENT_EVENTS)]
        one_per_key += max(max(counts.values()) for counts in segments) <= 500
    assert framed_by_polars > 20 and cut_by_size > 0
    assert 5 < one_per_key < framed_by_polars - 5  # both ways of framing were compared


def test_a_framed_result_reads_as_the_assembled_one(book, monkeypatch):
    """Reading `priced` or `origins` of a batch framed from columns gives what `_assemble` gives, and a caller's
    change to `priced` is what its messages then carry."""
    from streams.columnar import process_batch_columnar, pipeline
    from streams.columnar.framed import FramedResult

    events = [_common(i) for i in range(1_200)]
    records = [RawRecord(orjson.dumps(events[i:i + 400]), "tokenmeter.usage", 1, i) for i in range(0, 1_200, 400)]
    now = datetime.now(timezone.utc)
    monkeypatch.setattr(pipeline, "FRAME_MIN_BYTES", 0)
    framed = process_batch_columnar(records, book, now=now)
    assert isinstance(framed, FramedResult)
    monkeypatch.setattr(pipeline, "READ_FRAMES", False)
    assembled = process_batch_columnar(records, book, now=now)
    assert not isinstance(assembled, FramedResult)
    assert list(framed.origins) == list(assembled.origins) and len(framed.origins) == 1_200
    assert list(framed.priced_messages()) == list(assembled.priced_messages())
    assert framed.priced == assembled.priced and framed.keys_in_order == assembled.keys_in_order
    framed.priced[b"team:t1"][0] = b'{"changed":1}'
    assert list(framed.priced_messages())[1][1].startswith(b'[{"changed":1},')



def test_a_framed_result_is_freed_without_the_cyclic_gc(book, monkeypatch):
    """The pricing step runs with the cyclic GC off (pipeline.py): a result in a reference cycle would keep its
    batch's columns (~10 MB per chunk) alive until the next collection."""
    import gc
    import weakref

    from streams.columnar import pipeline, process_batch_columnar
    from streams.columnar.framed import FramedResult

    monkeypatch.setattr(pipeline, "FRAME_MIN_BYTES", 0)
    records = [RawRecord(orjson.dumps([_common(i) for i in range(300)]), "tokenmeter.usage", 0, 1)]
    collecting = gc.isenabled()
    gc.disable()
    try:
        result = process_batch_columnar(records, book)
        assert isinstance(result, FramedResult)
        list(result.priced_messages())
        freed = weakref.ref(result)
        del result
        assert freed() is None
    finally:
        if collecting:
            gc.enable()


def _common(i: int, **extra) -> dict:
    return {"event_id": f"c{i}", "ts": "2026-11-01T10:15:00.250000Z", "source": "t", "provider": "openai",
            "model": ["gpt-4o", "gpt-4o-mini", "no-such-model"][i % 3], "attribution": {"team": f"t{i % 4}", **extra},
            "usage": {"input_tokens": 1000 + i, "cached_input_tokens": i % 500, "output_tokens": 10}}


@pytest.mark.parametrize("read_frames,assembly", [(False, "_assemble_written"), (True, "FramedResult")])
def test_a_batch_of_common_events_is_assembled_at_once_and_byte_identical(book, monkeypatch, read_frames, assembly):
    """From dicts (validate.py) or read straight into a frame (frames.py)."""
    from streams.columnar import pipeline

    used = []
    original = getattr(pipeline, assembly)
    monkeypatch.setattr(pipeline, assembly, lambda *a: used.append(1) or original(*a))
    monkeypatch.setattr(pipeline, "READ_FRAMES", read_frames)
    monkeypatch.setattr(pipeline, "FRAME_MIN_BYTES", 0)
    events = [_common(i) for i in range(1_500)]
    records = [RawRecord(orjson.dumps(events[i:i + 500]), "tokenmeter.usage", i % 3, i) for i in range(0, 1_500, 500)]
    assert compare_batch(records, book) == []
    assert used  # the fast assembly ran (every row written from columns, no letters)


def test_a_too_large_event_in_a_common_batch_is_still_its_dead_letter(book):
    from streams.batch import MAX_PRICED_EVENT_BYTES

    events = [_common(i) for i in range(10)]
    events[4]["attribution"] = {"team": "t0", "tags": {"blob": "x" * (MAX_PRICED_EVENT_BYTES + 10)}}
    records = [RawRecord(orjson.dumps(events), "tokenmeter.usage", 0, 7)]
    assert compare_batch(records, book) == []


def test_money_text_is_decimal_format_of_pico_dollars():
    """frame_price._money_text (polars' Decimal(38, 12) text since inproc14; before, a slice of 10**12 + the
    fraction) against Decimal's text for amounts, the rounding's edges and large ones up to 2**63 - 1 included. An
    amount is never negative (token counts, prices, multipliers and request fees are validated non-negative); were one
    to be, it gets Decimal's exact text too (before inproc14 it got the floor division's "-1.999999999999" for -1
    pico, which this test pinned)."""
    from decimal import Decimal

    from streams.columnar.frame_price import _money_text

    rng = random.Random(13)
    picos = [0, 1, 9, 10, 10**12 - 1, 10**12, 10**12 + 1, 5 * 10**11, 10**18, 2**59, 2**63 - 1]
    picos += [rng.randrange(10**17) for _ in range(5_000)] + [rng.randrange(10**12) for _ in range(5_000)]
    picos += [rng.randrange(2 ** rng.randrange(1, 64)) for _ in range(20_000)]
    texts = pl.select(_money_text(pl.lit(pl.Series(picos, dtype=pl.Int64)))).to_series().to_list()
    assert texts == [format(Decimal(p).scaleb(-12).quantize(Decimal("1e-12")), "f") for p in picos]
    negative = [-1, -(10**12), -(10**12) - 7, -(10**15), -(2**63 - 1)]
    assert pl.select(_money_text(pl.lit(pl.Series(negative, dtype=pl.Int64)))).to_series().to_list() == [
        "-0.000000000001", "-1.000000000000", "-1.000000000007", "-1000.000000000000", "-9223372.036854775807"]
