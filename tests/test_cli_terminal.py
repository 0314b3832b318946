"""What a user sees at a terminal (walk21), so as real processes: `python -m app` with a real pty or a real stderr.
In-process tests cannot show these: pytest's log capture gives the root logger handlers (so a library's log line
that reaches a bare terminal through logging's last-resort handler never shows), and CliRunner's stdout is no tty."""

from __future__ import annotations

import os
import pty
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    with socket.socket() as sock:  # a Kafka address nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    return {**os.environ, "PYTHONPATH": str(ROOT), "TOKENMETER_DATA_DIR": str(tmp_path / "data"),
            "TOKENMETER_KAFKA_BOOTSTRAP": f"127.0.0.1:{dead_port}"}


def test_parquet_export_to_a_terminal_is_refused_before_querying(env, tmp_path):
    primary, replica = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "app", "export", "--month", "2026-11", "--format", "parquet"],
                              stdout=replica, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
                              timeout=60)
        os.close(replica)
        replica = -1
        shown = b""
        while True:  # what reached the terminal (EIO once the child's end is closed)
            try:
                chunk = os.read(primary, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(primary)
        if replica >= 0:
            os.close(replica)
    stderr = proc.stderr.decode()
    assert proc.returncode == 1, (proc.returncode, stderr)
    assert "Traceback" not in stderr
    assert "--out" in stderr and "terminal" in stderr, stderr
    assert b"PAR1" not in shown  # no Parquet bytes on the screen
    assert not (tmp_path / "data" / "warehouse").exists()  # refused before opening the warehouse


def test_budget_list_at_an_unreachable_kafka_prints_only_the_clean_error(env):
    proc = subprocess.run([sys.executable, "-m", "app", "budget", "list"], capture_output=True, env=env, cwd=ROOT,
                          timeout=60)
    stderr = proc.stderr.decode().strip()
    assert proc.returncode == 1, (proc.returncode, stderr)
    assert stderr.splitlines() == [stderr.splitlines()[0]] and stderr.startswith("Error: cannot read"), stderr
    assert "no Kafka broker answers" in stderr, stderr
