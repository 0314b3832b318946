"""The stack under test: a real `tokenmeter up` (broker, worker, loader, dashboard, dispatcher, anomalies) plus
the HTTP and file-tail collectors, which the soak runs and restarts itself (as their own supervisor would)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from app.process import child_preexec

UP_CHILDREN = {  # victim name -> the tail of its command line under `up`
    "worker": ["worker"], "loader": ["load"], "alerts": ["alerts", "dispatch"], "anomalies": ["anomalies", "run"],
    "dashboard": ["dash"], "broker": ["broker"],
}
COLLECTORS = {"collector-http": ["collect", "http"], "collector-file": ["collect", "file"]}


@dataclass
class Stack:
    env: dict[str, str]
    data_dir: Path
    log_dir: Path
    collector_args: dict[str, list[str]]
    up: subprocess.Popen | None = None
    up_runs: int = 0
    collectors: dict[str, subprocess.Popen] = field(default_factory=dict)
    orphans_after_up_kill: list[str] = field(default_factory=list)
    killed_at: float = 0.0
    run_statuses: list[dict] = field(default_factory=list)  # each `up` run's last status (a stopped one: after it)
    stopping: bool = False  # set by stop(): a kill still running in a thread (time budget) starts nothing new

    # -- processes --------------------------------------------------------------------------------------
    def _popen(self, args: list[str], log_name: str) -> subprocess.Popen:
        if self.stopping:
            raise RuntimeError("the soak is stopping the stack: not starting " + " ".join(args))
        with open(self.log_dir / log_name, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "app", *args], env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=child_preexec)

    @property
    def up_log(self) -> Path:
        return self.log_dir / "up.log"

    def start_up(self, timeout: float = 120) -> float:
        """Start `tokenmeter up` and wait for it to say it is running; returns seconds taken."""
        t0 = time.monotonic()
        self.up_runs += 1
        start = self.up_log.stat().st_size if self.up_log.exists() else 0
        self.up = self._popen(["up"], "up.log")
        while time.monotonic() - t0 < timeout:
            if self.up.poll() is not None:
                raise RuntimeError(f"`tokenmeter up` exited with {self.up.returncode}:\n{self.up_text(start)[-3000:]}")
            if "Press Ctrl-C" in self.up_text(start):
                return time.monotonic() - t0
            time.sleep(0.3)
        raise RuntimeError(f"`tokenmeter up` not running after {timeout:.0f} s:\n{self.up_text(start)[-3000:]}")

    def up_text(self, start: int = 0) -> str:
        try:
            with open(self.up_log, "rb") as f:
                f.seek(start)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def start_collector(self, name: str) -> None:
        self.collectors[name] = self._popen(self.collector_args[name], f"{name}.log")

    def child_of_up(self, name: str) -> psutil.Process | None:
        if self.up is None or self.up.poll() is not None:
            return None
        tail = UP_CHILDREN[name]
        try:
            for proc in psutil.Process(self.up.pid).children():
                try:
                    if proc.status() != psutil.STATUS_ZOMBIE and proc.cmdline()[-len(tail):] == tail:
                        return proc
                except psutil.Error:
                    continue
        except psutil.Error:
            return None
        return None

    def stack_processes(self) -> list[psutil.Process]:
        """Every live process started for this soak's data dir (found by its environment), except us."""
        found = []
        for proc in psutil.process_iter(["pid"]):
            if proc.pid == os.getpid():
                continue
            try:
                if (proc.environ().get("TOKENMETER_DATA_DIR") == str(self.data_dir)
                        and proc.status() != psutil.STATUS_ZOMBIE):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    # -- chaos ------------------------------------------------------------------------------------------
    def kill(self, victim: str, timeout: float = 120) -> tuple[float, float]:
        """SIGKILL one component (once it is running) and wait until it runs again; returns (unix time of the
        kill, seconds until it was back)."""
        if victim in UP_CHILDREN:  # e.g. just restarted by `up` after a broker restart: wait for it first
            deadline = time.monotonic() + timeout
            while self.child_of_up(victim) is None and time.monotonic() < deadline:
                time.sleep(0.2)
        t0 = time.monotonic()
        self.killed_at = time.time()
        if victim == "up":
            self.run_statuses.append(self.status())
            family = psutil.Process(self.up.pid).children(recursive=True)
            self.up.kill()
            self.up.wait()
            self.killed_at = time.time()  # its broker dies with it (PDEATHSIG) from here on
            gone, alive = psutil.wait_procs(family, timeout=3)
            self.orphans_after_up_kill += [" ".join(p.cmdline()[-3:]) for p in alive if _alive(p)]
            for proc in alive:
                proc.kill()
            self.start_up(timeout)
            return self.killed_at, time.monotonic() - t0
        if victim in COLLECTORS:
            proc = self.collectors[victim]
            proc.kill()
            proc.wait()
            self.start_collector(victim)
            return self.killed_at, time.monotonic() - t0
        target = self.child_of_up(victim)
        if target is None:
            raise RuntimeError(f"no running {victim} under `up` to kill")
        target.kill()
        try:
            target.wait(10)  # gone (reaped by `up`), so nothing is acknowledged by it after killed_at
        except psutil.TimeoutExpired:
            pass
        self.killed_at = time.time()
        while time.monotonic() - t0 < timeout:
            again = self.child_of_up(victim)
            if again is not None and again.pid != target.pid:
                return self.killed_at, time.monotonic() - t0
            if self.up.poll() is not None:
                raise RuntimeError(f"`up` exited after {victim} was killed:\n{self.up_text()[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"{victim} not restarted by `up` within {timeout:.0f} s")

    def restart_up(self) -> float:
        """A clean restart (SIGTERM, wait, start); returns seconds until `up` runs again."""
        t0 = time.monotonic()
        self.up.send_signal(signal.SIGTERM)
        try:
            self.up.wait(60)
        except subprocess.TimeoutExpired:
            self.up.kill()
            self.up.wait()
        self.run_statuses.append(self.stopped_status())
        self.start_up()
        return time.monotonic() - t0

    def stopped_status(self) -> dict:
        """The status a stopped `up` left (read after it exited: a clean stop adds what it could not drain from the
        memory-only broker, `stop_loss`), with when the soak saw it gone."""
        return dict(self.status(), stopped_at=time.time())

    def status(self) -> dict:
        try:
            return json.loads((self.data_dir / "supervisor.json").read_text())
        except (OSError, ValueError):
            return {}

    # -- stop -------------------------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """SIGTERM collectors and `up`; returns what is still running 5 s after `up` exited (should be nothing)."""
        self.stopping = True
        for proc in self.collectors.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        if self.up is not None and self.up.poll() is None:
            self.up.send_signal(signal.SIGTERM)
            try:
                self.up.wait(60)
            except subprocess.TimeoutExpired:
                self.up.kill()
                self.up.wait()
            self.run_statuses.append(self.stopped_status())
        for proc in self.collectors.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        deadline = time.monotonic() + 5
        left = self.stack_processes()
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.stack_processes()
        names = [" ".join(p.cmdline()[-3:]) for p in left if _alive(p)]
        for proc in left:
            try:
                proc.kill()
            except psutil.Error:
                pass
        return names


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
