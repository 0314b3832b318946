"""A worker's CPU scheduling (reserve10, issue 15), for workers that share their cores (e.g. the split roles on one
machine): `TOKENMETER_WORKER_NICE` lowers a throughput-bound worker's priority (pricing), so it yields the cores
first; `TOKENMETER_WORKER_SCHED_SLICE_MS` asks the kernel for short time slices for a latency-bound one (budgets,
which answers reservations), so a request that arrives while other work runs is served within a short slice
instead of after the kernel's default one (docs/budgets.md, "Priority"; measured: docs/rounds/budgets.md, reserve10). Both apply to every thread of the process:
Linux keeps them per thread, and a new thread inherits its creator's."""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

_SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}  # Linux syscall numbers; glibc has no wrapper
_FAIR_POLICIES = (0, 3)  # SCHED_OTHER, SCHED_BATCH: the policies a custom slice applies to


class _SchedAttr(ctypes.Structure):  # struct sched_attr (include/uapi/linux/sched/types.h), version 1
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32), ("sched_flags", ctypes.c_uint64),
                ("sched_nice", ctypes.c_int32), ("sched_priority", ctypes.c_uint32),
                ("sched_runtime", ctypes.c_uint64), ("sched_deadline", ctypes.c_uint64),
                ("sched_period", ctypes.c_uint64), ("sched_util_min", ctypes.c_uint32),
                ("sched_util_max", ctypes.c_uint32)]


def _threads() -> list[int]:
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: the process's value, which its threads share there
        return [0]


def lower_cpu_priority(nice: int) -> None:
    """Raise the nice value of every thread of this process to at least `nice` (never lower it: that needs
    privileges, and an operator who started the worker niced meant it). Threads started already (imports can start
    some) are set one by one; later ones (Faust's consumer thread, the pricing thread) inherit it."""
    if nice <= 0:
        return
    for tid in _threads():
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:  # the thread ended meanwhile
            pass


def request_time_slice(ms: float | None) -> bool:
    """Ask for time slices of `ms` milliseconds for every thread (Linux 6.12+, EEVDF: `sched_setattr` with
    SCHED_OTHER and `sched_runtime` as the slice; no privilege needed). A task with a shorter slice gets an earlier
    virtual deadline, so when it wakes (a request arrives) it preempts a task with the default slice (1.4 ms on 2
    cores here) instead of waiting for that slice to end; it gets no more CPU than before. Older kernels accept and
    ignore the value. Each thread's nice value and policy are kept (a thread an operator put under a real-time or
    idle policy is left as it is). False (and a warning) where it cannot be set."""
    if not ms:
        return False
    number = _SYS_SCHED_SETATTR.get(os.uname().machine) if sys.platform.startswith("linux") else None
    if number is None:
        log.warning("TOKENMETER_WORKER_SCHED_SLICE_MS: not supported on this platform; ignored")
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    for tid in _threads():
        try:
            nice, policy = os.getpriority(os.PRIO_PROCESS, tid), os.sched_getscheduler(tid)
        except ProcessLookupError:
            continue
        if policy not in _FAIR_POLICIES:
            continue
        attr = _SchedAttr(size=ctypes.sizeof(_SchedAttr), sched_policy=policy, sched_nice=nice,
                          sched_runtime=round(ms * 1_000_000))
        if libc.syscall(number, tid, ctypes.byref(attr), 0) != 0:
            errno = ctypes.get_errno()
            if errno == 3:  # ESRCH: the thread ended meanwhile
                continue
            log.warning("TOKENMETER_WORKER_SCHED_SLICE_MS: sched_setattr failed (%s); ignored", os.strerror(errno))
            return False
    return True
