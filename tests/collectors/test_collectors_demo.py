"""Demo traffic behaves like a gateway that obeys budgets: a team the decision endpoint blocks sends nothing,
and an unreachable endpoint fails open. Real broker, real local HTTP decision server."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp import web
from test_collectors_mode_support import events_of, read_to_end

from collectors.demo import callers, generate
from tokenmeter import topics
from app.broker import embedded_broker
from tokenmeter.settings import free_port


async def _run(bootstrap: str, decision_url: str | None, blocked: str, asked: Counter) -> int:
    async def decide(request: web.Request) -> web.Response:
        team = request.query.get("team", "")
        asked[team] += 1
        if team == blocked:
            return web.json_response({"action": "block", "budget": "b"}, status=403)
        return web.json_response({"action": "allow"})

    app = web.Application()
    app.router.add_get("/v1/decision", decide)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = decision_url or f"http://127.0.0.1:{port}/v1/decision"
        return await generate(bootstrap, events_per_s=400, total=400, seed=3, decision_url=url)
    finally:
        await runner.cleanup()


def test_demo_refuses_calls_of_blocked_teams_and_fails_open():
    teams = sorted({c.team for c in callers()})
    with embedded_broker("127.0.0.1", free_port(), partitions=2) as bootstrap:
        asked: Counter = Counter()
        sent = asyncio.run(_run(bootstrap, None, "growth", asked))
        stored = Counter(e["attribution"]["team"] for e in events_of(read_to_end(bootstrap, topics.USAGE)))
        assert set(asked) == set(teams)  # asked for every team, as a gateway would
        assert stored["growth"] == 0 and sum(stored.values()) == sent and 0 < sent < 400
        assert set(stored) == set(teams) - {"growth"}

        dead = f"http://127.0.0.1:{free_port()}/v1/decision"  # nothing listens: allow everything
        assert asyncio.run(_run(bootstrap, dead, "growth", Counter())) == 400
