"""Cross-source dedup (issue 16) on a real chDB warehouse: one call seen by a gateway log, an OTel span and an
SDK event is stored and counted once, whichever order and however often they arrive; the copy counted is the
preferred source's (gateway > OTel > SDK by default, a setting), a stored copy that loses is taken out of the
totals (closed months: a correction); the winner is recorded and duplicates are reported per source pair; totals
(raw and rollups) stay exact; a re-price keeps the ids."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tokenmeter.settings import Settings
from warehouse_template import empty_warehouse_in

pytestmark = pytest.mark.slow(seconds=45)  # rough seconds: longest files first (tests/suite_order.py)

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
    return empty_warehouse_in(tmp_path_factory.mktemp("dedup"), tmp_path_factory)


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
    assert wh.insert_priced([call["otel"]]) == 1  # the span arrives first: counted, for now
    assert wh.insert_priced([call["litellm"], call["sdk"], call["otel"]]) == 1  # the gateway log replaces it
    assert wh.insert_priced([call["sdk"], call["litellm"]]) == 0  # redelivered: still once
    assert _team_totals(wh, team) == (1, Decimal("0.0035"), 1, Decimal("0.0035"))
    stored = wh.query("SELECT source, call_keys FROM priced_events WHERE team = {t:String}", {"t": team}).row(0)
    assert stored[0] == "litellm" and stored[1] == [f"response:openai:chatcmpl-{team}"]
    dups = wh.query("SELECT duplicate_source, winner_source, matched_key, replaced FROM cross_source_duplicates FINAL"
                    " WHERE winner_event_id = {w:String} ORDER BY duplicate_source", {"w": call["litellm"]["event_id"]})
    assert dups.rows() == [("openai", "litellm", f"response:openai:chatcmpl-{team}", 0),
                           ("otel", "litellm", f"response:openai:chatcmpl-{team}", 1)]
    pairs = {(r["winner_source"], r["duplicate_source"]): r for r in duplicates_by_source_pair(wh).iter_rows(named=True)}
    assert pairs[("litellm", "otel")]["duplicates"] >= 1 and pairs[("litellm", "openai")]["by_response_id"] >= 1


def test_same_batch_keeps_the_preferred_and_bridges_request_ids(wh):
    team = f"t{uuid.uuid4().hex[:6]}"
    response, request = f"msg_{team}", f"req-{team}"
    gateway = priced(f"kong-{team}", "kong", "0.5", {"request_id": request, "response_id": response}, team)
    gateway["provider"] = "anthropic"
    sdk = priced(f"sdk-{team}", "anthropic-sdk", "0.5", {"response_id": response}, team) | {"provider": "anthropic"}
    proxy = priced(f"proxy-{team}", "apisix", "0.5", {"request_id": request.upper()}, team)  # ids are case-blind
    other = priced(f"other-{team}", "kong", "0.25", {"request_id": f"req2-{team}"}, team)
    assert wh.insert_priced([sdk, gateway, other]) == 2  # in one batch: the gateway log wins over the SDK event
    # The proxy log is linked through the gateway log's request id; both are gateways (same rank): the tie goes
    # to the source name, so apisix replaces kong, whichever arrived first.
    assert wh.insert_priced([proxy]) == 1
    assert _team_totals(wh, team) == (2, Decimal("0.75"), 2, Decimal("0.75"))
    winners = wh.query("SELECT duplicate_event_id, winner_event_id FROM cross_source_duplicates FINAL"
                       " WHERE winner_source = 'apisix' AND winner_event_id = {w:String}"
                       " ORDER BY duplicate_event_id", {"w": proxy["event_id"]})
    assert winners["duplicate_event_id"].to_list() == [gateway["event_id"], sdk["event_id"]]


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
    from warehouse.dedup import duplicates_by_source_pair

    # what the module's earlier tests recorded: this test counts only its own call (it used to assume the first test
    # had run before it in the same warehouse, and failed when run alone or when xdist split the file)
    before = {(r["winner_source"], r["duplicate_source"]): r["duplicates"]
              for r in duplicates_by_source_pair(wh).iter_rows(named=True)}
    assert wh.insert_priced(priced_events) == 1
    assert wh.insert_priced(priced_events[::-1]) == 0  # replayed in another order: nothing new
    stored = wh.query("SELECT source, event_id FROM priced_events WHERE has(call_keys, {k:String})",
                      {"k": f"response:openai:{call_id}"}).rows()
    assert stored == [("litellm", call_id)]
    out = subprocess.run([sys.executable, "-m", "app", "dedup", "--format", "json"], capture_output=True, text=True,
                         env={"TOKENMETER_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    pairs = {(r["winner_source"], r["duplicate_source"]): r["duplicates"] for r in json.loads(out.stdout)}
    added = {pair: count - before.get(pair, 0) for pair, count in pairs.items() if count != before.get(pair, 0)}
    # one call, two copies taken back, the gateway the winner; the SDK event shares LiteLLM's id (the response id)
    # and is never a winner over it
    assert added == {("litellm", "otel"): 1, ("litellm", "openai"): 1}


# Source preference (issue 16 follow-up): the preferred copy wins whatever the arrival order, and a copy that
# links two stored events takes the loser's cost out of the totals. -------------------------------------------

COSTS = {"litellm": "0.004000000000", "otel": "0.003500000000", "openai": "0.003000000000"}


def linked_call(team: str, ts: datetime = NOW) -> dict[str, dict]:
    """One call seen three times: the SDK event knows only the response id, the OTel span only the request id,
    and the gateway log (LiteLLM) both, so only the gateway log links the other two. Costs differ by copy, so
    the totals show which copy was counted."""
    response, request = f"chatcmpl-{team}", f"req-{team}"
    copies = {
        "litellm": priced(f"gw-{team}", "litellm", COSTS["litellm"], {"response_id": response, "request_id": request},
                          team),
        "otel": priced(f"span-{team}", "otel", COSTS["otel"], {"request_id": request}, team),
        "openai": priced(f"sdk-{team}", "openai", COSTS["openai"], {"response_id": response}, team),
    }
    for copy in copies.values():
        copy["ts"] = copy["priced_at"] = ts.isoformat()
    return copies


def _all_rollups(wh, team: str) -> dict[str, tuple[int, Decimal]]:
    out = {}
    for table, events in (("spend_hourly", "events"), ("spend_daily", "events"), ("model_hourly", "requests"),
                          ("spend_hourly_tags", "events"), ("spend_daily_tags", "events")):
        row = wh.query(f"SELECT sum({events}) AS n, sum(cost_usd) AS c FROM {table} WHERE team = {{t:String}}",
                       {"t": team}).row(0)
        out[table] = (int(row[0] or 0), row[1] or Decimal(0))
    return out


def _assert_counted_once_as(wh, team: str, source: str) -> None:
    stored = wh.query("SELECT source, cost_usd FROM priced_events WHERE team = {t:String}", {"t": team}).rows()
    assert stored == [(source, Decimal(COSTS[source]))], stored
    for table, totals in _all_rollups(wh, team).items():
        if table.endswith("_tags"):
            continue  # the test events carry no tags
        assert totals == (1, Decimal(COSTS[source])), (table, totals)
    dups = wh.query("SELECT duplicate_source, winner_source FROM cross_source_duplicates FINAL"
                    " WHERE winner_event_id LIKE {p:String} OR duplicate_event_id LIKE {p:String}"
                    " ORDER BY duplicate_source", {"p": f"%-{team}"}).rows()
    assert dups == sorted((s, source) for s in COSTS if s != source), dups


ORDERS = list(__import__("itertools").permutations(["litellm", "otel", "openai"]))


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
def test_every_arrival_order_counts_the_call_once_from_the_preferred_source(wh, order):
    """One insert per copy (three loader batches), in each of the six orders: the gateway log is counted, once,
    in the raw table and every rollup; the other two are recorded as its duplicates."""
    team = f"o{uuid.uuid4().hex[:6]}"
    call = linked_call(team)
    for source in order:
        wh.insert_priced([call[source]])
    _assert_counted_once_as(wh, team, "litellm")
    for source in order[::-1]:  # redelivered after the replacement: nothing changes
        wh.insert_priced([call[source]])
    wh.insert_priced([call[s] for s in order])
    _assert_counted_once_as(wh, team, "litellm")


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
def test_every_order_inside_one_batch_counts_the_preferred_copy(wh, order):
    team = f"b{uuid.uuid4().hex[:6]}"
    call = linked_call(team)
    wh.insert_priced([call[s] for s in order])
    _assert_counted_once_as(wh, team, "litellm")


def test_the_preference_is_a_setting(wh, monkeypatch):
    """TOKENMETER_DEDUP_SOURCE_PREFERENCE names sources (or the groups gateway, otel, sdk) best first."""
    from warehouse.dedup import SourcePreference

    monkeypatch.setenv("TOKENMETER_DEDUP_SOURCE_PREFERENCE", '["sdk", "otel"]')
    settings = Settings()
    assert settings.dedup_source_preference == ["sdk", "otel"]
    monkeypatch.setattr(wh, "source_preference", SourcePreference(settings.dedup_source_preference))
    team = f"p{uuid.uuid4().hex[:6]}"
    call = linked_call(team)
    for source in ("litellm", "otel", "openai"):
        wh.insert_priced([call[source]])
    _assert_counted_once_as(wh, team, "openai")  # the gateway is not listed: it ranks after every listed source
    with pytest.raises(ValueError, match="empty"):
        SourcePreference(["otel", " "])


def test_a_late_preferred_copy_of_a_closed_month_becomes_a_correction(wh, tmp_path):
    """The SDK event of a call is in a closed month; the gateway log arrives after the close. The closed month's
    numbers do not move; the first open month carries the difference as a correction, and closed + corrections
    equal the live total (the gateway log's cost, once)."""
    from warehouse.export import month_bounds
    from warehouse.month_close import close_month, month_charges, month_of, next_month

    this_month = datetime.now(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    closed_month = month_of(this_month - timedelta(days=1))
    team = f"c{uuid.uuid4().hex[:6]}"
    call = linked_call(team, ts=this_month - timedelta(days=3))
    wh.insert_priced([call["openai"]])
    closes = tmp_path / "closes"
    close_month(wh, closes, closed_month)

    def team_cost(month: str, corrects: str) -> Decimal:
        rows = month_charges(wh, closes, month, *month_bounds(month), ["team"])
        return sum((Decimal(r["cost"]) for r in rows if r["team"] == team and r["corrects"] == corrects), Decimal(0))

    assert team_cost(closed_month, "") == Decimal(COSTS["openai"])
    wh.insert_priced([call["otel"], call["litellm"]])
    open_month = next_month(closed_month)
    assert team_cost(closed_month, "") == Decimal(COSTS["openai"])  # frozen
    correction = team_cost(open_month, closed_month)
    assert correction == Decimal(COSTS["litellm"]) - Decimal(COSTS["openai"])
    assert team_cost(closed_month, "") + correction == _all_rollups(wh, team)["spend_daily"][1] == Decimal(
        COSTS["litellm"])


def test_a_crash_before_the_loser_is_removed_heals_on_open(wh, monkeypatch):
    """The replacement writes its intent (the loser to remove) before the winner; a crash after the winner is
    stored and before the loser is deleted leaves both in the raw table; opening the warehouse (the same heal
    step) removes the loser, and the redelivered batch changes nothing."""
    from warehouse import dedup
    from warehouse.store import heal_cross_source_demotions

    team = f"k{uuid.uuid4().hex[:6]}"
    call = linked_call(team)
    wh.insert_priced([call["openai"]])

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(dedup, "remove_demoted", crash)
    with pytest.raises(RuntimeError, match="killed"):
        wh.insert_priced([call["litellm"]])
    monkeypatch.undo()
    assert wh.query("SELECT count() AS n FROM priced_events WHERE team = {t:String}", {"t": team})["n"][0] == 2
    with wh._insert_lock:
        heal_cross_source_demotions(wh.backend)
    wh.insert_priced([call["litellm"], call["openai"], call["otel"]])  # the redelivery
    _assert_counted_once_as(wh, team, "litellm")


def test_the_report_counts_copies_taken_back(wh):
    from warehouse.dedup import duplicates_by_source_pair

    team = f"r{uuid.uuid4().hex[:6]}"
    call = linked_call(team)
    wh.insert_priced([call["openai"]])
    wh.insert_priced([call["otel"]])  # no key in common with the SDK event yet: counted too, for now
    wh.insert_priced([call["litellm"]])  # links both: both copies are taken back
    pairs = {(r["winner_source"], r["duplicate_source"]): r for r in duplicates_by_source_pair(wh).iter_rows(named=True)}
    assert pairs[("litellm", "openai")]["replaced"] >= 1 and pairs[("litellm", "otel")]["replaced"] >= 1


# A changed source preference (issue 16 left-over): copies already recorded as losers are not lost to it. -------

OTEL_FIRST = ["otel", "gateway", "sdk"]


def test_a_recorded_loser_delivered_again_follows_a_changed_preference(wh, monkeypatch):
    """Decided under gateway > otel > sdk (the gateway log counted, the span and the SDK event recorded as
    losers); the preference becomes otel > gateway > sdk. Before: the redelivered span stayed a loser, so the
    gateway log stayed counted. Now the span is counted, once (raw and every rollup), the gateway log is taken out
    (recorded as replaced, winner: the span) and the SDK event points to the span."""
    from warehouse.dedup import SourcePreference

    team = f"v{uuid.uuid4().hex[:6]}"
    call = linked_call(team)
    wh.insert_priced([call["litellm"], call["otel"], call["openai"]])
    _assert_counted_once_as(wh, team, "litellm")
    monkeypatch.setattr(wh, "source_preference", SourcePreference(OTEL_FIRST))
    wh.insert_priced([call["otel"]])
    _assert_counted_once_as(wh, team, "otel")
    replaced = wh.query("SELECT replaced FROM cross_source_duplicates FINAL WHERE duplicate_event_id = {e:String}",
                        {"e": call["litellm"]["event_id"]})["replaced"].to_list()
    assert replaced == [1]
    wh.insert_priced([call["litellm"], call["openai"], call["otel"]])  # redelivered again: nothing moves
    _assert_counted_once_as(wh, team, "otel")
    monkeypatch.undo()  # and back: the gateway log, kept as a copy, is counted again when redelivered
    wh.insert_priced([call["litellm"]])
    _assert_counted_once_as(wh, team, "litellm")


def test_reapply_re_decides_stored_calls_under_the_current_preference(wh, monkeypatch):
    """`dedup.reapply` (the `tokenmeter dedup reapply --from` command) delivers again the kept copies that now
    outrank their call's counted copy: every call of the window is counted once, as its span; a second run finds
    nothing to do; the window's cost moves by exactly the difference of the counted copies."""
    from warehouse.dedup import SourcePreference, reapply

    moment = NOW - timedelta(hours=3)  # a window of this test's calls alone
    teams = [f"a{uuid.uuid4().hex[:6]}" for _ in range(3)]
    calls = [linked_call(team, ts=moment) for team in teams]
    for call in calls:  # in three arrival orders
        wh.insert_priced([call["openai"]])
        wh.insert_priced([call["litellm"], call["otel"]])
    since, until = moment - timedelta(minutes=1), moment + timedelta(minutes=1)
    monkeypatch.setattr(wh, "source_preference", SourcePreference(OTEL_FIRST))
    dry = reapply(wh, since, until, dry_run=True)
    assert dry.outranking == 3 and dry.revived == 0 and dry.missing_rows == 0
    for team in teams:
        _assert_counted_once_as(wh, team, "litellm")  # a dry run changes nothing
    done = reapply(wh, since, until)
    assert done.revived == done.outranking == 3
    assert done.events_after == done.events_before
    assert done.cost_before - done.cost_after == done.revived * (Decimal(COSTS["litellm"]) - Decimal(COSTS["otel"]))
    for team in teams:
        _assert_counted_once_as(wh, team, "otel")
    again = reapply(wh, since, until)
    assert again.outranking == 0 and again.revived == 0


def test_a_loser_recorded_before_migration_0018_is_not_rebuilt_by_reapply_but_by_a_redelivery(wh, monkeypatch):
    """Before migration 0018 a copy not counted left no row: a loser skipped at load was never stored, and a
    replaced copy's raw row was deleted (its id stays in priced_event_ids, its keys in call_keys); its
    cross_source_duplicates record holds ids, source, matched key, provider, model and its cost, not its tokens,
    attribution or price. So `dedup reapply` cannot rebuild such a copy from the warehouse (nothing would say whose
    call it was): it counts it as missing and changes nothing. Delivered again from its source (the collector
    re-reading the log, a Kafka replay), the copy is decided under the current preference and counted."""
    from warehouse.dedup import SourcePreference, reapply

    moment = NOW - timedelta(hours=5)  # a window of this test's call alone
    team = f"m{uuid.uuid4().hex[:6]}"
    call = linked_call(team, ts=moment)
    wh.insert_priced([call["litellm"], call["otel"], call["openai"]])
    _assert_counted_once_as(wh, team, "litellm")
    span = call["otel"]
    # as in a warehouse whose losers were recorded before 0018: no kept row for the span
    wh.backend.command("DELETE FROM cross_source_copies WHERE event_id = {e:String}".replace(
        "{e:String}", "'" + span["event_id"] + "'"))
    monkeypatch.setattr(wh, "source_preference", SourcePreference(OTEL_FIRST))
    since, until = moment - timedelta(minutes=1), moment + timedelta(minutes=1)
    done = reapply(wh, since, until)
    assert done.outranking == 1 and done.missing_rows == 1 and done.revived == 0
    assert (done.events_after, done.cost_after) == (done.events_before, done.cost_before)
    _assert_counted_once_as(wh, team, "litellm")
    wh.insert_priced([span])  # the span delivered again from its source
    _assert_counted_once_as(wh, team, "otel")


def test_reapply_in_a_closed_month_books_a_correction_in_the_first_open_month(wh, monkeypatch, tmp_path):
    """The call is in a closed month, counted as its gateway log; reapplied under otel first, the closed month's
    numbers do not move, the first open month carries the difference (span − gateway log) as a correction, and
    closed + correction = the live total, one call counted once."""
    from warehouse.dedup import SourcePreference, reapply
    from warehouse.export import month_bounds
    from warehouse.month_close import close_month, month_charges, month_of, next_month

    this_month = datetime.now(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    closed_month = month_of(this_month - timedelta(days=1))
    team = f"m{uuid.uuid4().hex[:6]}"
    call = linked_call(team, ts=this_month - timedelta(days=2))
    wh.insert_priced([call["openai"], call["otel"], call["litellm"]])
    closes = tmp_path / "closes"
    close_month(wh, closes, closed_month)

    def team_cost(month: str, corrects: str) -> Decimal:
        rows = month_charges(wh, closes, month, *month_bounds(month), ["team"])
        return sum((Decimal(r["cost"]) for r in rows if r["team"] == team and r["corrects"] == corrects), Decimal(0))

    assert team_cost(closed_month, "") == Decimal(COSTS["litellm"])
    monkeypatch.setattr(wh, "source_preference", SourcePreference(OTEL_FIRST))
    assert reapply(wh, this_month - timedelta(days=3), this_month).revived >= 1
    _assert_counted_once_as(wh, team, "otel")
    assert team_cost(closed_month, "") == Decimal(COSTS["litellm"])  # frozen
    correction = team_cost(next_month(closed_month), closed_month)
    assert correction == Decimal(COSTS["otel"]) - Decimal(COSTS["litellm"])
    assert team_cost(closed_month, "") + correction == _all_rollups(wh, team)["spend_daily"][1] == Decimal(
        COSTS["otel"])


def test_dedup_reapply_command(wh, data_dir, monkeypatch):
    """`tokenmeter dedup reapply --from DATE` under TOKENMETER_DEDUP_SOURCE_PREFERENCE: a dry run from another
    process reads through the owner's endpoint; the run itself in this process (the test owns the warehouse, as
    the command must); `tokenmeter dedup` still reports the pairs."""
    import json

    from click.testing import CliRunner

    from warehouse.dedup_cli import dedup

    team = f"c{uuid.uuid4().hex[:6]}"
    call = linked_call(team)
    wh.insert_priced([call["otel"], call["litellm"], call["openai"]])
    env = {"TOKENMETER_DATA_DIR": str(data_dir), "TOKENMETER_DEDUP_SOURCE_PREFERENCE": json.dumps(OTEL_FIRST)}
    day = NOW.date().isoformat()
    import subprocess
    import sys

    reader = subprocess.run([sys.executable, "-m", "app", "dedup", "reapply", "--from", day, "--dry-run", "--format",
                             "json"], capture_output=True, text=True, timeout=120,
                            env={**env, "PATH": "/usr/bin:/bin"})  # another process: reads through the endpoint
    assert reader.returncode == 0, reader.stderr
    assert json.loads(reader.stdout)["outranking"] >= 1 and json.loads(reader.stdout)["dry_run"]
    dry = CliRunner().invoke(dedup, ["reapply", "--from", day, "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "otel > gateway > sdk" in dry.output and "dry run" in dry.output
    _assert_counted_once_as(wh, team, "litellm")
    done = CliRunner().invoke(dedup, ["reapply", "--from", day, "--format", "json"], env=env)
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["revived"] >= 1
    _assert_counted_once_as(wh, team, "otel")
    bad = CliRunner().invoke(dedup, ["reapply", "--from", "last tuesday"], env=env)
    assert bad.exit_code == 2 and "--from" in bad.output
    pairs = CliRunner().invoke(dedup, ["--format", "json", "--days", "2"], env=env)
    assert pairs.exit_code == 0 and json.loads(pairs.output), pairs.output


def test_a_changed_preference_between_copies_sharing_their_event_id(wh, monkeypatch):
    """LiteLLM and the SDK both use the provider's response id as their event_id: under sdk first, the SDK event
    (same event_id as the counted gateway log) is counted instead, once; back to the default, the gateway log
    (whose id the SDK event now holds in the key table) is counted again."""
    from warehouse.dedup import SourcePreference

    team = f"s{uuid.uuid4().hex[:6]}"
    response = f"chatcmpl-{team}"
    gateway = priced(response, "litellm", "0.004", {"response_id": response}, team)
    sdk = priced(response, "openai", "0.003", {"response_id": response}, team)

    def counted() -> list[tuple]:
        raw = wh.query("SELECT source, cost_usd FROM priced_events WHERE team = {t:String}", {"t": team}).rows()
        assert _team_totals(wh, team)[2:] == (len(raw), sum((r[1] for r in raw), Decimal(0)))  # rollup = raw
        return raw

    wh.insert_priced([sdk, gateway])
    assert counted() == [("litellm", Decimal("0.004"))]
    monkeypatch.setattr(wh, "source_preference", SourcePreference(["sdk", "gateway"]))
    wh.insert_priced([sdk])
    assert counted() == [("openai", Decimal("0.003"))]
    monkeypatch.undo()
    wh.insert_priced([gateway, sdk])
    assert counted() == [("litellm", Decimal("0.004"))]
