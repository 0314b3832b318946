"""Is a child of `tokenmeter up` that is alive also working? A SIGKILLed child is seen at once (its exit) and
restarted; a hung one is not: walk23 SIGSTOPped the worker for 60 s and `status` said "running" while its API timed
out and the usage backlog grew. This probe, a thread beside the supervisor's loop, notices two kinds:

- suspended: the process is stopped (state T in /proc: SIGSTOP, SIGTSTP, a debugger); exact and cheap, any child;
- hung: a child with a health URL (worker API, dashboard, demo inbox) that answered once since its start and has
  not answered for `hung_after_s` (a blocked event loop answers nothing; one slow answer under load is not enough).

The supervisor reports the change once and `status` shows it. A child suspended or hung for a further
`TOKENMETER_CHILD_RESTART_UNRESPONSIVE_SECONDS` (60 s; 0: never) is killed and restarted like a crashed one, counted
and logged (`unresponsive_restarts`; oncall24): a suspended or deadlocked worker does no work, and every service
is at-least-once with idempotent outputs, so a kill loses nothing. Not a traced one (state t: a debugger's), and
not before its grace: a loaded machine can stall a healthy worker's health URL for seconds, not for 90."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

PROBE_EVERY_S = 5.0
HUNG_AFTER_S = 30.0
# A heartbeat file untouched this long says "not answering" (the children touch it every second,
# tokenmeter/heartbeat.py); `hung` then needs HUNG_AFTER_S more of it, as for a health URL.
HEARTBEAT_STALE_S = 10.0


class FileHeartbeat:
    """The liveness of a child without a health URL: its event loop touched `path` within `stale_after_s`
    (tokenmeter/heartbeat.py). A child that never touches it (not run through `run_service`) never answers, so it
    is never called hung: as for a health URL, only a child that answered once since its start can stop answering."""

    def __init__(self, path: Path, stale_after_s: float = HEARTBEAT_STALE_S):
        self.path = path
        self.stale_after_s = stale_after_s
        self.url = path.resolve().as_uri()  # `status` shows it where a health URL goes

    def reset(self) -> None:
        """Before a (re)start: a beat of the previous process must not count for the new one. A file that cannot be
        removed (a read-only data directory) must not stop the restart: its age still says when it was last touched."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass

    def __call__(self) -> bool:
        try:
            touched = os.stat(self.path).st_mtime
        except OSError:
            return False
        return time.time() - touched <= self.stale_after_s


def process_state(pid: int) -> bytes:
    """The process's state letter from /proc/<pid>/stat (b"" when unknown)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()  # the command name may hold spaces and ")"
    except (OSError, IndexError):
        return b""
    return fields[0] if fields else b""


def process_suspended(pid: int) -> bool:
    """True when the process is stopped (state T, or t when traced), from /proc/<pid>/stat."""
    return process_state(pid) in (b"T", b"t")


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
        state = process_state(proc.pid)
        now = time.monotonic()
        child.suspended, child.traced = state in (b"T", b"t"), state == b"t"
        if not child.suspended:
            child.suspended_since = None
        elif child.suspended_since is None:
            child.suspended_since = now
        if child.suspended or child.liveness is None:
            return  # a stopped process answers nothing: suspended says more than hung
        if child.liveness():
            child.answered_at, child.unanswered_since = now, None
        elif child.answered_at is not None and child.unanswered_since is None:  # not before its first answer:
            child.unanswered_since = now  # a restarted worker takes seconds (a minute under load) to answer

    def stop(self) -> None:
        self._halt.set()


def liveness_changes(children: Iterable, now: float, hung_after_s: float = HUNG_AFTER_S,
                     restart_after_s: float = 0.0) -> list[str]:
    """What to say about the children: once when a live one stops working (suspended, hung), once when it works
    again (each child's `reported` remembers what was said)."""
    lines = []
    for child in children:
        condition = child.condition(now, hung_after_s)
        if condition in ("suspended", "hung") and child.reported != condition:
            if condition == "suspended":
                what = "is suspended (stopped: SIGSTOP, SIGTSTP or a debugger); it does no work until SIGCONT"
            elif isinstance(child.liveness, FileHeartbeat):
                what = (f"has not touched its heartbeat file {child.liveness.path} for "
                        f"{now - child.unanswered_since + child.liveness.stale_after_s:.0f} s (its event loop "
                        f"stopped turning: a deadlock or a blocking call)")
            else:
                what = (f"is not answering {getattr(child.liveness, 'url', 'its health check')} "
                        f"({now - child.unanswered_since:.0f} s without an answer)")
            then = ("not restarted (a debugger's stop)" if condition == "suspended" and child.traced else
                    f"restarted if it still is in {restart_after_s:.0f} s" if restart_after_s else
                    "not restarted (TOKENMETER_CHILD_RESTART_UNRESPONSIVE_SECONDS=0): kill it and it is")
            lines.append(f"{child.name} (pid {child.proc.pid}) {what}; {then}")
            child.reported = condition
        elif condition == "running" and child.reported is not None:
            lines.append(f"{child.name} (pid {child.proc.pid}) is working again (it was {child.reported})")
            child.reported = None
        elif condition in ("backoff", "stopped"):
            child.reported = None  # its exit is reported as such; a restart starts over
    return lines


def unresponsive_for(child, now: float, hung_after_s: float = HUNG_AFTER_S) -> float | None:
    """Seconds a live child has been suspended or hung (not traced: a debugger's stop is left alone), else None."""
    condition = child.condition(now, hung_after_s)
    if condition == "suspended" and not child.traced and child.suspended_since is not None:
        return now - child.suspended_since
    if condition == "hung":
        return now - child.unanswered_since - hung_after_s
    return None
