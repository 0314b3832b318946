"""A worker's CPU priority (`TOKENMETER_WORKER_NICE`): a pricing worker that shares the cores with an admitting one
yields them first, so a reservation that arrives while usage is being priced is answered without waiting for the
pricing batch's time slice (docs/budgets.md, reserve10)."""

from __future__ import annotations

import os


def lower_cpu_priority(nice: int) -> None:
    """Raise the nice value of every thread of this process to at least `nice` (never lower it: that needs
    privileges, and an operator who started the worker niced meant it). Linux keeps the nice value per thread and a
    new thread inherits its creator's, so threads started already (imports can start some) are set one by one and
    later ones (Faust's consumer thread, the pricing thread) inherit it."""
    if nice <= 0:
        return
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: the process's value, which its threads share there
        threads = [0]
    for tid in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:  # the thread ended meanwhile
            pass
