"""tests/process_support.py's waits: a bound in wall seconds, and one counted in an idle machine's seconds.

`up --demo`'s start (test_up_demo.py) failed its fixed 90 s at load 10-24 in a clean-clone CI run beside other
helpers (2026-12-07 19:29: 3 errors at setup) and passed alone; its waits now count idle seconds. The load is the
1-minute load average, read here from the real `os.getloadavg` except where a test sets it."""

from __future__ import annotations

import os
import time

import pytest

import process_support
from process_support import wait_for, wait_for_scaled_by_load


def test_wait_for_returns_the_first_truthy_value_and_names_what_timed_out():
    calls = []
    assert wait_for(lambda: calls.append(1) or (len(calls) >= 3 and "ready"), 5, "three calls") == "ready"
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0 s waiting for never; last: False"):
        wait_for(lambda: False, 0.3, "never")
    assert 0.3 <= time.monotonic() - started < 1.5


def test_a_scaled_wait_gives_a_loaded_machine_more_wall_time(monkeypatch):
    cores = os.cpu_count() or 1
    monkeypatch.setattr(process_support.os, "getloadavg", lambda: (10.0 * cores, 0.0, 0.0))  # ten times idle
    ready_at = time.monotonic() + 1.0
    assert wait_for_scaled_by_load(lambda: time.monotonic() >= ready_at, 0.5, "a second", interval=0.05)
    monkeypatch.setattr(process_support.os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # idle: 0.5 s is 0.5 s
    ready_at = time.monotonic() + 1.5
    with pytest.raises(AssertionError, match=r"\(0.5 s on an idle machine; load now 0.0\) waiting for 1.5 s"):
        wait_for_scaled_by_load(lambda: time.monotonic() >= ready_at, 0.5, "1.5 s", interval=0.05)
