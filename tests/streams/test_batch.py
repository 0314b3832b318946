"""The worker's per-batch step: validation, dead letters, pricing, chunking."""

from decimal import Decimal

import orjson
import pytest

from streams import load_book, price_event, process_batch
from streams.batch import MAX_EVENTS_PER_MESSAGE, RawRecord
from tokenmeter.events import UsageEvent
from tokenmeter.settings import load_settings


@pytest.fixture(scope="module")
def book():
    return load_book(load_settings())


def event(i: int, team: str = "search", hour: int = 10, **extra) -> dict:
    return {"event_id": f"e{i}", "ts": f"2026-11-01T{hour:02d}:15:00Z", "source": "t", "provider": "openai",
            "model": "gpt-4o", "attribution": {"team": team}, "usage": {"input_tokens": 1000, "output_tokens": 10},
            **extra}


def test_bad_records_become_dead_letters_with_reasons(book):
    records = [
        RawRecord(None, "tokenmeter.usage", 0, 1),
        RawRecord(b"{nope", "tokenmeter.usage", 0, 2),
        RawRecord(orjson.dumps([event(1), {**event(2), "ts": "yesterday"}]), "tokenmeter.usage", 1, 3),
        RawRecord(orjson.dumps({**event(3), "usage": None}), "tokenmeter.usage", 1, 4),  # nothing to meter
        RawRecord(orjson.dumps(5), "tokenmeter.usage", 1, 5),
    ]
    result = process_batch(records, book)
    reasons = [d["reason"] for d in result.deadletters]
    assert result.priced_count == 1 and len(reasons) == 5
    assert "tombstone" in reasons[0] and reasons[1].startswith("not JSON")
    assert reasons[2].startswith("invalid event: ts")
    assert reasons[3].startswith("cannot meter")
    assert reasons[4].startswith("invalid event")
    assert result.deadletters[2]["payload"]["event_id"] == "e2"  # the original record travels with the reason
    assert (result.deadletters[2]["partition"], result.deadletters[2]["offset"]) == (1, 3)


def test_unpriced_events_are_counted_never_as_money(book):
    batch = [event(20, "ads", 10), event(21, "ads", 10, model="no-such-model")]
    result = process_batch([RawRecord(orjson.dumps(batch), partition=2)], book)
    one = price_event(UsageEvent.model_validate(event(0)), book).cost_usd
    costs = [Decimal(orjson.loads(v)[i]["cost_usd"]) for _, v in result.priced_messages() for i in range(2)]
    assert result.priced_count == 2 and result.unpriced_count == 1 and costs == [one, Decimal(0)]


def test_priced_output_is_keyed_and_chunked(book):
    events = [event(i) for i in range(MAX_EVENTS_PER_MESSAGE + 7)] + [event(9999, "ads")]
    result = process_batch([RawRecord(orjson.dumps(events), partition=0)], book)
    messages = list(result.priced_messages())
    sizes = sorted((key, len(orjson.loads(value))) for key, value in messages)
    assert sizes == [(b"team:ads", 1), (b"team:search", 7), (b"team:search", MAX_EVENTS_PER_MESSAGE)]
    first = orjson.loads(messages[0][1])[0]
    assert first["tokens_source"] == "provider" and "content" not in first and isinstance(first["cost_usd"], str)


def test_limits_give_dead_letters_not_unsendable_messages(book):
    from streams.batch import MAX_EVENTS_PER_RECORD, MAX_MESSAGE_BYTES, MAX_PRICED_EVENT_BYTES

    from streams.columnar.corpus import padding_tags

    # every text is bounded (cap33, trust34): tags of 4-byte characters within the bounds still go over the limit
    huge = {**event(2), "attribution": {"team": "search", "tags": padding_tags(MAX_PRICED_EVENT_BYTES + 1)}}
    too_many = [event(i) for i in range(MAX_EVENTS_PER_RECORD + 1)]
    notes = {f"note{n}": "y" * 1000 for n in range(20)}  # 20 KB of tags, within the bounds
    wide = [{**event(i), "attribution": {"team": "search", "tags": notes}} for i in range(100)]
    result = process_batch([RawRecord(orjson.dumps([event(1), huge]), "u", 0, 1),
                            RawRecord(orjson.dumps(too_many), "u", 0, 2),
                            RawRecord(orjson.dumps(wide), "u", 0, 3)], book)
    reasons = [d["reason"] for d in result.deadletters]
    assert reasons[0].startswith("event too large") and "too many events in one message: 10001" in reasons[1]
    assert len(reasons) == 2 and result.priced_count == 1 + 100  # the record's other event and the wide ones
    messages = list(result.priced_messages())
    assert max(len(value) for _, value in messages) <= MAX_MESSAGE_BYTES  # 100 x 20 KB: cut by size, not count
    assert sum(len(orjson.loads(value)) for _, value in messages) == 101


def test_a_json_null_event_is_lettered_as_null_not_as_an_empty_tombstone(book):
    """walk29: a message `null` (or an array item null) was lettered with payload "" (0 bytes, the sha256 of
    nothing), so `deadletters show` showed an empty payload and `replay --dry-run` refused it as "no payload kept
    (a tombstone ...)": the letter did not hold the record. It keeps `null` now."""
    import hashlib

    records = [RawRecord(b"null", "tokenmeter.usage", 0, 1), RawRecord(b"[null]", "tokenmeter.usage", 0, 2),
               RawRecord(None, "tokenmeter.usage", 0, 3)]
    from streams.columnar.pipeline import process_batch_columnar

    letters = process_batch(records, book).deadletters
    assert [(d["payload"], d["payload_bytes"]) for d in process_batch_columnar(records, book).deadletters] == [
        ("null", 4), ("null", 4), ("", 0)]  # the worker's columnar path letters through the same step
    for letter in letters[:2]:
        assert (letter["payload"], letter["payload_bytes"]) == ("null", 4), letter
        assert letter["payload_sha256"] == hashlib.sha256(b"null").hexdigest()
    assert letters[2]["payload_bytes"] == 0 and "tombstone" in letters[2]["reason"]  # a real tombstone: nothing



def test_a_boolean_where_a_count_is_due_or_a_non_boolean_batch_flag_is_a_dead_letter(book):
    """hostile32: `batch: 1` or `"yes"` priced a call at batch rates (half price for gpt-4o), `input_tokens: true`
    counted one token: the gateway dialects refuse a boolean count ("expected an integer, got boolean"), the
    canonical contract coerced both silently. (A loop, not parametrize: test_batch_columnar runs this again.)"""
    cases = [("batch", 1), ("batch", "yes"), ("batch", "on"), ("batch", "false"),
             ("usage", {"input_tokens": True, "output_tokens": 10}), ("usage", {"input_tokens": 100, "output_tokens": False}),
             ("usage", {"input_tokens": 10, "tool_requests": {"web_search": True}}), ("latency_ms", True),
             ("ttft_ms", False)]
    for n, (field, value) in enumerate(cases):
        result = process_batch([RawRecord(orjson.dumps([event(1), event(2, **{field: value})]), "u", 0, n)], book)
        assert result.priced_count == 1 and len(result.deadletters) == 1, (field, value, result.deadletters)
        reason = result.deadletters[0]["reason"]
        assert reason.startswith("invalid event") and field in reason, reason


# Calls the warehouse cannot store (cap33): gpt-4o at $2.50 / 1M input, $10 / 1M output, $0.025 a web search.
OVER_LIMIT_USAGE = {
    "sum": {"input_tokens": 220_000_000_000, "output_tokens": 50_000_000_000},  # lines of 550,000 and 500,000 USD
    "line": {"output_tokens": 10**12},  # one line of 10,000,000 USD (too large for the columns' int64 lines)
    "fees": {"input_tokens": 200_000_000_000, "output_tokens": 49_950_000_000,  # 999,500 USD of tokens ...
             "tool_requests": {"web_search": 100_000}},  # ... + 2,500 USD of web searches
}


def test_a_call_costing_more_than_the_warehouse_stores_is_one_dead_letter_never_priced(book):
    """cap33: such a call was priced and sent: the budget owner counted it, the loader then lettered it, and budget
    and warehouse disagreed. The worker letters it now, naming the event, the amount and the limit. A reported cost
    under the limit whose catalog lines are over it is lettered too (its reported_difference line is over)."""
    from tokenmeter.stored_money import MAX_STORED_COST_USD

    over = [event(100 + n, usage=usage) for n, usage in enumerate(OVER_LIMIT_USAGE.values())]
    over.append(event(199, usage=OVER_LIMIT_USAGE["sum"], reported_cost_usd="10"))
    edge = event(200, usage={"output_tokens": 99_999_999_999})  # 999,999.99999 USD: stored, so priced
    batch = [event(1), *over, edge, event(2)]
    result = process_batch([RawRecord(orjson.dumps(batch), "tokenmeter.usage", 0, 7)], book)
    assert result.events_in == len(batch) and result.priced_count == 3, result.deadletters
    assert [e["event_id"] for _, _, e in result.origins] == ["e1", "e200", "e2"]  # nothing over the limit for budgets
    letters = result.deadletters
    assert [d["payload"]["event_id"] for d in letters] == ["e100", "e101", "e102", "e199"]
    for letter in letters:
        reason = letter["reason"]
        assert reason.startswith("cost too large: event 'e1") and "(openai/gpt-4o)" in reason, reason
        assert f"at or above {MAX_STORED_COST_USD} USD" in reason and "Decimal(18,12)" in reason, reason
        assert (letter["stage"], letter["partition"], letter["offset"]) == ("worker", 0, 7)
    assert "cost_usd 1050000.000000000000 USD" in letters[0]["reason"]
    assert "cost_usd 10000000.000000000000 USD" in letters[1]["reason"]
    assert "cost_usd 1002000.000000000000 USD" in letters[2]["reason"]
    assert "cost_breakdown.reported_difference -1049990.000000000000 USD" in letters[3]["reason"]
    stored = [orjson.loads(v) for _, v in result.priced_messages()][0]
    assert Decimal(stored[1]["cost_usd"]) == Decimal("999999.99999")


def hostile_attributions() -> dict[str, tuple[dict, str]]:
    """Attributions just over each bound (tokenmeter/events.py), with the reason's field and size (cap33)."""
    from tokenmeter.events import MAX_ATTRIBUTION_CHARS, MAX_TAG_KEY_CHARS, MAX_TAGS

    over = MAX_ATTRIBUTION_CHARS + 1
    return {
        "team": ({"team": "t" * over}, f"attribution.team: Value error, {over} characters, at most "
                                       f"{MAX_ATTRIBUTION_CHARS}"),
        "route": ({"team": "a", "route": "/r" * 600}, f"attribution.route: Value error, 1200 characters, at most "
                                                       f"{MAX_ATTRIBUTION_CHARS}"),
        "tags": ({"team": "a", "tags": {f"k{i}": "v" for i in range(MAX_TAGS + 1)}},
                 f"attribution.tags: Value error, {MAX_TAGS + 1} tags, at most {MAX_TAGS}"),
        "tag key": ({"team": "a", "tags": {"k" * (MAX_TAG_KEY_CHARS + 1): "v"}},
                    f"attribution.tags: Value error, a tag key of {MAX_TAG_KEY_CHARS + 1} characters"),
        "tag value": ({"team": "a", "tags": {"env": "v" * over}},
                      f"attribution.tags: Value error, tag 'env': a value of {over} characters, at most "
                      f"{MAX_ATTRIBUTION_CHARS}"),
    }


def test_attribution_values_and_tags_past_their_bounds_are_dead_letters_naming_field_size_and_limit(book):
    """cap33: nothing bounded the number of tags or the length of an attribution value: 10,000 tags per event (each
    a rollup row in spend_hourly_tags and spend_daily_tags) or a 200 KB team name were priced and stored. Past the
    contract's bounds an event is a dead letter naming the field, its size and the limit; at the bounds it is priced."""
    from tokenmeter.events import MAX_ATTRIBUTION_CHARS, MAX_TAG_KEY_CHARS, MAX_TAGS

    cases = hostile_attributions()
    at_bounds = {"team": "t" * MAX_ATTRIBUTION_CHARS, "user": "ü" * MAX_ATTRIBUTION_CHARS,
                 "tags": {**{f"k{i}": "v" for i in range(MAX_TAGS - 1)}, "k" * MAX_TAG_KEY_CHARS: "v" * MAX_ATTRIBUTION_CHARS}}
    batch = [event(1), *(event(10 + n, attribution=a) for n, (a, _) in enumerate(cases.values())),
             event(2, attribution=at_bounds)]
    result = process_batch([RawRecord(orjson.dumps(batch), "tokenmeter.usage", 0, 3)], book)
    assert result.priced_count == 2 and [e["event_id"] for _, _, e in result.origins] == ["e1", "e2"]
    reasons = [d["reason"] for d in result.deadletters]
    assert len(reasons) == len(cases)
    for reason, (_, expected) in zip(reasons, cases.values()):
        assert reason.startswith(f"invalid event: {expected}"), reason
