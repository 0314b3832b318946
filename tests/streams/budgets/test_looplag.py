"""The event-loop lag probe (streams/budgets/looplag.py): it sees a loop held by a synchronous step, and tells a step
that used the CPU from one that waited off it (the split the reservation tail needs: docs/budgets.md)."""

from __future__ import annotations

import asyncio
import time

from streams.budgets.looplag import LoopLagProbe


def _hold_the_loop(seconds: float, on_cpu: bool, used: list[float]) -> None:
    cpu = time.thread_time()
    if on_cpu:
        # a long synchronous step (e.g. pricing a large batch) that uses `seconds` of CPU, however long a loaded
        # machine takes to give it that much (a wall-clock step got 4.3 ms of CPU in 50 ms at load ~19)
        while time.thread_time() - cpu < seconds:
            pass
    else:
        time.sleep(seconds)  # the thread off the CPU (a blocking call; preemption looks the same)
    used.append(time.thread_time() - cpu)


async def _probe_around(step) -> dict:  # noqa: ANN001
    probe = LoopLagProbe(interval=0.002)
    probe.start()
    while len(probe.samples) < 3:  # the probe is running (readiness, not a fixed wait)
        await asyncio.sleep(0.001)
    step()
    seen = len(probe.samples)
    while len(probe.samples) < seen + 2:  # it woke after the step
        await asyncio.sleep(0.001)
    await probe.stop()
    return probe.summary()


def test_a_synchronous_step_on_the_loop_shows_as_a_stall_on_the_cpu():
    used: list[float] = []
    summary = asyncio.run(_probe_around(lambda: _hold_the_loop(0.05, on_cpu=True, used=used)))
    assert summary["max"] >= 40 and summary["stalls"] >= 1, summary
    # the stall's interval holds the step's CPU
    assert summary["stall_cpu_ms_total"] >= used[0] * 1000 * 0.9 > 5, (summary, used)


def test_a_loop_waiting_off_the_cpu_shows_as_a_stall_with_little_cpu():
    used: list[float] = []
    summary = asyncio.run(_probe_around(lambda: _hold_the_loop(0.05, on_cpu=False, used=used)))
    assert summary["max"] >= 40 and summary["stalls"] >= 1, summary
    assert summary["stall_cpu_ms_total"] < 5 and summary["stall_on_cpu_pct"] < 10, summary


def test_the_summary_windows_the_recent_samples():
    probe = LoopLagProbe()
    now = time.monotonic()
    probe.samples.extend([(now - 100, 0.5), (now - 1, 0.001)])
    assert probe.summary()["samples"] == 2 and probe.summary()["max"] == 500
    assert probe.summary(window_s=10) == {**probe.summary(window_s=10), "samples": 1, "max": 1.0}
    assert LoopLagProbe().summary() == {"samples": 0}
