"""The live demo traffic of `tokenmeter up --demo`: the demo history's calendar continued at wall-clock time, plus
one live incident.

The month of history (warehouse/demo_history.py) teaches the anomaly detector each scope's usual weekday/hour
level. A flat 40 events/s after it (collectors/demo.generate, ~2,000 times that level) was a cliff at 'now': within
minutes the detector rightly raised spend_rate / token_rate alerts on most scopes (21 more in 7 minutes). So by
default the live traffic draws each hour's calls from the same calendar (the same callers, keys, models, features,
call sizes and weekday/hour level; `copies` independent draws of it), from the hour the history ends, and sends each
call when the wall clock reaches its time.

Two live agent loops (the history's spend_rate injection replayed live: claude-sonnet, a model hal and chen use,
calls of their usual size): growth's, a minute after the start under the agent key hal made for it (AGENT_KEY),
takes the demo budget `growth-agent-daily` (scoped to that key) past 50 %, 80 % and 100 % within minutes, where the
block makes this demo gateway refuse the key's calls (too short for the detector's evidence rule: no anomaly alert;
the rest of growth goes on); search's, a minute later and not blocked, is the one live
incident the detector alerts on (once, spend_rate on chen's key, ~15 minutes after it starts).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from collectors.demo import FEATURES, callers, refresh_blocked
from tokenmeter import topics
from tokenmeter.events import partition_key

log = logging.getLogger("tokenmeter.demo")

# Independent draws of the calendar per hour (1 = the history's level): a call every ~8 s on weekday afternoons. The
# detector over the history then 1-2 hours of this raised no alert at 6 and 8 copies (docs/finance.md).
COPIES = 6
LOOP_PER_HOUR = 300  # an agent loop as the history's spend_rate injection: ~1.8 USD an hour on claude-sonnet
# growth's agent runs under a key of its own (hal's, made for the agent): the demo budget `growth-agent-daily`
# (streams/budgets/service.demo_budgets) is scoped to it, so only the loop can reach it. Scoped to the team, as
# before, the calendar's own growth traffic (~2.5 USD a weekday at 6 draws, up to ~0.36 USD in one hour) reached
# its 0.10 USD in the first UTC hours and blocked growth for the rest of the day, before any loop.
AGENT_KEY = "sk-glo-grow-agent"
# The two live agent loops (the same shape as the history's spend_rate injection): growth's, a minute after the start,
# on AGENT_KEY, that the budget `growth-agent-daily` blocks within minutes (4-5 minutes of it: no anomaly alert, the detector's evidence
# rule wants 15 minutes of a loop this size); and search's, a minute later, that no budget blocks: the detector
# alerts on it once, ~15 minutes after it starts.
# (team, user, seconds after the start, seconds it lasts at most, api key: None = the user's own)
LOOPS = (("growth", "hal", 60.0, 3600.0, AGENT_KEY), ("search", "chen", 120.0, 1800.0, None))
LOOP_MODEL = ("anthropic", "claude-sonnet-4-5-20250929")
# A minimum visible level: on a weekend night the calendar is ~40 calls an hour at 6 draws (minutes without a call),
# so the dashboard barely moved. Each minute with fewer calendar calls gets a background of steady cheap calls up to
# this many (~0.0003 USD each: ~0.04 USD an hour at most); the detector over the history then raises nothing more.
FLOOR_PER_MINUTE = 2
FLOOR_MODEL = ("openai", "gpt-4o-mini")
FLOOR_SIZES = (900, 200)  # collectors/demo.MODELS' usual gpt-4o-mini call
LOOP_SIZES = (400, 300)  # warehouse/demo_history.LOOP_SIZES: the caller's usual call size


def calendar_calls(start: datetime, end: datetime, copies: int = COPIES) -> list[dict[str, Any]]:
    """The calls the demo history's calendar gives the hours [start, end), in time order, with live ids (hours
    drawn the same way the history draws its month, `copies` times with other seeds)."""
    out: list[dict[str, Any]] = []
    hour = start.replace(minute=0, second=0, microsecond=0)
    low, high = start.isoformat(), end.isoformat()
    while hour < end:
        out += [e for e in _calendar_hour(hour, copies) if low <= e["ts"] < high]
        hour += timedelta(hours=1)
    out.sort(key=lambda e: e["ts"])
    return out


@lru_cache(maxsize=4)
def _calendar_hour(hour: datetime, copies: int) -> tuple[dict[str, Any], ...]:
    """One hour of the calendar, drawn once: the sender asks for the due seconds of it every second (drawing the
    hour's 6 copies took ~0.5 s of CPU per tick before this cache)."""
    from warehouse.demo_history import SEED, history_events

    out = []
    for copy in range(copies):
        # one hour of the calendar: history_events(now=hour + 1h, days=1/24) draws exactly [hour, hour + 1h);
        # its first-day model tour lies after the hour and is cut here
        for event in history_events(hour + timedelta(hours=1), days=1 / 24, seed=SEED + copy):
            if hour.isoformat() <= event["ts"] < (hour + timedelta(hours=1)).isoformat():
                out.append({**event, "event_id": "live-" + event["event_id"].removeprefix("hist-")})
    return tuple(sorted(out, key=lambda e: e["ts"]))


def loop_calls(begin: datetime, rng: random.Random, team: str = "growth", user: str = "hal",
               seconds: float = 3600.0, api_key: str | None = None) -> list[dict[str, Any]]:
    """One live agent loop's calls: `user`'s key from `begin` on, LOOP_PER_HOUR an hour for `seconds`, on a model
    the caller uses, calls of the caller's usual size (one schedule drawn once: the sender keeps what is due, so
    its 1-second ticks do not restart the process)."""
    caller, out = next(c for c in callers() if c.team == team and c.user == user), []
    t = begin + timedelta(seconds=rng.expovariate(LOOP_PER_HOUR / 3600))
    while t < begin + timedelta(seconds=seconds):
        tin = max(1, int(rng.lognormvariate(0, 0.6) * LOOP_SIZES[0]))
        tout = max(1, int(rng.lognormvariate(0, 0.5) * LOOP_SIZES[1]))
        out.append({"event_id": f"live-loop-{user}-{begin:%Y%m%dT%H%M%S}-{len(out)}",
                    "ts": t.isoformat(), "source": "demo", "provider": LOOP_MODEL[0], "model": LOOP_MODEL[1],
                    "operation": "chat", "status": "ok",
                    "attribution": {"org": caller.org, "team": caller.team, "project": caller.project,
                                    "user": caller.user, "api_key": api_key or caller.api_key, "feature": "agent-loop",
                                    "tags": {"env": "prod"}},
                    "usage": {"input_tokens": tin, "output_tokens": tout},
                    "latency_ms": round(rng.uniform(200, 4000), 1)})
        t += timedelta(seconds=rng.expovariate(LOOP_PER_HOUR / 3600))
    return out


def live_loops(started: datetime, rng: random.Random, first_after: float = LOOPS[0][2]) -> list[dict[str, Any]]:
    """The calls of the demo's live agent loops (LOOPS) for a demo started at `started`, in time order; the first
    loop `first_after` seconds after the start (TOKENMETER_DEMO_LOOPS_AFTER_SECONDS), the others as far after it."""
    shift = first_after - LOOPS[0][2]
    calls = [e for team, user, after, seconds, key in LOOPS
             for e in loop_calls(started + timedelta(seconds=after + shift), rng, team, user, seconds, key)]
    return sorted(calls, key=lambda e: e["ts"])


def floor_calls(start: datetime, end: datetime, copies: int = COPIES,
                per_minute: int = FLOOR_PER_MINUTE) -> list[dict[str, Any]]:
    """The background that keeps the live demo visibly moving: in each whole minute of [start, end) whose calendar
    has fewer than `per_minute` calls, that many calls in all (the calendar's and these, evenly spaced), each from
    one of the history's callers (drawn by the minute, so a restart sends the same ids) on the cheapest chat model
    they use, at its usual size. A weekday afternoon (~7 calendar calls a minute) gets none."""
    out: list[dict[str, Any]] = []
    minute = start.replace(second=0, microsecond=0)
    people = callers()
    while minute < end:
        following = minute + timedelta(minutes=1)
        have = len(calendar_calls(minute, following, copies)) if copies else 0
        rng = random.Random(int(minute.timestamp()))
        for n in range(max(0, per_minute - have)):
            ts = minute + timedelta(seconds=60 * (n + 0.5) / per_minute)
            # every draw of a call whether or not it is due in [start, end): a call drawn only when due shifted the
            # draws of the minute's later calls, so one id was another call when re-sent after a restart (walk33)
            caller = rng.choice(people)
            tin = max(1, int(rng.lognormvariate(0, 0.6) * FLOOR_SIZES[0]))
            tout = max(1, int(rng.lognormvariate(0, 0.5) * FLOOR_SIZES[1]))
            feature, latency = rng.choice(FEATURES), round(rng.uniform(200, 2000), 1)
            if start <= ts < end:
                out.append({"event_id": f"live-floor-{minute:%Y%m%dT%H%M}-{n}", "ts": ts.isoformat(),
                            "source": "demo", "provider": FLOOR_MODEL[0], "model": FLOOR_MODEL[1],
                            "operation": "chat", "status": "ok",
                            "attribution": {"org": caller.org, "team": caller.team, "project": caller.project,
                                            "user": caller.user, "api_key": caller.api_key,
                                            "feature": feature, "tags": {"env": "prod"}},
                            "usage": {"input_tokens": tin, "output_tokens": tout}, "latency_ms": latency})
        minute = following
    return out


def due_calls(cursor: datetime, now: datetime, loop: list[dict[str, Any]], copies: int = COPIES,
              floor: int = FLOOR_PER_MINUTE) -> list[dict]:
    """What the sender sends at `now` when it last sent up to `cursor`: the calendar's calls, the background floor
    and the loop's."""
    due = calendar_calls(cursor, now, copies) + (floor_calls(cursor, now, copies, floor) if floor else [])
    return sorted(due + [e for e in loop if cursor.isoformat() <= e["ts"] < now.isoformat()], key=lambda e: e["ts"])


async def generate_live(bootstrap: str, stop: asyncio.Event | None = None, decision_url: str | None = None,
                        copies: int = COPIES, seed: int | None = None,
                        start: datetime | None = None, loops_after: float = LOOPS[0][2]) -> int:
    """Send the calendar's calls (from the hour the history ends, i.e. the start of this hour) and the live
    incident as the wall clock reaches them, until `stop` is set; returns how many were sent. With `decision_url`
    calls of blocked or throttled teams are refused, like a gateway obeying budgets."""
    import aiohttp

    teams = {c.team for c in callers()} | {"support-bot"}
    keys = {key: team for team, _, _, _, key in LOOPS if key}  # asked with their team, as a gateway would
    started = start or datetime.now(timezone.utc)
    # seeded by the start: a restarted demo (same --started) keeps the loops' schedule and ids
    loop = live_loops(started, random.Random(seed if seed is not None else int(started.timestamp())), loops_after)
    cursor = started.replace(minute=0, second=0, microsecond=0)  # the history ends at this hour
    if datetime.now(timezone.utc) - started > timedelta(minutes=1):  # a restart: what was due is sent already
        cursor = datetime.now(timezone.utc)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    session = aiohttp.ClientSession() if decision_url else None
    try:
        await producer.start()
    except BaseException:  # no broker: close what was opened (the caller says what failed)
        await producer.stop()
        if session is not None:
            await session.close()
        raise
    sent = refused = 0
    blocked: set[str] = set()
    log.info("demo traffic: the history's calendar continued (%d cop%s), agent loops of %s", copies,
             "y" if copies == 1 else "ies", ", ".join(f"{user} ({team}) at +{after + loops_after - LOOPS[0][2]:g} s"
                                                      for team, user, after, _, _ in LOOPS))
    try:
        while not (stop and stop.is_set()):
            tick = time.monotonic()
            now = datetime.now(timezone.utc)
            due = due_calls(cursor, now, loop, copies)
            cursor = now
            if session is not None:
                blocked = await refresh_blocked(session, decision_url, teams, blocked, keys)
            batches: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
            for event in due:
                if event["attribution"]["team"] in blocked or event["attribution"]["api_key"] in blocked:
                    refused += 1
                    continue
                batches[partition_key(event)].append(event)
            await asyncio.gather(
                *[await producer.send(topics.USAGE, orjson.dumps(evs), key=key) for key, evs in batches.items()])
            sent += sum(len(evs) for evs in batches.values())
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    finally:
        await producer.stop()
        if session is not None:
            await session.close()
        log.info("demo traffic: %d calls sent, %d refused by budget decisions", sent, refused)
    return sent
