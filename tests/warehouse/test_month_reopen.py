"""`tokenmeter reopen` on a real chDB warehouse: a closed month is archived (never deleted) with who, when and why;
a month whose corrections a later close booked is re-opened only with those later months (`--cascade`); after a
re-open, closing again counts each dollar once; closes and re-opens of one closes directory run one at a time."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from warehouse.backends import WarehouseError
from warehouse.export import export_month, month_bounds
from warehouse.finance import finance_showback, load_finance
from warehouse.month_close import close_month, closed_months
from warehouse.month_reopen import reopen_history, reopen_month

pytestmark = pytest.mark.slow(seconds=10)  # rough seconds: longest files first (tests/suite_order.py)

REPO = Path(__file__).resolve().parents[2]


def test_two_closes_of_one_month_at_once_close_it_once(wh, make_event, tmp_path):
    """Nothing serialised `close`: two at once both passed the "already closed" check (it is read before the
    month's charges are queried, the write comes after) and both reported success, the second snapshot replacing
    the first under the same name. One of them must be refused."""
    closes = tmp_path / "closes"
    wh.insert_priced([make_event(f"race-{i}", "race-org", team="a", cost="0.1", ts=f"2021-02-0{1 + i}T08:00:00Z")
                      for i in range(3)])
    start, results = threading.Barrier(2), []

    def close() -> None:
        start.wait()
        try:
            results.append(close_month(wh, closes, "2021-02", closed_by=threading.current_thread().name))
        except WarehouseError as exc:
            results.append(exc)

    threads = [threading.Thread(target=close, name=f"closer-{n}") for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, WarehouseError)]
    assert len(done) == 1 and len(refused) == 1, results
    assert "already closed" in str(refused[0])
    assert closed_months(closes)["2021-02"]["closed_by"] == done[0]["closed_by"]
    assert Decimal(done[0]["total_usd"]) == Decimal("0.3")


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENMETER_DATA_DIR=str(settings.data_dir))
    return subprocess.run([sys.executable, "-m", "app", *args], env=env, capture_output=True, text=True, timeout=120)


def _focus_by_team(wh, month: str, closes) -> dict[str, Decimal]:
    rows = list(csv.DictReader(io.StringIO(export_month(wh, month, "focus", ["team"], closes=closes).decode())))
    totals: dict[str, Decimal] = {}
    for row in rows:
        team = row["SubAccountId"][len("team="):]
        totals[team] = totals.get(team, Decimal(0)) + Decimal(row["BilledCost"])
    return totals


def _live_by_team(wh, first: str, last: str) -> dict[str, Decimal]:
    since, until = month_bounds(first)[0], month_bounds(last)[1]
    return {r["team"]: Decimal(str(r["cost_usd"])) for r in wh.spend(["team"], since=since, until=until).to_dicts()}


def test_reopen_cascade_then_close_again_counts_each_dollar_once(warehouse_settings, wh, make_event):
    """The whole cycle on real chDB: May closed; a late May event booked by June's close; `reopen --month May`
    refused (June holds May's late change) until `--cascade`, which archives June then May (nothing deleted, both
    listed with who, when and why); another late May event; May and June closed again in order: the totals are
    the old ones plus the new event, and FOCUS per team equals the live spend."""
    closes = Path(warehouse_settings.data_dir).resolve() / "closes"  # the CLI's
    d = Decimal
    try:
        wh.insert_priced([make_event("c-may-a", "cycle-org", team="a", cost="0.1", ts="2021-05-10T08:00:00Z"),
                          make_event("c-may-b", "cycle-org", team="b", cost="0.3", ts="2021-05-11T08:00:00Z")])
        may_close = close_month(wh, closes, "2021-05", closed_by="cfo")
        may_file = (closes / "2021-05" / "charges.parquet").read_bytes()
        wh.insert_priced([make_event("c-may-late", "cycle-org", team="a", cost="0.05", ts="2021-05-20T08:00:00Z"),
                          make_event("c-jun-a", "cycle-org", team="a", cost="0.2", ts="2021-06-03T08:00:00Z")])
        june_close = close_month(wh, closes, "2021-06", closed_by="cfo")
        assert june_close["corrections_booked"] == ["2021-05"]
        before = d(may_close["total_usd"]) + d(june_close["total_usd"])
        assert before == d("0.65")

        run = _cli(warehouse_settings, "reopen", "--month", "2021-05", "--by", "controller", "--reason", "late bill")
        assert run.returncode == 1 and "Traceback" not in run.stderr, run
        assert "closed month 2021-06 booked corrections of 2021-05" in run.stderr and "--cascade" in run.stderr
        assert set(closed_months(closes)) == {"2021-05", "2021-06"}  # refused: nothing moved

        run = _cli(warehouse_settings, "reopen", "--month", "2021-05", "--by", "controller", "--reason", "late bill",
                   "--cascade")
        assert run.returncode == 0, run
        lines = run.stdout.splitlines()
        assert lines[0].startswith("re-opened 2021-06, with 2021-05 (closed ") and lines[1].startswith(
            "re-opened 2021-05 (closed "), lines
        assert lines[2] == ("close again oldest first: tokenmeter close --month 2021-05, "
                            "then tokenmeter close --month 2021-06")
        assert not closed_months(closes)
        history = reopen_history(closes)
        assert [(r["month"], r["reopened_by"], r["reason"], r["reopened_with"]) for r in history] == [
            ("2021-05", "controller", "late bill", ""), ("2021-06", "controller", "late bill", "2021-05")]
        assert history[0]["close"] == may_close  # the close record as it was, its snapshot kept byte for byte
        assert (closes / history[0]["archived"] / "charges.parquet").read_bytes() == may_file
        listed = _cli(warehouse_settings, "close", "--list").stdout.splitlines()
        assert listed[0].startswith("2021-05  re-opened ") and "by controller: late bill" in listed[0]
        assert listed[1].startswith("2021-06  re-opened ") and "(with 2021-05)" in listed[1]
        assert f"was closed {may_close['closed_at']}  total 0.400000000000 USD  2 events  cfo" in listed[0]

        # Open again, each read live and once: May holds its late change, June only its own spend.
        assert _focus_by_team(wh, "2021-05", closes) == {"a": d("0.15"), "b": d("0.3")}
        assert _focus_by_team(wh, "2021-06", closes) == {"a": d("0.2")}
        wh.insert_priced([make_event("c-may-later", "cycle-org", team="b", cost="0.01", ts="2021-05-25T08:00:00Z")])

        may = close_month(wh, closes, "2021-05", closed_by="cfo")
        june = close_month(wh, closes, "2021-06", closed_by="cfo")
        assert june["corrections_booked"] == [] and d(june["total_usd"]) == d("0.2")
        assert d(may["total_usd"]) + d(june["total_usd"]) == before + d("0.01")
        may_focus, june_focus = _focus_by_team(wh, "2021-05", closes), _focus_by_team(wh, "2021-06", closes)
        assert may_focus == _live_by_team(wh, "2021-05", "2021-05") == {"a": d("0.15"), "b": d("0.31")}
        assert june_focus == _live_by_team(wh, "2021-06", "2021-06") == {"a": d("0.2")}
        showback = finance_showback(wh, load_finance(None), *month_bounds("2021-05"), closes=closes)
        assert {r["team"]: r["total_usd"] for r in showback.iter_rows(named=True)} == may_focus

        # Re-opened once more (June booked nothing of May now: no --cascade needed), stamped the same second as the
        # first re-open: its archive gets a name of its own.
        first = datetime.strptime(history[0]["reopened_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        again = reopen_month(closes, "2021-05", reopened_by="cfo", reason="typo in a tag", now=first)
        assert [r["month"] for r in again] == ["2021-05"] and set(closed_months(closes)) == {"2021-06"}
        assert [r["reason"] for r in reopen_history(closes) if r["month"] == "2021-05"] == ["late bill",
                                                                                          "typo in a tag"]
        assert again[0]["archived"] == history[0]["archived"] + "-2"
        assert close_month(wh, closes, "2021-05")["total_usd"] == may["total_usd"]
    finally:  # the CLI's closes directory is this module's
        shutil.rmtree(closes, ignore_errors=True)


def test_reopen_refuses_what_it_cannot_reopen_with_clear_errors(warehouse_settings, wh, make_event, tmp_path):
    closes = tmp_path / "closes"
    wh.insert_priced([make_event("x-mar", "refuse-org", team="a", cost="0.1", ts="2021-03-10T08:00:00Z")])
    close_month(wh, closes, "2021-03", closed_by="cfo")
    cases = {"2021-13": "'2021-13' is not YYYY-MM", "2021-04": r"2021-04 is not closed \(closed months: 2021-03\)",
             "2099-01": "2099-01 has not ended yet"}
    for month, error in cases.items():
        with pytest.raises(WarehouseError, match=error):
            reopen_month(closes, month, reopened_by="cfo", reason="why")
    for by, reason, error in (("", "why", "give --by"), ("cfo", "  ", "give --reason"),
                              ("cfo", "late\x1b[2Jbill", "--reason: control characters"),
                              ("cfo\x07", "why", "--by: control characters"),
                              ("cfo", "x" * 1001, "--reason: 1,001 characters; at most 1,000")):
        with pytest.raises(WarehouseError, match=re.escape(error)):
            reopen_month(closes, "2021-03", reopened_by=by, reason=reason)
    # a reason written over lines is kept on one (it split its `close --list` entry in two: walk29)
    (done,) = reopen_month(closes, "2021-03", reopened_by="cfo", reason="late bill\n\tfrom Azure")
    assert done["reason"] == "late bill from Azure"
    close_month(wh, closes, "2021-03", closed_by="cfo")
    reopen_month(closes, "2021-03", reopened_by="cfo", reason="why")
    with pytest.raises(WarehouseError, match="2021-03 is not closed; it was re-opened .* by cfo"):
        reopen_month(closes, "2021-03", reopened_by="cfo", reason="why")
    # Re-opened by hand (the unsupported way) after a later close booked it: both errors name the month to re-open.
    close_month(wh, closes, "2021-03")
    wh.insert_priced([make_event("x-mar-late", "refuse-org", team="a", cost="0.1", ts="2021-03-20T08:00:00Z")])
    assert close_month(wh, closes, "2021-04")["corrections_booked"] == ["2021-03"]
    shutil.rmtree(closes / "2021-03")
    with pytest.raises(WarehouseError, match="closed month 2021-04 booked corrections of it: re-open 2021-04"):
        reopen_month(closes, "2021-03", reopened_by="cfo", reason="why")
    with pytest.raises(WarehouseError, match=r"`tokenmeter reopen --month 2021-04 --cascade`"):
        close_month(wh, closes, "2021-03")
    reopen_month(closes, "2021-04", reopened_by="cfo", reason="restate March")
    assert Decimal(close_month(wh, closes, "2021-03")["total_usd"]) == Decimal("0.2")
    run = _cli(warehouse_settings, "reopen", "--month", "2021-03", "--reason", "why")
    assert run.returncode == 2 and "Missing option '--by'" in run.stderr, run


def test_a_reopen_and_a_close_at_once_leave_the_closes_consistent(wh, make_event, tmp_path):
    """A `reopen` of July while August closes, booking July's late change: one runs after the other. Either August
    booked it first and the re-open alone is refused, or July re-opened first and August books nothing of it; never
    a July open alone with August holding its late change (July could not be closed again)."""
    closes = tmp_path / "closes"
    wh.insert_priced([make_event("rc-jul", "rc-org", team="a", cost="0.1", ts="2021-07-10T08:00:00Z")])
    close_month(wh, closes, "2021-07")
    wh.insert_priced([make_event("rc-jul-late", "rc-org", team="a", cost="0.05", ts="2021-07-20T08:00:00Z"),
                      make_event("rc-aug", "rc-org", team="a", cost="0.2", ts="2021-08-03T08:00:00Z")])
    start, results = threading.Barrier(2), {}

    def run(name, step) -> None:
        start.wait()
        try:
            results[name] = step()
        except Exception as exc:  # noqa: BLE001 (unlocked, the close read July's snapshot while it moved away)
            results[name] = exc

    steps = {"close": lambda: close_month(wh, closes, "2021-08"),
             "reopen": lambda: reopen_month(closes, "2021-07", reopened_by="cfo", reason="restate")}
    threads = [threading.Thread(target=run, args=item) for item in steps.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    closed = closed_months(closes)
    assert "2021-08" in closed, results
    if "2021-07" in closed:  # August first: the re-open alone refused
        assert closed["2021-08"]["corrections_booked"] == ["2021-07"] and "--cascade" in str(results["reopen"])
    else:  # July first: August froze its own spend only, and July closes again with its late change
        assert closed["2021-08"]["corrections_booked"] == []
        assert Decimal(closed["2021-08"]["total_usd"]) == Decimal("0.2")
        assert Decimal(close_month(wh, closes, "2021-07")["total_usd"]) == Decimal("0.15")


def test_close_records_who_closed_on_one_line_and_defaults_to_the_login_name(wh, make_event, tmp_path):
    """walk30 noticed: `close` without `--by` recorded nobody (reference.md shows `--by WHO`; `reopen` requires it),
    and a `--by` with a newline or a terminal escape was kept as given (reopen's were refused or joined: walk29), so
    `close --list` split its line or ran the escape. The CLI now records the login name when `--by` is not given
    (and says so); close's `--by` is kept like reopen's."""
    import getpass

    closes = tmp_path / "closes"
    wh.insert_priced([make_event("x-may", "by-org", team="a", cost="0.1", ts="2021-05-10T08:00:00Z")])
    for by, error in (("cfo\x1b[2J", "--by: control characters"), ("x" * 1001, "--by: 1,001 characters")):
        with pytest.raises(WarehouseError, match=re.escape(error)):
            close_month(wh, closes, "2021-05", closed_by=by)
    assert close_month(wh, closes, "2021-05", closed_by="cfo\n  of record")["closed_by"] == "cfo of record"

    data_dir = tmp_path / "cli"  # a warehouse of its own: this process holds `wh`'s
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENMETER_DATA_DIR=str(data_dir))
    run = subprocess.run([sys.executable, "-m", "app", "close", "--month", "2021-06", "--allow-empty"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run
    assert f"closed by {getpass.getuser()} (the login name; --by names someone else)" in run.stdout, run.stdout
    assert closed_months(data_dir / "closes")["2021-06"]["closed_by"] == getpass.getuser()
