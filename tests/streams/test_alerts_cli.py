"""`tokenmeter alerts test|list|dispatch` and the dispatcher's /health and /metrics, on the real broker and
real local HTTP endpoints."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import aiohttp
import orjson
from click.testing import CliRunner
from test_alerts_support import (SECRET, alert_settings, endpoint, make_alert, new_topics, produce,
                                 running_dispatcher, threaded_endpoint)

from streams.alerts.cli import alerts
from streams.alerts.http_api import serve
from streams.alerts.payloads import verify
from tokenmeter import topics
from tokenmeter.settings import free_port

PD_KEY = "0123456789abcdef0123456789abcdef"


def _env(bootstrap: str, **extra: str) -> dict[str, str]:
    return {"TOKENMETER_KAFKA_BOOTSTRAP": bootstrap, "TOKENMETER_WEBHOOK_SECRET": SECRET,
            "TOKENMETER_ALERT_BACKOFF_SECONDS": "0.05", **extra}


def test_alerts_test_sends_a_sample_per_route_and_reports_failures():
    with threaded_endpoint() as ep:
        ep.script = [(404, "channel_not_found", {})]
        env = _env("127.0.0.1:1", TOKENMETER_PAGERDUTY_URL=ep.url("/v2/enqueue"))
        result = CliRunner().invoke(alerts, ["test", "--notify", f"slack={ep.url('/services/T/B/sekrit')}"], env=env)
        assert result.exit_code == 1, result.output
        assert "failed (HTTP 404" in result.output and "channel_not_found" in result.output
        assert "sekrit" not in result.output
        result = CliRunner().invoke(alerts, ["test", "--anomaly", "--notify", f"slack={ep.url('/services/T/B/sekrit')}",
                                             "--notify", f"pagerduty={PD_KEY}", "--notify", f"webhook={ep.url('/in')}"],
                                    env=env)
        assert result.exit_code == 0, result.output
        assert result.output.count("delivered") == 3 and PD_KEY not in result.output
        hook = ep.on("/in")[0]
        assert verify(SECRET, hook.headers["X-Tokenmeter-Timestamp"], hook.body, hook.headers["X-Tokenmeter-Signature"])
        assert hook.json()["source"] == "anomaly" and ep.on("/v2/enqueue")[0].json()["routing_key"] == PD_KEY
        bad = CliRunner().invoke(alerts, ["test", "--notify", "sms=123"], env=env)
        assert bad.exit_code == 2 and "unknown route 'sms'" in bad.output


def test_alerts_list_shows_alerts_with_delivery_state(kafka_bootstrap):
    alert = make_alert(["slack=http://127.0.0.1:1/services/T/B/listsecret"], title=f"list test {uuid.uuid4().hex}")
    state = {"alert_id": alert["id"], "route": "slack", "target": "http://127.0.0.1:1/services/***",
             "status": "failed", "attempts": 3, "last_error": "HTTP 410: channel_is_archived", "http_status": 410,
             "at": "2026-11-20T10:00:01Z"}

    async def seed():
        await produce(kafka_bootstrap, topics.ALERTS, [alert])
        await produce(kafka_bootstrap, topics.ALERT_DELIVERIES, [])
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topics.ALERT_DELIVERIES, orjson.dumps(state), key=f"{alert['id']}|slack".encode())
        finally:
            await producer.stop()

    asyncio.run(seed())
    env = _env(kafka_bootstrap)
    result = CliRunner().invoke(alerts, ["list", "--format", "json", "--limit", "10000"], env=env)
    assert result.exit_code == 0, result.output
    mine = [a for a in orjson.loads(result.output) if a["id"] == alert["id"]]
    assert len(mine) == 1 and mine[0]["deliveries"][0]["status"] == "failed"
    assert "listsecret" not in result.output
    table = CliRunner().invoke(alerts, ["list", "--limit", "10000"], env=env)
    assert table.exit_code == 0 and "slack:failedx3 HTTP 410" in table.output


def test_health_and_metrics_endpoint(kafka_bootstrap):
    async def run():
        names = await new_topics(kafka_bootstrap)
        async with endpoint() as ep:
            await produce(kafka_bootstrap, names.alerts, [make_alert([f"webhook={ep.url()}"])])
            port = free_port()
            async with running_dispatcher(alert_settings(kafka_bootstrap), names) as dispatcher, \
                    serve(dispatcher, "127.0.0.1", port), aiohttp.ClientSession() as http:
                await ep.wait_for(1)
                deadline = time.monotonic() + 10
                while dispatcher.counters.delivered < 1 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                    health = await resp.json()
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    metrics = await resp.text()
            assert health["status"] == "ok" and health["delivered"] == 1 and health["partitions"] == 2
            assert "tokenmeter_alerts_delivered_total 1" in metrics and "tokenmeter_alerts_in_flight 0" in metrics

    asyncio.run(run())


def test_dispatch_command_stops_cleanly_on_sigterm(kafka_bootstrap, tmp_path):
    """What `tokenmeter up` would spawn: `tokenmeter alerts dispatch`; SIGTERM ends it with exit code 0."""
    port = free_port()
    env = {**os.environ, **_env(kafka_bootstrap, TOKENMETER_ALERTS_PORT=str(port),
                                TOKENMETER_DATA_DIR=str(tmp_path))}
    log_path = tmp_path / "dispatch.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "app", "alerts", "dispatch"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                import urllib.request

                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
        assert "alert dispatcher stopped" in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_alerts_list_without_a_broker_says_what_to_do(tmp_path):
    """With the stack stopped and nothing in the warehouse, `tokenmeter alerts list` ended in "KafkaConnectionError:
    Unable to bootstrap from [('127.0.0.1', 9092, <AddressFamily.AF_INET: 2>)]"."""
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(alerts, ["list"], env=_env(bootstrap, TOKENMETER_DATA_DIR=str(tmp_path)))
    assert result.exit_code == 1, result.output
    assert (f"cannot read the alerts topic on {bootstrap}: no Kafka broker answers at {bootstrap}; start the stack "
            "(`tokenmeter up`) or point TOKENMETER_KAFKA_BOOTSTRAP at your brokers") in result.output, result.output


def test_the_sample_anomaly_alert_has_the_shape_of_the_detectors():
    """walk30: `alerts test --anomaly` sent kind `spend_spike`, which the detector never sends (its kinds are
    streams/anomalies/kinds.py's), without the `mute_command` a real trigger carries: a receiver routing on `kind`
    was tested against a record production never writes. The sample is now the detector's own trigger of a spend
    rate anomaly, marked TEST."""
    from streams.alerts.cli import sample_alert
    from streams.anomalies.kinds import KIND_ORDER

    trigger = sample_alert(True, False, ["webhook=http://127.0.0.1:1/in"], "http://127.0.0.1:8050/")
    assert trigger["kind"] in KIND_ORDER and trigger["source"] == "anomaly" and trigger["action"] == "trigger"
    assert trigger["title"].startswith("TEST: ") and trigger["id"].startswith("test-")
    assert trigger["notify"] == ["webhook=http://127.0.0.1:1/in"]
    assert {"anomaly_id", "observed", "expected", "expected_low", "expected_high", "unit", "start", "end", "status",
            "mute_command"} <= set(trigger["details"])
    assert trigger["details"]["mute_command"].startswith(f"tokenmeter anomalies mute test --kind {trigger['kind']} ")
    resolve = sample_alert(True, True, [], "")
    assert resolve["kind"] == trigger["kind"] and resolve["action"] == "resolve"
    assert resolve["dedup_key"] == trigger["dedup_key"] and "mute_command" not in resolve["details"]


def test_a_notify_entry_without_kind_is_a_usage_error_that_hides_it():
    """walk32: `--notify slack:https://…` (a colon for the `=`) or a bare URL ended in a Python traceback; an entry
    without `=` was also echoed whole ("unknown route 'slack:https://hooks.slack.com/services/…'")."""
    for entry in ("slack:https://hooks.slack.com/services/T0/B0/topsecret1",
                  "https://hooks.slack.com/services/T0/B0/topsecret2", "pagerduty topsecret3topsecret3topsecret3"):
        result = CliRunner().invoke(alerts, ["test", "--notify", entry], env=_env("127.0.0.1:1"))
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
        assert "is not slack=URL, pagerduty=ROUTING_KEY or webhook=URL" in result.output
        assert "topsecret" not in result.output


def test_alert_links_point_at_the_dashboards_public_address():
    """walk32: with TOKENMETER_HOST=0.0.0.0 (docker-compose.yml) every alert's Open dashboard button, PagerDuty link
    and webhook `dashboard_url` was http://0.0.0.0:8050/..., which no on-call browser opens, and nothing set it."""
    with threaded_endpoint() as ep:
        env = {**_env("127.0.0.1:1"), "TOKENMETER_HOST": "0.0.0.0", "TOKENMETER_DASH_PORT": "8050"}
        public = {**env, "TOKENMETER_DASHBOARD_PUBLIC_URL": "https://tokenmeter.example.com/"}
        result = CliRunner().invoke(alerts, ["test", "--notify", f"webhook={ep.url('/public')}",
                                             "--notify", f"slack={ep.url('/services/T/B/x')}"], env=public)
        assert result.exit_code == 0, result.output
        result = CliRunner().invoke(alerts, ["test", "--notify", f"webhook={ep.url('/default')}"], env=env)
        assert result.exit_code == 0, result.output
        bad = CliRunner().invoke(alerts, ["test", "--notify", f"webhook={ep.url('/x')}"],
                                 env={**env, "TOKENMETER_DASHBOARD_PUBLIC_URL": "tokenmeter.example.com"})
        hooks = {s.path: s for s in ep.seen}
    assert hooks["/public"].json()["dashboard_url"] == "https://tokenmeter.example.com/"
    assert "https://tokenmeter.example.com/" in hooks["/services/T/B/x"].body.decode()
    assert hooks["/default"].json()["dashboard_url"] == "http://localhost:8050/"  # never a wildcard address
    assert bad.exit_code != 0 and "TOKENMETER_DASHBOARD_PUBLIC_URL" in str(bad.exception) + bad.output


def test_alerts_list_shows_every_time_at_one_precision_newest_first(kafka_bootstrap, tmp_path_factory):
    """walk36: `alerts list` printed AT as each alert carried it: a live budget alert's event time with
    microseconds (2026-12-07T22:30:26.123456Z), others in whole seconds, the warehouse's copies as
    2026-12-07T22:30:26+00:00; sorted as those strings, so within a second the order was the strings'. One column
    of UTC times to the second now, in time order."""
    from warehouse import open_warehouse
    from warehouse.records_load import record_to_row
    from warehouse_template import empty_warehouse_in

    from tokenmeter.settings import Settings

    mark = uuid.uuid4().hex[:8]
    live = make_alert([], title=f"{mark} live budget", at="2030-01-02T03:04:05.987654Z")
    whole = make_alert([], title=f"{mark} whole seconds", at="2030-01-02T03:04:05Z")
    asyncio.run(produce(kafka_bootstrap, topics.ALERTS, [live, whole]))
    data_dir = empty_warehouse_in(tmp_path_factory.mktemp("alerts-at"), tmp_path_factory)
    stored = make_alert([], title=f"{mark} from the warehouse", at="2030-01-02T03:04:06.5Z")
    wh = open_warehouse(Settings(data_dir=data_dir), writer=True, serve=False)
    try:
        wh.insert_records(topics.ALERTS, [record_to_row(topics.ALERTS, stored)[1]])
    finally:
        wh.close()
    table = CliRunner().invoke(alerts, ["list", "--limit", "10000"],
                               env=_env(kafka_bootstrap, TOKENMETER_DATA_DIR=str(data_dir)))
    assert table.exit_code == 0, table.output
    mine = [line for line in table.output.splitlines() if mark in line]
    assert [line.split("  ")[0] for line in mine] == ["2030-01-02 03:04:06 UTC", "2030-01-02 03:04:05 UTC",
                                                      "2030-01-02 03:04:05 UTC"], table.output
    assert [line.split(mark)[1].split("  ")[0].strip() for line in mine] == [
        "from the warehouse", "live budget", "whole seconds"], mine
    # --format json: every `at` as alert records write times (UTC, "Z"), the warehouse's copy too (it said
    # "2030-01-02T03:04:06.500000+00:00" beside the topic's "...Z": two forms in one list for a script to parse)
    listed = CliRunner().invoke(alerts, ["list", "--limit", "10000", "--format", "json"],
                                env=_env(kafka_bootstrap, TOKENMETER_DATA_DIR=str(data_dir)))
    assert listed.exit_code == 0, listed.output
    ats = {a["title"].removeprefix(f"{mark} "): a["at"] for a in orjson.loads(listed.output) if mark in a["title"]}
    assert ats == {"from the warehouse": "2030-01-02T03:04:06.500000Z", "live budget": "2030-01-02T03:04:05.987654Z",
                   "whole seconds": "2030-01-02T03:04:05Z"}, ats
