"""The soak ends within its time budget whatever it waits for, and says what that was (a hung wait used to run
into the test's subprocess timeout with no verdict)."""

from __future__ import annotations

import threading
import time

import app.soak as soak
from app.soak.stack import Stack


def test_a_soak_stuck_waiting_stops_at_its_budget_and_names_the_wait(tmp_path, monkeypatch):
    def never_running(self: Stack, timeout: float = 120) -> float:  # an `up` that never says it runs
        while not getattr(self, "stopping", False):
            time.sleep(0.05)
        raise RuntimeError("stopped while starting")

    monkeypatch.setattr(Stack, "start_up", never_running)
    monkeypatch.setattr(soak, "time_budget", lambda traffic_s: 3.0, raising=False)
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(soak.run_soak(0.05, 1, seed=1, base_dir=tmp_path,
                                                                            echo=lambda line: None)), daemon=True)
    started = time.monotonic()
    runner.start()
    runner.join(30)
    assert not runner.is_alive(), "the soak did not stop at its time budget"
    assert time.monotonic() - started < 30
    budget = next(c for c in result["checks"] if c["name"] == "finished within its time budget")
    assert not budget["ok"] and "starting `up`" in budget["summary"]
    assert not result["ok"]
