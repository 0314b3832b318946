"""Cross-source dedup (issue 16) on a real chDB warehouse: one call seen by a gateway log, an OTel span and an
SDK event is stored and counted once, whichever order and however often they arrive; the winner is recorded and
duplicates are reported per source pair; totals (raw and rollups) stay exact; a re-price keeps the ids."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tokenmeter.settings import Settings

NOW = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
TRACE, SPAN = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"


def priced(event_id: str, source: str, cost: str, correlation: dict | None, team: str) -> dict:
    event = {"event_id": event_id, "ts": NOW.isoformat(), "source": source, "provider": "openai", "model": "gpt-4o",
             "status": "ok", "attribution": {"team": team, "tags": {}},
             "usage": {"input_tokens": 1000, "output_tokens": 100}, "tokens_source": "provider", "cost_usd": cost,
             "cost_breakdown": {"input": cost}, "pricing_status": "priced",
             "price": {"entry": "openai/gpt-4o", "effective_from": "2024-08-06", "catalog_version": "t"},
             "priced_at": NOW.isoformat()}
    if correlation:
        event["correlation"] = correlation
    return event


def one_call(team: str, response: str) -> dict[str, dict]:
    """The same call as LiteLLM logs it (response id), as the OTel span records it (response id, trace, span)
    and as the SDK reports it (response id only)."""
    return {
        "litellm": priced(response, "litellm", "0.003500000000", {"response_id": response}, team),
        "otel": priced(f"{TRACE}:{SPAN}:{team}", "otel", "0.003500000000",
                       {"response_id": response, "trace_id": TRACE, "span_id": SPAN + team[:0]}, team),
        "sdk": priced(f"sdk-{response}", "openai", "0.003500000000", {"response_id": response}, team),
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("dedup")


@pytest.fixture(scope="module")
def wh(data_dir):
    from warehouse import open_warehouse

    warehouse = open_warehouse(Settings(data_dir=data_dir), writer=True)  # served: the CLI test reads through it
    yield warehouse
    warehouse.close()


def _team_totals(wh, team: str) -> tuple[int, Decimal, int, Decimal]:
    raw = wh.query("SELECT count() AS n, sum(cost_usd) AS c FROM priced_events WHERE team = {t:String}", {"t": team})
    rollup = wh.query("SELECT sum(events) AS n, sum(cost_usd) AS c FROM spend_hourly WHERE team = {t:String}",
                      {"t": team})
    return int(raw["n"][0]), raw["c"][0], int(rollup["n"][0] or 0), rollup["c"][0]


def test_one_call_from_three_sources_counts_once_in_any_order_and_redelivered(wh):
    from warehouse.dedup import duplicates_by_source_pair

    team = f"t{uuid.uuid4().hex[:6]}"
    call = one_call(team, f"chatcmpl-{team}")
    assert wh.insert_priced([call["otel"]]) == 1  # the span arrives first: it wins
    assert wh.insert_priced([call["litellm"], call["sdk"], call["otel"]]) == 0
    assert wh.insert_priced([call["sdk"], call["litellm"]]) == 0  # redelivered: still once
    assert _team_totals(wh, team) == (1, Decimal("0.0035"), 1, Decimal("0.0035"))
    stored = wh.query("SELECT source, call_keys FROM priced_events WHERE team = {t:String}", {"t": team}).row(0)
    assert stored[0] == "otel" and stored[1] == [f"response:openai:chatcmpl-{team}", f"span:{TRACE}:{SPAN}"]
    dups = wh.query("SELECT duplicate_source, winner_source, matched_key FROM cross_source_duplicates FINAL"
                    " WHERE winner_event_id = {w:String} ORDER BY duplicate_source", {"w": call["otel"]["event_id"]})
    assert dups.rows() == [("litellm", "otel", f"response:openai:chatcmpl-{team}"),
                           ("openai", "otel", f"response:openai:chatcmpl-{team}")]
    pairs = {(r["winner_source"], r["duplicate_source"]): r for r in duplicates_by_source_pair(wh).iter_rows(named=True)}
    assert pairs[("otel", "litellm")]["duplicates"] >= 1 and pairs[("otel", "openai")]["by_response_id"] >= 1


def test_same_batch_keeps_the_first_and_bridges_request_ids(wh):
    team = f"t{uuid.uuid4().hex[:6]}"
    response, request = f"msg_{team}", f"req-{team}"
    gateway = priced(f"kong-{team}", "kong", "0.5", {"request_id": request, "response_id": response}, team)
    gateway["provider"] = "anthropic"
    sdk = priced(f"sdk-{team}", "anthropic-sdk", "0.5", {"response_id": response}, team) | {"provider": "anthropic"}
    proxy = priced(f"proxy-{team}", "apisix", "0.5", {"request_id": request.upper()}, team)  # ids are case-blind
    other = priced(f"other-{team}", "kong", "0.25", {"request_id": f"req2-{team}"}, team)
    assert wh.insert_priced([sdk, gateway, other]) == 2  # in one batch: the SDK event first, the log is its copy
    assert wh.insert_priced([proxy]) == 0  # linked through the gateway log's request id, bridged to the SDK event
    assert _team_totals(wh, team) == (2, Decimal("0.75"), 2, Decimal("0.75"))
    winners = wh.query("SELECT duplicate_event_id, winner_event_id FROM cross_source_duplicates FINAL"
                       " WHERE winner_source = 'anthropic-sdk' AND winner_event_id = {w:String}"
                       " ORDER BY duplicate_event_id", {"w": sdk["event_id"]})
    assert winners["duplicate_event_id"].to_list() == [gateway["event_id"], proxy["event_id"]]


def test_events_without_correlation_and_lone_trace_ids_are_never_merged(wh):
    team = f"t{uuid.uuid4().hex[:6]}"
    plain = [priced(f"plain-{team}-{i}", "kong", "1", None, team) for i in range(2)]
    same_trace = [priced(f"span-{team}-{i}", "otel", "1", {"trace_id": TRACE}, team) for i in range(2)]  # one trace,
    zero_span = [priced(f"zero-{team}-{i}", "otel", "1", {"trace_id": "0" * 32, "span_id": "0" * 16}, team)
                 for i in range(2)]  # two calls; all-zero ids are invalid
    assert wh.insert_priced(plain + same_trace + zero_span) == 6
    assert _team_totals(wh, team)[0] == 6


def test_reprice_keeps_correlation_and_keys(wh):
    from warehouse.reprice import stored_row_to_event

    team = f"t{uuid.uuid4().hex[:6]}"
    call = one_call(team, f"chatcmpl-{team}")
    wh.insert_priced([call["litellm"]])
    row = wh.query("SELECT * FROM priced_events WHERE team = {t:String}", {"t": team}).row(0, named=True)
    event = stored_row_to_event(row)
    assert event.correlation is not None and event.correlation.response_id == f"chatcmpl-{team}"


def test_hostile_correlation_ids_are_refused_or_stored_verbatim(wh):
    from warehouse import WarehouseError

    team = f"t{uuid.uuid4().hex[:6]}"
    quote = priced(f"q-{team}", "kong", "1", {"request_id": "it's \\ \"odd\" \u0000 ü"}, team)
    assert wh.insert_priced([quote]) == 1
    assert wh.insert_priced([priced(f"q2-{team}", "otel", "1", {"request_id": "IT'S \\ \"ODD\" \u0000 Ü"}, team)]) == 0
    with pytest.raises(WarehouseError, match="correlation"):
        wh.insert_priced([priced(f"long-{team}", "kong", "1", {"request_id": "x" * 300}, team)])
    with pytest.raises(WarehouseError, match="correlation"):
        wh.insert_priced([priced(f"extra-{team}", "kong", "1", {"session": "s"}, team)])


def test_real_payloads_of_one_call_through_the_collectors_count_once(wh, data_dir):
    """Real transcribed payloads (tests/conformance/payloads: an OpenAI SDK chat completion, a LiteLLM
    StandardLoggingPayload, an OpenLIT OTel span), given the one response id of a single call (each source
    carries it: LiteLLM's `id`, the span's `gen_ai.response.id`, the SDK response's `id`), parsed by the
    collectors, priced by the worker's code, loaded: one row, two duplicates recorded with the gateway as winner;
    `tokenmeter dedup` reports them per source pair."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from collectors import parse_record
    from streams.enrich import price_event
    from streams.pricing import load_price_book

    payloads = Path(__file__).resolve().parents[1] / "conformance" / "payloads"
    sdk = json.loads((payloads / "openai" / "chat_gpt41_nano.json").read_text())
    gateway = json.loads((payloads / "litellm" / "v1_110_2_openai_cached.json").read_text())
    span = json.loads((payloads / "otel" / "openlit_gen_ai_system_openai.json").read_text())
    call_id = sdk["id"]
    gateway["id"] = call_id
    attrs = span["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
    next(a for a in attrs if a["key"] == "gen_ai.response.id")["value"]["stringValue"] = call_id
    book = load_price_book()
    priced_events = [price_event(event, book).to_json() for record in (gateway, span, sdk)
                     for event in parse_record(record)]
    assert [e["source"] for e in priced_events] == ["litellm", "otel", "openai"]
    for event in priced_events:  # one call, one moment (the transcriptions are from different days)
        event["ts"] = NOW.isoformat()
    assert wh.insert_priced(priced_events) == 1
    assert wh.insert_priced(priced_events[::-1]) == 0  # replayed in another order: nothing new
    stored = wh.query("SELECT source, event_id FROM priced_events WHERE has(call_keys, {k:String})",
                      {"k": f"response:openai:{call_id}"}).rows()
    assert stored == [("litellm", call_id)]
    out = subprocess.run([sys.executable, "-m", "app", "dedup", "--format", "json"], capture_output=True, text=True,
                         env={"TOKENMETER_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    pairs = {(r["winner_source"], r["duplicate_source"]): r["duplicates"] for r in json.loads(out.stdout)}
    assert pairs[("litellm", "otel")] == 1 and pairs[("litellm", "openai")] == 1
    assert pairs[("otel", "litellm")] == 1  # the first test's call: the span won there
    assert ("openai", "litellm") not in pairs  # the SDK event shares LiteLLM's id (the response id): not a winner
