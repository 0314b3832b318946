"""Traffic family "sparse": many quiet API keys with heavy-tailed calls (an evaluation family, see evaluate.py).

Built unlike synthetic.py (which walks 5-minute buckets and draws Poisson counts per client): each key is a
*session process*. Sessions (a conversation, an agent run, a script) start as a non-homogeneous Poisson process
drawn for the whole period by thinning; a session is a chain of calls seconds apart whose length is geometric, and
whose prompts grow along the chain. All calls of all keys are then sorted by time and cut into batches.

    - 60 keys in 8 teams; session rates spread log-uniformly from one every ~5 hours to ~8 an hour at the key's
      busiest time; each key has its own shape: office day in some UTC offset, always-on, or evenings only.
    - token sizes: log-normal with sigma ~1.1, and 3 % of calls are huge documents (20k-120k input tokens);
    - models: a main model per key, a second one; a third of the keys call a premium model (claude-opus-4, o1)
      for 1-3 % of calls (the "single $0.10 call on a quiet key" of issue #17);
    - 1-4 % of calls fail, and a failed call is retried once a few seconds later.
"""

from __future__ import annotations

import heapq
import math
import random
from datetime import datetime, timezone
from typing import Iterator

from .incidents import BUCKET, PREMIUM, Actor, overlay, plan, priced_event

START = datetime(2026, 3, 2, tzinfo=timezone.utc)  # a Monday
TEAMS = ("search", "support", "growth", "research", "legal", "sales", "infra", "mobile")
TOUT_SIGMA = 0.8  # spread of ln(output tokens) of a key's calls
MAIN = ("gpt-4o-mini", "claude-3-5-haiku", "gemini-2.0-flash", "gpt-4o", "claude-sonnet-4", "mistral-large")


class Key:
    def __init__(self, rng: random.Random, i: int):
        team = TEAMS[i % len(TEAMS)]
        self.attribution = {"org": "sparse", "team": team, "project": f"{team}-{'ab'[i % 2]}",
                            "user": f"{team}-u{i}", "api_key": f"sk-sparse-{i:02d}",
                            "feature": f"{team}-{rng.choice(('chat', 'summarize', 'extract', 'agent'))}", "tags": {}}
        self.sessions_per_h = math.exp(rng.uniform(math.log(0.2), math.log(8)))
        self.shape = rng.choice(("office", "office", "always", "evening"))
        self.offset_h = rng.choice((-8, -5, 0, 1, 2, 5.5, 9))
        main, second = rng.sample(MAIN, 2)
        self.models = {main: 0.8, second: 0.2}
        self.premium, self.premium_p = None, 0.0
        if rng.random() < 1 / 3:  # a hard question now and then goes to a premium model: one call, not a session
            self.premium, self.premium_p = rng.choice(PREMIUM), rng.uniform(0.01, 0.03)
        self.chain = rng.uniform(1.0, 6.0)  # mean calls per session
        self.tin, self.tout = math.exp(rng.uniform(math.log(300), math.log(6000))), rng.uniform(80, 900)
        self.error_p = rng.uniform(0.01, 0.04)

    def shape_at(self, t: float) -> float:
        local = (t / 3600 + self.offset_h) % 24
        weekday = int((t + self.offset_h * 3600) // 86400 + 3) % 7
        if self.shape == "always":
            return 0.6 + 0.4 * math.cos((local - 14) / 24 * 2 * math.pi)
        if self.shape == "evening":
            return (0.05 + math.exp(-((local - 20.5) / 2.0) ** 2)) * (1.2 if weekday >= 5 else 1.0)
        day = math.exp(-((local - 13) / 3.2) ** 2)
        return (0.03 + day) * (0.15 if weekday >= 5 else 1.0)

    def rate(self, t: float) -> float:
        """Expected calls per second."""
        return self.sessions_per_h * self.chain * self.shape_at(t) / 3600


def _calls(rng: random.Random, key: Key, start: int, end: int, tag: str) -> list[tuple]:
    """(t, event) of every call of one key, by thinning a Poisson process of sessions at the key's peak rate."""
    out, peak, t, n = [], key.sessions_per_h * 1.3 / 3600, float(start), 0
    names, weights = list(key.models), list(key.models.values())
    while True:
        t += rng.expovariate(peak)
        if t >= end:
            return out
        if rng.random() * 1.3 > key.shape_at(t):
            continue
        calls = min(1 + int(rng.expovariate(1 / max(key.chain - 1, 0.01))), 30) if key.chain > 1 else 1
        when, context = t, 1.0
        model = rng.choices(names, weights)[0]
        for _ in range(calls):
            if when >= end:
                break
            if rng.random() < 0.03:
                tin = int(rng.uniform(20_000, 120_000))
            else:
                tin = min(int(rng.lognormvariate(math.log(key.tin * context), 1.1)), 120_000)
            tout = min(int(rng.lognormvariate(math.log(key.tout), TOUT_SIGMA)), 8_000)
            error = rng.random() < key.error_p
            n += 1
            called = key.premium if key.premium and rng.random() < key.premium_p else model
            out.append((when, priced_event(f"sp-{tag}-{n}", when, key.attribution, called, tin, tout, error)))
            if error:  # the client retries once
                when += rng.uniform(1, 6)
                n += 1
                out.append((when, priced_event(f"sp-{tag}-{n}", when, key.attribution, model, tin, tout,
                                               rng.random() < 0.3)))
            when += rng.uniform(2, 40)
            context = min(context * 1.15, 3.0)  # an agent's context grows, up to the window it keeps


def generate(seed: int = 1, days: int = 30, per_kind: int = 10) -> tuple[Iterator[list[dict]], list[dict], dict]:
    """(batches of priced events in time order, labels, facts) for evaluate.py."""
    rng = random.Random(seed * 7919 + 17)
    start = int(START.timestamp())
    end = start + days * 86400
    keys = [Key(rng, i) for i in range(60)]
    actors = [Actor(k.attribution, k.models, k.tin, k.tout, k.rate, TOUT_SIGMA) for k in keys]  # premium calls: not a usual mix
    incidents = plan(rng, actors, start, days, per_kind) if per_kind else []
    facts = {"start": start, "end": end, "clients": len(keys), "injections": len(incidents), "fresh": []}
    streams = [_calls(random.Random(seed * 1000 + i), k, start, end, f"{seed}-{i}") for i, k in enumerate(keys)]

    def batches() -> Iterator[list[dict]]:
        merged = heapq.merge(*streams, key=lambda item: item[0])
        counter = [0]
        bucket, batch = start, []
        for t, event in merged:
            while t >= bucket + BUCKET:
                yield overlay(batch, bucket, incidents, rng, counter)
                bucket, batch = bucket + BUCKET, []
            batch.append(event)
        while bucket < end:
            yield overlay(batch, bucket, incidents, rng, counter)
            bucket, batch = bucket + BUCKET, []
        for inc in incidents:
            inc.finish()

    return batches(), [inc.record for inc in incidents], facts
