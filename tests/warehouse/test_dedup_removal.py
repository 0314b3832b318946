"""Taking back demoted copies (cross-source dedup, warehouse/dedup.py `remove_demoted`) by signed rollup deltas.

A stored copy of a call that a preferred copy beats is deleted from the raw table and subtracted from every rollup by
the re-price's delta statements, instead of rebuilding every rollup of its hours. Here: on a randomised history
(attribution, tags, models, price entries, statuses, unpriced events, latencies, copies in other hours than their
winner, calls that share their event_id across sources, a day and a month boundary) every rollup equals a rebuild
from raw afterwards; a loser a merge folded into its winner is still taken out; a crash in any state the removal can
leave heals, on open or at the next removal, to exactly one count per call; and a gateway log taking the event_id of
an SDK event replaced earlier is counted (it was lost).

One warehouse for the module, every table emptied before each test (as tests/warehouse/test_warehouse_reprice.py):
lightweight DELETEs get slower with the parts earlier tests leave."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from crash_support import ROLLUP_TABLES, SimulatedCrash, crash_after_statement, empty_every_table, write_rebuilt_rollups
from tokenmeter.settings import Settings
from warehouse_template import empty_warehouse_in

pytestmark = pytest.mark.slow(seconds=43)  # rough seconds: longest files first (tests/suite_order.py)

FLOAT_MEASURES = ("latency_ms_sum", "ttft_ms_sum")  # Float64: equal to a rebuild up to rounding (docs/warehouse.md)
START = datetime(2025, 5, 31, 10, tzinfo=timezone.utc)  # 30 hours from here cross a day and a month


@pytest.fixture(scope="module")
def module_warehouse(tmp_path_factory):
    from warehouse import open_warehouse

    data_dir = empty_warehouse_in(tmp_path_factory.mktemp("dedup-removal"), tmp_path_factory)
    warehouse = open_warehouse(Settings(data_dir=data_dir, raw_retention_days=3650),
                               writer=True, serve=False)
    yield warehouse
    warehouse.close()


@pytest.fixture
def wh(module_warehouse):
    empty_every_table(module_warehouse)
    yield module_warehouse


MODELS = (("openai", "gpt-4o", "2024-08-06"), ("openai", "gpt-4o", "2024-11-20"), ("openai", "gpt-4o-mini", None),
          ("anthropic", "claude-sonnet-4", "2025-05-14"))
TAG_KEYS = ("env", "app", "run", "region")


def random_event(rng: random.Random, event_id: str, source: str, ts: datetime, org: str,
                 correlation: dict | None, provider: str | None = None) -> dict:
    """A priced (or unpriced) event with random attribution, tags, usage, status and latency; `provider`: the
    call's (its copies share it: it is part of the response-id key), else any."""
    provider, model, effective = rng.choice([m for m in MODELS if provider in (None, m[0])])
    priced = rng.random() < 0.85
    cost = format(Decimal(rng.randint(1, 5 * 10 ** 9)) / Decimal(10 ** 12), "f") if priced else "0"
    input_tokens, output_tokens = rng.randint(0, 200_000), rng.randint(0, 20_000)
    cached = rng.randint(0, input_tokens)
    attribution = {"org": org, "team": rng.choice(["search", "ads", "infra"]),
                   "tags": {key: rng.choice(["a", "b"]) for key in rng.sample(TAG_KEYS, rng.randint(0, 3))}}
    for dim, values in (("project", ["p1", "p2"]), ("user", ["u1", "u2", "u3"]), ("api_key", ["k1"]),
                        ("feature", ["chat", "rag"])):
        if rng.random() < 0.6:
            attribution[dim] = rng.choice(values)
    latency = rng.choice([None, round(rng.uniform(1, 9000), 3)])
    event = {"event_id": event_id, "ts": ts.isoformat(), "source": source, "provider": provider, "model": model,
             "status": rng.choice(["ok", "ok", "ok", "error"]), "attribution": attribution,
             "usage": {"input_tokens": input_tokens, "cached_input_tokens": cached,
                       "cache_write_tokens": rng.randint(0, input_tokens - cached), "output_tokens": output_tokens,
                       "reasoning_tokens": rng.randint(0, output_tokens)},
             "tokens_source": "provider", "cost_usd": cost, "pricing_status": "priced" if priced else "unpriced",
             "priced_at": ts.isoformat()}
    if latency is not None:
        event["latency_ms"] = latency
        if rng.random() < 0.7:
            event["ttft_ms"] = round(latency * rng.random(), 3)
    if priced:
        event["cost_breakdown"] = {"input": cost}
        event["price"] = {"entry": f"{provider}/{model}", "catalog_version": "t"} | (
            {"effective_from": effective} if effective else {})
    else:
        event["unpriced_reason"] = f"no price for {provider}/{model}"
    if correlation:
        event["correlation"] = correlation
    return event


_COLUMNS: dict[str, list[dict]] = {}


def rollups(wh, org: str, prefix: str = "") -> dict[str, list[tuple[dict, dict]]]:
    """Every rollup's rows of `org` (in the tables named `prefix` + rollup) summed per key (what readers see) as
    (keys and exact measures, Float64 sums); keys whose exact measures all sum to 0 are left out (deltas can leave
    such a key until a merge folds it, a rebuild never writes one)."""
    found = {}
    for table in ROLLUP_TABLES:
        if table not in _COLUMNS:
            _COLUMNS[table] = wh.query("SELECT name, is_in_sorting_key AS key FROM system.columns"
                                       " WHERE database = currentDatabase() AND table = {t:String} ORDER BY position",
                                       {"t": table}).to_dicts()
        columns = _COLUMNS[table]
        keys = [c["name"] for c in columns if c["key"]]
        measures = [c["name"] for c in columns if not c["key"]]
        exact = [m for m in measures if m not in FLOAT_MEASURES]
        sums = ", ".join(f"sum({m}) AS {m}" for m in measures)
        rows = wh.query(f"SELECT {', '.join(keys)}, {sums} FROM {prefix}{table} WHERE org = {{org:String}}"
                        f" GROUP BY {', '.join(keys)} HAVING {' OR '.join(f'{m} != 0' for m in exact)}"
                        f" ORDER BY {', '.join(keys)}", {"org": org}).to_dicts()
        found[table] = [({k: v for k, v in row.items() if k not in FLOAT_MEASURES},
                         {k: v for k, v in row.items() if k in FLOAT_MEASURES}) for row in rows]
    return found


def rebuilt(wh, org: str) -> dict[str, list[tuple[dict, dict]]]:
    """What a rebuild of every rollup from raw writes for `org` (crash_support.write_rebuilt_rollups)."""
    return rollups(wh, org, write_rebuilt_rollups(wh, org))


def assert_rollups_equal_a_rebuild(wh, org: str) -> None:
    """Every rollup of `org` as it is and as a rebuild from raw writes it: equal (money, counts and tokens exactly;
    latency sums to float rounding)."""
    kept, expected = rollups(wh, org), rebuilt(wh, org)
    for table in ROLLUP_TABLES:
        assert [exact for exact, _ in kept[table]] == [exact for exact, _ in expected[table]], table
        for (_, floats), (_, wanted) in zip(kept[table], expected[table]):
            assert floats == pytest.approx(wanted, rel=1e-9, abs=1e-6), table


def raw_vs_spend_hourly(wh, org: str) -> tuple[tuple, tuple]:
    raw = wh.query("SELECT count() AS n, toDecimal128(sum(cost_usd), 12) AS c FROM priced_events"
                   " WHERE org = {o:String}", {"o": org}).row(0)
    rollup = wh.query("SELECT toInt64(sum(events)) AS n, toDecimal128(sum(cost_usd), 12) AS c FROM spend_hourly"
                      " WHERE org = {o:String}", {"o": org}).row(0)
    return tuple(raw), tuple(rollup)


def record_statements(wh, monkeypatch) -> list[str]:
    statements: list[str] = []
    real_command = wh.backend.command
    monkeypatch.setattr(wh.backend, "command",
                        lambda sql, *args, **kwargs: statements.append(sql) or real_command(sql, *args, **kwargs))
    return statements


REBUILDS = tuple(f"DELETE FROM {table}" for table in ROLLUP_TABLES)  # what a rebuild of hours starts each rollup with


def test_removing_demoted_copies_leaves_every_rollup_as_a_rebuild_from_raw_would(wh, monkeypatch):
    """Calls seen as an SDK event, then (some) as an OTel span, then (some) as a gateway log, in several batches
    among events without correlation: each batch's demoted copies are subtracted by deltas (no rollup is rebuilt),
    each call ends counted once as its best copy, and every rollup equals a rebuild from raw."""
    rng = random.Random(2026)
    org = f"org-{uuid.uuid4().hex[:8]}"
    calls = []
    for i in range(120):
        ts = START + timedelta(seconds=rng.randint(0, 30 * 3600))
        response = f"chatcmpl-{org}-{i}"
        shared = rng.random() < 0.25  # LiteLLM and the SDK both use the response id as event_id
        provider = rng.choice(["openai", "anthropic"])
        copies = {
            "openai": random_event(rng, response if shared else f"sdk-{org}-{i}", "openai", ts, org,
                                   {"response_id": response}, provider),
            "otel": random_event(rng, f"span-{org}-{i}", "otel", ts + timedelta(seconds=rng.randint(-1800, 1800)),
                                 org, {"response_id": response}, provider),
            "litellm": random_event(rng, response if shared else f"gw-{org}-{i}", "litellm",
                                    ts + timedelta(seconds=rng.randint(-1800, 1800)), org, {"response_id": response},
                                    provider),
        }
        calls.append(copies)
    plain = [random_event(rng, f"plain-{org}-{i}", "kong", START + timedelta(seconds=rng.randint(0, 30 * 3600)), org,
                          None) for i in range(150)]
    spans = [call for call in calls if rng.random() < 0.4]
    gateways = [call for call in calls if rng.random() < 0.6]

    assert wh.insert_priced([call["openai"] for call in calls[:60]] + plain[:75]) == 135
    assert wh.insert_priced([call["openai"] for call in calls[60:]] + plain[75:]) == 135
    statements = record_statements(wh, monkeypatch)
    for first in range(0, len(spans), 25):
        wh.insert_priced([call["otel"] for call in spans[first:first + 25]])
    for first in range(0, len(gateways), 25):
        wh.insert_priced([call["litellm"] for call in gateways[first:first + 25]] + plain[first:first + 3])
    monkeypatch.undo()

    replaced = wh.query("SELECT count() AS n FROM cross_source_duplicates FINAL WHERE replaced = 1"
                        " AND position(duplicate_event_id, {o:String}) > 0", {"o": org}).row(0)[0]
    assert replaced == len(spans) + len(gateways) > 40  # a span replaced its SDK event, a gateway log either
    assert not [sql for sql in statements if sql.startswith(REBUILDS)], "a rollup was rebuilt"
    batches = -(-len(spans) // 25) - (-len(gateways) // 25)
    assert sum(sql.startswith("INSERT INTO spend_hourly (") for sql in statements) == batches >= 4  # one delta each
    counted = {(r[0], r[1]) for r in wh.query("SELECT event_id, source FROM priced_events WHERE org = {o:String}"
                                              " AND source != 'kong'", {"o": org}).rows()}
    expected = set()
    for call in calls:
        best = call["litellm"] if call in gateways else call["otel"] if call in spans else call["openai"]
        expected.add((best["event_id"], best["source"]))
    assert counted == expected
    raw, rollup = raw_vs_spend_hourly(wh, org)
    assert raw == rollup and raw[0] == len(calls) + len(plain)
    assert_rollups_equal_a_rebuild(wh, org)


@pytest.mark.parametrize("when", ["before the removal", "after a crash"])
def test_a_loser_folded_into_its_winner_by_a_merge_is_still_taken_out(wh, monkeypatch, when):
    """LiteLLM and the SDK both use the response id as event_id, so the stored SDK event and the gateway log that
    replaces it share the raw table's sorting key (hour, org, team, event_id): a merge between the winner's insert
    and the loser's removal (here OPTIMIZE ... FINAL) folds the two rows into the newest, the winner, while the
    rollups count both. Before the removal: the loser's row was captured before the winner was stored, so it is
    subtracted (no rebuild). After a crash there: its hours were marked pending, and the heal rebuilds them from raw.
    Either way the call is counted once."""
    from warehouse import dedup
    from warehouse.store import heal_cross_source_demotions

    rng = random.Random(3)
    org = f"org-{uuid.uuid4().hex[:8]}"
    response = f"chatcmpl-{org}"
    sdk = random_event(rng, response, "openai", START, org, {"response_id": response}, "openai")
    gateway = random_event(rng, response, "litellm", START, org, {"response_id": response}, "openai")
    gateway["attribution"]["team"] = sdk["attribution"]["team"]
    gateway["cost_usd"] = gateway["cost_breakdown"]["input"] = "0.004"
    assert wh.insert_priced([sdk]) == 1
    real_remove = dedup.remove_demoted

    def merge_then_remove(backend, *args, **kwargs):
        backend.command("OPTIMIZE TABLE priced_events FINAL")
        assert wh.query("SELECT source FROM priced_events WHERE org = {o:String}", {"o": org}).rows() == [
            ("litellm",)]
        assert raw_vs_spend_hourly(wh, org)[1][0] == 2  # the rollups still count the folded loser
        if when == "after a crash":
            raise RuntimeError("killed")
        return real_remove(backend, *args, **kwargs)

    monkeypatch.setattr(dedup, "remove_demoted", merge_then_remove)
    statements = record_statements(wh, monkeypatch)
    if when == "after a crash":
        with pytest.raises(RuntimeError, match="killed"):
            wh.insert_priced([gateway])
        monkeypatch.undo()
        with wh._insert_lock:
            assert heal_cross_source_demotions(wh.backend) == 1
    else:
        assert wh.insert_priced([gateway]) == 1
        monkeypatch.undo()
        assert not [sql for sql in statements if sql.startswith(REBUILDS)], "a rollup was rebuilt"
    assert raw_vs_spend_hourly(wh, org) == ((1, Decimal("0.004")), (1, Decimal("0.004")))
    assert_rollups_equal_a_rebuild(wh, org)


def test_a_gateway_log_taking_the_id_of_an_sdk_event_replaced_earlier_is_counted(wh):
    """The SDK event (event_id: the response id) is counted, then replaced by the OTel span; then the gateway log,
    whose event_id is the same response id, replaces the span. Before, the gateway log was skipped as a duplicate
    id (the SDK event's id is in priced_event_ids) while the span was taken out: the call was counted nowhere."""
    rng = random.Random(5)
    org = f"org-{uuid.uuid4().hex[:8]}"
    response = f"chatcmpl-{org}"
    copies = {source: random_event(rng, event_id, source, START, org, {"response_id": response}, "openai")
              for source, event_id in (("openai", response), ("otel", f"span-{org}"), ("litellm", response))}
    for source in ("openai", "otel", "litellm"):
        wh.insert_priced([copies[source]])
    counted = wh.query("SELECT event_id, source FROM priced_events WHERE org = {o:String}", {"o": org}).rows()
    assert counted == [(response, "litellm")]
    raw, rollup = raw_vs_spend_hourly(wh, org)
    assert raw == rollup == (1, Decimal(copies["litellm"]["cost_usd"]))
    assert_rollups_equal_a_rebuild(wh, org)


# Writes of a removal after which the crash test stops (the loader's delta table is `<staging>_demoted`), one per
# state a crash can leave: hours marked; rows captured; winners stored; losers' raw rows deleted; deltas half in;
# everything done but the intent log.
CRASH_POINTS = (
    "INSERT INTO rollup_rebuild_pending", "INSERT INTO cross_source_copies", "DELETE FROM rollup_insert_pending",
    "DELETE FROM priced_events", "INSERT INTO model_hourly", "TRUNCATE TABLE rollup_rebuild_pending",
)


@pytest.mark.parametrize("crash_after, heal", [(s, "reopen") for s in CRASH_POINTS]
                         + [(s, "next removal") for s in CRASH_POINTS[2:4]])
def test_a_crash_in_any_state_of_the_removal_heals(wh, monkeypatch, crash_after, heal):
    """Five calls stored as their SDK events among other events of their hours; their gateway logs arrive in one
    batch, whose removal of the five stops after `crash_after`. Healed as the owner does on open (the demotions,
    then the pending hours), or by the next batch that demotes a copy: each call is counted once, as its gateway
    log, in raw and every rollup (equal to a rebuild from raw), its SDK event kept in cross_source_copies, nothing
    left pending, and the batch delivered again changes nothing."""
    from warehouse.reprice import heal_pending_hours
    from warehouse.store import heal_cross_source_demotions

    rng = random.Random(crash_after)
    org = f"org-{uuid.uuid4().hex[:8]}"
    calls = []
    for i in range(6):
        response = f"chatcmpl-{org}-{i}"
        ts = START + timedelta(minutes=50 * i)
        calls.append({source: random_event(rng, f"{source}-{org}-{i}", source, ts, org, {"response_id": response},
                                           "openai") for source in ("openai", "litellm")})
    plain = [random_event(rng, f"plain-{org}-{i}", "kong", START + timedelta(minutes=17 * i), org, None)
             for i in range(20)]
    assert wh.insert_priced([call["openai"] for call in calls] + plain) == 26
    crash_after_statement(monkeypatch, wh.backend, crash_after)
    with pytest.raises(SimulatedCrash):
        wh.insert_priced([call["litellm"] for call in calls[:5]])
    monkeypatch.undo()

    if heal == "reopen":
        with wh._insert_lock:  # what the owner runs on open, before serving or loading
            heal_cross_source_demotions(wh.backend)
            heal_pending_hours(wh.backend)
    else:
        assert wh.insert_priced([calls[5]["litellm"]]) == 1  # demotes the sixth call's SDK event
    for pending in ("rollup_rebuild_pending", "cross_source_demotions_pending", "rollup_insert_pending"):
        assert wh.query(f"SELECT count() AS n FROM {pending}").row(0)[0] == 0, pending
    wh.insert_priced([call[source] for call in calls for source in ("litellm", "openai")])  # redelivered
    counted = wh.query("SELECT event_id FROM priced_events WHERE org = {o:String} AND source != 'kong'"
                       " ORDER BY event_id", {"o": org})["event_id"].to_list()
    assert counted == sorted(call["litellm"]["event_id"] for call in calls)
    kept = wh.query("SELECT event_id FROM cross_source_copies FINAL WHERE position(event_id, {o:String}) > 0"
                    " ORDER BY event_id", {"o": org})["event_id"].to_list()
    assert kept == sorted(call["openai"]["event_id"] for call in calls)
    cost = sum((Decimal(e["cost_usd"]) for e in [*plain, *(call["litellm"] for call in calls)]), Decimal(0))
    assert raw_vs_spend_hourly(wh, org) == ((26, cost), (26, cost))
    assert_rollups_equal_a_rebuild(wh, org)
