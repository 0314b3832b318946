"""Helpers for the alert tests (no tests here): a real local HTTP endpoint that records requests and fails on
demand, alert records, per-test topics on the session broker, and a dispatcher running in the test's loop."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.alerts.dispatcher import Dispatcher
from streams.alerts.state import latest_deliveries, read_topic
from tokenmeter.records import alert_record
from tokenmeter.settings import Settings, load_settings

SECRET = "test-webhook-secret"


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived

    def json(self) -> Any:
        return orjson.loads(self.body)


class Endpoint:
    """Answers from `script` (one (status, body, headers) per request, in order), then `default`; with
    `hang` set it never answers (until the server closes), like a dead but listening host."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: list[tuple[int, str, dict[str, str]]] = []
        self.default: tuple[int, str, dict[str, str]] = (200, "ok", {})
        self.hang = False
        self.port = 0
        self._release: asyncio.Event | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(Seen(request.path, dict(request.headers), await request.read(), time.monotonic()))
        if self.hang:
            assert self._release is not None
            await self._release.wait()
        status, text, headers = self.script.pop(0) if self.script else self.default
        return web.Response(status=status, text=text, headers=headers)

    async def wait_for(self, count: int, path: str | None = None, timeout: float = 20.0) -> list[Seen]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.on(path) if path else self.seen
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} requests on {path or 'any path'}, got {len(got)}")
            await asyncio.sleep(0.02)


@asynccontextmanager
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = Endpoint()
    ep._release = asyncio.Event()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", ep.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    ep.port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    try:
        yield ep
    finally:
        ep._release.set()
        await runner.cleanup()


@contextmanager
def threaded_endpoint() -> Iterator[Endpoint]:
    """The same endpoint on its own loop in a thread, for code that runs `asyncio.run` itself (the CLI)."""
    ready, done = threading.Event(), None
    holder: dict[str, Any] = {}

    def run() -> None:
        async def main() -> None:
            nonlocal done
            done = asyncio.Event()
            async with endpoint() as ep:
                holder["ep"], holder["loop"] = ep, asyncio.get_running_loop()
                ready.set()
                await done.wait()

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "endpoint did not start"
    try:
        yield holder["ep"]
    finally:
        holder["loop"].call_soon_threadsafe(done.set)
        thread.join(10)


def make_alert(notify: list[str], **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": f"alert-{uuid.uuid4().hex[:10]}", "source": "budget", "kind": "threshold", "action": "trigger",
        "severity": "error", "dedup_key": f"budget:search:2026-11:{uuid.uuid4().hex[:6]}",
        "title": "Budget search reached 80% ($80.00 of $100.00)",
        "summary": "Team search spent $80.000123 of its $100 monthly budget.", "at": "2026-11-20T10:00:00Z",
        "scope": {"team": "search"}, "notify": notify, "dashboard_url": "http://127.0.0.1:8050/",
        "details": {"budget": "search", "period_key": "2026-11", "threshold": 80, "metric": "cost_usd",
                    "spend": "80.000123000000", "limit": "100", "percent": "80.00",
                    "period_start": "2026-11-01T00:00:00Z", "period_end": "2026-12-01T00:00:00Z",
                    "projected": "131.5", "expected_breach_at": "2026-11-26T04:00:00Z", "budget_action": "block"},
    }
    fields.update(overrides)
    return alert_record(**fields)


def alert_settings(bootstrap: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"kafka_bootstrap": bootstrap, "alert_backoff_seconds": 0.05,
                              "alert_backoff_max_seconds": 0.2, "alert_max_attempts": 4, "alert_timeout_seconds": 2.0,
                              "webhook_secret": SECRET, "anomaly_notify": []}
    values.update(overrides)
    return load_settings(**values)



@dataclass
class Topics:
    alerts: str
    deliveries: str
    group: str


async def new_topics(bootstrap: str) -> Topics:
    tag = uuid.uuid4().hex[:8]
    names = Topics(f"test-alerts-{tag}", f"test-alert-deliveries-{tag}", f"test-alerts-group-{tag}")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(names.alerts, 2, 1), NewTopic(names.deliveries, 2, 1)])
    finally:
        await admin.close()
    return names


async def produce(bootstrap: str, topic: str, values: list[Any]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            raw = value if isinstance(value, bytes) else orjson.dumps(value)
            key = str(value.get("dedup_key") or value.get("id")).encode() if isinstance(value, dict) else b"junk"  # as producers key them
            await producer.send_and_wait(topic, raw, key=key)
    finally:
        await producer.stop()


async def deliveries(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    return latest_deliveries(await read_topic(bootstrap, topic, timeout=20))


@asynccontextmanager
async def running_dispatcher(settings: Settings, names: Topics) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher(settings, alerts_topic=names.alerts, deliveries_topic=names.deliveries,
                            group_id=names.group)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        yield dispatcher
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=settings.alert_timeout_seconds + 15)
        except asyncio.TimeoutError:
            task.cancel()
            raise


async def wait_until(predicate, timeout: float = 20.0, what: str = "condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
