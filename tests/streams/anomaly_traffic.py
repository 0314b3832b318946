"""Small deterministic traffic for anomaly tests: priced-event dicts as on `tokenmeter.priced`."""

from __future__ import annotations

import itertools
import math
import random
import time
from datetime import datetime, timezone

MONDAY = int(datetime(2026, 9, 7, tzinfo=timezone.utc).timestamp())
PRICE = {"gpt-4o-mini": (150_000, 600_000), "gpt-4o": (2_500_000, 10_000_000), "o1": (15_000_000, 60_000_000),
         "claude-opus-4": (15_000_000, 75_000_000), "gemini-2.0-flash": (100_000, 400_000)}  # pico-$ per token


def diurnal(t: int) -> float:
    hour = (t / 3600) % 24
    weekend = ((t // 86400) + 3) % 7 >= 5
    return (0.1 + 0.9 * math.exp(-((hour - 13) / 3.5) ** 2)) * (0.3 if weekend else 1.0)


def event(t: int, key: str = "k1", team: str = "search", model: str = "gpt-4o-mini", tin: int = 1000,
          tout: int = 300, status: str = "ok", pricing: str = "priced", n: int = 0, user: str | None = None) -> dict:
    pin, pout = PRICE.get(model, (0, 0))
    pico = 0 if status == "error" or pricing == "unpriced" else tin * pin + tout * pout
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # datetime's strftime, at a third of the CPU
    out = {"event_id": f"{key}-{t}-{n}", "ts": ts, "source": "test", "provider": "openai", "model": model,
           "status": status, "attribution": {"team": team, "project": f"{team}-app", "user": user or f"u-{key}",
                                             "api_key": key, "feature": "chat", "tags": {}},
           "usage": {"input_tokens": 0 if status == "error" else tin, "output_tokens": 0 if status == "error" else tout},
           "cost_usd": f"{pico // 10**12}.{pico % 10**12:012d}", "pricing_status": pricing}
    if pricing == "unpriced":
        out["unpriced_reason"] = f"unknown model {model}"
    return out


def traffic(start: int, end: int, *, peak: float = 12.0, seed: int = 1, keys=("k1", "k2"), team: str = "search",
            models=(("gpt-4o-mini", 0.7), ("gpt-4o", 0.3)), modify=None) -> list[list[dict]]:
    """One batch per 5 minutes: ~`peak` calls per key per bucket at 13:00 UTC on weekdays, fewer at night."""
    rng = random.Random(seed)
    names = [m for m, _ in models]
    cum_weights = list(itertools.accumulate(w for _, w in models))  # what `choices(names, weights)` sums per call
    batches = []
    for b in range(start, end, 300):
        batch = []
        for key in keys:
            expected = peak * diurnal(b)
            count = max(0, int(rng.gauss(expected, math.sqrt(expected) + 0.5) + 0.5))
            for i in range(count):
                t = b + rng.randrange(300)
                e = event(t, key, team, rng.choices(names, cum_weights=cum_weights)[0],
                          int(rng.lognormvariate(math.log(1000), 0.4)), int(rng.lognormvariate(math.log(300), 0.4)),
                          "error" if rng.random() < 0.01 else "ok", n=i)
                batch.append(modify(e, t) if modify else e)
        batches.append([e for e in batch if e is not None])
    return batches
