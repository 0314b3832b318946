"""Child-process hygiene and the restart back-off, shared by `tokenmeter up` (app/supervisor.py), the broker, the
benches and `tokenmeter collect kafka --processes` (collectors/kafka_members.py): no orphans, one back-off rule.
In the contract because a stage's own command (collect kafka) starts children too, and no stage imports the app
shell (tests/test_layering.py)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field

_PR_SET_PDEATHSIG = 1


def child_preexec() -> None:
    """`preexec_fn` for subprocess.Popen: the child dies at once (SIGKILL) when the process that spawned it dies,
    even by SIGKILL.

    SIGKILL, not SIGTERM: a supervisor that was killed cannot wait for a graceful shutdown, and the tansu broker
    and Faust take seconds to stop on SIGTERM, holding their ports (a restarted `up` found the broker port still
    taken ~4 s later). Nothing is lost by it that SIGTERM would save: the broker is memory-only and every other
    child is at-least-once with idempotent writes. Linux sends the signal when the *thread* that forked the
    child exits, so spawn children from the main thread (`up` does).

    The child also gets a process group of its own: a terminal's Ctrl-C signals the whole foreground group, which
    killed the embedded broker together with its clients and left the worker retrying it until `up`'s stop deadline.
    Now only the parent gets the Ctrl-C and stops its children in its own order (app/supervisor.py)."""
    os.setpgid(0, 0)
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except OSError:
        return
    if os.getppid() == 1:  # the parent died before prctl took effect: nobody would ever kill us
        os._exit(1)


BACKOFF_FIRST_S = 0.5  # first restart delay after a crash; doubles per crash ...
BACKOFF_MAX_S = 30.0  # ... up to this
STABLE_AFTER_S = 60.0  # a child that ran this long before crashing starts over at the first delay


def restart_delay(backoff_s: float, ran_s: float) -> tuple[float, float]:
    """(the delay before restarting a child that crashed after running `ran_s`, the back-off for its next crash):
    exponential, capped; a child that had been up for a while starts over at the first delay."""
    delay = BACKOFF_FIRST_S if ran_s >= STABLE_AFTER_S else backoff_s
    return delay, min(delay * 2, BACKOFF_MAX_S)


@dataclass
class RestartingChild:
    """A child process kept running: its command line, its process and its restart back-off. `up`'s children
    (app/supervisor.Child adds readiness, liveness and the log) and `collect kafka --processes`'s members. The state
    is keyword-only, so a subclass may add positional fields."""
    name: str
    args: list[str] | None  # None: started by other means (up's embedded broker)
    proc: subprocess.Popen | None = field(default=None, kw_only=True)
    started_at: float = field(default=0.0, kw_only=True)  # monotonic
    restarts: int = field(default=0, kw_only=True)
    backoff_s: float = field(default=BACKOFF_FIRST_S, kw_only=True)
    restart_at: float | None = field(default=None, kw_only=True)  # monotonic time of a scheduled restart
    last_exit_code: int | None = field(default=None, kw_only=True)
    last_exit_at: float | None = field(default=None, kw_only=True)  # unix time

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def schedule_restart(self, now: float) -> float:
        """Exponential back-off, capped; a child that had been up for a while starts over at the first delay."""
        delay, self.backoff_s = restart_delay(self.backoff_s, now - self.started_at)
        self.restart_at = now + delay
        return delay
