"""Is a child of `tokenmeter up` that is alive also working? A SIGKILLed child is seen at once (its exit) and
restarted; a hung one is not: walk23 SIGSTOPped the worker for 60 s and `status` said "running" while its API timed
out and the usage backlog grew. This probe, a thread beside the supervisor's loop, notices two kinds:

- suspended: the process is stopped (state T in /proc: SIGSTOP, SIGTSTP, a debugger); exact and cheap, any child;
- hung: a child with a health URL (worker API, dashboard, demo inbox) that answered once since its start and has
  not answered for `hung_after_s` (a blocked event loop answers nothing; one slow answer under load is not enough).

It only observes: the supervisor reports the change once and `status` shows it. A hung child is not restarted (a
stopped process may be a debugger's, and a loaded machine can stall a healthy worker for seconds); kill it and
`up` restarts it."""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable

PROBE_EVERY_S = 5.0
HUNG_AFTER_S = 30.0


def process_suspended(pid: int) -> bool:
    """True when the process is stopped (state T, or t when traced), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()  # the command name may hold spaces and ")"
    except (OSError, IndexError):
        return False
    return bool(fields) and fields[0] in (b"T", b"t")


class LivenessProbe(threading.Thread):
    """Every `every_s`: marks each live child's `suspended` and, for a child with `liveness`, when it last
    answered (`answered_at`, monotonic) and since when it has not (`unanswered_since`)."""

    def __init__(self, children: Callable[[], Iterable], every_s: float = PROBE_EVERY_S):
        super().__init__(name="tokenmeter-liveness", daemon=True)
        self.children = children
        self.every_s = every_s
        self._halt = threading.Event()  # not `_stop`: that is threading.Thread._stop, called after a fork and in join()

    def run(self) -> None:
        while not self._halt.wait(self.every_s):
            for child in list(self.children()):
                self.probe(child)

    @staticmethod
    def probe(child) -> None:
        proc = child.proc
        if proc is None or proc.poll() is not None:
            return
        child.suspended = process_suspended(proc.pid)
        if child.suspended or child.liveness is None:
            return  # a stopped process answers nothing: suspended says more than hung
        now = time.monotonic()
        if child.liveness():
            child.answered_at, child.unanswered_since = now, None
        elif child.answered_at is not None and child.unanswered_since is None:  # not before its first answer:
            child.unanswered_since = now  # a restarted worker takes seconds (a minute under load) to answer

    def stop(self) -> None:
        self._halt.set()


def liveness_changes(children: Iterable, now: float, hung_after_s: float = HUNG_AFTER_S) -> list[str]:
    """What to say about the children: once when a live one stops working (suspended, hung), once when it works
    again (each child's `reported` remembers what was said)."""
    lines = []
    for child in children:
        condition = child.condition(now, hung_after_s)
        if condition in ("suspended", "hung") and child.reported != condition:
            what = ("is suspended (stopped: SIGSTOP, SIGTSTP or a debugger); it does no work until SIGCONT"
                    if condition == "suspended" else
                    f"is not answering {getattr(child.liveness, 'url', 'its health check')} "
                    f"({now - child.unanswered_since:.0f} s without an answer)")
            lines.append(f"{child.name} (pid {child.proc.pid}) {what}; not restarted: kill it and it is")
            child.reported = condition
        elif condition == "running" and child.reported is not None:
            lines.append(f"{child.name} (pid {child.proc.pid}) is working again (it was {child.reported})")
            child.reported = None
        elif condition in ("backoff", "stopped"):
            child.reported = None  # its exit is reported as such; a restart starts over
    return lines
