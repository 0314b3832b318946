"""Conformance corpus (issue 12): payloads from public gateway/SDK sources, metered and priced end to end.

Every case in `expected.yaml` names a payload file under `payloads/`, where it comes from (repository, path,
commit), and what it must meter to and cost, with the arithmetic from the provider's published prices written
next to it. The payload goes through the collectors' own entry point (`collectors.parse_record`, dialect
auto-detected, exactly as every collector mode calls it), then through the worker's per-event step
(`streams.enrich.price_event` with the bundled catalog). Usage is compared field by field, cost exactly
(Decimal). A case with `dead_letter:` must be refused with a DialectError whose reason contains that text.

Docs often print a gateway log entry with its envelope elided (`...`); such a case gives `add_fields:` (e.g.
`started_at`), merged into the top level of the payload, so the payload file holds only what the source shows.

Provider responses carry no timestamp of their own (Anthropic, Gemini), so a case may give `ts:`; the payload
is then sent in the documented wrapper `{"tokenmeter": {"ts": ...}, "response": <payload>}` so the price in
force on that date applies, whatever day the test runs. `tokenmeter:` adds other documented wrapper fields (e.g.
`provider: vertex_ai` for a Gemini response captured from Vertex AI).

`assumption:` is the usage_assumption the event must carry (a log that leaves billed tokens out, a LiteLLM payload
whose cache convention cannot be settled); without it the event must carry none.

An event whose provider reports its cost (OpenRouter's usage.cost) gives `reported_cost_usd:` (the amount the
payload reports, the cost of record), `breakdown:` (every cost line, including `reported_difference` or
`reported`) and `check:` (text the event's reported_cost_check contains).

An expected event with `unpriced:` must come out unpriced with a reason containing that text (cost 0), e.g. a
Bedrock application inference profile, whose ARN does not name the model.

`xfail:` marks a known defect being fixed elsewhere (strict: the mark must be removed once the fix lands).
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from collectors import DialectError, parse_record
from collectors.decode import decode
from streams.enrich import price_event
from streams.pricing import load_price_book

HERE = Path(__file__).parent
# read at collection, i.e. in every xdist worker: libyaml's safe loader parses the 128 KB in 0.024 CPU-s, the
# pure-Python one in 0.18 (the same documents; streams/pricing/catalog.py reads the price catalog the same way)
CASES: list[dict[str, Any]] = yaml.load((HERE / "expected.yaml").read_bytes(),
                                        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))["cases"]
USAGE_FIELDS = {"input": "input_tokens", "cached": "cached_input_tokens", "cache_write": "cache_write_tokens",
                "cache_write_1h": "cache_write_1h_tokens", "output": "output_tokens", "reasoning": "reasoning_tokens"}
MIN_PAYLOADS = 60
PROVENANCE = ("repo", "path", "commit", "url")


def _params():
    for case in CASES:
        marks = []
        if case.get("xfail"):
            marks.append(pytest.mark.xfail(strict=True, reason=case["xfail"]))
        yield pytest.param(case, id=case["name"], marks=marks)


def _record(case: dict[str, Any]) -> Any:
    raw = (HERE / "payloads" / case["payload"]).read_text()
    if "add_fields" in case:  # the source elides the log envelope ("..."); the case says what it supplies
        return decode(raw) | case["add_fields"]
    meta = dict(case.get("tokenmeter") or {})
    if "ts" in case:
        meta["ts"] = str(case["ts"])
    return {"tokenmeter": meta, "response": decode(raw)} if meta else raw


def _expected_usage(expected: dict[str, int]) -> dict[str, int]:
    unknown = set(expected) - set(USAGE_FIELDS)
    assert not unknown, f"unknown usage keys {unknown}"
    return {USAGE_FIELDS[key]: expected.get(key, 0) for key in USAGE_FIELDS}


@pytest.fixture(scope="module")
def book():
    return load_price_book()


def test_corpus_is_complete_and_sourced():
    names = [case["name"] for case in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    assert len({case["payload"] for case in CASES}) >= MIN_PAYLOADS
    for case in CASES:
        source = case.get("source") or {}
        assert all(source.get(key) for key in PROVENANCE), f"{case['name']}: provenance needs {PROVENANCE}"
        assert len(source["commit"]) == 40, f"{case['name']}: commit must be a full SHA"
        assert (HERE / "payloads" / case["payload"]).is_file(), case["payload"]
        assert ("dead_letter" in case) != ("events" in case), f"{case['name']}: give events or dead_letter"
        for event in case.get("events", []):
            assert "cost_usd" in event and "arithmetic" in event, f"{case['name']}: cost and its arithmetic"
            Decimal(str(event["cost_usd"]))


@pytest.mark.parametrize("case", list(_params()))
def test_payload_meters_and_prices_exactly(case, book):
    record = _record(case)
    if "dead_letter" in case:
        with pytest.raises(DialectError) as refused:
            parse_record(record)
        assert case["dead_letter"] in str(refused.value)
        return
    events = parse_record(record)
    assert len(events) == len(case["events"])
    for event, expected in zip(events, case["events"]):
        assert event.event_id, "every event has an idempotency key (a payload with an empty id gets a derived one)"
        if "model" in expected:
            assert event.model == expected["model"]
        if "provider" in expected:
            assert event.provider == expected["provider"]
        assert event.usage_assumption == expected.get("assumption"), "usage read under an assumption (or not)"
        priced = price_event(event, book)
        got = {field: getattr(priced.usage, field) for field in USAGE_FIELDS.values()}
        assert got == _expected_usage(expected["usage"])
        if "unpriced" in expected:
            assert priced.pricing_status == "unpriced" and expected["unpriced"] in (priced.unpriced_reason or "")
            continue
        assert priced.pricing_status == "priced", priced.unpriced_reason
        assert priced.cost_usd == Decimal(str(expected["cost_usd"])), dict(priced.cost_breakdown)
        reported = expected.get("reported_cost_usd")
        assert event.reported_cost_usd == (None if reported is None else Decimal(str(reported)))
        if "breakdown" in expected:
            assert dict(priced.cost_breakdown) == {k: Decimal(str(v)) for k, v in expected["breakdown"].items()}
        if "check" in expected:
            assert expected["check"] in (priced.reported_cost_check or "")
        else:
            assert priced.reported_cost_check is None


@pytest.mark.parametrize("case", [c for c in CASES if not c.get("xfail")], ids=lambda c: c["name"])
def test_the_entry_points_batch_form_writes_the_same_bytes(case):
    """The file, HTTP and Kafka-bridge collectors parse with `encoded=True` (each format's fast path for its
    common shape, the per-entry parser for the rest): every sourced payload gives the same canonical bytes, or the
    same dead letter, as the model path the case above checks. A RAG-injector entry once took Kong's fast path
    and lost its embedding event."""
    from collectors.sink import encode_batches

    import re

    today = re.compile(rb'"ts":"' + datetime.now(timezone.utc).strftime("%Y-%m-%d").encode() + rb'T[^"]*"')

    def outcome(encoded: bool):  # a payload without a time is stamped on arrival: that instant differs per call
        try:
            return [(key, today.sub(b'"ts":"<arrival>"', value))
                    for key, value in encode_batches(parse_record(_record(case), encoded=encoded))], None
        except DialectError as exc:
            return None, exc.reason

    assert outcome(True) == outcome(False)
