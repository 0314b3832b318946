"""The dispatcher against the real broker and real local HTTP endpoints: every route gets its shape, one dead
endpoint does not delay another route, duplicates deliver once, and a restart while an endpoint is down
delivers exactly once afterwards. Each test uses its own topics and consumer group."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from test_alerts_support import (SECRET, alert_settings, deliveries, endpoint, make_alert, new_topics, produce,
                                 running_dispatcher, wait_until)

from streams.alerts.payloads import verify
from streams.alerts.state import read_topic
from tokenmeter.topics import DEADLETTER

pytestmark = pytest.mark.slow(seconds=14)  # rough seconds: longest files first (tests/suite_order.py)

PD_KEY = "0123456789abcdef0123456789abcdef"


async def _committed(bootstrap: str, topic: str, group: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum([await consumer.committed(TopicPartition(topic, p)) or 0 for p in (0, 1)])
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """This file produces hostile records to tokenmeter's topics: they stay on a broker of its own."""
    return own_broker


def test_routes_get_their_shapes_and_states_are_recorded_masked(kafka_bootstrap):
    async def run():
        names = await new_topics(kafka_bootstrap)
        async with endpoint() as ep:
            settings = alert_settings(kafka_bootstrap, pagerduty_url=ep.url("/v2/enqueue"))
            slack_url = ep.url("/services/T1/B2/slacksecret")
            alert = make_alert([f"slack={slack_url}", f"pagerduty={PD_KEY}", f"webhook={ep.url('/hook')}"],
                               severity="critical")
            anomaly = make_alert([], source="anomaly", kind="spend_spike", severity="warning",
                                 details={"observed": "9", "expected": "3", "unit": "usd_per_hour"})
            settings = settings.model_copy(update={"anomaly_notify": [f"webhook={ep.url('/anomalies')}"]})
            await produce(kafka_bootstrap, names.alerts, [alert, anomaly])
            async with running_dispatcher(settings, names):
                await ep.wait_for(4)
                await wait_until(lambda: _all_final(kafka_bootstrap, names.deliveries, 4), what="4 final states")
            slack = ep.on("/services/T1/B2/slacksecret")[0].json()
            assert slack["text"] and slack["blocks"][0]["type"] == "header"
            pd = ep.on("/v2/enqueue")[0].json()
            assert pd["routing_key"] == PD_KEY and pd["dedup_key"] == alert["dedup_key"]
            assert pd["payload"]["severity"] == "critical"
            hook = ep.on("/hook")[0]
            assert verify(SECRET, hook.headers["X-Tokenmeter-Timestamp"], hook.body, hook.headers["X-Tokenmeter-Signature"])
            assert ep.on("/anomalies")[0].json()["id"] == anomaly["id"]
            states = await deliveries(kafka_bootstrap, names.deliveries)
            assert set(states) == {f"{alert['id']}|slack", f"{alert['id']}|pagerduty", f"{alert['id']}|webhook",
                                   f"{anomaly['id']}|webhook"}
            raw = orjson.dumps(states).decode()
            assert "slacksecret" not in raw and PD_KEY not in raw
            assert states[f"{alert['id']}|slack"]["target"].endswith("/services/***")
            assert all(s["status"] == "delivered" and s["attempts"] == 1 for s in states.values())
            assert await _committed(kafka_bootstrap, names.alerts, names.group) == 2

    asyncio.run(run())


async def _all_final(bootstrap: str, topic: str, count: int) -> bool:
    states = await deliveries(bootstrap, topic)
    return len(states) >= count and all(s["status"] in ("delivered", "failed") for s in states.values())


def test_dead_endpoint_does_not_delay_other_routes(kafka_bootstrap):
    async def run():
        names = await new_topics(kafka_bootstrap)
        async with endpoint() as dead, endpoint() as ok:
            dead.hang = True
            settings = alert_settings(kafka_bootstrap, alert_timeout_seconds=2.0, alert_max_in_flight=4)
            # Many alerts to the hanging endpoint first, so it could fill every slot if limits were global only.
            stuck = [make_alert([f"webhook={dead.url(f'/dead{i}')}"]) for i in range(6)]
            healthy = make_alert([f"webhook={dead.url('/dead-too')}", f"slack={ok.url('/fine')}"])
            await produce(kafka_bootstrap, names.alerts, stuck + [healthy])
            async with running_dispatcher(settings, names):
                await ok.wait_for(1, "/fine", timeout=20)
                waited = ok.seen[0].at - dead.seen[0].at  # from the first request of this dispatcher
                assert waited < 1.5, f"the healthy route waited {waited:.2f} s for the dead one"
                assert len(dead.seen) <= 2  # per-host limit: the dead host holds at most 2 slots
                states = await deliveries(kafka_bootstrap, names.deliveries)
                assert states[f"{healthy['id']}|slack"]["status"] == "delivered"
            # The hanging deliveries were not final: nothing past the first of them was committed.
            assert await _committed(kafka_bootstrap, names.alerts, names.group) < 7

    asyncio.run(run())


def test_duplicate_alert_records_deliver_once(kafka_bootstrap):
    async def run():
        names = await new_topics(kafka_bootstrap)
        async with endpoint() as ep, endpoint() as other_ep:
            ep.script = [(500, "rollup_error", {})]  # first attempt fails: duplicates arrive while it retries
            settings = alert_settings(kafka_bootstrap, alert_backoff_seconds=0.3, alert_backoff_max_seconds=0.3)
            alert = make_alert([f"slack={ep.url('/dup')}"])
            other = make_alert([f"slack={other_ep.url('/other')}"])
            await produce(kafka_bootstrap, names.alerts, [alert, alert, other, alert])
            async with running_dispatcher(settings, names) as dispatcher:
                await ep.wait_for(2, "/dup")
                await other_ep.wait_for(1, "/other")
                await wait_until(lambda: _committed_is(kafka_bootstrap, names, 4), what="all 4 offsets committed")
                await produce(kafka_bootstrap, names.alerts, [alert])  # a late duplicate, after delivery
                await wait_until(lambda: _committed_is(kafka_bootstrap, names, 5), what="late duplicate committed")
                assert dispatcher.counters.duplicates == 3
            assert len(ep.on("/dup")) == 2  # one failed attempt, one delivery
            assert len(other_ep.on("/other")) == 1

    asyncio.run(run())


async def _committed_is(bootstrap, names, count) -> bool:
    return await _committed(bootstrap, names.alerts, names.group) == count


def test_restart_while_endpoint_down_delivers_exactly_once(kafka_bootstrap):
    async def run():
        names = await new_topics(kafka_bootstrap)
        async with endpoint() as ep:
            ep.default = (503, "down", {"Retry-After": "0"})
            settings = alert_settings(kafka_bootstrap, alert_max_attempts=50, alert_backoff_seconds=0.1,
                                      alert_backoff_max_seconds=0.1)
            alert = make_alert([f"webhook={ep.url('/hook')}"])
            await produce(kafka_bootstrap, names.alerts, [alert])
            async with running_dispatcher(settings, names):
                await ep.wait_for(3, "/hook")
            assert await _committed(kafka_bootstrap, names.alerts, names.group) == 0  # not final: not committed
            states = await deliveries(kafka_bootstrap, names.deliveries)
            before = states[f"{alert['id']}|webhook"]
            assert before["status"] == "retrying" and before["http_status"] == 503
            ep.default = (200, "ok", {})
            failures = len(ep.seen)
            async with running_dispatcher(settings, names):
                await wait_until(lambda: _committed_is(kafka_bootstrap, names, 1), what="alert committed")
            delivered = [s for s in ep.seen[failures:]]
            assert len(delivered) == 1 and delivered[0].headers["X-Tokenmeter-Alert-Id"] == alert["id"]
            state = (await deliveries(kafka_bootstrap, names.deliveries))[f"{alert['id']}|webhook"]
            assert state["status"] == "delivered" and state["attempts"] == failures + 1  # attempts carried over
            # A third run re-reads nothing and sends nothing.
            async with running_dispatcher(settings, names) as third:
                await wait_until(lambda: _started(third), what="third dispatcher polling")
                await asyncio.sleep(0.5)
            assert len(ep.seen) == failures + 1

    asyncio.run(run())


async def _started(dispatcher) -> bool:
    return dispatcher.started and bool(dispatcher.assigned)


def test_unreadable_records_are_dead_lettered_and_do_not_block(kafka_bootstrap):
    async def run():
        names = await new_topics(kafka_bootstrap)
        async with endpoint() as ep:
            good = make_alert([f"webhook={ep.url('/ok')}", "sms=+4912345"])
            routeless = make_alert([])  # kept and counted, sent nowhere
            await produce(kafka_bootstrap, names.alerts,
                          [b"{not json", {"id": "half", "source": "budget"}, good, routeless])
            async with running_dispatcher(alert_settings(kafka_bootstrap), names) as dispatcher:
                await ep.wait_for(1, "/ok")
                await wait_until(lambda: _committed_is(kafka_bootstrap, names, 4), what="all offsets committed")
                assert dispatcher.counters.invalid == 2 and dispatcher.counters.unrouted == 1
            states = await deliveries(kafka_bootstrap, names.deliveries)
            bad_route = [s for k, s in states.items() if k.startswith(good["id"] + "|invalid:")]
            assert bad_route and bad_route[0]["status"] == "failed" and "unknown route 'sms'" in bad_route[0]["last_error"]
            letters = [orjson.loads(r.value) for r in await read_topic(kafka_bootstrap, DEADLETTER)]
            mine = [x for x in letters if x.get("topic") == names.alerts]
            assert len(mine) == 2 and {x["stage"] for x in mine} == {"alerts"}
            assert any("not JSON" in x["reason"] for x in mine) and any("missing" in x["reason"] for x in mine)

    asyncio.run(run())


def test_resolve_waits_for_its_trigger_being_retried(kafka_bootstrap):
    """A trigger that needs retries and its resolve (same dedup_key) reach PagerDuty in outbox order."""
    async def run():
        names = await new_topics(kafka_bootstrap)
        async with endpoint() as ep:
            ep.script = [(500, "busy", {}), (500, "busy", {})]  # the trigger fails twice, then succeeds
            settings = alert_settings(kafka_bootstrap, pagerduty_url=ep.url("/v2/enqueue"))
            trigger = make_alert([f"pagerduty={PD_KEY}"], severity="critical")
            resolve = make_alert([f"pagerduty={PD_KEY}"], action="resolve", kind="resolve", severity="info",
                                 dedup_key=trigger["dedup_key"])
            await produce(kafka_bootstrap, names.alerts, [trigger, resolve])
            async with running_dispatcher(settings, names):
                seen = await ep.wait_for(4, "/v2/enqueue")
            actions = [s.json()["event_action"] for s in seen]
            assert actions == ["trigger", "trigger", "trigger", "resolve"]

    asyncio.run(run())


def test_a_route_retrying_does_not_hold_the_next_alert_of_its_condition_on_other_routes(kafka_bootstrap):
    """walk32: a budget batch crossing 50, 80 and 100 % publishes three alerts with one dedup_key. With PagerDuty
    down, the 100 % (critical, "blocked") alert waited for the 50 % one's PagerDuty retries before going to Slack
    too (minutes with the default backoff, up to an hour per Retry-After). Order is kept per route only."""
    async def run():
        names = await new_topics(kafka_bootstrap)
        async with endpoint() as pd, endpoint() as ok:
            pd.default = (500, "down", {})  # every PagerDuty attempt fails
            settings = alert_settings(kafka_bootstrap, pagerduty_url=pd.url("/v2/enqueue"), alert_max_attempts=3,
                                      alert_backoff_seconds=3.0, alert_backoff_max_seconds=3.0)
            routes = [f"pagerduty={PD_KEY}", f"slack={ok.url('/slack')}"]
            first = make_alert(routes, severity="warning")
            last = make_alert(routes, severity="critical", dedup_key=first["dedup_key"])
            await produce(kafka_bootstrap, names.alerts, [first, last])
            async with running_dispatcher(settings, names):
                slack = await ok.wait_for(2, "/slack", timeout=20)
                waited = slack[1].at - slack[0].at
                assert waited < 1.5, f"the critical alert's Slack message waited {waited:.2f} s for PagerDuty"
                assert first["id"] in slack[0].body.decode() and last["id"] in slack[1].body.decode()
                seen = await pd.wait_for(6, "/v2/enqueue", timeout=30)
            # PagerDuty still gets the condition's alerts in outbox order: the first one's attempts, then the next
            severities = [s.json()["payload"]["severity"] for s in seen]
            assert severities == ["warning"] * 3 + ["critical"] * 3

    asyncio.run(run())


def test_a_misspelt_anomaly_route_is_a_failed_delivery_that_does_not_show_its_secret(kafka_bootstrap, caplog):
    """walk32: TOKENMETER_ANOMALY_NOTIFY='["slack:https://hooks.slack.com/services/…"]' (a colon for the `=`) was
    recorded as a failed delivery whose route and reason held the whole URL: on tokenmeter.alert-deliveries, in
    the warehouse, `alerts list`, the dashboard and the dispatcher's log."""
    async def run():
        names = await new_topics(kafka_bootstrap)
        async with endpoint() as ok:
            settings = alert_settings(kafka_bootstrap, anomaly_notify=[
                "slack:https://hooks.slack.com/services/T0/B0/walk32secret", f"webhook={ok.url('/fine')}"])
            alert = make_alert([], source="anomaly", kind="spend_rate")
            await produce(kafka_bootstrap, names.alerts, [alert])
            async with running_dispatcher(settings, names):
                await ok.wait_for(1, "/fine")
                await wait_until(lambda: _all_final(kafka_bootstrap, names.deliveries, 2), what="2 final states")
            states = await deliveries(kafka_bootstrap, names.deliveries)
        failed = [s for s in states.values() if s["status"] == "failed"]
        assert len(failed) == 1 and "is not slack=URL" in failed[0]["last_error"]
        assert "walk32secret" not in orjson.dumps(states).decode().lower()
        assert "walk32secret" not in caplog.text.lower()

    asyncio.run(run())
