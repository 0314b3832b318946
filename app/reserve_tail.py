"""Where the slowest reservations' time went (`python -m app.bench_reserve`, docs/rounds/budgets.md reserve11).

Each open-loop request is timed by the client (scheduled, written, answered) and, when the worker gives its phases
in Server-Timing (streams/budgets/reservations.py `phase_timing`), by the worker; both on the machine's
CLOCK_MONOTONIC, so one request splits into:
  lateness  the client wrote it after its scheduled time (its own loop's pacing)
  before    written until the worker's handler started: the kernel, the worker's loop reaching the socket, aiohttp
  prep      the handler until the hold's write: parse, worst case, budgets, admission, journal line
  queue     the hold's records handed to aiokafka
  ack       queued until the acknowledgement woke the handler: the produce round trip and three loop turns
  answer    acknowledged until the answer was built
  after     the answer built until the client read it: aiohttp's write, the kernel, the client's loop
With a trace of the worker's loop (app/loop_trace.py) it also says what ran on the loop during the slowest ones.
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict
from typing import Any

PHASES = ("lateness", "before", "prep", "queue", "ack", "answer", "after")


def phases(due: float, sent: float, answered: float, timing: dict[str, float]) -> dict[str, float] | None:
    """One request's phases in ms; None when the worker did not give them (a refusal, a forward, an older worker)."""
    if "start" not in timing or "ack" not in timing:
        return None
    start = timing["start"]
    return {"lateness": (sent - due) * 1000, "before": (start - sent) * 1000, "prep": timing["prep"],
            "queue": timing["queue"], "ack": timing["ack"], "answer": timing["answer"],
            "after": (answered - start) * 1000 - timing["reserve"], "total": (answered - due) * 1000}


def breakdown(timed: list[tuple[float, float, float, dict[str, float]]], trace: dict | None = None,
              share: float = 0.01) -> dict[str, Any]:
    """The slowest `share` of the requests (by latency from their scheduled time): each phase's median and its
    share of their summed latency, against the median request; with `trace`, what the worker's loop ran meanwhile."""
    split = [(t, p) for t in timed if (p := phases(*t)) is not None]
    if not split:
        return {}
    split.sort(key=lambda item: item[1]["total"])
    slow = split[-max(1, int(len(split) * share)):]
    total = sum(p["total"] for _, p in slow)
    figures: dict[str, Any] = {
        "slowest_count": len(slow),
        "slowest_latency_min_ms": round(slow[0][1]["total"], 3),
        "slowest_phase_median_ms": {k: round(statistics.median(p[k] for _, p in slow), 3) for k in PHASES},
        "slowest_phase_share_pct": {k: round(sum(p[k] for _, p in slow) / total * 100, 1) for k in PHASES},
        "all_phase_median_ms": {k: round(statistics.median(p[k] for _, p in split), 3) for k in PHASES},
    }
    if trace is not None:
        figures.update(_overlaps([t for t, _ in slow], [t for t, _ in split], trace))
    return figures


def _overlaps(slow: list[tuple], everyone: list[tuple], trace: dict) -> dict[str, Any]:
    """For each slow request's window (written to answered): the traced loop callbacks, busy loop iterations and GC
    pauses that overlapped it, and the same shares over every request for contrast."""
    callbacks = sorted(tuple(c) for c in trace.get("callbacks", []))  # JSON gives lists
    gcs = sorted(tuple(g) for g in trace.get("gc", []))
    iterations = sorted(tuple(i) for i in trace.get("iterations", []))

    def overlapping(items: list, sent: float, answered: float) -> list:
        # items are (start, duration, ...), sorted by start; none lasts longer than MAX_ITEM_S
        at = bisect.bisect_left(items, (sent - MAX_ITEM_S,))
        found = []
        for item in items[at:]:
            if item[0] >= answered:
                break
            if item[0] + item[1] > sent:
                found.append(item)
        return found

    def share_with(requests: list[tuple], items: list) -> float:
        hit = sum(1 for _, sent, answered, _ in requests if overlapping(items, sent, answered))
        return round(hit / len(requests) * 100, 1) if requests else 0.0

    by_name: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])  # count, wall ms, cpu ms
    seen: set[tuple] = set()
    busiest = []
    for _, sent, answered, _ in slow:
        for item in overlapping(callbacks, sent, answered):
            if item[:2] in seen:  # one callback overlapping several slow requests counts once
                continue
            seen.add(item[:2])
            entry = by_name[item[3]]
            entry[0] += 1
            entry[1] += item[1] * 1000
            entry[2] += item[2] * 1000
        busy = overlapping(iterations, sent, answered)
        busiest.append(max((i[1] for i in busy), default=0.0) * 1000)
    top = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:8]
    return {
        "slowest_with_slow_callback_pct": share_with(slow, callbacks),
        "all_with_slow_callback_pct": share_with(everyone, callbacks),
        "slowest_with_gc_pause_pct": share_with(slow, gcs),
        "all_with_gc_pause_pct": share_with(everyone, gcs),
        "slowest_busiest_iteration_median_ms": round(statistics.median(busiest), 3) if busiest else None,
        # what those callbacks were: count, wall ms, CPU ms of the loop's thread (wall >> CPU: it waited)
        "slowest_overlapping_callbacks": [[name, n, round(wall, 2), round(cpu, 2)] for name, (n, wall, cpu) in top],
        "traced_slow_callbacks": len(callbacks), "traced_busy_iterations": len(iterations),
        "traced_gc_pauses": len(gcs),
    }


MAX_ITEM_S = 1.0  # longest traced item looked back for (a callback or pause longer would be a finding of its own)

__all__ = ["PHASES", "breakdown", "phases"]
