"""`warehouse.fast_rows.fast_row` (the loader's and re-price's row builder without pydantic) gives exactly the
row pydantic's path gives, and leaves every event it cannot prove valid to pydantic, whose error text stays the
dead letter's reason."""

from __future__ import annotations

import copy
import itertools
import random

import orjson
import pytest

from streams.batch import process_batch
from streams.columnar.corpus import Corpus
from streams.pricing import load_price_book
from warehouse.fast_rows import fast_row
from warehouse.schema import RowError, event_to_row, validated_row


@pytest.fixture(scope="module")
def priced() -> list[dict]:
    """Priced events as the worker writes them, from the columnar equivalence corpus (every usage kind, tier,
    attribution shape, unpriced reason, tool requests, usage assumptions)."""
    book = load_price_book()
    records = list(itertools.islice(Corpus(book, 5).records(6000), 400))
    result = process_batch(records, book)
    return [orjson.loads(e) for events in result.priced.values() for e in events]


def outcome(function, item):
    try:
        return ("row", function(item))
    except RowError as exc:
        return ("error", str(exc))


def test_worker_output_takes_the_fast_path_with_identical_rows(priced):
    assert len(priced) > 1000
    taken = 0
    for item in priced:
        row = fast_row(item)
        if row is not None:
            taken += 1
            assert row == validated_row(item), item["event_id"]
    assert taken >= 0.95 * len(priced)


MUTATIONS = {
    "ts": ["2026-01-01T00:00:00", "2026-01-01T00:00:00.1234567Z", "2026-01-01 00:00:00Z", "2019-12-31T23:59:59Z",
           "2999-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T10:00:00+25:00",
           "2026-01-01T10:00:00.5-03:30", "2026-01-01T10:00:00+0100", 1767225600, None, "", "now"],
    "event_id": ["", "x" * 513, "x" * 512, 5, None, "ü\u2028\"\\"],
    "source": ["", 1, None], "provider": ["", ["openai"]], "model": ["", 3.5],
    "operation": [None, 7, ""], "status": ["OK", None, "error", True],
    "attribution": [None, [], {"team": 5}, {"tags": None}, {"tags": {"a": 1}}, {"tags": {}}, {"bogus": "x"},
                    {"team": "", "org": None}, {"route": "/v1"}],
    "usage": [None, {}, {"input_tokens": -1}, {"input_tokens": True}, {"input_tokens": 1.0},
              {"input_tokens": "5"}, {"input_tokens": 10**12 + 1}, {"input_tokens": 10, "cached_input_tokens": 11},
              {"output_tokens": 1, "reasoning_tokens": 2}, {"cache_write_tokens": 2, "cache_write_1h_tokens": 3,
                                                            "input_tokens": 5},
              {"input_tokens": 1, "tool_requests": {"web_search": 0}},
              {"input_tokens": 1, "tool_requests": {"web_search": 2, "file_search": 0}},
              {"input_tokens": 1, "tool_requests": {"telepathy": 1}}, {"input_tokens": 1, "tool_requests": []},
              {"input_tokens": 1, "tool_requests": {"web_search": 100_001}}, {"input_tokens": 1, "extra": 1}],
    "latency_ms": [-1, -0.0, float("inf"), float("nan"), "12", True, 2**60, 12, 1e300, None],
    "ttft_ms": [0, 0.5, "x"],
    "batch": ["true", 1, None, True],
    "service_tier": [5, "", "flex"], "usage_assumption": ["", "a" * 201, 3, "a" * 200],
    "tokens_source": ["guess", None, "estimated"],
    "cost_usd": ["1e-5", "-0.1", "1234567.0", "0.1234567890123", "NaN", "1.", ".5", 0.5, 1, " 1", "٣",
                 "999999.999999999999", "0", None],
    "cost_breakdown": [None, [], {"input": "x"}, {"input": 0.1}, {"input": "0.1", "output": "1e3"}, {},
                       {"reported_difference": "-0.004012000000"}, {"reported_difference": "-0"}, {"x": "--1"},
                       {"x": "-1000000"}, {"x": "+1"}, {"x": "-0.0000000000001"}],
    "pricing_status": ["free", None, "unpriced"],
    "unpriced_reason": [5, "", "no price"],
    "price": [{}, {"entry": 5}, {"entry": "a", "bogus": 1}, {"entry": "a", "override": 3}, [], "x",
              {"entry": "a"}],
    "priced_at": ["2026-01-01T00:00:00", "yesterday", 0, "2026-01-01T00:00:00.1234567", None],
    "content": [{"prompt": "hi"}, None],
    "reported_cost_usd": ["0.003500000000", "0", "999999.999999999999", "1000000", "-0.1", "1e-3", "00.5", " 0.1",
                          "0.1234567890123", "NaN", "", 0.0035, 2, True, [], None],
    "reported_cost_check": ["matches the catalog (openai/gpt-4o)", "", 5, None, ["x"]],
    "correlation": [None, {}, {"response_id": None}, {"span_id": "00f067aa0ba902b7", "trace_id": "4bf92f35" * 4},
                    {"response_id": " chatcmpl-1 ", "request_id": "REQ-1"}, {"trace_id": "0" * 32, "span_id": "1"},
                    {"request_id": "x" * 256}, {"request_id": "x" * 257}, {"span_id": "é" * 32}, {"span_id": "é" * 33},
                    {"trace_id": ""}, {"trace_id": 5}, {"response_id": True}, {"other": "x"}, [], "chatcmpl-1"],
    "bogus": [1],
}


def test_hostile_variants_match_pydantic_row_or_error(priced):
    rng = random.Random(14)
    base = [e for e in priced if fast_row(e) is not None]
    checked = 0
    for field, values in MUTATIONS.items():
        for value in values:
            for item in rng.sample(base, 3):
                mutated = copy.deepcopy(item)
                mutated[field] = value
                assert outcome(event_to_row, mutated) == outcome(validated_row, mutated), (field, value)
                del mutated[field]
                assert outcome(event_to_row, mutated) == outcome(validated_row, mutated), (field, "missing")
                checked += 1
    assert checked > 350
    for item in ([], "x", None, 5, {"event_id": "only"}):
        assert outcome(event_to_row, item) == outcome(validated_row, item)


def test_events_with_correlation_ids_or_a_reported_cost_take_the_fast_path(priced):
    """OTel/LiteLLM events (correlation ids) and OpenRouter events (reported cost) as the worker writes them."""
    correlated = [e for e in priced if e.get("correlation") is not None]
    reported = [e for e in priced if "reported_cost_usd" in e]
    assert len(correlated) > 100 and len(reported) > 10
    refused = 0
    for item in correlated + reported:
        expected = outcome(validated_row, item)
        if expected[0] == "error":  # the corpus's hostile rows (e.g. a $7.5M cost): refused, never a fast row
            assert fast_row(item) is None, item["event_id"]
            refused += 1
            continue
        row = fast_row(item)
        assert row is not None and row == expected[1], item["event_id"]
    assert refused <= len(correlated + reported) // 50
