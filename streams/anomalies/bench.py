"""Throughput of `AnomalyEngine.observe` on dense traffic: the synthetic month's events squeezed into a few hours,
so each 5-minute bucket holds tens of thousands of events and per-event aggregation dominates, as it does in
production (the evaluation's sparse month mostly measures per-scope bucket closes instead)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from .engine import AnomalyEngine
from .synthetic import generate


def observe_throughput(events: int = 300_000, batch: int = 10_000, span_s: int = 3 * 3600) -> dict:
    batches, _, _ = generate(seed=11, days=30, per_kind=1)
    pool: list[dict] = []
    for chunk in batches:
        pool.extend(chunk)
        if len(pool) >= events:
            break
    pool = pool[:events]
    start = int(datetime(2026, 10, 1, tzinfo=timezone.utc).timestamp())
    for i, event in enumerate(pool):  # re-time in order over `span_s`
        t = start + i * span_s // len(pool)
        event["ts"] = datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    engine = AnomalyEngine()
    t0 = time.perf_counter()
    for i in range(0, len(pool), batch):
        engine.observe(pool[i:i + batch], now=start + span_s)
    engine.advance_to(start + span_s + 3600)
    elapsed = time.perf_counter() - t0
    return {"events": len(pool), "seconds": round(elapsed, 2), "events_per_s": round(len(pool) / elapsed),
            "scopes": len(engine.scopes), "buckets_closed": engine.stats["buckets_closed"]}
