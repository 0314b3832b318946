"""The equivalence of the two batch paths as an Arrow worker runs them (the default: pyarrow loaded, Arrow messages):
the Arrow messages compared by key, schema and rows, and batches whose event times all have one shape, so that the
numpy check of a chunk's times (streams/columnar/uniform_ts.py) is taken where it should be and refused where not.
The main corpus never reached that check (its batches mix a dozen time forms)."""

import dataclasses

import pyarrow  # noqa: F401 - an Arrow worker's process: the Arrow time paths are taken
import pytest

import streams.columnar.frame_price as frame_price
from streams.columnar.corpus import Corpus
from streams.columnar.corpus_times import FORMS, uniform_records
from streams.columnar import process_batch_columnar
from streams.columnar.equivalence import _priced_at, arrow_rows, compare, run
from streams.pricing import load_price_book
from tokenmeter.priced_wire import ARROW

pytestmark = pytest.mark.slow(seconds=20)  # rough seconds: longest files first (tests/suite_order.py)


@pytest.fixture(scope="module")
def book():
    return load_price_book()


@pytest.fixture
def uniform_calls(monkeypatch):
    """Whether each chunk's times were taken by the numpy check (True) or left to polars' expressions (False)."""
    calls: list[bool] = []
    real = frame_price.uniform_ts

    def counted(texts):
        out = real(texts)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(frame_price, "uniform_ts", counted)
    return calls


@pytest.mark.parametrize("form", list(FORMS))
def test_batches_of_one_time_shape_match_todays_path(book, uniform_calls, form):
    records = list(uniform_records(Corpus(book, 5), 1_200, form, seed=7))  # over FRAME_MIN_BYTES: a frame
    problems, result = compare(records, book, ARROW)
    assert problems == []
    assert result.priced_count > 800  # collector-written events: valid, mostly priced
    assert uniform_calls == [FORMS[form].startswith("taken")]


def test_randomised_corpus_with_arrow_messages_is_identical(book, uniform_calls):
    totals = run(6_000, book, batch_events=2_000, priced_format=ARROW)
    assert totals["mismatched_batches"] == 0, totals["problems"]
    assert totals["uniform_time_batches"] >= 1 and True in uniform_calls


def test_a_difference_in_an_arrow_message_is_seen(book):
    """The Arrow comparison is not vacuous: one output token more in one event changes its rows."""
    records = list(uniform_records(Corpus(book, 5), 200, "zulu", seed=3))
    value = records[0].value
    at = value.index(b'"output_tokens":') + len(b'"output_tokens":')
    changed = [dataclasses.replace(records[0], value=value[:at] + b"1" + value[at:]), *records[1:]]
    ours = process_batch_columnar(records, book, priced_format=ARROW)
    theirs = process_batch_columnar(changed, book, now=_priced_at(ours), priced_format=ARROW)
    assert arrow_rows(ours) != arrow_rows(theirs)
    assert [(k, s) for k, s, _ in arrow_rows(ours)] == [(k, s) for k, s, _ in arrow_rows(theirs)]
