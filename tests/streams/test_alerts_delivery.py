"""The retry policy against real local HTTP servers: retry on 5xx, Retry-After on 429, no retry on 400,
timeouts and refused connections retried, webhook signatures, PagerDuty trigger/resolve."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from test_alerts_support import SECRET, alert_settings, endpoint, make_alert

from streams.alerts.delivery import Counters, Sender
from streams.alerts.payloads import verify
from streams.alerts.routes import parse_routes
from tokenmeter.settings import free_port

BOOTSTRAP = "127.0.0.1:1"  # no Kafka here


async def _deliver(settings, alert, entry, changes=None):
    route = parse_routes([entry])[0][0]
    async with aiohttp.ClientSession() as session:
        sender = Sender(settings, session, Counters())

        async def record(state):
            if changes is not None:
                changes.append((state.status, state.attempts, state.http_status))

        state = await sender.deliver(alert, route, on_change=record)
        return state, sender.counters


def test_retry_on_500_then_delivered_and_every_state_change_reported():
    async def run():
        async with endpoint() as ep:
            ep.script = [(500, "rollup_error", {}), (502, "bad gateway", {})]
            changes = []
            state, counters = await _deliver(alert_settings(BOOTSTRAP), make_alert([]), f"slack={ep.url()}", changes)
            assert state.status == "delivered" and state.attempts == 3 and state.http_status == 200
            assert changes == [("retrying", 1, 500), ("retrying", 2, 502), ("delivered", 3, 200)]
            assert counters.retried == 2 and counters.delivered == 1 and counters.in_flight == 0
            assert len(ep.seen) == 3 and ep.seen[0].body == ep.seen[2].body  # same message each time

    asyncio.run(run())


def test_429_retry_after_is_honoured():
    async def run():
        async with endpoint() as ep:
            ep.script = [(429, "rate_limited", {"Retry-After": "1"})]
            state, _ = await _deliver(alert_settings(BOOTSTRAP), make_alert([]), f"slack={ep.url()}")
            assert state.status == "delivered" and state.attempts == 2
            gap = ep.seen[1].at - ep.seen[0].at
            assert gap >= 0.95, f"retried after {gap:.2f} s despite Retry-After: 1"  # backoff alone is <= 0.05 s

    asyncio.run(run())


def test_400_is_not_retried_and_reports_status_and_body():
    async def run():
        async with endpoint() as ep:
            ep.default = (400, "invalid_payload", {})
            changes = []
            state, counters = await _deliver(alert_settings(BOOTSTRAP), make_alert([]), f"slack={ep.url()}", changes)
            assert state.status == "failed" and state.attempts == 1 and state.http_status == 400
            assert "invalid_payload" in state.last_error and len(ep.seen) == 1
            assert changes == [("failed", 1, 400)] and counters.failed == 1

    asyncio.run(run())


def test_gives_up_after_max_attempts_on_persistent_503():
    async def run():
        async with endpoint() as ep:
            ep.default = (503, "down", {})
            state, _ = await _deliver(alert_settings(BOOTSTRAP, alert_max_attempts=3), make_alert([]),
                                      f"webhook={ep.url()}")
            assert state.status == "failed" and state.attempts == 3 and len(ep.seen) == 3
            assert "gave up after 3 attempts" in state.last_error and state.http_status == 503

    asyncio.run(run())


def test_timeouts_and_refused_connections_are_retried():
    async def run():
        async with endpoint() as ep:
            ep.hang = True
            settings = alert_settings(BOOTSTRAP, alert_timeout_seconds=0.3, alert_max_attempts=2)
            state, _ = await _deliver(settings, make_alert([]), f"webhook={ep.url()}")
            assert state.status == "failed" and state.attempts == 2 and "no response within 0.3 s" in state.last_error
        state, _ = await _deliver(settings, make_alert([]), f"webhook=http://127.0.0.1:{free_port()}/x")
        assert state.status == "failed" and state.attempts == 2 and state.http_status is None
        assert "Connect" in state.last_error  # the exception type, for people; not used to decide

    asyncio.run(run())


def test_webhook_is_signed_and_carries_the_alert_id():
    async def run():
        async with endpoint() as ep:
            alert = make_alert([])
            state, _ = await _deliver(alert_settings(BOOTSTRAP), alert, f"webhook={ep.url('/in')}")
            assert state.status == "delivered"
            seen = ep.seen[0]
            timestamp = seen.headers["X-Tokenmeter-Timestamp"]
            assert abs(int(timestamp) - time.time()) < 30
            assert verify(SECRET, timestamp, seen.body, seen.headers["X-Tokenmeter-Signature"])
            assert seen.headers["X-Tokenmeter-Alert-Id"] == alert["id"] and seen.json()["id"] == alert["id"]
            assert seen.json()["details"]["spend"] == "80.000123000000"
            unsigned, _ = await _deliver(alert_settings(BOOTSTRAP, webhook_secret=None), alert, f"webhook={ep.url()}")
            assert unsigned.status == "delivered" and "X-Tokenmeter-Signature" not in ep.seen[1].headers

    asyncio.run(run())


def test_pagerduty_trigger_then_resolve_with_the_same_dedup_key():
    async def run():
        async with endpoint() as ep:
            ep.default = (202, '{"status":"success","message":"Event processed"}', {})
            settings = alert_settings(BOOTSTRAP, pagerduty_url=ep.url("/v2/enqueue"))
            trigger = make_alert([], severity="critical")
            resolve = make_alert([], action="resolve", dedup_key=trigger["dedup_key"], severity="info")
            for alert in (trigger, resolve):
                state, _ = await _deliver(settings, alert, "pagerduty=0123456789abcdef0123456789abcdef")
                assert state.status == "delivered" and state.http_status == 202
                assert state.record()["target"] == "****cdef"
            first, second = (s.json() for s in ep.on("/v2/enqueue"))
            assert first["event_action"] == "trigger" and second["event_action"] == "resolve"
            assert first["dedup_key"] == second["dedup_key"] == trigger["dedup_key"]
            assert first["payload"]["severity"] == "critical"
            assert first["routing_key"] == "0123456789abcdef0123456789abcdef"

    asyncio.run(run())


def test_a_webhook_is_signed_when_it_is_sent_not_while_it_waits_for_a_slot():
    """walk32: the signature's timestamp was taken before waiting for one of the host's 2 request slots; in an alert
    storm to a slow receiver it aged in the queue, and a receiver checking the age (docs/alerts.md: 300 s) refused
    it as a replay (401: failed at once, not retried). Here each answer takes 1.5 s, 8 alerts share the host."""
    from aiohttp import web

    arrivals: list[tuple[float, int]] = []

    async def slow(request: web.Request) -> web.Response:
        arrivals.append((time.time(), int(request.headers["X-Tokenmeter-Timestamp"])))
        await asyncio.sleep(1.5)
        return web.Response(text="ok")

    async def run():
        app = web.Application()
        app.router.add_post("/hook", slow)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            settings = alert_settings(BOOTSTRAP, alert_timeout_seconds=10.0)
            route = parse_routes([f"webhook=http://127.0.0.1:{port}/hook"])[0][0]
            async with aiohttp.ClientSession() as session:
                sender = Sender(settings, session, Counters())
                states = await asyncio.gather(*(sender.deliver(make_alert([]), route) for _ in range(8)))
            assert all(s.status == "delivered" for s in states)
        finally:
            await runner.cleanup()

    asyncio.run(run())
    ages = [arrived - signed for arrived, signed in arrivals]
    assert len(ages) == 8 and max(ages) < 2.0, f"signatures aged {max(ages):.1f} s before they were sent"
