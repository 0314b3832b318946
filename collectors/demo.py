"""Realistic demo traffic: several orgs, teams, users and API keys calling 10 models of 5 providers, with
cache hits, reasoning, streaming calls whose usage was lost (text only, so the worker counts tokens),
failed calls, an unknown model (shows up as unpriced) and bursts. Events are produced in micro-batches per
team, the way collectors write."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from tokenmeter import topics
from tokenmeter.events import partition_key

log = logging.getLogger("tokenmeter.demo")

# (provider, model, relative traffic, typical input tokens, typical output tokens, reasoning share)
MODELS = [
    ("openai", "gpt-4o-2024-08-06", 18, 1800, 350, 0.0),
    ("openai", "gpt-4o-mini", 22, 900, 200, 0.0),
    ("openai", "gpt-5", 6, 3000, 1500, 0.6),
    ("openai", "o4-mini", 4, 1500, 1200, 0.7),
    ("openai", "text-embedding-3-small", 10, 600, 0, 0.0),
    ("anthropic", "claude-sonnet-4-5-20250929", 12, 4000, 600, 0.0),
    ("anthropic", "claude-haiku-4-5", 8, 1200, 250, 0.0),
    ("gemini", "gemini-2.5-flash", 10, 2000, 300, 0.3),
    ("gemini", "gemini-2.5-pro", 3, 6000, 900, 0.4),
    ("mistral", "mistral-small-latest", 4, 800, 200, 0.0),
    ("acme-hosted", "acme-internal-llm-v2", 1, 500, 100, 0.0),  # not in the catalog: unpriced, visible
]

ORGS = {
    "acme": {"search": ["ana", "bo", "chen"], "support-bot": ["dee", "eli"], "data-science": ["fay", "gus"]},
    "globex": {"growth": ["hal", "ivy"], "platform": ["jo", "kai", "lu"]},
}
FEATURES = ["chat", "summarize", "rag-answer", "classify", "code-review", "agent-loop"]
PROMPTS = [
    "Summarize the attached quarterly report for the finance team in five bullet points.",
    "You are a helpful support agent. The customer says their invoice total looks wrong. Explain the charges.",
    "Write a SQL query that returns monthly active users by plan for the last six months.",
    "Classify this ticket into billing, bug, feature request or other: 'I was charged twice this month'.",
]
COMPLETIONS = [
    "Here is a concise summary: revenue grew 12% quarter over quarter, driven by enterprise upgrades.",
    "The invoice includes the base plan, two seat add-ons and prorated usage for the API tier.",
    "SELECT date_trunc('month', ts) AS month, plan, count(DISTINCT user_id) FROM events GROUP BY 1, 2;",
]


@dataclass(frozen=True)
class Caller:
    org: str
    team: str
    user: str
    api_key: str
    project: str


def callers() -> list[Caller]:
    out = []
    for org, teams in ORGS.items():
        for team, users in teams.items():
            for user in users:
                out.append(Caller(org, team, user, f"sk-{org[:3]}-{team[:4]}-{user}", f"{team}-prod"))
    return out


def make_event(rng: random.Random, caller: Caller, now: datetime) -> dict[str, Any]:
    provider, model, _, typical_in, typical_out, reasoning_share = rng.choices(MODELS, weights=[m[2] for m in MODELS])[0]
    embeddings = model.startswith("text-embedding")
    input_tokens = max(1, int(rng.lognormvariate(0, 0.6) * typical_in))
    output_tokens = 0 if embeddings else max(1, int(rng.lognormvariate(0, 0.5) * typical_out))
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "ts": now.isoformat(),
        "source": "demo",
        "provider": provider,
        "model": model,
        "operation": "embeddings" if embeddings else "chat",
        "status": "ok",
        "attribution": {
            "org": caller.org,
            "team": caller.team,
            "project": caller.project,
            "user": caller.user,
            "api_key": caller.api_key,
            "feature": rng.choice(FEATURES),
            "route": f"/v1/{'embeddings' if embeddings else 'chat/completions'}",
            "tags": {"env": rng.choice(["prod", "prod", "prod", "staging"])},
        },
        "latency_ms": round(rng.uniform(200, 4000), 1),
    }
    if not embeddings:
        event["ttft_ms"] = round(event["latency_ms"] * rng.uniform(0.05, 0.3), 1)
    roll = rng.random()
    if roll < 0.03:
        event["status"] = "error"
        event["usage"] = {"input_tokens": 0, "output_tokens": 0}
    elif roll < 0.13 and not embeddings:
        # A streamed call whose final usage chunk never arrived: only the text is known.
        event["content"] = {
            "prompt": [{"role": "system", "content": "You are concise."}, {"role": "user", "content": rng.choice(PROMPTS)}],
            "completion": rng.choice(COMPLETIONS),
        }
    else:
        cached = int(input_tokens * rng.uniform(0.3, 0.9)) if rng.random() < 0.35 else 0
        usage = {"input_tokens": input_tokens, "cached_input_tokens": cached, "output_tokens": output_tokens}
        if reasoning_share:
            usage["reasoning_tokens"] = int(output_tokens * reasoning_share)
        event["usage"] = usage
    return event


async def refresh_blocked(session: Any, decision_url: str, teams: set[str], blocked: set[str],
                          keys: dict[str, str] | None = None) -> set[str]:
    """The teams, and the api keys of `keys` (key -> its team), that the budgets refuse now (asked as a gateway
    would: a key with its team, so a budget scoped to one key blocks that key alone), logged when that set
    changes."""
    asks = [(team, {"team": team}) for team in teams]
    asks += [(key, {"team": team, "api_key": key}) for key, team in (keys or {}).items()]
    newly = await _refused(session, decision_url, asks)
    if newly != blocked:
        log.info("demo gateway: refusing calls of %s (budget decisions)", ", ".join(sorted(newly)) or "nobody")
    return newly


async def _refused(session: Any, decision_url: str, asks: list[tuple[str, dict[str, str]]]) -> set[str]:
    """Ask the decision endpoint once per (label, caller attributes), as a gateway would before each call; the
    labels refused (403 block, 429 throttle). Unreachable = allow."""
    import aiohttp

    refused = set()
    for label, params in asks:
        try:
            async with session.get(decision_url, params=params,
                                   timeout=aiohttp.ClientTimeout(total=0.5)) as resp:
                if resp.status in (403, 429):
                    refused.add(label)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            continue
    return refused


async def generate(bootstrap: str, events_per_s: float, total: int | None = None, seed: int | None = None,
                   stop: asyncio.Event | None = None, decision_url: str | None = None) -> int:
    """Produce demo events until `total` is reached or `stop` is set; returns how many were sent. With
    `decision_url` the demo behaves like a gateway that obeys budgets: calls of blocked or throttled teams are
    refused (not sent), so the dashboard shows a block actually stopping spend."""
    import aiohttp

    rng = random.Random(seed)
    people = callers()
    teams = {p.team for p in people}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, compression_type=None)
    session = aiohttp.ClientSession() if decision_url else None
    sent = refused = attempted = 0  # attempted: calls the demo's clients made, refused ones included
    blocked: set[str] = set()
    tick = 0.5
    try:
        await producer.start()  # inside: a broker that does not answer still closes the session and the producer
        while (total is None or attempted < total) and not (stop and stop.is_set()):
            started = time.monotonic()
            count = max(1, int(rng.gauss(events_per_s * tick, events_per_s * tick * 0.2)))
            if rng.random() < 0.05:  # a burst: one agent loop hammering a model
                count *= 8
            if total is not None:
                count = min(count, total - attempted)
            now = datetime.now(timezone.utc)
            if session is not None:
                blocked = await refresh_blocked(session, decision_url, teams, blocked)
            batches: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
            for _ in range(count):
                caller = rng.choice(people)
                if caller.team in blocked:
                    refused += 1
                    continue
                event = make_event(rng, caller, now)
                batches[partition_key(event)].append(event)
            await asyncio.gather(
                *[await producer.send(topics.USAGE, orjson.dumps(evs), key=key) for key, evs in batches.items()]
            )
            attempted += count
            sent += sum(len(evs) for evs in batches.values())
            if total is None or attempted < total:
                await asyncio.sleep(max(0.0, tick - (time.monotonic() - started)))
    finally:
        await producer.stop()
        if session is not None:
            await session.close()
        if refused:
            log.info("demo gateway: %d calls refused by budget decisions", refused)
    return sent
