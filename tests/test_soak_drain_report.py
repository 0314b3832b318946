"""Why the soak's wait after the traffic gave up is in its result and its printout (soak35). Before, `--json`
silenced the only line about it ("pipeline not drained after N s") and that line named no cause: a soak that failed
with "budget alerts delivered but spend is 0.0 %" (soak34) could not tell a lagging file tailer from a worker that
did not consume, a loader that did not serve, or a backlog sampler that took no sample."""

from __future__ import annotations

import asyncio
import json
import time

from app.soak import render
from tokenmeter import topics

NOW = 1_000_000.0


def _status(usage: int = 0, priced: int = 0, at: float = NOW - 1, worker: str = "running", loader: str = "running",
            progress_at: float | None = None) -> dict:
    stage_time = progress_at if progress_at is not None else at
    return {"state": "running",
            "children": [{"name": "worker", "state": worker, "restarts": 2, "last_exit_code": -9},
                         {"name": "loader", "state": loader, "restarts": 0, "last_exit_code": None}],
            "backlog": {"at": at, "backlog": {topics.USAGE: usage, topics.PRICED: priced, topics.ALERTS: 0},
                        "committed": {}, "progress_at": {topics.USAGE: stage_time, topics.PRICED: stage_time}}}


REPORT = {"soak-a": (3, 1)}


def test_a_worker_that_does_not_consume_is_named_with_its_state():
    from app.soak.settle import why_not_drained

    why = why_not_drained(_status(usage=40, progress_at=NOW - 95, worker="suspended"), (500, 500), NOW - 120,
                          [REPORT, REPORT], NOW)
    assert why == ("40 acknowledged usage records not yet metered by the worker at the last sample (nothing committed "
                   "for 95 s; worker suspended, 2 restarts, last exit -9)")


def test_a_loader_that_serves_no_totals_and_has_priced_records_waiting_is_named():
    from app.soak.settle import why_not_drained

    why = why_not_drained(_status(priced=7, loader="backoff"), (500, 500), NOW - 120, [REPORT, None], NOW)
    assert "7 priced records not yet loaded into the warehouse at the last sample" in why
    assert "no loader served the warehouse's live totals at the last poll (loader backoff, 0 restarts)" in why


def test_a_lagging_tailer_a_missing_sample_and_growing_totals_are_named():
    from app.soak.settle import why_not_drained

    assert why_not_drained(_status(), (100, 900), None, [], NOW).startswith(
        "the file collector had not caught up with the gateway log (checkpoint at byte 100 of 900)")
    stale = why_not_drained(_status(at=NOW - 30), (900, 900), NOW - 20, [REPORT, REPORT], NOW)
    assert "`up`'s last backlog sample is 30 s old, from before the file collector caught up" in stale
    none = why_not_drained({"state": "running", "children": [], "backlog": None}, (9, 9), NOW - 5, [REPORT], NOW)
    assert "`up` has taken no backlog sample" in none
    assert "`up` wrote no status file" in why_not_drained({}, (9, 9), NOW - 5, [None], NOW)
    growing = why_not_drained(_status(), (9, 9), NOW - 5, [REPORT, {"soak-a": (4, 2)}], NOW)
    assert growing == "the warehouse's totals were still growing at the last poll (loading, not done)"


def test_the_wait_gives_up_at_its_limit_and_says_why(tmp_path):
    """A real wait on a data dir where no `up` runs: nothing serves, nothing samples."""
    from app.soak.settle import settle

    gateway_log, checkpoint = tmp_path / "gateway.jsonl", tmp_path / "tail-checkpoint.json"
    gateway_log.write_text('{"event_id": "x"}\n')
    checkpoint.write_text(json.dumps({"offset": gateway_log.stat().st_size}))
    lines: list[str] = []
    started = time.monotonic()
    got = asyncio.run(settle(tmp_path, {"soak-a": (1, 1)}, dict, gateway_log, checkpoint, lines.append, limit_s=1.5))
    assert time.monotonic() - started < 10
    assert got.outcome == "gave up" and got.stored == {}
    assert got.why == "`up` wrote no status file (not running?); no loader served the warehouse's live totals at the " \
                      "last poll (loader not started by `up`)"
    assert lines == [f"  pipeline not drained after 2 s ({got.why}); checking what the warehouse holds"]
    assert got.as_json()["why"] == got.why and got.as_json()["evidence"]["tail_offset"] == 18


def test_the_printout_says_how_the_wait_ended_and_why_a_stop_could_not_drain():
    result = {"run_id": "r", "seed": 7, "minutes": 0.5, "cycles": 3, "seconds": 90.0, "events_acknowledged": 10,
              "by_source": {}, "duplicates_sent": 0, "hostile_sent": 0, "kills": [], "supervisor": {}, "ok": False,
              "checks": [], "logs": "/x/logs",
              "drain": {"outcome": "gave up", "waited_s": 300.2, "why": "no loader served the warehouse's live totals"},
              "stop_losses": [{"at_risk_records": 5, "waiting": {topics.USAGE: 5},
                               "why": "the worker or the loader is not running (gave up after 0 s)"}]}
    text = render(result)
    assert "drain after the traffic: gave up after 300 s: no loader served the warehouse's live totals" in text
    assert ("a clean stop of `up` left 5 records only in the broker ({'tokenmeter.usage': 5}): the worker or the "
            "loader is not running (gave up after 0 s)") in text
