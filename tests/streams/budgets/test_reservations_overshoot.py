"""Issue 15's overshoot test, on real processes: two workers, eight concurrent gateway clients in bursts, each
reserving before a call whose real cost is random up to the worst case and logging its usage (with the request
id) right after. Spend never passes any limit, whichever worker a client asks and whichever owns the budget."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from decimal import Decimal

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from reserve_support import call, ready, start_worker, stop, usage_event, wait_for, worker_env, zone_at_noon
from streams.budgets import parse_budget, write_budgets
from streams.budgets.readiness import spend_partition
from tokenmeter import topics
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=11)  # rough seconds: longest files first (tests/suite_order.py)
INPUT, OUTPUT = Decimal("2.50") / 1_000_000, Decimal("10.00") / 1_000_000  # gpt-4o, default tier
CLIENTS, SECONDS = 8, 6.0  # half the limits of the 12 s version: still 100 % of the binding limit, ~2,000 refusals


def distinct_names(tag: str) -> list[str]:
    """Three budget names on three different budget-spend partitions (so on both workers, forwarded)."""
    names, used = [], set()
    for kind in ("usd", "tok", "env"):
        i = 0
        while spend_partition(f"{kind}-{tag}-{i}", 4) in used:
            i += 1
        used.add(spend_partition(f"{kind}-{tag}-{i}", 4))
        names.append(f"{kind}-{tag}-{i}")
    return names


def write_three_budgets(bootstrap: str, tag: str, prefix: str) -> tuple[str, str, list[str], dict]:
    """A team's day budget in USD (block at $10) and in tokens (throttle at 3M), and a tag's (block at $9), on three
    budget-spend partitions: (team, env, [usd, tok, by_env], their limits). Their day is a zone's where it is noon."""
    team, env = f"{prefix}-{tag}", f"env-{tag}"
    usd, tok, by_env = names = distinct_names(tag)
    tz = zone_at_noon()
    write_budgets(bootstrap, [
        parse_budget({"name": usd, "scope": {"team": team}, "period": "day", "tz": tz, "limit": "10",
                      "action": "block"}),
        parse_budget({"name": tok, "scope": {"team": team}, "period": "day", "tz": tz, "metric": "tokens",
                      "limit": 3_000_000, "action": "throttle"}),
        parse_budget({"name": by_env, "scope": {"tag:env": env}, "period": "day", "tz": tz, "limit": "9",
                      "action": "block"})])
    return team, env, names, {usd: Decimal("10"), tok: 3_000_000, by_env: Decimal("9")}


def assert_never_past_a_limit(stats: dict, views: dict, names: list[str], limits: dict) -> None:
    """The gateways' real spend reached a limit (else the run proves nothing) and passed none; every budget committed
    exactly the real spend; no hold expired (each was settled by its usage)."""
    usd, tok, by_env = names
    assert stats["refused"] > 0, "the limits were never reached: the test proves nothing"
    assert stats["real"] <= limits[usd] and stats["real"] <= limits[by_env] and stats["tokens"] <= limits[tok]
    assert Decimal(views[usd]["committed"]) == Decimal(views[by_env]["committed"]) == stats["real"]
    assert views[tok]["committed"] == stats["tokens"]
    assert sum(v["expired"] for v in views.values()) == 0


async def gateway(client: int, urls: list[str], bootstrap: str, team: str, env: str, stats: dict) -> None:
    from aiohttp import ClientSession

    rng = random.Random(client)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    pending: list[asyncio.Task] = []
    try:
        async with ClientSession() as session:
            started = time.monotonic()
            while time.monotonic() - started < SECONDS:
                for _ in range(rng.randint(1, 12)):  # a burst, back to back
                    prompt, max_output = rng.randint(1_000, 60_000), rng.randint(0, 8_000)
                    request_id = f"gw{client}-{uuid.uuid4().hex}"
                    body = {"provider": "openai", "model": "gpt-4o", "service_tier": "default",
                            "attribution": {"team": team, "tags": {"env": env}}, "prompt_tokens": prompt,
                            "max_output_tokens": max_output, "request_id": request_id}
                    async with session.post(rng.choice(urls) + "/v1/reservations", json=body) as response:
                        status = response.status
                        answer = await response.json()
                    if status == 201:
                        stats["admitted"] += 1
                        input_tokens, output_tokens = rng.randint(0, prompt), rng.randint(0, max_output)
                        stats["real"] += input_tokens * INPUT + output_tokens * OUTPUT
                        stats["tokens"] += input_tokens + output_tokens
                        event = usage_event(team, input_tokens, output_tokens, event_id=request_id, tags={"env": env})
                        pending.append(asyncio.create_task(_call_then_log(producer, event, rng.random() * 0.3)))
                    elif status in (403, 429):
                        stats["refused"] += 1
                        assert answer["budget"] and "headroom" in answer, answer
                    else:
                        stats["unavailable"] += 1
                        stats["last_unavailable"] = (status, answer)
                        await asyncio.sleep(0.05)
                await asyncio.sleep(rng.random() * 0.2)  # the pause between bursts
            await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _call_then_log(producer: AIOKafkaProducer, event: dict, seconds: float) -> None:
    await asyncio.sleep(seconds)  # the call at the provider
    await producer.send_and_wait(topics.USAGE, key=f"team:{event['attribution']['team']}".encode(),
                                 value=orjson.dumps([event]))


def test_reserving_gateways_never_push_spend_past_a_limit(kafka_bootstrap, tmp_path):
    team, env, names, limits = write_three_budgets(kafka_bootstrap, uuid.uuid4().hex[:6], "ovs")
    usd, tok, by_env = names
    ports = [free_port(), free_port()]
    workers = [start_worker(worker_env(kafka_bootstrap, tmp_path / f"data{i}", port), tmp_path / f"worker{i}.log")
               for i, port in enumerate(ports)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for port in ports:
            wait_for(lambda port=port: ready(port), timeout=90, what=f"worker {port} ready")

        def both_own_something() -> bool:  # other tests' budgets may share the broker: count ours
            owned = [len([b for b in call("GET", f"{url}/v1/reservations")[1].get("budgets", [])
                          if b["budget"] in limits]) for url in urls]
            return all(owned) and sum(owned) == 3 and all(ready(p) for p in ports)
        wait_for(both_own_something, timeout=90, what="the three budgets owned by both workers")

        stats = {"admitted": 0, "refused": 0, "unavailable": 0, "real": Decimal(0), "tokens": 0}

        async def run() -> None:
            await asyncio.gather(*(gateway(c, urls, kafka_bootstrap, team, env, stats) for c in range(CLIENTS)))
        started = time.monotonic()
        asyncio.run(run())
        print(f"overshoot test: {stats} in {time.monotonic() - started:.1f} s")

        def settled() -> dict | None:
            views = {}
            for url in urls:
                for view in call("GET", f"{url}/v1/reservations")[1].get("budgets", []):
                    if view["budget"] in limits:
                        views[view["budget"]] = view
            done = len(views) == 3 and all(v["open_reservations"] == 0 for v in views.values())
            return views if done else None
        views = wait_for(settled, timeout=60, what="every hold settled")
        assert_never_past_a_limit(stats, views, names, limits)
        used = max(stats["real"] / limits[by_env], Decimal(stats["tokens"]) / limits[tok])
        print(f"real spend {stats['real']} USD / {stats['tokens']} tokens, {used:.0%} of the binding limit")
    finally:
        for worker in workers:
            stop(worker)
