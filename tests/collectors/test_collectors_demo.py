"""Demo traffic behaves like a gateway that obeys budgets: a team the decision endpoint blocks sends nothing,
and an unreachable endpoint fails open. Real broker, real local HTTP decision server."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from aiohttp import web
from test_collectors_mode_support import events_of, read_to_end

from collectors.demo import callers, generate
from tokenmeter import topics
from app.broker import embedded_broker
from tokenmeter.settings import free_port


@contextlib.asynccontextmanager
async def _decision_server(decide):
    """A local HTTP `/v1/decision` answered by `decide`; yields its URL."""
    app = web.Application()
    app.router.add_get("/v1/decision", decide)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1/decision"
    finally:
        await runner.cleanup()


async def _run(bootstrap: str, decision_url: str | None, blocked: str, asked: Counter) -> int:
    async def decide(request: web.Request) -> web.Response:
        team = request.query.get("team", "")
        asked[team] += 1
        if team == blocked:
            return web.json_response({"action": "block", "budget": "b"}, status=403)
        return web.json_response({"action": "allow"})

    async with _decision_server(decide) as url:
        return await generate(bootstrap, events_per_s=400, total=400, seed=3, decision_url=decision_url or url)


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


def test_the_demo_gateway_asks_for_the_agent_key_with_its_team_and_refuses_only_that_key():
    """growth's agent loop runs under its own key; the budget that blocks it is scoped to that key, so the demo
    asks the decision endpoint for the key with its team (as a gateway passes the caller's attributes) and refuses
    that key alone. The decision is the budget service's own (EnforcementView over a block record)."""
    from collectors.demo import refresh_blocked
    from collectors.demo_live import AGENT_KEY
    from streams.budgets.decisions import EnforcementView
    from streams.budgets.service import demo_budgets

    budget = next(b for b in demo_budgets() if b.action == "block")
    view = EnforcementView()
    view.update(budget.name, {"budget": budget.name, "action": "block", "scope": budget.scope})

    async def run() -> set[str]:
        import aiohttp

        async def decide(request: web.Request) -> web.Response:
            body = view.decide(dict(request.query))
            return web.json_response(body, status=403 if body["action"] == "block" else 200)

        async with _decision_server(decide) as url, aiohttp.ClientSession() as session:
            return await refresh_blocked(session, url, {c.team for c in callers()}, set(), {AGENT_KEY: "growth"})

    assert asyncio.run(run()) == {AGENT_KEY}  # growth itself is not blocked
