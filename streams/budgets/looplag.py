"""A probe of the event loop's lag: how late a timer callback runs, which is how long anything ready on the loop
(a reservation's request, a hold's acknowledgement) waited behind the steps before it.

A task sleeps INTERVAL_S again and again and records how late it woke (`lag`). For each late wake it also records
the thread's CPU time over that interval: a lag with CPU ~ wall is the loop's own work (a long synchronous step,
or simply more work than the loop can do); a lag with little CPU is the process waiting off-CPU (preempted by
other processes on the shared cores, or a blocking call). That is the split the reservation tail needs
(docs/rounds/budgets.md, reserve7: "Where the client-minus-worker gap and the tail come from").

Cost: one wake per INTERVAL_S (measured at load 18: 11 ms of CPU per second at a 5 ms interval, ~2 % of the
worker's CPU at 2,000 reservations/s; 7 ms per second at 10 ms). The loop's timers have a resolution of ~1 ms
(epoll), so an idle loop shows lags up to ~1 ms: read stalls above STALL_S.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from typing import Any

INTERVAL_S = 0.01
STALL_S = 0.002  # lags above this are kept with their CPU share (the last KEEP_STALLS of them)
KEEP_SAMPLES = 20_000  # 200 s at INTERVAL_S
KEEP_STALLS = 2_000


class LoopLagProbe:
    def __init__(self, interval: float = INTERVAL_S):
        self.interval = interval
        self.samples: deque[tuple[float, float]] = deque(maxlen=KEEP_SAMPLES)  # (monotonic at wake, lag s)
        # (monotonic at wake, lag s, the thread's CPU s over the interval, the interval's wall s)
        self.stalls: deque[tuple[float, float, float, float]] = deque(maxlen=KEEP_STALLS)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval, samples, stalls = self.interval, self.samples, self.stalls
        while True:
            started, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(interval)
            woke = loop.time()
            lag = woke - started - interval
            samples.append((woke, lag))
            if lag > STALL_S:
                stalls.append((woke, lag, time.thread_time() - cpu, woke - started))

    def summary(self, window_s: float | None = None) -> dict[str, Any]:
        """Lag percentiles in ms over the last `window_s` seconds (all kept samples when None), the stalls
        (lags above STALL_S) among them, and the share of the stalls' intervals the loop's thread was on a CPU."""
        since = time.monotonic() - window_s if window_s else float("-inf")  # loop.time() is time.monotonic()
        lags = sorted(lag for at, lag in self.samples if at >= since)
        if not lags:
            return {"samples": 0}
        stalls = [s for s in self.stalls if s[0] >= since]
        wall = sum(s[3] for s in stalls)
        return {"samples": len(lags), "p50": _ms(lags[len(lags) // 2]),
                "p99": _ms(lags[min(len(lags) - 1, int(len(lags) * 0.99))]), "max": _ms(lags[-1]),
                "stalls": len(stalls), "stall_ms_total": _ms(sum(s[1] for s in stalls)),
                "stall_cpu_ms_total": _ms(sum(s[2] for s in stalls)),
                # the most CPU the loop's thread used in one late interval: an upper bound of its longest
                # synchronous step (the interval also holds every short step that ran in it)
                "stall_cpu_max_ms": _ms(max((s[2] for s in stalls), default=0.0)),
                "stall_on_cpu_pct": round(sum(s[2] for s in stalls) / wall * 100, 1) if wall else None}


class GcPauses:
    """The cyclic GC's pauses of this process, per generation (count, total and longest; wall time between the
    collector's start and stop callbacks): the event loop stands still while one runs. Cost: two callbacks per
    collection (~1 us)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.total_s = [0.0, 0.0, 0.0]
        self.max_s = [0.0, 0.0, 0.0]
        self.long: deque[tuple[float, int, float]] = deque(maxlen=KEEP_STALLS)  # (monotonic, generation, s) > 1 ms
        self._started = 0.0
        self._installed = False

    def install(self) -> None:
        if not self._installed:
            self._installed = True
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._installed:
            self._installed = False
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took, generation = time.perf_counter() - self._started, info["generation"]
        self.count[generation] += 1
        self.total_s[generation] += took
        if took > self.max_s[generation]:
            self.max_s[generation] = took
        if took > 0.001:
            self.long.append((time.monotonic(), generation, took))

    def summary(self, window_s: float | None = None) -> dict[str, Any]:
        """Totals since install; `long`: the pauses above 1 ms of the last `window_s` seconds (all kept when None),
        as [generation, ms]."""
        since = time.monotonic() - window_s if window_s else float("-inf")
        return {"count": list(self.count), "total_ms": [_ms(t) for t in self.total_s],
                "max_ms": [_ms(t) for t in self.max_s],
                "long": [[g, _ms(took)] for at, g, took in self.long if at >= since][-50:]}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


__all__ = ["GcPauses", "LoopLagProbe"]
