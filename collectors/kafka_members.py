"""`tokenmeter collect kafka --processes N`: N bridge processes in the source topic's consumer group.

One bridge process spends ~16-17 CPU-us per event (docs/collectors.md), so a source faster than one core is bridged
by more members of the group, as an operator would run them. They are correct together because the bridge finishes
its batch in flight before a rebalance takes its partitions and keeps its pending records per partition in a
directory the members share (collectors/kafka_bridge.py, collectors/pending_records.py); so a member can die,
restart, join or leave at any moment.

This parent only keeps the children running, as `tokenmeter up` keeps its own (the same back-off and the same
no-orphan `child_preexec`, tokenmeter/child_process.py; not `up`'s Supervisor, which is the whole stack's: broker,
status file, liveness). A child that exits 0 (`--exit-when-idle`) is done; one that fails or is killed is restarted with back-off.
Ctrl-C or SIGTERM stops every child (each finishes and commits its batch; none sends a LeaveGroup, see
`commitloop._stop_without_leaving`) and then the parent. The children write to
the parent's terminal, each log line naming its member ("member 2/3"), counters included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Callable

from tokenmeter.child_process import RestartingChild as Member, child_preexec

STOP_GRACE_S = 30.0  # a member's clean stop finishes its batch, commits and leaves the group


def member_args(child_args: list[str], k: int, n: int) -> list[str]:
    return [sys.executable, "-m", "app", "collect", "kafka", *child_args, "--member", f"{k}/{n}"]


class Members:
    def __init__(self, processes: int, child_args: list[str], echo: Callable[[str], None]):
        self.echo = echo
        self.children = [Member(f"member {k}/{processes}", member_args(child_args, k, processes))
                         for k in range(1, processes + 1)]
        self.finished: set[str] = set()
        self.stopping = False

    def launch(self, child: Member) -> None:
        child.proc = subprocess.Popen(child.args, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                      stdin=subprocess.DEVNULL, preexec_fn=child_preexec)
        child.started_at, child.restart_at = time.monotonic(), None
        self.echo(f"{child.name} running (pid {child.proc.pid})")

    def run(self) -> int:
        """Until every member is done or a signal; 0 when every member ended cleanly."""
        for child in self.children:
            self.launch(child)
        try:
            while not self.stopping and len(self.finished) < len(self.children):
                self.tend(time.monotonic())
                time.sleep(0.2)
        finally:
            self.stop()
        return 0 if all(c.proc.returncode == 0 for c in self.children) else 1

    def tend(self, now: float) -> None:
        for child in self.children:
            if self.stopping or child.name in self.finished:
                continue
            if child.restart_at is None and not child.alive():
                code = child.proc.returncode
                child.last_exit_code, child.last_exit_at = code, time.time()
                if code == 0:  # idle (--exit-when-idle): its partitions went to the others
                    self.finished.add(child.name)
                    self.echo(f"{child.name} done")
                    continue
                delay = child.schedule_restart(now)
                self.echo(f"{child.name} exited with code {code} after {now - child.started_at:.1f} s; restarting "
                          f"in {delay:.1f} s (restart #{child.restarts + 1}; its batch in doubt is resumed by "
                          "whichever member is given its partitions)")
            elif child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self.launch(child)

    def stop(self) -> None:
        """SIGTERM every member at once (each finishes its batch and commits; members do not send LeaveGroup, so
        the group drops them at its session timeout: two leaves a few ms apart stuck the embedded broker's group),
        SIGKILL after the grace."""
        self.stopping = True
        running = [c for c in self.children if c.alive()]
        for child in running:
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in running:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()


def run_members(processes: int, child_args: list[str], echo: Callable[[str], None]) -> int:
    members = Members(processes, child_args, echo)

    def on_signal(signum, frame):  # noqa: ANN001
        members.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return members.run()
