"""A stop asked for while `tokenmeter up` is starting ends the start there (roles37 noticed it): before, a SIGTERM or
Ctrl-C during the start was only read once every remaining role had been started and awaited (the worker up to 90 s,
the dashboard up to 60 s), so `up` went on starting processes the user had just asked it to stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from process_support import processes_of_data_dir, wait_for
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=10)
ROOT = Path(__file__).resolve().parents[1]


def test_a_sigterm_while_the_worker_starts_stops_up_without_starting_the_rest(tmp_path):
    data_dir = tmp_path / "data"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_DATA_DIR=str(data_dir),
               TOKENMETER_EMBEDDED_BROKER_PORT=str(free_port()), TOKENMETER_API_PORT=str(free_port()),
               TOKENMETER_DASH_PORT=str(free_port()), TOKENMETER_LOG_LEVEL="warning")
    log_path = tmp_path / "up.log"
    with open(log_path, "w") as log:
        up = subprocess.Popen([sys.executable, "-m", "app", "up", "--without", "alerts,anomalies,finance"], env=env,
                              stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            def worker_starting() -> bool:
                assert up.poll() is None, log_path.read_text()
                return "starting worker" in log_path.read_text()

            wait_for(worker_starting, 120, "`up` starting its worker", interval=0.05)
            up.send_signal(signal.SIGTERM)
            code = up.wait(60)
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
            for proc in processes_of_data_dir(data_dir):  # (hygiene, were the stop to fail)
                proc.kill()
    out = log_path.read_text()
    assert code == 0, out
    assert "stopped during the start" in out, out
    assert "worker ready" not in out and "starting dashboard" not in out, out  # nothing more started or awaited
    assert "error:" not in out, out  # the user's stop is no failure
    assert not processes_of_data_dir(data_dir)
