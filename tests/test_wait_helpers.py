"""tests/process_support.py's waits: how often they poll (a poll of the warehouse costs the loader a chDB query)."""

from __future__ import annotations

import time

import pytest

from process_support import poll_pause, wait_for


def test_a_long_wait_polls_less_often_and_a_costly_check_less_still():
    assert poll_pause(0.1, 0.0, 0.001) == 0.1  # a fresh wait of a cheap check: its interval
    assert poll_pause(0.1, 5.0, 0.001) == pytest.approx(0.5)  # a tenth of the time waited so far
    assert poll_pause(0.1, 60.0, 0.001) == 1.0  # at most 1 s late
    assert poll_pause(0.1, 0.5, 0.04) == pytest.approx(0.2)  # a 40 ms warehouse poll: a sixth of the wait at most
    assert poll_pause(2.0, 60.0, 0.5) == 2.0  # a caller's longer interval stays


def test_wait_for_returns_the_first_truthy_value_and_names_what_timed_out():
    calls = []
    assert wait_for(lambda: calls.append(1) or (len(calls) >= 3 and "ready"), 5, "three calls") == "ready"
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0 s waiting for never; last: False"):
        wait_for(lambda: False, 0.3, "never")
    assert 0.3 <= time.monotonic() - started < 1.5
