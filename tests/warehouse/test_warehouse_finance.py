"""Cost centers (mapping file, precedence, every error at once) and shared-cost allocation (exact Decimal
splits, rounding rule, remainder row), then finance showback on a real chDB warehouse: direct + allocated =
total, totals equal the metered spend, unmapped spend is its own row, and it agrees with the CSV export."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from warehouse.allocation import allocate, parse_allocation, split
from warehouse.backends import WarehouseError
from warehouse.cost_centers import parse_cost_centers
from warehouse.export import export_month
from warehouse.finance import finance_showback, load_finance

pytestmark = pytest.mark.slow(seconds=11)  # rough seconds: longest files first (tests/suite_order.py)

AUGUST = (datetime(2025, 8, 1, tzinfo=timezone.utc), datetime(2025, 9, 1, tzinfo=timezone.utc))


def test_cost_center_precedence_project_then_tag_then_team():
    centers = parse_cost_centers([
        {"match": {"team": "search"}, "cost_center": "CC-1", "gl_account": 6400, "owner": "a"},
        {"match": {"tag:env": "prod"}, "cost_center": "CC-2", "gl_account": "6401", "owner": "b"},
        {"match": {"project": "checkout"}, "cost_center": "CC-3", "gl_account": "6402", "owner": "c"},
    ])
    assert centers.lookup({"team": "search", "project": "checkout", "tag:env": "prod"})[0] == "CC-3"
    assert centers.lookup({"team": "search", "project": "x", "tag:env": "prod"})[0] == "CC-2"
    assert centers.lookup({"team": "search"}) == ("CC-1", "6400", "a")
    assert centers.lookup({"team": "ads"}) == ("unmapped", "unmapped", "unmapped")


def test_every_mapping_error_is_reported_at_once():
    with pytest.raises(WarehouseError) as caught:
        parse_cost_centers([
            {"match": {"team": "a"}, "cost_center": "", "gl_account": "1", "owner": "o"},
            {"match": {"colour": "red"}, "cost_center": "C", "gl_account": "1", "owner": "o"},
            {"match": {"team": "b", "project": "p"}, "cost_center": "C", "gl_account": "1", "owner": "o"},
            {"match": {"team": "c"}, "cost_center": "unmapped", "gl_account": "1", "owner": "o", "extra": 1},
            "not a mapping",
        ], "f.yaml")
    message = str(caught.value)
    assert message.startswith("6 error(s) in f.yaml")
    for needle in ("- cost_centers[0]: `cost_center`", "cost_centers[1]: match key 'colour'",
                   "cost_centers[2]: `match` must have exactly one", "cost_centers[3]: unknown key(s) extra",
                   "cost_centers[3]: `cost_center` may not be 'unmapped'", "cost_centers[4]: must be a mapping"):
        assert needle in message
    with pytest.raises(WarehouseError) as caught:
        parse_allocation([{"name": "x", "scope": {"nope": "1"}, "basis": "weight"},
                          {"name": "x", "scope": {}, "basis": "fixed", "shares": {"a": -1}, "remainder_to": "b"}])
    assert str(caught.value).startswith("5 error(s)")


def test_split_is_exact_and_the_remainder_goes_to_the_stated_row():
    amount = Decimal("0.000000000100")  # 100e-12 over three equal weights: 33e-12 each, 1e-12 left over
    shares = split(amount, {"a": Decimal(1), "b": Decimal(1), "c": Decimal(1)}, "b")
    assert shares == {"a": Decimal("33e-12"), "b": Decimal("34e-12"), "c": Decimal("33e-12")}
    big = Decimal("999999.999999999999")
    weights = {"x": Decimal(123456789012345), "y": Decimal(7), "z": Decimal(1)}
    shares = split(big, weights, "x")
    assert sum(shares.values()) == big and all(v == v.quantize(Decimal("1e-12")) for v in shares.values())
    negative = split(Decimal("-0.000000000010"), {"a": Decimal(1), "b": Decimal(2)}, "a")
    assert sum(negative.values()) == Decimal("-0.000000000010") and negative["b"] == Decimal("-6e-12")


def test_allocation_by_tokens_and_first_matching_rule_wins():
    rules = parse_allocation([
        {"name": "cache", "scope": {}, "parts": ["cache_write_5m"], "basis": "tokens"},
        {"name": "platform", "scope": {"team": "platform"}, "basis": "tokens", "to": ["search"]},
    ])
    charges = [
        {"team": "search", "part": "input", "quantity": 300, "cost": Decimal("3")},
        {"team": "ads", "part": "input", "quantity": 100, "cost": Decimal("1")},
        {"team": "ads", "part": "cache_write_5m", "quantity": 50, "cost": Decimal("0.5")},
        {"team": "platform", "part": "cache_write_5m", "quantity": 10, "cost": Decimal("0.2")},
        {"team": "platform", "part": "input", "quantity": 10, "cost": Decimal("0.1")},
    ]
    result = allocate(charges, rules)
    per_team: dict[str, Decimal] = {}
    for charge in result.charges:
        per_team[charge["team"]] = per_team.get(charge["team"], Decimal(0)) + charge["direct"] + charge["allocated"]
    assert sum(per_team.values()) == Decimal("4.8")
    # cache writes (0.7) by tokens 300:100 -> 0.525 / 0.175; platform input (0.1) all to search.
    assert per_team == {"search": Decimal("3.625"), "ads": Decimal("1.175"), "platform": Decimal(0)}
    moved = {c["rule"] for c in result.charges if c.get("moved_out")}
    assert moved == {"cache", "platform"}  # platform's cache write went to the first rule only


FINANCE = """
cost_centers:
  - match: {team: search}
    cost_center: CC-1100
    gl_account: "6400"
    owner: search-lead@example.com
allocation:
  - name: platform-shared
    scope: {team: platform}
    basis: fixed
    shares: {search: 1, ads: 1, web: 1}
    remainder_to: web
"""


@pytest.fixture
def august(wh, make_event):
    events = [make_event(f"fin-{i}", "fin-org", team=team, cost=cost, ts=f"2025-08-{1 + i:02d}T09:00:00Z")
              for i, (team, cost) in enumerate([("search", "0.100000000001"), ("ads", "0.2"), ("web", "0.3"),
                                                 ("platform", "0.000000000100"), ("platform", "1.000000000000")])]
    wh.insert_priced(events)
    return events


def test_finance_showback_direct_allocated_total(wh, august, tmp_path):
    path = tmp_path / "finance.yaml"
    path.write_text(FINANCE)
    config = load_finance(path)
    frame = finance_showback(wh, config, *AUGUST)
    rows = {r["team"]: r for r in frame.iter_rows(named=True)}
    metered = sum(Decimal(e["cost_usd"]) for e in august)
    assert sum(frame["total_usd"]) == metered == sum(frame["direct_usd"])
    assert sum(frame["allocated_usd"]) == 0
    assert rows["platform"]["total_usd"] == 0 and rows["platform"]["allocated_usd"] == Decimal("-1.0000000001")
    # each platform charge split in thirds, truncated to 1e-12; the remainders (1e-12 per charge) go to web
    assert rows["search"]["allocated_usd"] == rows["ads"]["allocated_usd"] == Decimal("0.333333333366")
    assert rows["web"]["allocated_usd"] == Decimal("0.333333333368")
    assert rows["search"]["cost_center"] == "CC-1100" and rows["ads"]["cost_center"] == "unmapped"
    by_center = {r["cost_center"]: r for r in finance_showback(wh, config, *AUGUST, by="cost_center").iter_rows(named=True)}
    assert set(by_center) == {"CC-1100", "unmapped"} and sum(r["total_usd"] for r in by_center.values()) == metered
    scoped = finance_showback(wh, config, *AUGUST, team="ads")
    assert scoped["team"].to_list() == ["ads"] and scoped["total_usd"][0] == rows["ads"]["total_usd"]
    # the CSV export carries the same numbers and the cost-center columns
    text = export_month(wh, "2025-08", "csv", ["team"], finance=config).decode()
    exported = {r["team"]: r for r in csv.DictReader(io.StringIO(text))}
    for team, row in rows.items():
        assert Decimal(exported[team]["cost_usd"]) == row["total_usd"]
        assert Decimal(exported[team]["allocated_usd"]) == row["allocated_usd"]
        assert exported[team]["cost_center"] == row["cost_center"]
    assert int(exported["platform"]["events"]) == 2  # usage stays with the consumer; only money moves


def test_bad_finance_file_is_a_clear_error(tmp_path):
    path = tmp_path / "finance.yaml"
    path.write_text("cost_centers: [\n")
    with pytest.raises(WarehouseError, match="not valid YAML"):
        load_finance(path)
    with pytest.raises(WarehouseError, match="cannot read"):
        load_finance(tmp_path / "missing.yaml")
    # hostile files: a UnicodeDecodeError and a RecursionError traceback from every export, showback and close
    path.write_bytes(b"\xff\xfe\x00cost_centers: []")
    with pytest.raises(WarehouseError, match="finance.yaml: not UTF-8 text"):
        load_finance(path)
    path.write_text("cost_centers: " + "[" * 100_000 + "]" * 100_000)
    with pytest.raises(WarehouseError, match="finance.yaml: nested too deeply"):
        load_finance(path)


def test_showback_cli_and_its_errors(warehouse_settings, wh, august, tmp_path):
    import os
    import subprocess
    import sys

    import orjson

    from tests.warehouse.test_warehouse_focus import REPO

    path = tmp_path / "finance.yaml"
    path.write_text(FINANCE)
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENMETER_DATA_DIR=str(warehouse_settings.data_dir),
               TOKENMETER_COST_CENTERS_FILE=str(path))
    command = [sys.executable, "-m", "app", "showback", "--month", "2025-08", "--format", "json"]
    result = subprocess.run(command, env=env, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    rows = {r["team"]: r for r in orjson.loads(result.stdout)}
    assert rows["web"]["allocated_usd"] == "0.333333333368" and rows["platform"]["total_usd"] == "0.000000000000"
    table = subprocess.run(command[:-2] + ["--by", "cost_center"], env=env, capture_output=True, timeout=120)
    assert b"unmapped" in table.stdout and b"direct_usd" in table.stdout
    path.write_text("cost_centers:\n  - match: {teem: x}\n  - {}\nallocation:\n  - name: a\n    basis: nope\n")
    bad = subprocess.run(command, env=env, capture_output=True, timeout=120)
    assert bad.returncode != 0 and b"Traceback" not in bad.stderr
    assert b"8 error(s)" in bad.stderr and b"2 error(s)" in bad.stderr  # cost centers and allocation, at once
    assert b"match key 'teem'" in bad.stderr and b"`basis` must be one of" in bad.stderr


def test_showback_says_which_teams_have_unpriced_usage(warehouse_settings, wh, make_event, tmp_path):
    """walk31: `tokenmeter showback --month 2026-11` on the demo listed platform at 11.88 USD direct without a word
    about its 72 calls of a model with no price (`report` says `unpriced`, the dashboard "+ 72 unpriced", the CSV
    export `unpriced_events`): a finance lead read the table as the team's whole cost. The table now ends with a line
    naming the teams and counts (the amounts unchanged; JSON and CSV unchanged)."""
    import os
    import subprocess
    import sys

    from tests.warehouse.test_warehouse_focus import REPO

    wh.insert_priced([make_event("unp-1", "unp-org", team="lab", cost="0.5", ts="2025-06-03T09:00:00Z"),
                      *[make_event(f"unp-{i}", "unp-org", team="lab", model="home-llm", provider="acme",
                                   priced=False, ts=f"2025-06-0{i}T09:00:00Z") for i in (4, 5)],
                      make_event("unp-6", "unp-org", team="ops", model="home-llm", provider="acme", priced=False,
                                 ts="2025-06-06T09:00:00Z")])
    path = tmp_path / "finance.yaml"
    path.write_text(FINANCE)
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENMETER_DATA_DIR=str(warehouse_settings.data_dir),
               TOKENMETER_COST_CENTERS_FILE=str(path))
    command = [sys.executable, "-m", "app", "showback", "--month", "2025-06"]
    table = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    assert ("unpriced: 3 events have no price, so their cost is in no amount above (unknown, not $0): team lab 2,"
            " team ops 1") in table.stdout, table.stdout
    assert "tokenmeter report --group-by team,model --since 2025-06-01 --until 2025-07-01" in table.stdout
    as_json = subprocess.run(command + ["--format", "json"], env=env, capture_output=True, text=True, timeout=120)
    assert as_json.returncode == 0 and "unpriced" not in as_json.stdout  # the importers' format is unchanged


def test_missing_raw_events_are_an_error_not_a_smaller_bill(wh, make_event):
    from warehouse.focus import focus_rows

    events = [make_event(f"gone-{i}", "gone-org", team="t", cost="0.5", ts=f"2025-10-0{1 + i}T09:00:00Z")
              for i in range(2)]
    wh.insert_priced(events)
    window = (datetime(2025, 10, 1, tzinfo=timezone.utc), datetime(2025, 11, 1, tzinfo=timezone.utc))
    assert sum(r["BilledCost"] for r in focus_rows(wh, load_finance(None), *window, ["team"])) == Decimal(1)
    # What the raw-retention TTL does to old events (the rollups keep them).
    wh.backend.command("ALTER TABLE priced_events DELETE WHERE event_id = 'gone-0' SETTINGS mutations_sync = 2")
    with pytest.raises(WarehouseError, match="removed by retention"):
        focus_rows(wh, load_finance(None), *window, ["team"])
    with pytest.raises(WarehouseError, match="0.5.* but the rollups .* 1"):
        finance_showback(wh, load_finance(None), *window)


def test_the_csv_export_splits_shared_cost_per_day_as_showback_does(wh, make_event, tmp_path):
    """walk21: on the demo, `export --format csv` of November gave data-science 2.298034907108 allocated and
    `showback` 2.298034906755 (totals equal): the CSV/Parquet export split each shared charge once for the month,
    showback, the dashboard and FOCUS per UTC day (the documented charge grain), and truncation to 1e-12 per split
    then lands differently. Two platform charges of 2e-12 on two days over search (weight 2) and ads (weight 1): per
    day ads gets trunc(2/3) = 0 twice, for the month trunc(4/3) = 1."""
    month = ("2024-02", datetime(2024, 2, 1, tzinfo=timezone.utc), datetime(2024, 3, 1, tzinfo=timezone.utc))
    wh.insert_priced([make_event(f"grain-{i}", "grain-org", team=team, cost=cost, ts=ts) for i, (team, cost, ts) in
                      enumerate([("search", "0.2", "2024-02-01T09:00:00Z"), ("ads", "0.1", "2024-02-01T09:00:00Z"),
                                 ("platform", "0.000000000002", "2024-02-02T09:00:00Z"),
                                 ("platform", "0.000000000002", "2024-02-03T09:00:00Z")])])
    path = tmp_path / "finance.yaml"
    path.write_text("allocation:\n  - name: platform-shared\n    scope: {team: platform}\n    basis: cost\n")
    config = load_finance(path)
    shown = {r["team"]: r["allocated_usd"] for r in finance_showback(wh, config, *month[1:]).iter_rows(named=True)}
    assert shown == {"search": Decimal("4e-12"), "ads": Decimal(0), "platform": Decimal("-4e-12")}, shown
    for fmt in ("csv", "parquet"):
        data = export_month(wh, month[0], fmt, ["team"], finance=config)
        if fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(data.decode())))
        else:
            import polars as pl

            rows = pl.read_parquet(io.BytesIO(data)).to_dicts()
        exported = {r["team"]: Decimal(str(r["allocated_usd"])) for r in rows}
        assert exported == shown, (fmt, exported)
