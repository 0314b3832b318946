"""Re-pricing history: a dated price change applies by event time, raw rows and the hourly rollup agree.

Events are priced with an "old" catalog (one version) and stored; the "new" catalog adds a version effective
mid-day and a model the old one lacked. Each test starts from an empty warehouse (`wh` below): every re-price runs
lightweight DELETEs, whose cost grows with the parts a shared warehouse collects from earlier tests (a crash test
took 1.4 s on its own and up to 8 s after the others). The module opens one warehouse and empties every table before
each test (TRUNCATE drops the parts: 0.03 CPU-s, where opening a fresh one costs ~0.4 CPU-s and 36 tests do it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D
from pathlib import Path

import pytest

from streams import price_event
from streams.pricing import load_price_book
from tokenmeter.events import Attribution, Usage, UsageEvent
from crash_support import ROLLUP_TABLES, SimulatedCrash, crash_after_statement, empty_every_table
from tokenmeter.settings import Settings
from warehouse import WarehouseError, open_warehouse
from warehouse_owner import warehouse_owner
from warehouse_template import empty_warehouse_in

pytestmark = pytest.mark.slow(seconds=70)  # rough seconds: longest files first (tests/suite_order.py)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def module_warehouse(tmp_path_factory):
    """The module's one warehouse (chDB allows one path per process at a time). Not served: no other process reads
    it."""
    data_dir = empty_warehouse_in(tmp_path_factory.mktemp("reprice-data"), tmp_path_factory)
    warehouse = open_warehouse(Settings(data_dir=data_dir, load_flush_seconds=0.2,
                                        raw_retention_days=3650), writer=True, serve=False)
    yield warehouse
    warehouse.close()


@pytest.fixture
def wh(module_warehouse):
    empty_every_table(module_warehouse)
    yield module_warehouse


OLD_CATALOG = """
provider: acme
first_party: true
source: https://example.com/acme-pricing
models:
  meter-test:
    versions:
      - {effective_from: 2021-01-01, input: "1.00", output: "2.00"}
"""
# Same model with a price rise from noon on the test day, plus a model the old catalog did not know.
NEW_CATALOG = """
provider: acme
first_party: true
source: https://example.com/acme-pricing
models:
  meter-test:
    versions:
      - {{effective_from: 2021-01-01, input: "1.00", output: "2.00"}}
      - {{effective_from: "{noon}", input: "3.00", output: "5.00"}}
  meter-new:
    versions:
      - {{effective_from: 2021-01-01, input: "10.00", output: "0"}}
"""


_BOOKS: dict[datetime, tuple] = {}


def books(tmp_path: Path, day: datetime):
    """The old and the new book for `day`, their catalogs written under `tmp_path` (processes a test starts read
    them there). Built once per day for the file: each pair reads the whole bundled catalog (~0.6 CPU-s), and 14
    tests share one day; `load_price_book` shares books between callers the same way (its cache)."""
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    (old_dir / "acme.yaml").write_text(OLD_CATALOG)
    (new_dir / "acme.yaml").write_text(NEW_CATALOG.format(noon=(day + timedelta(hours=12)).isoformat()))
    if day not in _BOOKS:
        _BOOKS[day] = load_price_book(extra_paths=[old_dir]), load_price_book(extra_paths=[new_dir])
    return _BOOKS[day]


def priced_events(org: str, day: datetime, book) -> list[dict]:
    """(hour offset, model, input, output): old prices 1/2 USD per 1M, new from noon 3/5, meter-new 10/0."""
    specs = [
        ("before-noon", 10, "meter-test", 1000, 500),  # 0.002 -> 0.002 (old version still in force)
        ("after-noon", 12.5, "meter-test", 1000, 500),  # 0.002 -> 0.0055
        ("late", 23.9, "meter-test", 2000, 0),  # 0.002 -> 0.006
        ("new-model", 13, "meter-new", 1000, 0),  # unpriced -> 0.01
        ("next-day", 25, "meter-test", 1000, 500),  # outside [day, day+1): stays 0.002
    ]
    events = []
    for name, hours, model, input_tokens, output_tokens in specs:
        event = UsageEvent(
            event_id=f"{org}-{name}", ts=day + timedelta(hours=hours), source="test", provider="acme", model=model,
            attribution=Attribution(org=org, team="search", route="/v1/chat", tags={"env": "test"}),
            usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens), latency_ms=100.0,
        )
        events.append(price_event(event, book).to_json())
    return events


def totals(wh, org: str) -> dict:
    """Raw table and rollup, read directly and through the query layer (which picks each by the window)."""
    raw = wh.query(
        "SELECT toDecimal128(sum(cost_usd), 12) AS cost, count() AS events,"
        " countIf(pricing_status = 'unpriced') AS unpriced FROM priced_events WHERE org = {org:String}",
        {"org": org},
    ).to_dicts()[0]
    rollup = wh.query(
        "SELECT toDecimal128(sum(cost_usd), 12) AS cost, sum(events) AS events, sum(unpriced_events) AS unpriced,"
        " toInt64(sum(input_tokens)) AS input_tokens FROM spend_hourly WHERE org = {org:String}",
        {"org": org},
    ).to_dicts()[0]
    by_route = wh.spend(["route"], filters={"org": [org]})  # route is not in the rollup: raw table
    by_team = wh.spend(["team"], filters={"org": [org]})  # whole hours, rollup dims: rollup
    return {
        "raw": (raw["cost"], raw["events"], raw["unpriced"]),
        "rollup": (rollup["cost"], rollup["events"], rollup["unpriced"]),
        "rollup_input_tokens": rollup["input_tokens"],
        "query_raw": by_route["cost_usd"].to_list(),
        "query_rollup": by_team["cost_usd"].to_list(),
    }


OLD_TOTAL = D("0.008")  # four priced events at 0.002, one unpriced
NEW_TOTAL = D("0.0255")  # 0.002 + 0.0055 + 0.006 + 0.01, + 0.002 for the untouched next-day event


def test_reprice_applies_dated_prices_to_raw_and_rollup(wh, org, tmp_path):
    day = datetime(2021, 6, 1, tzinfo=timezone.utc)
    old_book, new_book = books(tmp_path, day)
    assert wh.insert_priced(priced_events(org, day, old_book)) == 5
    before = totals(wh, org)
    assert before["raw"] == before["rollup"] == (OLD_TOTAL, 5, 1)

    def reprice_fn(event):
        return price_event(event, new_book)

    dry = wh.reprice(day, day + timedelta(days=1), reprice_fn=reprice_fn, dry_run=True)
    assert (dry.events, dry.changed, dry.applied, dry.old_unpriced, dry.new_unpriced) == (4, 3, 0, 1, 0)
    assert (dry.old_total, dry.new_total, dry.difference) == (D("0.006"), D("0.0235"), D("0.0175"))
    assert totals(wh, org) == before  # a dry run writes nothing

    report = wh.reprice(day.isoformat(), day + timedelta(days=1), reprice_fn=reprice_fn)
    assert (report.events, report.changed, report.applied) == (4, 3, 3)
    assert report.new_total == D("0.0235")
    top = report.top_models()
    assert [(m.model, m.changed, m.old_cost, m.new_cost) for m in top] == [
        ("meter-new", 1, D(0), D("0.01")), ("meter-test", 2, D("0.006"), D("0.0135"))]
    assert D(report.to_json()["difference_usd"]) == D("0.0175")

    after = totals(wh, org)
    assert after["raw"] == after["rollup"] == (NEW_TOTAL, 5, 0)
    assert after["query_raw"] == after["query_rollup"] == [NEW_TOTAL]
    assert after["rollup_input_tokens"] == before["rollup_input_tokens"] == 6000  # tokens never change
    stored = wh.query(
        "SELECT event_id, cost_usd, tokens_source, pricing_status, price_effective_from FROM priced_events"
        " WHERE org = {org:String} ORDER BY event_id", {"org": org}).to_dicts()
    by_id = {row["event_id"].removeprefix(f"{org}-"): row for row in stored}
    assert by_id["after-noon"]["cost_usd"] == D("0.0055")
    assert by_id["after-noon"]["price_effective_from"].startswith("2021-06-01T12:00")
    assert by_id["next-day"]["cost_usd"] == D("0.002")
    assert by_id["new-model"]["pricing_status"] == "priced"
    assert {row["tokens_source"] for row in stored} == {"provider"}

    again = wh.reprice(day, day + timedelta(days=1), reprice_fn=reprice_fn)
    assert (again.changed, again.applied, again.old_total, again.new_total) == (0, 0, D("0.0235"), D("0.0235"))
    assert totals(wh, org) == after


def test_reprice_refuses_rows_that_change_more_than_the_price(wh, org, tmp_path, make_event):
    wh.insert_priced([make_event("x1", org, ts="2021-07-01T10:00:00Z", cost="0.5")])
    tampered = make_event("x1", org, ts="2021-07-01T10:00:00Z", cost="0.1", input_tokens=1)
    with pytest.raises(WarehouseError, match="do not match a stored event"):
        wh.apply_repriced_events([tampered])
    with pytest.raises(WarehouseError, match="since"):
        wh.reprice(None, reprice_fn=lambda event: None)
    raw = wh.spend(["route"], filters={"org": [org]})
    assert raw["cost_usd"].to_list() == [D("0.5")] == wh.spend(["team"], filters={"org": [org]})["cost_usd"].to_list()


def test_reprice_through_the_owners_endpoint(tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.setattr("warehouse.backends.MAX_BODY_BYTES", 1500)  # forces the reader to split its requests
    day = datetime(2021, 8, 1, tzinfo=timezone.utc)
    old_book, new_book = books(tmp_path, day)
    org = "remote-reprice"
    data_dir = empty_warehouse_in(tmp_path / "data", tmp_path_factory)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))  # the CLI child's
    with warehouse_owner(data_dir, priced_events(org, day, old_book)) as (_, stored):
        assert stored == 5
        # The owner prices with its own catalog (never a cost sent by the reader): the new prices are an import
        # in its data dir, which both sides read.
        owner_catalog = data_dir / "pricing" / "acme.yaml"
        owner_catalog.parent.mkdir(parents=True, exist_ok=True)
        owner_catalog.write_text(NEW_CATALOG.format(noon=(day + timedelta(hours=12)).isoformat()))
        reader = open_warehouse(Settings(data_dir=data_dir))
        try:
            assert reader.kind == "remote"
            report = reader.reprice(day, day + timedelta(days=1), reprice_fn=lambda e: price_event(e, new_book))
            assert (report.changed, report.applied, report.new_total) == (3, 3, D("0.0235"))
            after = totals(reader, org)
            assert after["raw"] == after["rollup"] == (NEW_TOTAL, 5, 0)
            assert reader.reprice(day, reprice_fn=lambda e: price_event(e, new_book)).changed == 1  # next day

            # The command line prices with the bundled catalog, which knows no `acme`: every event turns
            # unpriced (with a reason, never a silent $0) and the report shows it.
            owner_catalog.unlink()
            cli_env = dict(env, TOKENMETER_DATA_DIR=str(data_dir))
            command = [sys.executable, "-c", "from app.reprice_cli import reprice; reprice()",
                       "--since", day.date().isoformat()]
            # The dry run and the refused option in this process (click's runner, the same command and
            # environment; a CLI child costs ~0.9 CPU-s to start), the apply as a real process.
            from click.testing import CliRunner

            from app.reprice_cli import reprice as reprice_command

            cli_vars = {"TOKENMETER_DATA_DIR": str(data_dir)}
            dry = CliRunner().invoke(reprice_command, [*command[3:], "--dry-run", "--format", "json"], env=cli_vars)
            assert dry.exit_code == 0, dry.stderr
            shown = json.loads(dry.stdout)
            assert (shown["events"], shown["changed"], shown["applied"], shown["dry_run"]) == (5, 5, 0, True)
            everything_repriced = NEW_TOTAL - D("0.002") + D("0.0055")  # the next-day event too, just above
            assert (D(shown["old_total_usd"]), D(shown["new_total_usd"])) == (everything_repriced, 0)
            assert totals(reader, org)["raw"] == (everything_repriced, 5, 0)
            real = subprocess.run(command, capture_output=True, text=True, env=cli_env, timeout=120)
            assert real.returncode == 0, real.stderr
            assert "events changed    5 (5 event(s) rewritten)" in real.stdout
            assert "meter-new" in real.stdout and "-0.010000000000" in real.stdout
            assert "unpriced events   0 -> 5" in real.stdout
            after = totals(reader, org)
            assert after["raw"] == after["rollup"] == (0, 5, 5)
            bad = CliRunner().invoke(reprice_command, ["--since", "yesterday"], env=cli_vars)
            assert bad.exit_code == 2 and "--since" in bad.stderr
        finally:
            reader.close()


MODES = {"rebuild": 0.0, "deltas": 1.0}  # warehouse.reprice_apply.DELTA_SHARE: every apply rebuilds / adds deltas
_COLUMNS: dict[str, list[dict]] = {}


def rollups(wh, org: str, prefix: str = "") -> dict[str, list[dict]]:
    """Every rollup's rows of `org` (in the tables named `prefix` + rollup) summed per key (what readers see), keys
    whose measures all sum to 0 left out (a delta can leave such a key until a merge folds it; a rebuild never writes
    one)."""
    found = {}
    for table in ROLLUP_TABLES:
        if table not in _COLUMNS:  # the schema's, the same for the module
            _COLUMNS[table] = wh.query("SELECT name, is_in_sorting_key AS key FROM system.columns"
                                       " WHERE database = currentDatabase() AND table = {t:String} ORDER BY position",
                                       {"t": table}).to_dicts()
        keys = [c["name"] for c in _COLUMNS[table] if c["key"]]
        measures = [c["name"] for c in _COLUMNS[table] if not c["key"]]
        sums = ", ".join(f"sum({m}) AS {m}" for m in measures)
        rows = wh.query(f"SELECT {', '.join(keys)}, {sums} FROM {prefix}{table} WHERE org = {{org:String}}"
                        f" GROUP BY {', '.join(keys)} HAVING {' OR '.join(f'{m} != 0' for m in measures)}"
                        f" ORDER BY {', '.join(keys)}", {"org": org}).to_dicts()
        found[table] = rows
    return found


@pytest.mark.parametrize("mode", MODES)
def test_the_apply_leaves_every_rollup_as_a_rebuild_from_raw_would(wh, org, tmp_path, monkeypatch, mode):
    """The apply adds signed deltas to the rollups instead of rebuilding the touched hours: afterwards every rollup
    (hourly, tags, models, daily) equals what a rebuild of all of `org`'s hours from the raw table gives, for events
    whose cost changes, whose status changes (unpriced -> priced: two keys move), whose price version changes (a
    model_hourly key moves), with several tags, without latency, and over two days."""
    from warehouse.reprice import heal_pending_hours

    day = datetime(2021, 6, 1, tzinfo=timezone.utc)
    old_book, new_book = books(tmp_path, day)
    events = priced_events(org, day, old_book)
    for i, (hours, model, tags, latency) in enumerate([
            (13.2, "meter-test", {"env": "prod", "team": "x", "run": "7"}, None),
            (13.7, "meter-new", {}, 12.5), (14, "meter-test", {"env": "test"}, 250.0),
            (14.1, "meter-new", {"env": "test", "x": "y"}, None)]):
        event = UsageEvent(
            event_id=f"{org}-extra-{i}", ts=day + timedelta(hours=hours), source="test", provider="acme", model=model,
            status="error" if i == 2 else "ok",
            attribution=Attribution(org=org, team="search", user=f"u{i % 2}", tags=tags),
            usage=Usage(input_tokens=1000 + i, output_tokens=10 * i), latency_ms=latency, ttft_ms=latency,
        )
        events.append(price_event(event, old_book).to_json())
    assert wh.insert_priced(events) == len(events)
    before = rollups(wh, org)

    monkeypatch.setattr("warehouse.reprice_apply.DELTA_SHARE", MODES[mode])
    statements = []
    real_command = wh.backend.command
    monkeypatch.setattr(wh.backend, "command", lambda sql, *a, **k: statements.append(sql) or real_command(sql, *a, **k))
    report = wh.reprice(day, day + timedelta(days=2), reprice_fn=lambda event: price_event(event, new_book))
    assert report.changed == report.applied >= 6
    monkeypatch.undo()
    rebuilt = any(sql.startswith("INSERT INTO spend_hourly ") and " FROM priced_events WHERE " in sql for sql in statements)
    assert rebuilt == (mode == "rebuild")
    # Neither mode deletes rollup rows: a lightweight DELETE is a mutation of every part holding a touched hour, and
    # waits for chDB's background pool (reprice8: the rebuild inserts the hours' aggregation minus the stored rows).
    assert not [sql for sql in statements if sql.startswith(tuple(f"DELETE FROM {t}" for t in ROLLUP_TABLES))]
    after = rollups(wh, org)
    assert after != before and all(after[t] for t in ROLLUP_TABLES)

    # The heal corrects every pending hour's rollups to the raw aggregation, also without a DELETE mutation (suite29:
    # the five rollup DELETEs were most of a small heal's CPU): a stray rollup row (a copy of one) is taken out, and a
    # heal of rollups that are already right writes no row.
    wh.backend.command("INSERT INTO spend_hourly SELECT * FROM spend_hourly WHERE org = {org:String} LIMIT 1",
                       {"org": org})
    assert rollups(wh, org) != after
    mark_pending = ("INSERT INTO rollup_rebuild_pending (hour) SELECT DISTINCT toDateTime(toStartOfHour(ts), 'UTC')"
                    " FROM priced_events WHERE org = {org:String}")
    wh.backend.command(mark_pending, {"org": org})
    healed = []
    monkeypatch.setattr(wh.backend, "command", lambda sql, *a, **k: healed.append(sql) or real_command(sql, *a, **k))
    assert heal_pending_hours(wh.backend) > 2
    monkeypatch.undo()
    assert not [sql for sql in healed if sql.startswith(tuple(f"DELETE FROM {t}" for t in ROLLUP_TABLES))]
    assert rollups(wh, org) == after
    stored = "SELECT " + ", ".join(f"(SELECT count() FROM {t}) AS {t}" for t in ROLLUP_TABLES)
    rows = wh.query(stored).to_dicts()
    wh.backend.command(mark_pending, {"org": org})
    assert heal_pending_hours(wh.backend) > 2
    assert wh.query(stored).to_dicts() == rows and rollups(wh, org) == after


# Every write of an apply, in order, when it rebuilds the touched hours' rollups and when it adds deltas
# (warehouse.reprice_apply.DELTA_SHARE picks): the crash test stops right after each one in turn.
APPLY_STATEMENTS = (
    "INSERT INTO rollup_rebuild_pending", "INSERT INTO priced_events_staging_reprice_copies",
    "ALTER TABLE priced_events ATTACH PARTITION", "DELETE FROM priced_events",
)
REBUILD_STATEMENTS = ("INSERT INTO spend_hourly ", "INSERT INTO model_hourly", "INSERT INTO spend_daily ")
DELTA_STATEMENTS = ("INSERT INTO priced_events_staging_reprice_delta", "INSERT INTO spend_hourly",
                    "INSERT INTO model_hourly", "INSERT INTO spend_daily_tags")


@pytest.mark.parametrize("heal", ["reopen", "rerun"])
@pytest.mark.parametrize("mode, crash_after", [("rebuild", s) for s in APPLY_STATEMENTS + REBUILD_STATEMENTS]
                         + [("deltas", s) for s in APPLY_STATEMENTS + DELTA_STATEMENTS])
def test_reprice_heals_after_a_crash_between_statements(wh, org, tmp_path, monkeypatch, mode, crash_after, heal):
    from warehouse.reprice import heal_pending_hours

    monkeypatch.setattr("warehouse.reprice_apply.DELTA_SHARE", MODES[mode])
    day = datetime(2021, 6, 1, tzinfo=timezone.utc)
    old_book, new_book = books(tmp_path, day)
    assert wh.insert_priced(priced_events(org, day, old_book)) == 5
    crash_after_statement(monkeypatch, wh.backend, crash_after)
    with pytest.raises(SimulatedCrash):
        wh.reprice(day, day + timedelta(days=1), reprice_fn=lambda event: price_event(event, new_book))
    monkeypatch.undo()

    if heal == "reopen":
        heal_pending_hours(wh.backend)  # what the owner runs on open, before serving or loading
    else:
        again = wh.reprice(day, day + timedelta(days=1), reprice_fn=lambda event: price_event(event, new_book))
        stored = wh.query("SELECT uniqExact(event_id) AS n FROM priced_events WHERE ts >= {start:DateTime64(3, 'UTC')}"
                          " AND ts < {end:DateTime64(3, 'UTC')}",
                          {"start": day, "end": day + timedelta(days=1)}).to_dicts()[0]["n"]
        assert again.events == stored  # healed before planning: the plan never sees a duplicate copy
    # Healing never re-prices: a crash before the new rows reached priced_events leaves the old prices, consistently.
    old_prices = heal == "reopen" and crash_after in APPLY_STATEMENTS[:2]
    total, unpriced = (OLD_TOTAL, 1) if old_prices else (NEW_TOTAL, 0)
    after = totals(wh, org)
    assert after["raw"] == after["rollup"] == (total, 5, unpriced)
    assert after["query_raw"] == after["query_rollup"] == [total]
    assert after["rollup_input_tokens"] == 6000
    copies = wh.query("SELECT count() AS n, uniqExact(event_id) AS ids FROM priced_events WHERE org = {org:String}",
                      {"org": org}).to_dicts()[0]
    assert copies == {"n": 5, "ids": 5}
    assert wh.query("SELECT count() AS n FROM rollup_rebuild_pending").to_dicts()[0]["n"] == 0


KILLED_OWNER = """
import json, os, sys
from pathlib import Path
from streams import price_event
from streams.pricing import load_price_book
from tokenmeter.settings import Settings
from warehouse import open_warehouse
data_dir, events, new_dir, since, until = sys.argv[1:]
wh = open_warehouse(Settings(data_dir=data_dir, raw_retention_days=3650), writer=True)
assert wh.insert_priced(json.loads(events)) == 5
real_command = wh.backend.command

def command(sql, *args, **kwargs):
    result = real_command(sql, *args, **kwargs)
    if sql.startswith("ALTER TABLE priced_events ATTACH PARTITION"):
        os._exit(9)  # the process dies with both copies of the re-priced events in the raw table
    return result

wh.backend.command = command
book = load_price_book(extra_paths=[Path(new_dir)])
wh.reprice(since, until, reprice_fn=lambda event: price_event(event, book))
"""

REOPEN = """
import json, sys
from tokenmeter.settings import Settings
from warehouse import open_warehouse
wh = open_warehouse(Settings(data_dir=sys.argv[1], raw_retention_days=3650), writer=True, serve=False)
raw = wh.query("SELECT toString(toDecimal128(sum(cost_usd), 12)) AS cost, count() AS n FROM priced_events").to_dicts()[0]
rollup = wh.query("SELECT toString(toDecimal128(sum(cost_usd), 12)) AS cost, sum(events) AS n FROM spend_hourly").to_dicts()[0]
print(json.dumps([raw["cost"], raw["n"], rollup["cost"], rollup["n"]]))
wh.close()
"""


def test_a_killed_reprice_heals_when_the_owner_reopens(tmp_path, tmp_path_factory):
    day = datetime(2021, 9, 1, tzinfo=timezone.utc)
    old_book, _ = books(tmp_path, day)
    data_dir = empty_warehouse_in(tmp_path / "data", tmp_path_factory)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_OWNER, str(data_dir), json.dumps(priced_events("killed", day, old_book)),
         str(tmp_path / "new"), day.isoformat(), (day + timedelta(days=1)).isoformat()],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert killed.returncode == 9, killed.stderr
    reopened = subprocess.run([sys.executable, "-c", REOPEN, str(data_dir)], capture_output=True, text=True,
                              env=env, timeout=120)
    assert reopened.returncode == 0, reopened.stderr
    raw_cost, raw_events, rollup_cost, rollup_events = json.loads(reopened.stdout)
    assert D(raw_cost) == D(rollup_cost) == NEW_TOTAL and raw_events == rollup_events == 5


def test_the_owner_applies_a_multi_day_reprice_in_one_pass(wh, org, tmp_path, monkeypatch):
    """Each apply deletes old copies and rebuilds the rollups of its hours, a pass costing seconds whatever its
    size: the owner gathers the changes of many days into one call (a 20,000-event month took 161 s when it
    applied per day, 6 s now)."""
    day = datetime(2020, 11, 4, tzinfo=timezone.utc)
    old_book, new_book = books(tmp_path, day)
    assert wh.insert_priced(priced_events(org, day, old_book)) == 5
    calls = []
    apply = wh.apply_repriced_events
    monkeypatch.setattr(wh, "apply_repriced_events", lambda events: calls.append(len(events)) or apply(events))
    report = wh.reprice(day, day + timedelta(days=2), reprice_fn=lambda event: price_event(event, new_book))
    assert report.events == 5 and report.changed == report.applied >= 4  # the next-day event changes too
    assert calls == [report.changed]
    after = totals(wh, org)
    assert after["raw"] == after["rollup"] and after["raw"][1] == 5


def test_the_columnar_batch_reprices_each_stored_row_exactly_as_the_per_row_path(wh, org):
    """`tokenmeter reprice` prices a day at once on the worker's columnar path (app.reprice_cli.
    columnar_reprice_batch): for every stored shape (tags, tool requests, tiers, batch, missing latencies, usage
    assumptions, unknown models, errors) the new PricedEvent JSON equals reprice_row's."""
    import itertools

    import orjson

    from app.reprice_cli import columnar_reprice_batch
    from streams.batch import process_batch
    from streams.columnar.corpus import Corpus
    from warehouse.reprice import _COLUMN_LIST, arrow_rows, reprice_row

    book = load_price_book()
    records = list(itertools.islice(Corpus(book, 9).records(3000), 150))
    events = [orjson.loads(e) for values in process_batch(records, book).priced.values() for e in values]
    events = [e for e in events if len(e["cost_usd"].split(".")[0]) <= 6]  # what Decimal(18,12) can store
    day = datetime(2026, 6, 8, tzinfo=timezone.utc)
    for i, event in enumerate(events):  # this test's own day and org, so no other test's window sees them
        event["ts"] = (day + timedelta(seconds=i)).isoformat()
        event["attribution"]["org"] = org
        event["event_id"] = f"{org}-{event['event_id']}"
    events = list({e["event_id"]: e for e in reversed(events)}.values())  # the corpus repeats some ids
    assert wh.insert_priced(events) == len(events) > 500
    table = wh.backend.query_arrow(f"SELECT {_COLUMN_LIST} FROM priced_events WHERE org = {{org:String}}"
                                   " ORDER BY event_id", {"org": org})
    rows = table.to_pylist()
    assert arrow_rows(table) == rows and arrow_rows(table.slice(7, 50)) == rows[7:57]  # the plan's faster reader
    now = datetime.now(timezone.utc)
    expected = [reprice_row(row, lambda event: price_event(event, book, now)) for row in rows]
    assert columnar_reprice_batch(book, now)(rows) == expected
    assert {e["pricing_status"] for e in expected} == {"priced", "unpriced"}
