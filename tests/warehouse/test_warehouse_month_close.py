"""Month close on a real chDB warehouse: a closed month's exports stay byte-for-byte the same after late events
and re-prices; those become FOCUS corrections in the first open month (and only once, even after that month is
closed too); closing twice or closing an unfinished month is refused; the CLI closes and lists."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.warehouse.test_warehouse_focus import _check_spec_rules
from warehouse.backends import WarehouseError
from warehouse.export import export_month
from warehouse.finance import finance_showback, load_finance
from warehouse.month_close import close_month, closed_months, reopened_note

pytestmark = pytest.mark.slow(seconds=10)  # rough seconds: longest files first (tests/suite_order.py)

REPO = Path(__file__).resolve().parents[2]


def _rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def _total(rows, **where) -> Decimal:
    return sum((Decimal(r["BilledCost"]) for r in rows if all(r[k] == v for k, v in where.items())), Decimal(0))


def test_closed_month_is_frozen_and_late_changes_are_corrections(warehouse_settings, wh, make_event, tmp_path):
    closes = tmp_path / "closes"
    november = [make_event(f"nov-{i}", "close-org", team=("a", "b")[i % 2], cost="0.100000000001",
                           ts=f"2025-11-{10 + i}T08:00:00Z") for i in range(4)]
    wh.insert_priced(november)
    before = export_month(wh, "2025-11", "focus", ["team"], closes=closes)
    csv_before = export_month(wh, "2025-11", "csv", ["team"], closes=closes)

    # Close through the CLI (a separate process reading through this process's warehouse endpoint).
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENMETER_DATA_DIR=str(warehouse_settings.data_dir))
    run = subprocess.run([sys.executable, "-m", "app", "close", "--month", "2025-11", "--by", "cfo"],
                         env=env, capture_output=True, timeout=120)
    assert run.returncode == 0 and b"closed 2025-11: 0.400000000004 USD, 4 events" in run.stdout, run.stderr
    assert b"no finance files (TOKENMETER_COST_CENTERS_FILE" in run.stdout  # closed unmapped: it says so
    cli_closes = Path(warehouse_settings.data_dir).resolve() / "closes"
    listed = subprocess.run([sys.executable, "-m", "app", "close", "--list"], env=env,
                            capture_output=True, timeout=120)
    assert b"2025-11  closed" in listed.stdout and b"cfo" in listed.stdout
    closes = cli_closes

    # Late event and a re-price for November, after the close.
    wh.insert_priced([make_event("nov-late", "close-org", team="a", cost="0.05", ts="2025-11-29T23:59:59Z")])
    repriced = dict(november[1], cost_usd="0.300000000000", cost_breakdown={"input": "0.300000000000"})
    assert wh.apply_repriced_events([repriced]) == 1

    assert export_month(wh, "2025-11", "focus", ["team"], closes=closes) == before  # byte for byte
    assert export_month(wh, "2025-11", "csv", ["team"], closes=closes) != b""  # finance columns once closed
    assert Decimal(next(r for r in _rows(csv_before))["cost_usd"]) > 0

    december = _rows(export_month(wh, "2025-12", "focus", ["team"], closes=closes))
    _check_spec_rules(december, list(december[0]))
    corrections = [r for r in december if r["ChargeClass"] == "Correction"]
    assert {r["x_CorrectsMonth"] for r in corrections} == {"2025-11"}
    assert all(r["ChargePeriodStart"].startswith("2025-11-") for r in corrections)
    late = Decimal("0.05") + (Decimal("0.3") - Decimal("0.100000000001"))
    assert _total(corrections) == late
    assert _total(corrections, **{"SubAccountId": "team=a"}) == Decimal("0.05")
    # closed numbers + corrections = the live (re-priced) truth
    live = sum(Decimal(e["cost_usd"]) for e in november) + late
    assert _total(_rows(before)) + _total(corrections) == live
    showback = finance_showback(wh, load_finance(None), *_bounds("2025-12"), closes=closes)
    assert sum(showback["total_usd"]) == late

    # Closing December books the corrections there; later November changes go to January, never twice.
    info = close_month(wh, closes, "2025-12")
    assert info["corrections_booked"] == ["2025-11"] and Decimal(info["total_usd"]) == late
    january = _rows(export_month(wh, "2026-01", "focus", ["team"], closes=closes))
    assert not [r for r in january if r["ChargeClass"] == "Correction"]
    wh.insert_priced([make_event("nov-later", "close-org", team="b", cost="0.02", ts="2025-11-15T00:00:00Z")])
    january = _rows(export_month(wh, "2026-01", "focus", ["team"], closes=closes))
    assert _total(january, ChargeClass="Correction") == Decimal("0.02")
    assert {r["x_CorrectsMonth"] for r in january if r["ChargeClass"]} == {"2025-11"}

    with pytest.raises(WarehouseError, match="already closed; later changes go to 2026-01"):
        close_month(wh, closes, "2025-11")
    with pytest.raises(WarehouseError, match="cannot group or allocate 2025-11 by route"):
        export_month(wh, "2025-11", "focus", ["route"], closes=closes)
    assert _rows(export_month(wh, "2026-02", "focus", ["route"], closes=closes)) == []  # open, no corrections
    # walk33: an open month refused for the corrections it books read as if it were closed ("closed months keep
    # ...; cannot group or allocate 2026-12 by route"): it now says which closed month's corrections stop it
    with pytest.raises(WarehouseError, match="2026-01 is open but books corrections of closed month 2025-11, and "
                                             "closed months keep .* and tags: cannot group or allocate 2026-01 by "
                                             "route"):
        export_month(wh, "2026-01", "csv", ["route"], closes=closes)
    with pytest.raises(WarehouseError, match="has not ended yet"):
        close_month(wh, closes, "2099-01")
    assert set(closed_months(closes)) == {"2025-11", "2025-12"}


def _bounds(month: str):
    from warehouse.export import month_bounds

    return month_bounds(month)


def test_a_month_whose_corrections_a_later_close_booked_cannot_be_closed_again(wh, make_event, tmp_path):
    """walk25: docs/finance.md's way to re-open a month is to remove its directory. Once a later month's close had
    booked its corrections, closing it again froze them twice: August's late 0.05 was in the new August snapshot
    and in September's (as a correction), closed totals 0.20 against 0.15 metered. Refused now, naming the month
    to re-open with it."""
    import shutil

    closes = tmp_path / "closes"
    wh.insert_priced([make_event("aug-0", "reopen-org", team="a", cost="0.1", ts="2024-08-10T08:00:00Z")])
    close_month(wh, closes, "2024-08")
    wh.insert_priced([make_event("aug-late", "reopen-org", team="a", cost="0.05", ts="2024-08-20T08:00:00Z")])
    assert close_month(wh, closes, "2024-09")["corrections_booked"] == ["2024-08"]
    shutil.rmtree(closes / "2024-08")  # "remove the month's directory deliberately"
    with pytest.raises(WarehouseError, match="2024-09 booked corrections of 2024-08.*would count them twice"):
        close_month(wh, closes, "2024-08")
    shutil.rmtree(closes / "2024-09")  # re-opened together, in order: each counted once
    assert Decimal(close_month(wh, closes, "2024-08")["total_usd"]) == Decimal("0.15")
    assert Decimal(close_month(wh, closes, "2024-09", allow_empty=True)["total_usd"]) == 0


def test_an_empty_month_closes_with_its_total_at_the_money_scale(wh, tmp_path):
    """walk25: `close --list` printed "total 0 USD" for a month without events beside "56.301671870000 USD"."""
    assert close_month(wh, tmp_path / "closes", "2023-02", allow_empty=True)["total_usd"] == "0.000000000000"


def test_closing_a_month_without_events_is_refused_unless_allowed(warehouse_settings, wh, tmp_path):
    """walk25: `close --month 2026-10` (a typo; the demo has no October) closed a month nobody meant to close, and
    late events of it then became corrections. A month with nothing to freeze (no events, no corrections to book)
    is refused with the way to close it anyway."""
    closes = Path(warehouse_settings.data_dir).resolve() / "closes"
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENMETER_DATA_DIR=str(warehouse_settings.data_dir))
    run = subprocess.run([sys.executable, "-m", "app", "close", "--month", "2023-03"], env=env, capture_output=True,
                         timeout=120)
    assert run.returncode != 0 and b"Traceback" not in run.stderr, run.stderr
    assert b"2023-03 has no events" in run.stderr and b"--allow-empty" in run.stderr, run.stderr
    assert "2023-03" not in closed_months(closes)
    run = subprocess.run([sys.executable, "-m", "app", "close", "--month", "2023-03", "--allow-empty"], env=env,
                         capture_output=True, timeout=120)
    assert run.returncode == 0 and b"closed 2023-03: 0.000000000000 USD, 0 events" in run.stdout, run.stderr
    with pytest.raises(WarehouseError, match="2023-04 has no events"):
        close_month(wh, tmp_path / "closes", "2023-04")


def test_corrections_of_a_closed_month_are_shown_apart_from_the_months_own_spend(warehouse_settings, wh, make_event,
                                                                                   tmp_path):
    """walk25: December's chargeback CSV and showback folded November's corrections (late events after its close)
    into the teams' direct_usd with nothing saying so; only FOCUS marked them. Showback has corrections_usd (direct
    and allocated are the month's own), the CSV/Parquet a row per corrected month (`corrects_month`); totals and
    FOCUS as before."""
    import polars as pl

    from warehouse.focus import focus_rows

    closes = Path(warehouse_settings.data_dir).resolve() / "closes"  # the CLI's, for `showback` below
    path = tmp_path / "finance.yaml"
    path.write_text("allocation:\n  - name: platform-shared\n    scope: {team: platform}\n    basis: fixed\n"
                    "    shares: {a: 1, b: 1}\n    remainder_to: a\n")
    config = load_finance(path)
    wh.insert_priced([make_event("may-0", "apart-org", team="a", cost="0.1", ts="2023-05-10T08:00:00Z")])
    close_month(wh, closes, "2023-05")
    wh.insert_priced([make_event("may-late-a", "apart-org", team="a", cost="0.05", ts="2023-05-20T08:00:00Z"),
                      make_event("may-late-p", "apart-org", team="platform", cost="0.02", ts="2023-05-21T08:00:00Z"),
                      make_event("jun-a", "apart-org", team="a", cost="0.3", ts="2023-06-03T08:00:00Z"),
                      make_event("jun-b", "apart-org", team="b", cost="0.4", ts="2023-06-04T08:00:00Z")])
    june = _bounds("2023-06")
    shown = {r["team"]: (r["direct_usd"], r["allocated_usd"], r["corrections_usd"], r["total_usd"])
             for r in finance_showback(wh, config, *june, closes=closes).iter_rows(named=True)}
    d = Decimal
    assert shown == {"a": (d("0.3"), 0, d("0.06"), d("0.36")), "b": (d("0.4"), 0, d("0.01"), d("0.41")),
                     "platform": (0, 0, 0, 0)}, shown
    focus = focus_rows(wh, config, *june, ["team"], closes=closes)
    assert sum(r["BilledCost"] for r in focus if r["ChargeClass"] == "Correction") == d("0.07")
    for fmt in ("csv", "parquet"):
        data = export_month(wh, "2023-06", fmt, ["team"], finance=config, closes=closes)
        rows = _rows(data) if fmt == "csv" else pl.read_parquet(io.BytesIO(data)).to_dicts()
        got = {(r["team"], r["corrects_month"] or ""): (d(str(r["direct_usd"])), d(str(r["allocated_usd"])),
                                                        d(str(r["cost_usd"])), int(r["events"])) for r in rows}
        assert got == {("a", ""): (d("0.3"), 0, d("0.3"), 1), ("b", ""): (d("0.4"), 0, d("0.4"), 1),
                       ("a", "2023-05"): (d("0.05"), d("0.01"), d("0.06"), 1),
                       ("b", "2023-05"): (0, d("0.01"), d("0.01"), 0),
                       ("platform", "2023-05"): (d("0.02"), d("-0.02"), 0, 1)}, (fmt, got)
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENMETER_DATA_DIR=str(warehouse_settings.data_dir),
               TOKENMETER_COST_CENTERS_FILE=str(path))
    run = subprocess.run([sys.executable, "-m", "app", "showback", "--month", "2023-06"], env=env,
                         capture_output=True, timeout=120)
    assert run.returncode == 0 and b"corrections_usd" in run.stdout.splitlines()[0], run.stderr
    assert run.stdout.endswith(b"corrections_usd: late changes (events, re-prices) to closed month 2023-05, booked "
                               b"in 2023-06; direct_usd and allocated_usd are 2023-06's own spend.\n"), run.stdout


def test_a_closed_months_unpriced_event_priced_later_is_a_correction_the_csv_and_parquet_export(wh, make_event,
                                                                                                   tmp_path):
    """walk31: the demo's unknown model, priced after November's close (an import, then `tokenmeter reprice`, as the
    unpriced-usage alert says to do), made December's chargeback CSV and Parquet exports a polars traceback: the
    correction row counts -1 unpriced events and the count columns were UInt64. FOCUS had it (`x_UnpricedEvents` -1).
    A month without a negative count keeps UInt64 columns, so every file written before is unchanged."""
    import polars as pl

    closes = tmp_path / "closes"
    unpriced = make_event("may21-u", "neg-org", team="a", priced=False, ts="2021-05-10T08:00:00Z")
    wh.insert_priced([unpriced, make_event("may21-p", "neg-org", team="b", cost="0.2", ts="2021-05-11T08:00:00Z")])
    close_month(wh, closes, "2021-05")
    parquet_before = export_month(wh, "2021-05", "parquet", ["team"], closes=closes)
    priced = dict(unpriced, cost_usd="0.100000000000", pricing_status="priced", cost_breakdown={"input": "0.1"})
    assert wh.apply_repriced_events([priced]) == 1
    for fmt in ("csv", "parquet"):
        data = export_month(wh, "2021-06", fmt, ["team"], closes=closes)
        rows = _rows(data) if fmt == "csv" else pl.read_parquet(io.BytesIO(data)).to_dicts()
        [row] = rows
        assert (row["corrects_month"], row["team"], int(row["events"]), int(row["unpriced_events"])) == \
            ("2021-05", "a", 0, -1), (fmt, row)
        assert Decimal(str(row["cost_usd"])) == Decimal("0.1")
    assert export_month(wh, "2021-05", "parquet", ["team"], closes=closes) == parquet_before  # frozen, as it was
    assert pl.read_parquet(io.BytesIO(parquet_before)).schema["unpriced_events"] == pl.UInt64


def test_a_month_whose_raw_events_retention_removed_is_not_closed_with_less(wh, make_event, tmp_path):
    """close25: exports and showback refuse a window whose raw events are gone (the rollups still count them), but
    `close` froze what was left: 0.5 of a metered 1.0 for good (a closed month's exports read only the snapshot)."""
    wh.insert_priced([make_event(f"kept-{i}", "kept-org", team="t", cost="0.5", ts=f"2023-07-0{1 + i}T09:00:00Z")
                      for i in range(2)])
    wh.backend.command("ALTER TABLE priced_events DELETE WHERE event_id = 'kept-0' SETTINGS mutations_sync = 2")
    with pytest.raises(WarehouseError, match="removed by retention"):
        close_month(wh, tmp_path / "closes", "2023-07")
    assert not closed_months(tmp_path / "closes")


def _shown(frame) -> dict[str, tuple]:
    return {r["team"]: (r["direct_usd"], r["allocated_usd"], r["corrections_usd"], r["total_usd"])
            for r in frame.iter_rows(named=True)}


def test_a_months_shared_cost_is_split_by_its_own_usage_not_by_the_corrections_it_books(wh, make_event, tmp_path):
    """close25 left it open: April's platform cost was split with weights that held April's corrections of a closed
    March, so a late March event of team a (1.0 USD) moved April's own split (a 0.1 -> 0.18333..., b down by as
    much). A month's shared cost is split by its own usage; a correction carries its own direct cost, and a late
    shared charge of March is split by March's usage as closed, like March's own platform cost. Every dollar once,
    in showback, FOCUS and the CSV alike, open and after April's close."""
    closes = tmp_path / "closes"
    path = tmp_path / "finance.yaml"
    path.write_text("allocation:\n  - name: platform-shared\n    scope: {team: platform}\n    basis: cost\n")
    config = load_finance(path)
    d = Decimal
    wh.insert_priced([make_event("s-mar-a", "split-org", team="a", cost="0.1", ts="2022-03-10T08:00:00Z"),
                      make_event("s-mar-b", "split-org", team="b", cost="0.3", ts="2022-03-11T08:00:00Z"),
                      make_event("s-mar-p", "split-org", team="platform", cost="0.04", ts="2022-03-12T08:00:00Z")])
    close_month(wh, closes, "2022-03", finance_files=(path, None))
    april_events = [make_event("s-apr-a", "split-org", team="a", cost="0.1", ts="2022-04-03T08:00:00Z"),
                    make_event("s-apr-b", "split-org", team="b", cost="0.1", ts="2022-04-04T08:00:00Z"),
                    make_event("s-apr-p", "split-org", team="platform", cost="0.2", ts="2022-04-05T08:00:00Z")]
    wh.insert_priced(april_events)
    april = _bounds("2022-04")
    own = {"a": (d("0.1"), d("0.1"), 0, d("0.2")), "b": (d("0.1"), d("0.1"), 0, d("0.2")),
           "platform": (d("0.2"), d("-0.2"), 0, 0)}
    assert _shown(finance_showback(wh, config, *april, closes=closes)) == own
    focus_before = export_month(wh, "2022-04", "focus", ["team"], finance=config, closes=closes)

    wh.insert_priced([make_event("s-mar-late-a", "split-org", team="a", cost="1.0", ts="2022-03-20T08:00:00Z"),
                      make_event("s-mar-late-p", "split-org", team="platform", cost="0.02", ts="2022-03-21T08:00:00Z")])
    # April's own split as before; a's late 1.0 is its own correction; platform's late 0.02 split by March's usage
    # (a 0.1 : b 0.3, frozen at March's close).
    expected = {"a": (d("0.1"), d("0.1"), d("1.005"), d("1.205")), "b": (d("0.1"), d("0.1"), d("0.015"), d("0.215")),
                "platform": (d("0.2"), d("-0.2"), 0, 0)}
    assert _shown(finance_showback(wh, config, *april, closes=closes)) == expected
    focus_open = export_month(wh, "2022-04", "focus", ["team"], finance=config, closes=closes)
    focus = _rows(focus_open)
    _check_spec_rules(focus, list(focus[0]))
    assert [r for r in focus if not r["ChargeClass"]] == _rows(focus_before)  # April's own rows did not move
    team = lambda r: r["AllocatedResourceName"] or r["SubAccountId"][len("team="):]  # noqa: E731
    for name, (_, _, corrections, total) in expected.items():
        assert _total([r for r in focus if team(r) == name]) == total, name
        assert _total([r for r in focus if team(r) == name and r["ChargeClass"]]) == corrections, name
    assert _total(focus) == d("0.4") + d("1.02")  # April's live spend + March's late spend, once
    csv_rows = _rows(export_month(wh, "2022-04", "csv", ["team"], finance=config, closes=closes))
    got = {(r["team"], r["corrects_month"]): (d(r["direct_usd"]), d(r["allocated_usd"])) for r in csv_rows}
    assert got == {("a", ""): (d("0.1"), d("0.1")), ("b", ""): (d("0.1"), d("0.1")),
                   ("platform", ""): (d("0.2"), d("-0.2")), ("a", "2022-03"): (d("1.0"), d("0.005")),
                   ("b", "2022-03"): (0, d("0.015")), ("platform", "2022-03"): (d("0.02"), d("-0.02"))}, got

    # Closed, April reads its snapshot and splits it the same way: its exports do not change at the close.
    close_month(wh, closes, "2022-04", finance_files=(path, None))
    assert _shown(finance_showback(wh, config, *april, closes=closes)) == expected
    assert export_month(wh, "2022-04", "focus", ["team"], finance=config, closes=closes) == focus_open


def test_a_month_reopened_by_hand_does_not_count_what_a_later_close_booked_twice(warehouse_settings, wh, make_event,
                                                                                 tmp_path):
    """walk25 left it open: with July re-opened (its directory removed) after August's close had booked July's late
    0.05, every export of July (FOCUS, CSV, Parquet, showback; the dashboard and /api/v1 call the same functions)
    read July live, 0.45, and August's frozen 0.25 held the 0.05 too: 0.70 against 0.65 metered. July now reads
    as live less what later closes booked of it, so July and August add up to what was metered; later changes of
    July show in July until it is closed again."""
    import shutil

    import polars as pl

    closes = Path(warehouse_settings.data_dir).resolve() / "closes"  # the CLI's, for `showback` and `export`
    try:
        d = Decimal
        wh.insert_priced([make_event("r-jul-0", "reopened-org", team="a", cost="0.1", ts="2022-07-10T08:00:00Z"),
                          make_event("r-jul-1", "reopened-org", team="b", cost="0.3", ts="2022-07-11T08:00:00Z")])
        close_month(wh, closes, "2022-07")
        wh.insert_priced([make_event("r-jul-late", "reopened-org", team="a", cost="0.05", ts="2022-07-20T08:00:00Z"),
                          make_event("r-aug-0", "reopened-org", team="a", cost="0.2", ts="2022-08-03T08:00:00Z")])
        assert close_month(wh, closes, "2022-08")["corrections_booked"] == ["2022-07"]
        july_closed = export_month(wh, "2022-07", "focus", ["team"], closes=closes)
        august = _total(_rows(export_month(wh, "2022-08", "focus", ["team"], closes=closes)))
        assert august == d("0.25")
        shutil.rmtree(closes / "2022-07")  # re-opened by hand, August still closed

        july_open = export_month(wh, "2022-07", "focus", ["team"], closes=closes)
        assert _total(_rows(july_open)) + august == d("0.1") + d("0.3") + d("0.05") + d("0.2")  # each dollar once
        assert july_open == july_closed  # nothing new since July's close: the same file
        # `showback`, `export` and the Showback page say what the re-opened month leaves out, and what to do
        assert reopened_note(closes, "2022-07") == (
            "2022-07 is open again, but closed month 2022-08 booked 0.050000000000 USD of its late changes as "
            "corrections: they are counted there, not in 2022-07's numbers here; to restate 2022-07, re-open 2022-08 "
            "too (`tokenmeter reopen`, latest first) and close 2022-07 first")
        assert reopened_note(closes, "2022-08") == reopened_note(closes, "2022-06") == ""
        july = _bounds("2022-07")
        assert _shown(finance_showback(wh, load_finance(None), *july, closes=closes)) == {
            "b": (d("0.3"), 0, 0, d("0.3")), "a": (d("0.1"), 0, 0, d("0.1"))}
        for fmt in ("csv", "parquet"):
            data = export_month(wh, "2022-07", fmt, ["team"], closes=closes)
            rows = _rows(data) if fmt == "csv" else pl.read_parquet(io.BytesIO(data)).to_dicts()
            assert {r["team"]: (d(str(r["cost_usd"])), int(r["events"])) for r in rows} == {
                "a": (d("0.1"), 1), "b": (d("0.3"), 1)}, fmt

        # The CLI says it too (the file itself is exact): `showback` under its table, `export` on stderr.
        env = dict(os.environ, PYTHONPATH=str(REPO), TOKENMETER_DATA_DIR=str(warehouse_settings.data_dir))
        run = subprocess.run([sys.executable, "-m", "app", "showback", "--month", "2022-07"], env=env,
                             capture_output=True, timeout=120)
        assert run.returncode == 0 and run.stdout.endswith(reopened_note(closes, "2022-07").encode() + b"\n"), run
        out = tmp_path / "july.csv"
        run = subprocess.run([sys.executable, "-m", "app", "export", "--month", "2022-07", "--format", "csv",
                              "--out", str(out)], env=env, capture_output=True, timeout=120)
        assert run.returncode == 0 and reopened_note(closes, "2022-07").encode() in run.stderr, run
        assert out.read_bytes() == export_month(wh, "2022-07", "csv", ["team"], closes=closes)

        # A later change of July is July's own until July is closed again (no month books it meanwhile).
        wh.insert_priced([make_event("r-jul-later", "reopened-org", team="b", cost="0.01", ts="2022-07-25T08:00:00Z")])
        focus = _rows(export_month(wh, "2022-07", "focus", ["team"], closes=closes))
        assert _total(focus) + august == d("0.1") + d("0.3") + d("0.05") + d("0.01") + d("0.2")
        assert not [r for r in focus if r["ChargeClass"]]
        with pytest.raises(WarehouseError, match="2022-08 booked corrections of 2022-07"):
            export_month(wh, "2022-07", "focus", ["route"], closes=closes)  # the frozen part has no route
    finally:  # other tests of this module list the CLI's closed months
        for month in ("2022-07", "2022-08"):
            shutil.rmtree(closes / month, ignore_errors=True)


REORG_BEFORE = """cost_centers:
  - match: {team: a}
    cost_center: CC-A
    gl_account: "6400"
    owner: a-lead@example.com
allocation:
  - name: platform-shared
    scope: {team: platform}
    basis: cost
"""
REORG_AFTER = """cost_centers:
  - match: {team: a}
    cost_center: CC-REORG
    gl_account: "6999"
    owner: new-owner@example.com
  - match: {team: b}
    cost_center: CC-B
    gl_account: "6401"
    owner: b-lead@example.com
allocation:
  - name: platform-shared
    scope: {team: platform}
    basis: fixed
    shares: {a: 1}
"""


def test_a_closed_month_keeps_the_cost_centers_and_allocation_it_was_closed_with(wh, make_event, tmp_path):
    """A re-org after the close (team a moved to another cost center, platform's cost now all on a) rewrote the
    closed month's FOCUS file, CSV and showback: the finance files were read at every export, so 'byte for byte the
    same forever' held only while nobody edited them. The close now keeps the files it was closed with."""
    closes, path = tmp_path / "closes", tmp_path / "finance.yaml"
    path.write_text(REORG_BEFORE)
    wh.insert_priced([make_event("r-a", "reorg-org", team="a", cost="0.1", ts="2023-05-10T08:00:00Z"),
                      make_event("r-b", "reorg-org", team="b", cost="0.3", ts="2023-05-11T08:00:00Z"),
                      make_event("r-p", "reorg-org", team="platform", cost="0.04", ts="2023-05-12T08:00:00Z")])
    config, may = load_finance(path), _bounds("2023-05")
    exported = {fmt: export_month(wh, "2023-05", fmt, ["team"], finance=config, closes=closes)
                for fmt in ("focus", "csv", "parquet")}
    shown = finance_showback(wh, config, *may, by="cost_center", closes=closes)
    info = close_month(wh, closes, "2023-05", finance_files=(path, None))
    assert info["finance"]["cost_centers_sha256"] and info["finance"]["allocation_file"] is None

    path.write_text(REORG_AFTER)  # the re-org, after the close
    reorg = load_finance(path)
    for fmt, before in exported.items():
        assert export_month(wh, "2023-05", fmt, ["team"], finance=reorg, closes=closes) == before, fmt
    assert finance_showback(wh, reorg, *may, by="cost_center", closes=closes).equals(shown)
    assert "CC-REORG" not in export_month(wh, "2023-05", "focus", ["team"], finance=reorg, closes=closes).decode()
    # the open month after it uses today's files
    wh.insert_priced([make_event("r-a-jun", "reorg-org", team="a", cost="0.2", ts="2023-06-10T08:00:00Z")])
    assert "CC-REORG" in export_month(wh, "2023-06", "focus", ["team"], finance=reorg, closes=closes).decode()
    # Re-opened and closed again with the new files: the new mapping; the archived close still exports as it was.
    from warehouse.archived_close import archived_close_view
    from warehouse.month_reopen import reopen_month

    (archived,) = reopen_month(closes, "2023-05", reopened_by="cfo", reason="re-org")
    close_month(wh, closes, "2023-05", finance_files=(path, None))
    assert "CC-REORG" in export_month(wh, "2023-05", "focus", ["team"], finance=None, closes=closes).decode()
    with archived_close_view(closes, "2023-05", archived["archived"]) as (view, _):
        assert export_month(wh, "2023-05", "focus", ["team"], finance=reorg, closes=view) == exported["focus"]


def test_a_close_refuses_an_invalid_finance_file_and_a_changed_copy_is_not_read(wh, make_event, tmp_path):
    closes, path = tmp_path / "closes", tmp_path / "finance.yaml"
    wh.insert_priced([make_event("f-a", "frozen-org", team="a", cost="0.1", ts="2023-02-10T08:00:00Z")])
    path.write_text("cost_centers:\n  - match: {colour: red}\n    cost_center: CC-1\n")
    with pytest.raises(WarehouseError, match=r"(?s)finance.yaml:.*colour.*the month is not closed") as caught:
        close_month(wh, closes, "2023-02", finance_files=(path, None))
    assert "\n" in str(caught.value) and "2023-02" not in closed_months(closes)
    assert not (closes / "2023-02" / "cost_centers.yaml").exists()
    with pytest.raises(WarehouseError, match=r"missing.yaml: cannot read \(No such file"):
        close_month(wh, closes, "2023-02", finance_files=(tmp_path / "missing.yaml", None))

    path.write_text(REORG_BEFORE)
    info = close_month(wh, closes, "2023-02", finance_files=(None, path))  # the allocation file alone
    assert info["finance"]["cost_centers_file"] is None and info["finance"]["allocation_file"] == str(path)
    assert export_month(wh, "2023-02", "csv", ["team"], closes=closes)
    (closes / "2023-02" / "allocation.yaml").write_text(REORG_AFTER)  # edited by hand after the close
    with pytest.raises(WarehouseError, match="allocation.yaml, the allocation file 2023-02 was closed with, changed"):
        export_month(wh, "2023-02", "csv", ["team"], closes=closes)


def test_a_month_closed_without_finance_files_stays_unmapped_when_files_are_set_later(wh, make_event, tmp_path):
    closes, path = tmp_path / "closes", tmp_path / "finance.yaml"
    wh.insert_priced([make_event("u-a", "unmapped-org", team="a", cost="0.1", ts="2023-03-10T08:00:00Z")])
    assert close_month(wh, closes, "2023-03")["finance"] == {"cost_centers_file": None, "cost_centers_sha256": None,
                                                              "allocation_file": None, "allocation_sha256": None}
    path.write_text(REORG_BEFORE)
    shown = finance_showback(wh, load_finance(path), *_bounds("2023-03"), by="cost_center", closes=closes)
    assert shown["cost_center"].to_list() == ["unmapped"]


def test_a_damaged_close_record_is_named_not_a_traceback(wh, make_event, tmp_path):
    """walk29: a close.json cut short (a full disk, an editor) made every read of the closes (export, close --list,
    report) end in orjson's JSONDecodeError traceback, and a `finance` entry that is not an object in an
    AttributeError; both are now a WarehouseError naming the file."""
    from warehouse.month_reopen import reopen_history

    closes = tmp_path / "closes"
    wh.insert_priced([make_event("d-a", "damaged-org", team="a", cost="0.1", ts="2023-04-10T08:00:00Z")])
    close_month(wh, closes, "2023-04")
    record = closes / "2023-04" / "close.json"
    whole = record.read_bytes()
    record.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(WarehouseError, match=r"2023-04/close.json is not a close record \(not JSON"):
        closed_months(closes)
    with pytest.raises(WarehouseError, match=r"2023-04/close.json is not a close record"):
        export_month(wh, "2023-04", "csv", ["team"], closes=closes)
    from click.testing import CliRunner

    from app.cli import main

    listed = CliRunner().invoke(main, ["close", "--list"], env={"TOKENMETER_DATA_DIR": str(tmp_path)})
    assert listed.exit_code == 1 and "close.json is not a close record" in listed.output, listed.output
    record.write_bytes(b"[1, 2]")
    with pytest.raises(WarehouseError, match=r"close.json is not a close record \(a JSON array, not an object"):
        closed_months(closes)
    record.write_bytes(whole.replace(b'"finance": {', b'"finance": "garbage", "was": {'))
    with pytest.raises(WarehouseError, match=r"2023-04/close.json: its finance entry is not an object"):
        export_month(wh, "2023-04", "csv", ["team"], closes=closes)
    archived = closes / ".reopened" / "2023-04-20230501T000000Z"
    archived.mkdir(parents=True)
    (archived / "reopen.json").write_bytes(b"{")
    with pytest.raises(WarehouseError, match=r"reopen.json is not a re-open record \(not JSON"):
        reopen_history(closes)
