"""The chaos soak in small: 3 cycles of random SIGKILLs of every component (worker, loader, dispatcher, anomaly
runner, dashboard, both collectors, the broker and `up` itself) under steady traffic, then every check of
`tokenmeter soak` must pass (docs/soak.md)."""

from __future__ import annotations

import pytest

from app.soak import kill_plan, time_budget
from soak_support import SoakRun, failure_report, log_tails, run_soak

pytestmark = pytest.mark.slow(seconds=85)  # rough seconds: longest files first (tests/suite_order.py)
VICTIMS = {"worker", "loader", "alerts", "anomalies", "dashboard", "collector-http", "collector-file", "broker", "up"}


def test_three_cycle_soak_passes_every_check(tmp_path):
    """On failure the message names the seed, the commands that replay this soak and every log's last lines
    (tests/soak_support.py); the logs stay under tmp_path."""
    run = run_soak(tmp_path, ["--minutes", "0.5", "--cycles", "3"], timeout=time_budget(30) + 150)
    if run.failed_checks():  # pytest.fail: the report alone, without pytest repeating the expression's parts
        pytest.fail(failure_report(run, run.failed_checks()), pytrace=False)
    result = run.result
    problems = []
    if run.returncode != 0:
        problems.append(f"every check passed but the soak exited {run.returncode}")
    if {k["victim"] for k in result["kills"]} != VICTIMS:
        problems.append(f"not every component was killed: {[k['victim'] for k in result['kills']]}")
    if result["events_acknowledged"] <= 200:
        problems.append(f"only {result['events_acknowledged']} events acknowledged")
    # the reserving gateway reached its hard budget (refused at the limit) and the verdict on it was taken
    if not any(c["name"] == "reserving gateway never past its limit" for c in result["checks"]):
        problems.append("no verdict on the reserving gateway")
    if not (result["reservations"]["billed"] > 0 and result["reservations"]["refused"] > 0):
        problems.append(f"the reserving gateway did not reach its limit: {result['reservations']}")
    if problems:
        pytest.fail(failure_report(run, problems), pytrace=False)


def test_a_failed_soak_names_its_seed_how_to_replay_it_and_its_logs(tmp_path):
    """soak34's failures were debugged from up.log alone: the test printed neither the seed nor any log, and the
    worker's and loader's logs were gone with the run's tmp dir. A failure's message must be enough."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "data" / "logs").mkdir(parents=True)
    (tmp_path / "logs" / "up.log").write_text("starting\n" + "".join(f"up line {i}\n" for i in range(20)))
    (tmp_path / "data" / "logs" / "worker.log").write_text("worker line\n" + "x" * 5000 + "\n")
    (tmp_path / "data" / "logs" / "loader.log").write_text("")
    check = {"name": "warehouse totals", "ok": False, "summary": "MISMATCH: 6 acknowledged events missing",
             "details": {"unexplained_lost": ["soak-e3313de2-file-1293"]}}
    run = SoakRun(seed=630846303, args=["--minutes", "0.5", "--cycles", "3", "--seed", "630846303"], base=tmp_path,
                  result={"checks": [check], "drain": {"outcome": "gave up", "waited_s": 20.1,
                                                       "why": "no loader served the warehouse's live totals"}},
                  returncode=1, stderr="")
    text = failure_report(run, run.failed_checks())
    assert text.startswith("warehouse totals: MISMATCH: 6 acknowledged events missing {\"unexplained_lost\": [\"soak-e3313de2")
    assert "the wait after the traffic: gave up after 20.1 s: no loader served the warehouse's live totals" in text
    assert "soak seed 630846303" in text
    assert ("TOKENMETER_SOAK_SEED=630846303 .venv/bin/python -m pytest "
            "tests/test_soak.py::test_three_cycle_soak_passes_every_check") in text
    assert ("PYTHONPATH=. .venv/bin/python -m app soak --minutes 0.5 --cycles 3 --seed 630846303 "
            "--data-dir /tmp/soak-630846303") in text
    assert f"--- {tmp_path / 'logs' / 'up.log'} (last 6 lines)\nup line 14\n" in text and "up line 19" in text
    assert "up line 13" not in text and "starting" not in text
    assert f"--- {tmp_path / 'data' / 'logs' / 'worker.log'} (last 2 lines)\nworker line\n{'x' * 300}\n" in text
    assert f"--- {tmp_path / 'data' / 'logs' / 'loader.log'} (last 0 lines)" in text
    crashed = SoakRun(seed=5, args=["--seed", "5"], base=tmp_path / "none", result=None, returncode=-9,
                      stderr="Traceback ...\nRuntimeError: boom\n\n(killed after 300 s: past the soak's own time budget)")
    text = failure_report(crashed, crashed.failed_checks())
    assert text.startswith("the soak gave no result (exit -9)\nsoak seed 5;")
    assert "RuntimeError: boom" in text and "killed after 300 s" in text
    assert log_tails(tmp_path / "none") == f"(no logs under {tmp_path / 'none'})"


def test_the_kill_plan_comes_from_the_seed_alone():
    """`--seed` replays a soak: the same victims at the same moments (the result's `plan`); every component is
    killed in a 3-cycle run."""
    plan = kill_plan(630846303, 3, 30)
    assert plan == kill_plan(630846303, 3, 30) and plan != kill_plan(630846304, 3, 30)
    assert {victim for _, victim, _ in plan} == VICTIMS and len(plan) == 9
    assert [cycle for cycle, _, _ in plan] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert all(0 < at < 30 for _, _, at in plan) and [at for _, _, at in plan] == sorted(at for _, _, at in plan)


def test_a_send_in_doubt_at_the_stop_counts_as_acknowledged_only_if_stored():
    """The 3-cycle soak failed once in CI with 4 events "stored but never acknowledged": one HTTP batch, posted while
    the collector was killed (it had produced the batch before dying), retried until the traffic stopped, never
    answered 202. No client is left to retry such a send; the warehouse decides: stored means acknowledged."""
    from app.soak.traffic import Ledger

    ledger = Ledger(run_id="t")
    batch = [ledger.new_event("http") for _ in range(4)]
    ledger.leave_in_doubt(batch, "http")
    ledger.settle_in_doubt({batch[0]["event_id"], batch[1]["event_id"], "soak-t-other"})
    assert sorted(ledger.acked) == sorted(e["event_id"] for e in batch[:2]) and ledger.sent["http"] == 2
    assert sorted(ledger.in_doubt) == sorted(e["event_id"] for e in batch[2:])
    assert "_source" not in ledger.acked[batch[0]["event_id"]]


def test_a_threshold_reached_only_with_usage_lost_with_the_broker_may_have_been_delivered():
    """The live budget counts usage when the worker prices it; a broker loss (memory-only embedded broker) can then
    lose its priced record before the warehouse stores it. A 100 % alert at $1.1202 of $1.12 was right, though the
    warehouse ended at $1.1156 (99.6 %): the soak failed in CI on it. Spend short of a threshold even with the lost
    usage is still wrong, and a threshold the stored spend reached must still be delivered."""
    from decimal import Decimal

    from app.soak.checks import alerts_check
    from app.soak.receiver import ROUTES, Delivery

    limits = {"budget-soak-b": Decimal("1.12")}
    delivered = [Delivery(route, f"id-{t}", "threshold", "trigger", "budget-soak-b", t)
                 for route in ROUTES for t in (50, 80, 100)]
    spend = {"budget-soak-b": Decimal("1.1156")}
    assert alerts_check(limits, (50, 80, 100), spend, delivered, {"budget-soak-b": Decimal("0.0046")}).ok
    assert not alerts_check(limits, (50, 80, 100), spend, delivered, {"budget-soak-b": Decimal("0.0040")}).ok
    assert not alerts_check(limits, (50, 80, 100), spend, delivered).ok
    assert not alerts_check(limits, (50, 80, 100), spend, delivered[1:], {"budget-soak-b": Decimal("0.0046")}).ok


def test_the_alert_verdict_reads_the_warehouse_after_the_stop_not_the_spend_when_the_wait_gave_up():
    """A soak at load 27 (seed 97529815): the wait after the traffic gave up after 20 s with no loader serving, so
    the spend it saw was {} and every delivered threshold read "delivered but spend is 0.0 %", while the warehouse
    held $1.59-1.71 per budget once the stack was down. The verdict reads that warehouse (and says what the wait saw)."""
    from decimal import Decimal

    from app.soak import alert_check
    from app.soak.receiver import ROUTES, Delivery

    limits = {"soak-a": Decimal("2.00")}
    delivered = [Delivery(route, "id-50", "threshold", "trigger", "budget-soak-a", 50) for route in ROUTES]
    final = {"soak-a": (120, Decimal("1.59")), "soak-d": (80, Decimal("1.2"))}
    check = alert_check(limits, {}, final, delivered, {})
    assert check.ok, check.summary
    assert check.details["spend_when_the_wait_ended"] == "none: no loader served"
    assert "spend_when_the_wait_ended" not in alert_check(limits, {"budget-soak-a": Decimal("1.59")}, final,
                                                          delivered, {}).details
    assert not alert_check(limits, {}, {"soak-a": (1, Decimal("0.5"))}, delivered, {}).ok  # 25 %: not reached
    assert not alert_check(limits, {}, final, [], {}).ok  # reached and not delivered


def test_the_soak_runs_every_role_whatever_the_callers_setting(monkeypatch, tmp_path):
    """roles37: TOKENMETER_UP_WITHOUT in the environment `tokenmeter soak` is started from would leave victims out of
    its `up` (a kill then finds no dispatcher to kill, the hygiene check misses a role): the soak sets its own."""
    from app.soak import stack_env

    monkeypatch.setenv("TOKENMETER_UP_WITHOUT", "alerts,dashboard")
    assert stack_env(tmp_path, 1, tmp_path / "budgets.yaml")["TOKENMETER_UP_WITHOUT"] == ""
