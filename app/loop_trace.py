"""What ran on a process's event loop while a reservation waited: a diagnostic for `python -m app.bench_reserve
--trace-loop` (docs/rounds/budgets.md, reserve11), not part of any role.

asyncio's own slow-callback log (`loop.slow_callback_duration`) works only in debug mode, which also wraps every
coroutine and checks every call's thread: far more CPU than the reservation it would explain. This records the
same facts, cheaply, with timestamps a bench can set against each slow request:
- every event-loop callback (a task's step, a reader, a timer) that took more than SLOW_S of wall time: when it
  started (CLOCK_MONOTONIC, like time.perf_counter in every process of this machine), its wall and its thread's CPU
  time (wall >> CPU: the thread waited, for a core or for the GIL a pricing thread held), and what it was (a task's
  coroutine, or the callback's name);
- every loop iteration whose callbacks together ran longer than SLOW_S (how long a callback made ready during it,
  e.g. a hold's acknowledgement, waited for its turn), with the number of callbacks;
- every cyclic-GC pause above SLOW_S.
Cost: two clock reads and a thread-CPU read per callback (~1 us), measured in the bench's CPU figures.

Turned on and off by a signal (TRACE_SIGNAL): off writes what was recorded meanwhile to the path given as JSON.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import time
from asyncio import base_events, events
from typing import Any

SLOW_S = 0.001
KEEP = 50_000


class LoopTrace:
    def __init__(self, path: str):
        self.path = path
        self.on = False
        self.callbacks: list[tuple[float, float, float, str]] = []  # (start, wall s, thread CPU s, what)
        self.iterations: list[tuple[float, float, int]] = []  # (start, busy s, callbacks)
        self.gc: list[tuple[float, float, int]] = []  # (start, wall s, generation)
        self._busy = 0.0
        self._count = 0
        self._gc_started = 0.0

    def install(self) -> None:
        trace, run_handle, run_once = self, events.Handle._run, base_events.BaseEventLoop._run_once
        perf, thread_cpu = time.perf_counter, time.thread_time

        def _run(handle: events.Handle) -> None:
            if not trace.on:
                return run_handle(handle)
            started, cpu = perf(), thread_cpu()
            try:
                return run_handle(handle)
            finally:
                wall = perf() - started
                trace._busy += wall
                trace._count += 1
                if wall > SLOW_S and len(trace.callbacks) < KEEP:
                    trace.callbacks.append((started, wall, thread_cpu() - cpu, _describe(handle)))

        def _run_once(loop: Any) -> None:
            if not trace.on:
                return run_once(loop)
            trace._busy, trace._count = 0.0, 0
            try:
                return run_once(loop)
            finally:
                if trace._busy > SLOW_S and len(trace.iterations) < KEEP:
                    # the callbacks ran after the selector's wait: their start is the iteration's end less their time
                    trace.iterations.append((perf() - trace._busy, trace._busy, trace._count))

        events.Handle._run = _run  # type: ignore[method-assign]
        base_events.BaseEventLoop._run_once = _run_once  # type: ignore[method-assign]
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if not self.on:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif (took := time.perf_counter() - self._gc_started) > SLOW_S:
            self.gc.append((self._gc_started, took, info["generation"]))

    def toggle(self, *_: Any) -> None:
        if not self.on:
            self.callbacks, self.iterations, self.gc = [], [], []
            self.on = True
            return
        self.on = False
        with open(self.path + ".part", "w") as out:
            json.dump({"callbacks": self.callbacks, "iterations": self.iterations, "gc": self.gc}, out)
        os.replace(self.path + ".part", self.path)


def _describe(handle: events.Handle) -> str:
    callback = handle._callback  # noqa: SLF001 - a diagnostic: what the loop ran
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Future) and hasattr(owner, "get_coro"):
        coro = owner.get_coro()
        return "task " + getattr(coro, "__qualname__", repr(coro))
    name = getattr(callback, "__qualname__", None) or type(callback).__qualname__
    if owner is not None and not isinstance(owner, type):
        name = f"{type(owner).__qualname__}.{getattr(callback, '__name__', name)}"
    return name


TRACE_SIGNAL = signal.SIGRTMIN + 2


def install(path: str) -> LoopTrace:
    trace = LoopTrace(path)
    trace.install()
    signal.signal(TRACE_SIGNAL, trace.toggle)
    return trace


__all__ = ["LoopTrace", "TRACE_SIGNAL", "install"]
