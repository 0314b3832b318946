"""The finance checks as the stack runs them, on real processes: a chDB warehouse served by its owner (this test,
as the loader would), `tokenmeter finance-watch` and `tokenmeter alerts dispatch` as child processes, the broker,
and a real webhook receiver. A cost drift and a stale source each reach the finance route exactly once although
the watch checks every second."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, time as day_time, timedelta, timezone

import pytest

from process_support import stop
from tokenmeter import topics
from tokenmeter.settings import Settings
from warehouse_template import empty_warehouse_in

pytestmark = pytest.mark.slow(seconds=11)  # rough seconds: longest files first (tests/suite_order.py)

NOW = datetime.now(timezone.utc).replace(microsecond=0)
DAY = NOW.date() - timedelta(days=2)


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """Finance alerts go to the real outbox topic: on a broker of this file's own, other files never see them."""
    return own_broker


def _event(event_id: str, source: str, ts: datetime, cost: str = "0.01", model: str = "gpt-4.1") -> dict:
    return {"event_id": event_id, "ts": ts.isoformat(), "source": source, "provider": "openai", "model": model,
            "status": "ok", "attribution": {"team": "search", "tags": {}},
            "usage": {"input_tokens": 1000, "output_tokens": 0}, "tokens_source": "provider", "cost_usd": cost,
            "cost_breakdown": {"input": cost}, "pricing_status": "priced",
            "price": {"entry": "openai/gpt-4.1", "effective_from": "2025-04-14", "catalog_version": "t"},
            "priced_at": ts.isoformat()}


def _seed(wh) -> None:
    from warehouse.records_load import record_to_row

    # a gateway that sent 4 events an hour for 8 days and went silent 3 hours ago: stale
    events = [_event(f"kong-{i}", "kong", NOW - timedelta(hours=3, minutes=15 * i), "0.001", "gpt-4o-mini")
              for i in range(8 * 24 * 4)]  # gpt-4o-mini: not on the bill below, and far below the 1 USD minimum
    # on DAY openai billed gpt-4.1 at 20 USD for the tokens we metered at 10 USD: a price change
    events += [_event(f"billed-{i}", "litellm", datetime.combine(DAY, day_time(12), timezone.utc), "1")
               for i in range(10)]
    assert wh.insert_priced(events) == len(events)
    start = datetime.combine(DAY, day_time(), timezone.utc)
    common = {"provider": "openai", "model": "gpt-4.1", "bucket_start": start.isoformat(),
              "bucket_end": (start + timedelta(days=1)).isoformat(), "fetched_at": NOW.isoformat()}
    records = [{**common, "id": "cost-1", "kind": "cost", "cost_usd": "20"},
               {**common, "id": "usage-1", "kind": "usage", "input_tokens": 10_000, "output_tokens": 0}]
    wh.insert_records(topics.PROVIDER_USAGE, [record_to_row(topics.PROVIDER_USAGE, r)[1] for r in records])


def test_drift_and_stale_source_alert_once_through_the_dispatcher(tmp_path, tmp_path_factory, kafka_bootstrap):
    from test_alerts_support import threaded_endpoint

    from warehouse import open_warehouse

    settings = Settings(data_dir=empty_warehouse_in(tmp_path, tmp_path_factory), kafka_bootstrap=kafka_bootstrap)
    wh = open_warehouse(settings, writer=True)  # serves the query endpoint, as the loader does
    procs: list[subprocess.Popen] = []
    try:
        _seed(wh)
        with threaded_endpoint() as ep:
            env = {**os.environ, "TOKENMETER_DATA_DIR": str(tmp_path), "TOKENMETER_KAFKA_BOOTSTRAP": kafka_bootstrap,
                   "TOKENMETER_ALERT_BACKOFF_SECONDS": "0.1"}
            # leak21: the routes are the dispatcher's; a route set only on finance-watch is not used (nor published)
            routes = {"finance-watch": f"webhook={ep.url('/watch-side')}", "alerts": f"webhook={ep.url('/finance')}"}
            for args in (["finance-watch", "--interval", "1"], ["alerts", "dispatch"]):
                own = {**env, "TOKENMETER_FINANCE_NOTIFY": json.dumps([routes[args[0]]])}
                procs.append(subprocess.Popen([sys.executable, "-m", "app", *args], env=own,
                                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{args[0]}.log", "w")))
            deadline = time.monotonic() + 60
            while len(ep.on("/finance")) < 2:
                assert time.monotonic() < deadline, (tmp_path / "finance-watch.log").read_text()[-3000:]
                assert all(p.poll() is None for p in procs), "a child process died"
                time.sleep(0.2)
            time.sleep(3)  # three more checks: nothing is sent again
            bodies = [s.json() for s in ep.on("/finance")]
            assert not ep.on("/watch-side")
            log = (tmp_path / "finance-watch.log").read_text()
            assert "read by the alert dispatcher" in log and "/watch-side" not in log
    finally:
        for proc in procs:
            stop(proc)
        wh.close()
    assert sorted(b["source"] for b in bodies) == ["completeness", "drift"]
    drift = next(b for b in bodies if b["source"] == "drift")
    assert drift["details"]["cause"] == "price_change" and drift["details"]["gap"] == "10.000000000000"
    assert drift["scope"] == {"provider": "openai", "model": "gpt-4.1"}
    stale = next(b for b in bodies if b["source"] == "completeness")
    assert stale["kind"] == "source_stale" and stale["scope"] == {"source": "kong"}
    assert all(p.returncode in (0, -15) for p in procs)


def test_finance_alerts_carry_no_route_and_go_to_the_dispatchers_routes(tmp_path, tmp_path_factory):
    """leak21: finance-watch copied TOKENMETER_FINANCE_NOTIFY into each drift and completeness alert's `notify`,
    so a Slack URL or PagerDuty routing key set there was plain on `tokenmeter.alerts` for any of its readers. The
    records now carry no route; the dispatcher delivers them to its own finance routes (checked on the record as
    published, engine-level: no processes)."""
    from streams.alerts.dispatcher import routes_for
    from warehouse import open_warehouse
    from warehouse.finance_watch import check_once

    secret = "https://hooks.slack.com/services/T0/B0/finance-secret"
    watch_settings = Settings(data_dir=empty_warehouse_in(tmp_path, tmp_path_factory), finance_notify=[f"slack={secret}"])
    wh = open_warehouse(watch_settings, writer=True)  # serves the query endpoint, as the loader does
    try:
        _seed(wh)
        alerts = check_once(watch_settings, NOW)
    finally:
        wh.close()
    assert sorted(a["source"] for a in alerts) == ["completeness", "drift"]
    assert [a["notify"] for a in alerts] == [[], []] and "finance-secret" not in json.dumps(alerts)
    dispatcher = Settings(data_dir=tmp_path / "dispatcher", finance_notify=["webhook=http://127.0.0.1:9/finance"])
    for alert in alerts:
        routes, failed = routes_for(alert, dispatcher)
        assert [(r.kind, r.target) for r in routes] == [("webhook", "http://127.0.0.1:9/finance")] and not failed
