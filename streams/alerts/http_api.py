"""Optional `/health` (JSON) and `/metrics` (Prometheus text) of the dispatcher, on TOKENMETER_ALERTS_PORT."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from aiohttp import web

METRICS = (  # counter name, help, counter attribute / health key, type
    ("tokenmeter_alerts_delivered_total", "Deliveries that succeeded.", "delivered", "counter"),
    ("tokenmeter_alerts_failed_total", "Deliveries given up (permanent error or out of attempts).", "failed", "counter"),
    ("tokenmeter_alerts_retried_total", "Failed attempts that were scheduled for a retry.", "retried", "counter"),
    ("tokenmeter_alerts_invalid_total", "Unreadable alert records, dead-lettered.", "invalid", "counter"),
    ("tokenmeter_alerts_duplicates_total", "Alert records skipped as already handled.", "duplicates", "counter"),
    ("tokenmeter_alerts_unrouted_total", "Alerts with no route (no notify), kept but sent nowhere.", "unrouted", "counter"),
    ("tokenmeter_alerts_in_flight", "Delivery HTTP requests in flight.", "in_flight", "gauge"),
    ("tokenmeter_alerts_open", "Outbox records whose deliveries are not final yet.", "open_alerts", "gauge"),
)

IDLE_TIMEOUT_S = 30.0  # a connection silent this long is closed; Prometheus and health checks reconnect


def metrics_text(health: dict[str, Any]) -> str:
    lines = []
    for name, help_text, key, kind in METRICS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {health.get(key, 0)}"]
    return "\n".join(lines) + "\n"


@asynccontextmanager
async def serve(dispatcher: Any, host: str, port: int, idle_timeout_s: float = IDLE_TIMEOUT_S) -> AsyncIterator[None]:
    async def health(_: web.Request) -> web.Response:
        return web.json_response(dispatcher.health())

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=metrics_text(dispatcher.health()), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    # keepalive_timeout also bounds the wait for a request head: aiohttp's default, 3630 s, let a client that sends
    # nothing (or half a head) hold a connection for an hour (hostile24 found it on the other servers)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=idle_timeout_s)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()
