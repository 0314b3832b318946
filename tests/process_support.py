"""Child processes in tests: start a tokenmeter worker, stop a process (always, even when a test fails), wait for a
readiness condition by polling (never a fixed sleep). Shared by the budget, reservation and worker test files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from app.process import child_preexec


def start_worker(env: dict, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "app", "worker"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=child_preexec)


def start_dashboard(tmp_path: Path, prefix: tuple[str, ...] = (), **env: str) -> tuple[subprocess.Popen, str, Path]:
    """`tokenmeter dash` as production runs it (a child process, waitress, a free port on 127.0.0.1, INFO logs to
    `tmp_path/dash.log`; `prefix`: a command it runs under, e.g. `unshare`), returned once its /healthz answers 200:
    (process, base URL, log path). The caller stops it
    (`stop`), in a `finally`; a start that fails is stopped here."""
    import os

    from tokenmeter.settings import free_port

    port = free_port()
    environ = dict(os.environ, TOKENMETER_DATA_DIR=str(tmp_path / "data"), TOKENMETER_DASH_PORT=str(port),
                   TOKENMETER_HOST="127.0.0.1", TOKENMETER_LOG_LEVEL="INFO", PYTHONUNBUFFERED="1", **env)
    log_path = tmp_path / "dash.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "app", "dash"], env=environ, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=child_preexec)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, log_path.read_text()
        return http_status(f"{base}/healthz") == 200

    try:
        wait_for(healthy, timeout=60, what="the dashboard's /healthz")
    except BaseException:
        stop(proc)
        raise
    return proc, base, log_path


def http_status(url: str, timeout: float = 2.0) -> int:
    """GET `url`'s status (an error status too); 0 while nothing answers. For readiness polls: urllib, because
    `httpx.get` builds a Client per call and each loads the CA bundle (~35-45 CPU-ms a poll here, suite34)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def get_json(url: str) -> tuple[int, dict]:
    """GET `url`: (status, its JSON body), an error status with its body too; (0, {}) while nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except OSError:
        return 0, {}


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Signal `proc` and wait up to `timeout` s for it to exit; killed after that."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(check, timeout: float = 60.0, what: str = "condition", interval: float = 0.1):
    """The first truthy value of `check()`, polled every `interval` seconds; AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {value!r}")


def load_factor() -> float:
    """How much slower than idle this machine runs now: the 1-minute load average per core, at least 1."""
    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def wait_for_scaled_by_load(check, idle_timeout: float, what: str = "condition", interval: float = 0.5):
    """`wait_for` whose bound is in an idle machine's seconds: each second waited counts 1 / `load_factor()`, so at
    load 20 on 2 cores a check gets ten times the wall time (test_up_demo.py's waits failed at load 10-30 and passed
    alone). For a wait whose length is not the premise; the caller's pytest timeout must leave room for it."""
    start = time.monotonic()
    spent = 0.0  # idle-machine seconds
    while True:
        asked = time.monotonic()
        value = check()
        if value:
            return value
        if spent >= idle_timeout:
            raise AssertionError(f"timed out after {time.monotonic() - start:.0f} s ({idle_timeout:g} s on an idle "
                                 f"machine; load now {os.getloadavg()[0]:.1f}) waiting for {what}; last: {value!r}")
        time.sleep(interval)
        spent += (time.monotonic() - asked) / load_factor()


def warehouse_totals(data_dir: Path) -> dict[str, tuple[int, Decimal]] | None:
    """(events, cost) per team as the running loader serves them (warehouse.endpoint.live_team_totals); None while no
    loader serves. Tests poll this and then check `tokenmeter report` once."""
    from warehouse.endpoint import live_team_totals

    return live_team_totals(data_dir)


def zone_at_noon() -> str:
    """A fixed-offset zone whose local time is about noon now (11:00-12:59): a day or month budget there cannot roll
    over while a test runs (in UTC, a run across midnight started a new day mid-test whose budget admitted again:
    CI at 23:57, 2026-12-05). Give it as the budget's `tz` wherever a running worker reads the real clock."""
    from datetime import datetime, timezone

    offset = 12 - datetime.now(timezone.utc).hour  # -11 .. +12 hours
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # POSIX sign: Etc/GMT-3 is UTC+3


def now_inside_one_month(seconds: float = 300.0, settle: float = 5.0):
    """The current UTC time, at least `settle` seconds after the start of its month and at least `seconds` before
    the next: a test that seeds "this month" and then asks a running process (which reads the real clock) must not
    straddle a month start. Near one, this waits it out (at most `seconds`, at most once a month)."""
    from datetime import timedelta

    return _now_inside(lambda now: now.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
                       lambda start: (start + timedelta(days=32)).replace(day=1), seconds, settle)


def now_inside_one_day(seconds: float = 120.0, settle: float = 2.0):
    """The same for a UTC day: for a test that seeds "today" (a provider's incomplete bucket) and then runs a child
    that reads the real clock. Near midnight, this waits it out (at most `seconds`, at most once a day)."""
    from datetime import timedelta

    return _now_inside(lambda now: now.replace(hour=0, minute=0, second=0, microsecond=0),
                       lambda start: start + timedelta(days=1), seconds, settle)


def _now_inside(period_start, next_start_of, seconds: float, settle: float):
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    start = period_start(now)
    next_start = next_start_of(start)
    if (next_start - now).total_seconds() < seconds:
        time.sleep((next_start - now).total_seconds() + settle)
    elif (now - start).total_seconds() < settle:
        time.sleep(settle - (now - start).total_seconds())
    return datetime.now(timezone.utc).replace(microsecond=0)


def processes_of_data_dir(data_dir: str | Path) -> list:
    """The processes (psutil) whose TOKENMETER_DATA_DIR is `data_dir`: a stack's children, found even when they
    outlive a dead `up` (the hygiene of tests that start one)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("TOKENMETER_DATA_DIR") == str(data_dir):
                found.append(proc)
        except psutil.Error:
            continue
    return found
