"""Bench figures for budgets: alert latency (usage event produced -> webhook received, through the worker, the
budget owner, the outbox and the dispatcher) under background load, and `/v1/decision` latency and throughput.

Each latency sample has its own budget (team `bench-lat-<i>`, limit $0.000001, one 100% threshold, notify a local
webhook), so every sample is one real threshold crossing; background traffic of other teams keeps the worker
busy meanwhile."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import orjson
from aiohttp import ClientSession, web
from aiokafka import AIOKafkaProducer

from tokenmeter import topics
from app.process import child_preexec
from tokenmeter.settings import free_port


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def _event(team: str, i: int) -> dict:
    return {"event_id": str(uuid.uuid4()), "ts": datetime.now(timezone.utc).isoformat(), "source": "bench",
            "provider": "openai", "model": "gpt-4o-mini", "attribution": {"org": "bench", "team": team, "user": f"u{i % 7}"},
            "usage": {"input_tokens": 1000 + i % 100, "output_tokens": 100}}


async def _background_load(bootstrap: str, rate: float, stop: asyncio.Event) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sent = 0
    try:
        per_tick = max(1, int(rate / 20))
        while not stop.is_set():
            batch = [_event(f"load-{sent % 8}", sent + k) for k in range(per_tick)]
            await producer.send(topics.USAGE, orjson.dumps(batch), key=f"team:load-{sent % 8}".encode())
            sent += per_tick
            await asyncio.sleep(0.05)
    finally:
        await producer.stop()
    return sent


async def _alert_latency(bootstrap: str, dispatcher_env: dict, samples: int, load_rate: float) -> dict:
    from streams.budgets import parse_budget
    from streams.budgets.store import _write, protect_budget  # same writer as `tokenmeter budget set`

    received: dict[str, float] = {}
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        budget = (body.get("details") or {}).get("budget", "")
        received.setdefault(budget, time.perf_counter())
        if len(received) >= samples:
            arrived.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    budgets = [parse_budget({"name": f"bench-lat-{i}", "scope": {"team": f"bench-lat-{i}"}, "period": "day",
                             "limit": "0.000001", "thresholds": [100], "action": "block",
                             "notify": [f"webhook=http://127.0.0.1:{port}/hook"]}) for i in range(samples)]
    data_dir = dispatcher_env.get("TOKENMETER_DATA_DIR", ".tokenmeter")  # the route secrets, as `budget set` does
    budgets = [protect_budget(b, data_dir) for b in budgets]
    await _write(bootstrap, [(b.name, orjson.dumps(b.to_json())) for b in budgets])
    dispatcher = subprocess.Popen([sys.executable, "-m", "app", "alerts", "dispatch"], env=dispatcher_env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=child_preexec)
    stop = asyncio.Event()
    load = asyncio.create_task(_background_load(bootstrap, load_rate, stop))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    sent_at: dict[str, float] = {}
    try:
        # Warm-up: the first crossing proves the worker has read the budgets and the dispatcher is consuming.
        warm = budgets[0].name
        deadline = time.monotonic() + 120
        while warm not in received:
            if time.monotonic() > deadline:
                raise RuntimeError("no alert reached the webhook within 120 s (worker or dispatcher not running?)")
            await producer.send_and_wait(topics.USAGE, orjson.dumps([_event(warm, 0)]), key=f"team:{warm}".encode())
            await asyncio.sleep(0.5)
        for budget in budgets[1:]:
            team = budget.name
            sent_at[team] = time.perf_counter()
            await producer.send_and_wait(topics.USAGE, orjson.dumps([_event(team, 1)]), key=f"team:{team}".encode())
            await asyncio.sleep(0.05)  # samples spread over time, not one burst
        await asyncio.wait_for(arrived.wait(), timeout=60)
    finally:
        stop.set()
        background = await load
        await producer.stop()
        dispatcher.terminate()
        dispatcher.wait(30)
        await runner.cleanup()
    latencies = [(received[t] - sent_at[t]) * 1000 for t in sent_at if t in received]
    return {"alert_latency_p50_ms": round(statistics.median(latencies), 1),
            "alert_latency_p99_ms": round(_percentile(latencies, 99), 1),
            "alert_samples": len(latencies), "alert_background_events": background}


async def _decision_latency(api_port: int, requests: int) -> dict:
    url = f"http://127.0.0.1:{api_port}/v1/decision"
    async with ClientSession() as session:
        latencies = []
        for i in range(requests):  # one at a time: latency
            team = f"bench-lat-{i % 50}" if i % 2 else f"load-{i % 8}"
            t0 = time.perf_counter()
            async with session.get(url, params={"team": team, "user": "u1"}) as resp:
                await resp.read()
            latencies.append((time.perf_counter() - t0) * 1000)

        async def client(n: int) -> None:
            for i in range(n):
                async with session.get(url, params={"team": f"load-{i % 8}"}) as resp:
                    await resp.read()

        t0 = time.perf_counter()
        await asyncio.gather(*[client(requests // 8) for _ in range(8)])  # 8 concurrent clients: throughput
        throughput = (requests // 8 * 8) / (time.perf_counter() - t0)
    return {"decision_latency_p50_ms": round(statistics.median(latencies), 3),
            "decision_latency_p99_ms": round(_percentile(latencies, 99), 3),
            "decision_requests_per_s": round(throughput, 1)}


def measure_budgets(bootstrap: str, env: dict, api_port: int, samples: int = 100, load_rate: float = 2000,
                    decision_requests: int = 4000) -> dict:
    """Run against a started worker (HTTP API on `api_port`); starts and stops its own alert dispatcher."""
    results = asyncio.run(_alert_latency(bootstrap, env, samples, load_rate))
    results.update(asyncio.run(_decision_latency(api_port, decision_requests)))
    return results
