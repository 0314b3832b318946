"""The demo's local alert inbox: a webhook receiver on 127.0.0.1 that `tokenmeter up --demo` routes every budget
and anomaly alert to (`webhook=http://127.0.0.1:<TOKENMETER_DEMO_INBOX_PORT>/inbox`), so alert delivery is real
and visible without Slack or PagerDuty: the dashboard's Budgets page lists each alert with its delivery to this
route, and every alert received is appended to `<data_dir>/demo-inbox.jsonl` (GET / or /inbox shows the last 50).

Deliveries are at-least-once: a redelivered alert (same `X-Tokenmeter-Alert-Id`) is acknowledged and not stored
twice, as docs/alerts.md advises receivers to do."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("tokenmeter.demo.inbox")
INBOX_FILE = "demo-inbox.jsonl"
MAX_BODY = 1024 * 1024
SHOWN = 50
IDLE_TIMEOUT_S = 30.0  # a silent connection is closed after this (the dispatcher reconnects)


def inbox_url(settings: Any) -> str:
    return f"http://{settings.host}:{settings.demo_inbox_port}/inbox"


class Inbox:
    def __init__(self, path: Path):
        self.path = path
        self.seen: set[str] = set()
        self.entries: list[dict[str, Any]] = []
        if path.exists():
            for line in path.read_bytes().splitlines():
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                self.entries.append(entry)
                self.seen.add(str(entry.get("alert_id")))

    def receive(self, alert_id: str, body: bytes) -> bool:
        """Store one delivery; False when this alert was already received (a redelivery)."""
        if alert_id in self.seen:
            return False
        try:
            alert = orjson.loads(body)
        except orjson.JSONDecodeError:
            alert = {"unreadable": body[:200].decode("utf-8", "replace")}
        entry = {"alert_id": alert_id, "source": alert.get("source"), "kind": alert.get("kind"),
                 "action": alert.get("action"), "severity": alert.get("severity"), "title": alert.get("title"),
                 "at": alert.get("at"), "alert": alert}
        with self.path.open("ab") as out:
            out.write(orjson.dumps(entry) + b"\n")
        self.seen.add(alert_id)
        self.entries.append(entry)
        return True

    def app(self) -> web.Application:
        from aiohttp import web  # here, not at import: `tokenmeter up` reads inbox_url and does not serve

        app = web.Application(client_max_size=MAX_BODY)

        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            alert_id = request.headers.get("X-Tokenmeter-Alert-Id") or ""
            if not alert_id:
                try:
                    alert_id = str(orjson.loads(body).get("id") or "")
                except (orjson.JSONDecodeError, AttributeError):
                    alert_id = ""
            if not alert_id:
                return web.json_response({"error": "no alert id (X-Tokenmeter-Alert-Id)"}, status=400)
            stored = self.receive(alert_id, body)
            return web.json_response({"ok": True, "duplicate": not stored})

        async def listing(request: web.Request) -> web.Response:  # noqa: ARG001
            shown = [{k: v for k, v in e.items() if k != "alert"} for e in self.entries[-SHOWN:]]
            return web.json_response({"received": len(self.entries), "last": shown[::-1]})

        app.router.add_post("/inbox", hook)
        app.router.add_get("/", listing)
        app.router.add_get("/inbox", listing)  # the URL `up --demo` prints: opened in a browser, it lists the alerts
        return app


async def serve(settings: Any, stop: asyncio.Event) -> None:
    from aiohttp import web

    inbox = Inbox(Path(settings.data_dir).resolve() / INBOX_FILE)
    # keepalive_timeout bounds the wait for a request head too (aiohttp's default held a silent client 3630 s)
    runner = web.AppRunner(inbox.app(), access_log=None, keepalive_timeout=IDLE_TIMEOUT_S)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.demo_inbox_port)
    await site.start()
    log.info("demo alert inbox on %s (%d alerts so far, file %s)", inbox_url(settings), len(inbox.entries),
             inbox.path)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
