"""The columnar batch path (streams/columnar) gives byte-identical results to today's `process_batch`: priced
events, dead letters (same reasons, same order), budget origins and counters."""

from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal

import orjson
import polars as pl
import pytest

from price_support import SELF_HOSTED_AND_ACME
from streams.batch import RawRecord, process_batch
from streams.columnar import process_batch_columnar
from streams.columnar.corpus import padding_tags
from streams.columnar.equivalence import compare_batch, fingerprint, run
from streams.columnar.price import _round_half_even, price_table
from streams.pricing import load_price_book

pytestmark = pytest.mark.slow(seconds=23)  # rough seconds: longest files first (tests/suite_order.py)

OVERRIDES = SELF_HOSTED_AND_ACME + """  - name: everyone-openai-2025
    providers: [openai]
    effective_from: 2025-01-01
    effective_until: 2026-01-01
    discount_percent: "12.5"
"""


@pytest.fixture(scope="module")
def book():
    return load_price_book()


def event(i: int, **extra) -> dict:
    return {"event_id": f"e{i}", "ts": "2026-11-01T10:15:00Z", "source": "t", "provider": "openai", "model": "gpt-4o",
            "attribution": {"team": "search"}, "usage": {"input_tokens": 1000, "output_tokens": 10}, **extra}


def test_randomised_corpus_is_byte_identical(book):
    """~20,000 events of every shape the worker sees (see streams/columnar/corpus.py), in 10,000-event batches."""
    totals = run(20_000, book, batch_events=10_000, seed=14)
    assert totals["mismatched_batches"] == 0, totals["problems"]
    assert totals["events"] >= 20_000 and totals["priced"] > 3000 and totals["unpriced"] > 3000
    assert totals["deadletters"] > 1000


def test_negotiated_rules_and_custom_models_are_byte_identical(tmp_path):
    path = tmp_path / "overrides.yaml"
    path.write_text(OVERRIDES)
    totals = run(5_000, load_price_book(overrides_path=path), batch_events=2_500, seed=3)
    assert totals["mismatched_batches"] == 0, totals["problems"]


def test_as_of_join_takes_the_version_in_force_to_the_microsecond(book):
    entry = book.entries["openai/gpt-4o"]
    start = entry.versions[-1].effective_from.astimezone(timezone.utc)
    just_before = start - timedelta(microseconds=1)
    events = [event(1, ts=start.isoformat().replace("+00:00", "Z")),
              event(2, ts=just_before.isoformat().replace("+00:00", "Z")),
              event(3, ts="2020-01-01T00:00:00Z")]  # the earliest accepted time, before any price: unpriced
    records = [RawRecord(orjson.dumps(events), "tokenmeter.usage", 0, 1)]
    assert compare_batch(records, book) == []
    priced = orjson.loads(process_batch_columnar(records, book).priced[b"team:search"][2])
    assert priced["pricing_status"] == "unpriced" and "in force at 2020-01-01T00:00:00+00:00" in priced[
        "unpriced_reason"]


@pytest.mark.parametrize("ts", ["2026-11-01T10:15:00.5Z", "2026-11-01T10:15:00+00:00", "2026-11-01T10:15:00.000000Z",
                                "2026-11-01T23:15:00-05:30", "2026-11-01T10:15:00.123-00:00", "2026-11-01 10:15:00Z",
                                "2026-11-01", 1762000000, "2026-02-30T00:00:00Z"])
def test_timestamps_are_written_back_like_pydantic(book, ts):
    records = [RawRecord(orjson.dumps([event(1, ts=ts)]), "tokenmeter.usage", 0, 1)]
    assert compare_batch(records, book) == []


def test_integer_half_even_rounding_matches_decimal_quantize():
    numerators = [0, 1, 4, 5, 6, 15, 25, 35, 12345, 12355, 10**17 + 5, 7656250]
    for divisor in (1, 10, 100, 1000, 10**6):
        got = pl.select(_round_half_even(pl.lit(pl.Series(numerators, dtype=pl.Int64)), pl.lit(divisor))).to_series()
        want = [int((Decimal(n) / divisor).quantize(Decimal(1), ROUND_HALF_EVEN)) for n in numerators]
        assert got.to_list() == want


def test_dead_letters_keep_their_order_between_record_and_event_failures(book):
    records = [
        RawRecord(orjson.dumps([event(1), {**event(2), "ts": "yesterday"}]), "tokenmeter.usage", 0, 1),
        RawRecord(None, "tokenmeter.usage", 0, 2),
        RawRecord(b"{nope", "tokenmeter.usage", 1, 3),
        RawRecord(orjson.dumps({**event(3), "usage": None}), "tokenmeter.usage", 1, 4),
        RawRecord(orjson.dumps(5), "tokenmeter.usage", 1, 5),
        RawRecord(orjson.dumps(event(4)), "tokenmeter.usage", 1, 6),
    ]
    assert compare_batch(records, book) == []
    reasons = [d["reason"] for d in process_batch_columnar(records, book).deadletters]
    assert [r.split(":")[0] for r in reasons] == [
        "invalid event", "empty message (tombstone) on the usage topic", "not JSON", "cannot meter", "invalid event"]


def test_compiled_table_is_built_once_per_book(book):
    assert price_table(book) is price_table(book)


def test_empty_and_all_bad_batches(book):
    now = datetime.now(timezone.utc)
    for records in ([], [RawRecord(None)], [RawRecord(orjson.dumps([]))]):
        a, b = process_batch(records, book), process_batch_columnar(records, book, now=now)
        assert fingerprint(a) == fingerprint(b)


def test_worker_takes_the_columnar_path_unless_told_otherwise(monkeypatch):
    from tokenmeter.settings import load_settings

    monkeypatch.delenv("TOKENMETER_WORKER_COLUMNAR", raising=False)
    assert load_settings().worker_columnar is True
    monkeypatch.setenv("TOKENMETER_WORKER_COLUMNAR", "false")
    assert load_settings().worker_columnar is False
    monkeypatch.setenv("TOKENMETER_WORKER_COLUMNAR", "true")
    assert load_settings().worker_columnar is True


@pytest.mark.parametrize("tools, ts", [
    ({"web_search": 3}, "2026-11-01T10:15:00Z"),  # $10 / 1,000 searches
    ({"web_fetch": 2, "web_search": 0}, "2026-11-01T10:15:00Z"),  # a $0 fee: no line; the zero count is dropped
    ({"web_search": 0}, "2026-11-01T10:15:00Z"),  # nothing left: tool_requests absent
    ({"grounding_queries": 1}, "2026-11-01T10:15:00Z"),  # no such fee for anthropic: unpriced, with the reason
    ({"web_search": 1}, "2025-01-01T00:00:00+02:00"),  # before the tool existed
    ({"web_search": 100_001}, "2026-11-01T10:15:00Z"),  # over the bound: dead letter naming the field
])
def test_tool_request_fees_match_todays_lines(book, tools, ts):
    ev = event(1, provider="anthropic", model="claude-sonnet-4-5", ts=ts,
               usage={"input_tokens": 1000, "output_tokens": 10, "tool_requests": tools})
    records = [RawRecord(orjson.dumps([ev, event(2)]), "tokenmeter.usage", 0, 1)]
    assert compare_batch(records, book) == []


def test_the_comparison_sees_one_pico_dollar(book):
    records = [RawRecord(orjson.dumps([event(1), event(2)]), "tokenmeter.usage", 0, 1)]
    old = process_batch(records, book)
    new = process_batch_columnar(records, book, now=datetime.fromisoformat(old.origins[0][2]["priced_at"]))
    assert fingerprint(old) == fingerprint(new)
    changed = orjson.loads(new.priced[b"team:search"][1])
    changed["cost_usd"] = format(Decimal(changed["cost_usd"]) + Decimal("1e-12"), "f")
    new.priced[b"team:search"][1] = orjson.dumps(changed)
    assert fingerprint(old) != fingerprint(new)


def _edges_of_the_contract() -> list[dict]:
    from tokenmeter.events import EARLIEST_EVENT_TS, MAX_EVENT_FUTURE, MAX_TOKENS

    def at(moment: datetime) -> str:
        return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

    latest = datetime.now(timezone.utc) + MAX_EVENT_FUTURE
    times = [EARLIEST_EVENT_TS - timedelta(microseconds=1), EARLIEST_EVENT_TS, latest - timedelta(minutes=5),
             latest + timedelta(minutes=5), datetime(2099, 1, 1, tzinfo=timezone.utc)]
    usages = [{"input_tokens": MAX_TOKENS, "output_tokens": 1}, {"input_tokens": MAX_TOKENS + 1},
              {"input_tokens": 1000, "output_tokens": MAX_TOKENS}, {"output_tokens": 2**64 - 1}]
    return ([event(i, ts=at(t)) for i, t in enumerate(times)]
            + [event(10 + i, usage=u, model=m) for i, u in enumerate(usages) for m in ("gpt-4o", "gpt-4o-mini")]
            + [event(30, usage_assumption="cache writes assumed in prompt"),
               event(31, attribution={"team": "t", "tags": padding_tags(300_000)})])  # bounded, too large


def test_edges_of_the_event_contract_match_todays_path(book):
    """Accepted ts range (both ends), MAX_TOKENS, usage assumptions and a priced event too large to send: every
    row the columnar path takes must be one today's path accepts with the same output, or take the per-row path."""
    records = [RawRecord(orjson.dumps(_edges_of_the_contract()), "tokenmeter.usage", 0, 1),
               RawRecord(orjson.dumps([{}] * 10_001), "tokenmeter.usage", 0, 2), RawRecord(None, "tokenmeter.usage", 0, 3)]
    assert compare_batch(records, book) == []
    result = process_batch_columnar(records, book)
    assert result.assumed_count == 1
    reasons = [d["reason"] for d in result.deadletters]
    assert sum("event time" in r for r in reasons) == 3 and sum("less than or equal to 1000000000000" in r
                                                                 for r in reasons) == 4
    assert any(r.startswith("event too large") for r in reasons)
    assert any(r.startswith("too many events in one message") for r in reasons)


@pytest.mark.parametrize("extra", [
    {"event_id": 'quote"and\\backslash'}, {"event_id": "tab\there\x01"}, {"source": "ünïcødé ☃ \u2028"},
    {"model": "gpt-4o\n"}, {"latency_ms": -0.0}, {"latency_ms": 0}, {"latency_ms": 1e16}, {"latency_ms": 1e15},
    {"latency_ms": 999999999999999.0}, {"latency_ms": 12.5}, {"ttft_ms": 1e-7}, {"ttft_ms": 2**53},
    {"usage_assumption": 'a "quoted" rule'}, {"service_tier": "flex\\"}, {"operation": "emb\x1fed"},
    {"attribution": {"team": 'sea"rch', "tags": {"k\n": "v\\"}}}, {"provider": "openrouter", "model": "no/such"},
    {"provider": "unknown\"", "model": "x"},
])
def test_priced_json_from_columns_matches_orjson_at_its_edges(book, extra):
    """encode.py writes the JSON text itself: escapes, float forms and unpriced reasons must be orjson's."""
    records = [RawRecord(orjson.dumps([event(i, **extra) for i in range(3)]), "tokenmeter.usage", 0, 1)]
    assert compare_batch(records, book) == []


CORRELATIONS = [
    {"response_id": "chatcmpl-AbC123", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"},
    {"span_id": "00f067aa0ba902b7", "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"},  # keys not in model order
    {"response_id": "msg_01XFDUDYJgAACzvnptvVoYEL"}, {}, None, {"response_id": None, "trace_id": "t"},
    {"request_id": "x" * 256}, {"trace_id": "é" * 64}, {"span_id": "☃" * 32}, {"response_id": "ünïcødé \u2028"},
]
HOSTILE_CORRELATIONS = [
    {"request_id": "x" * 257}, {"trace_id": "é" * 65}, {"span_id": "s" * 33}, {"response_id": ""},
    {"trace_id": 5}, {"span_id": ["a"]}, {"response_id": True}, {"request_id": {"id": "x"}}, {"other_id": "x"},
    {"response_id": "r", "extra": None}, [], "chatcmpl-1", 7, {"response_id": 'q"uote'},
    {"trace_id": "back\\slash"}, {"span_id": "tab\there\x01"},
]


@pytest.mark.parametrize("correlation", CORRELATIONS + HOSTILE_CORRELATIONS)
def test_correlation_matches_todays_path(book, correlation):
    """Cross-source ids (OTel spans, LiteLLM payloads): the same priced JSON, or the same dead letter, as today."""
    rows = [event(i, correlation=correlation) for i in range(3)] + [event(9)]
    rows[1]["service_tier"] = "flex"  # unpriced with a per-row reason: the dict path
    rows[2]["usage"]["tool_requests"] = {"web_search": 1}  # fee lines: the dict path
    records = [RawRecord(orjson.dumps(rows), "tokenmeter.usage", 0, 1)]
    assert compare_batch(records, book) == []


def test_valid_correlations_stay_on_the_columnar_path(book, monkeypatch):
    """Events with correlation ids are validated as columns and their priced JSON written from columns; only
    invalid ones take the per-row path (it words their dead letter)."""
    from streams.columnar.validate import split

    rows = [event(i, correlation=c) for i, c in enumerate(CORRELATIONS)]
    bad = [event(100 + i, correlation=c) for i, c in enumerate(HOSTILE_CORRELATIONS[:13])]
    columns, fallback = split(rows + bad, datetime.now(timezone.utc))
    assert columns.rows == list(range(len(rows)))
    assert fallback == list(range(len(rows), len(rows) + len(bad)))
    assert columns.correlation[3] == (None, None, None, None) and columns.correlation[4] is None
    assert columns.correlation[1] == (None, "req_011CSHoEeqs5C35K2UUqR7Fy", None, "00f067aa0ba902b7")

    records = [RawRecord(orjson.dumps(rows), "tokenmeter.usage", 0, 1)]
    process_batch_columnar(records, book)  # the catalog's texts are encoded once per compiled table
    dumps, calls = orjson.dumps, []
    monkeypatch.setattr(orjson, "dumps", lambda *args, **kwargs: calls.append(args) or dumps(*args, **kwargs))
    result = process_batch_columnar(records, book)
    assert result.priced_count == len(rows) and calls == []  # written from columns: no dict, no orjson per event


REPORTED_COSTS = ["0.0035", "0.0026", "0", "0.000000000001", "999999.999999999999", "12.5", "0.000123456789"]
REPORTED_COSTS_PER_ROW = ["0.00012345678901", "-0.1", "1000000", "1e-3", " 0.1", "0.1234567890123", "NaN", "Infinity", "00.5", "",
                          "٣", 0.0035, 1, True, None, [], {"usd": 1}]


@pytest.mark.parametrize("reported", REPORTED_COSTS + REPORTED_COSTS_PER_ROW)
def test_reported_cost_matches_todays_path(book, reported):
    """OpenRouter's reported cost: the cost of record, checked against the catalog (streams/pricing/reported.py),
    with the same lines, note and status as today, whether the catalog prices the row or not."""
    rows = [event(i, reported_cost_usd=reported, correlation={"response_id": f"gen-{i}"}) for i in range(6)]
    rows[1]["service_tier"] = "flex"  # unpriced by the catalog, with a price reference
    rows[2]["usage"]["tool_requests"] = {"web_search": 2}  # fee lines
    rows[2]["provider"], rows[2]["model"] = "anthropic", "claude-sonnet-4-5"
    rows[3]["model"] = "no-such-model"  # no catalog entry
    rows[4]["usage"] = {"output_tokens": 0}  # priced without lines: cost "0"
    rows[5]["ts"] = "2021-01-01T00:00:00Z"  # before any gpt-4o price
    records = [RawRecord(orjson.dumps(rows + [event(9)]), "tokenmeter.usage", 0, 1)]
    assert compare_batch(records, book) == []


def test_reported_costs_stay_on_the_columnar_path(book):
    from streams.columnar.validate import split

    rows = [event(i, reported_cost_usd=r) for i, r in enumerate(REPORTED_COSTS)]
    bad = [event(100 + i, reported_cost_usd=r) for i, r in enumerate(REPORTED_COSTS_PER_ROW) if r is not None]
    columns, fallback = split(rows + bad, datetime.now(timezone.utc))
    assert columns.rows == list(range(len(rows))) and len(fallback) == len(bad)
    assert columns.reported_cost[0] == Decimal("0.003500000000")


FLOAT_EDGES = [1234.567, 0.1 + 0.2, 1 / 3, 1e-4, 9.9999e-5, 1e-7, 5e-324, 999999999999999.9, 1e15 - 0.5, 1e15,
               123456789.12345678, 0.5, 2.5e-4]


@pytest.mark.parametrize("value", FLOAT_EDGES)
def test_non_integral_latencies_match_orjson(book, value):
    records = [RawRecord(orjson.dumps([event(1, latency_ms=value, ttft_ms=value / 7), event(2)]), "tokenmeter.usage",
                         0, 1)]
    assert compare_batch(records, book) == []


def test_otel_latencies_are_written_from_columns(book, monkeypatch):
    """OTel latencies are (end - start) / 1e6 in ms, rarely integral: written from columns like orjson writes them
    (polars' Float64 text is orjson's shortest round-trip text in [1e-4, 1e15)), not through a dict per event."""
    import random

    rng = random.Random(5)
    values = ([rng.randint(1, 10**12) / 1e6 for _ in range(3000)] + [10 ** rng.uniform(-3.5, 14.9)
                                                                    for _ in range(3000)])
    rows = [event(i, latency_ms=v, ttft_ms=rng.choice([None, v / 3])) for i, v in enumerate(values)]
    records = [RawRecord(orjson.dumps(rows[i:i + 500]), "tokenmeter.usage", 0, i) for i in range(0, len(rows), 500)]
    assert compare_batch(records, book) == []
    dumps, calls = orjson.dumps, []
    monkeypatch.setattr(orjson, "dumps", lambda *args, **kwargs: calls.append(args) or dumps(*args, **kwargs))
    assert process_batch_columnar(records, book).priced_count == len(rows) and calls == []
