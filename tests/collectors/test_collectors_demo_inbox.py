"""The demo's local alert inbox (collectors/demo_inbox.py): a real aiohttp server on a free port receives alerts
the way the dispatcher sends webhooks, stores each alert once and remembers it across restarts."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import orjson
from aiohttp import web

from collectors.demo_inbox import Inbox
from tokenmeter.settings import free_port


@contextlib.asynccontextmanager
async def served(inbox: Inbox):
    """The inbox's aiohttp app on a free port: its base URL; cleaned up on the way out."""
    runner = web.AppRunner(inbox.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_inbox_stores_each_alert_once_and_lists_them(tmp_path):
    async def scenario() -> None:
        async with served(Inbox(tmp_path / "inbox.jsonl")) as base, aiohttp.ClientSession() as session:
            alert = {"id": "a1", "source": "budget", "kind": "threshold", "action": "trigger", "title": "t"}
            for _ in range(2):  # at-least-once delivery: the second is a duplicate
                async with session.post(f"{base}/inbox", data=orjson.dumps(alert),
                                        headers={"X-Tokenmeter-Alert-Id": "a1"}) as resp:
                    assert resp.status == 200
            async with session.post(f"{base}/inbox", data=b"{}") as resp:
                assert resp.status == 400  # no alert id: refused, not stored
            async with session.get(f"{base}/") as resp:
                listing = await resp.json()
        assert listing["received"] == 1 and listing["last"][0]["title"] == "t"

    asyncio.run(scenario())
    assert len((tmp_path / "inbox.jsonl").read_bytes().splitlines()) == 1
    assert Inbox(tmp_path / "inbox.jsonl").receive("a1", b"{}") is False  # remembered across restarts


def test_the_url_up_prints_shows_the_alerts_in_a_browser(tmp_path):
    """walk32: `up --demo` prints "alert inbox on http://…/inbox"; opening it answered 405 (only POST was routed
    there, the listing was on `/`)."""
    async def scenario() -> None:
        inbox = Inbox(tmp_path / "inbox.jsonl")
        inbox.receive("a1", orjson.dumps({"id": "a1", "title": "t"}))
        async with served(inbox) as base, aiohttp.ClientSession() as session:
            async with session.get(f"{base}/inbox") as resp:
                assert resp.status == 200
                listing = await resp.json()
        assert listing["received"] == 1 and listing["last"][0]["title"] == "t"

    asyncio.run(scenario())
