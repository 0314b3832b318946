"""`tokenmeter up` never prints a secret it was given (walk32): a ClickHouse URL carries its password
(`http://user:pass@host:8123/db`, docs/reference.md's own example), and `up` echoed it whole in
"starting loader into ..." (hostile32 found it too). Real process; its output read until that line, then stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from process_support import wait_for
from tokenmeter.settings import free_port
from warehouse.backends import redact_url

pytestmark = pytest.mark.slow(seconds=10)
ROOT = Path(__file__).resolve().parents[1]


def test_up_does_not_print_the_clickhouse_password(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_DATA_DIR=str(tmp_path / "data"),
               TOKENMETER_EMBEDDED_BROKER_PORT=str(free_port()), TOKENMETER_API_PORT=str(free_port()),
               TOKENMETER_DASH_PORT=str(free_port()), TOKENMETER_LOG_LEVEL="warning",
               TOKENMETER_CLICKHOUSE_URL=f"http://tmuser:walk32pw@127.0.0.1:{free_port()}/db")
    log_path = tmp_path / "up.log"
    with open(log_path, "w") as log:
        up = subprocess.Popen([sys.executable, "-m", "app", "up"], env=env, stdout=log, stderr=subprocess.STDOUT,
                              cwd=tmp_path, start_new_session=True)
        try:
            wait_for(lambda: "starting loader into" in log_path.read_text() or up.poll() is not None, 120,
                     "`up` to start the loader", interval=0.2)
        finally:
            if up.poll() is None:
                up.send_signal(signal.SIGTERM)
                try:
                    up.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(up.pid, signal.SIGKILL)
                    up.wait(10)
    output = log_path.read_text()
    assert "starting loader into http://tmuser:***@127.0.0.1:" in output, output[-3000:]
    assert "walk32pw" not in output
    logs = tmp_path / "data" / "logs"
    for path in logs.glob("*.log") if logs.exists() else []:
        assert "walk32pw" not in path.read_text(errors="replace"), path


def test_a_password_in_the_query_is_masked_too():
    """ClickHouse's HTTP interface reads `?password=` too (hostile32)."""
    assert redact_url("http://h:8123/db?user=u&password=pw1&x=1") == "http://h:8123/db?user=u&password=***&x=1"
    assert redact_url("https://u:pw1@h/db") == "https://u:***@h/db"
