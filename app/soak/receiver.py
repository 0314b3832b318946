"""The soak's alert receiver: a real aiohttp server on 127.0.0.1 standing in for two webhook routes. It records
every delivery (route, alert id header, budget, threshold) and answers 200, like a receiver that drops
duplicates by `X-Tokenmeter-Alert-Id` as docs/alerts.md advises."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from aiohttp import web

ROUTES = ("primary", "secondary")


@dataclass
class Delivery:
    route: str
    alert_id: str
    kind: str
    action: str
    budget: str | None
    threshold: int | None


@dataclass
class Receiver:
    deliveries: list[Delivery] = field(default_factory=list)
    unreadable: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{route}"

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            record = orjson.loads(body)
            details = record.get("details") or {}
            threshold = details.get("threshold")
            self.deliveries.append(Delivery(
                request.match_info["route"], request.headers.get("X-Tokenmeter-Alert-Id", record.get("id", "")),
                str(record.get("kind")), str(record.get("action")), details.get("budget"),
                int(threshold) if threshold is not None else None))
        except (ValueError, TypeError, AttributeError):
            self.unreadable += 1
        return web.json_response({"ok": True})

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_post("/hook/{route}", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
