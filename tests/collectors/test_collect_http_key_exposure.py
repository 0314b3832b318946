"""`collect http --api-key K` puts the key in the process list (`ps`, /proc/<pid>/cmdline), readable by every user
of the host (hostile24 noted it). The command says so once and names the two ways that keep it out."""

from __future__ import annotations

import socket

from click.testing import CliRunner

from collectors.cli import collect


def _held_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


def test_a_key_given_on_the_command_line_is_warned_about_and_one_from_the_environment_is_not(tmp_path):
    held, port = _held_port()  # the command stops at its port check, before any broker is needed
    try:
        env = {"TOKENMETER_DATA_DIR": str(tmp_path), "TOKENMETER_COLLECT_API_KEYS": ""}
        on_command_line = CliRunner().invoke(collect, ["http", "--port", str(port), "--api-key", "k-123456"], env=env)
        from_env = CliRunner().invoke(collect, ["http", "--port", str(port)],
                                      env={**env, "TOKENMETER_COLLECT_API_KEYS": "k-123456"})
    finally:
        held.close()
    assert "process list" in on_command_line.output and "TOKENMETER_COLLECT_API_KEYS" in on_command_line.output
    assert "k-123456" not in on_command_line.output
    assert "process list" not in from_env.output
    assert on_command_line.exit_code != 0 and "in use" in str(on_command_line.exception)  # still stopped at the port


def test_a_keys_file_without_a_key_refuses_to_start_open(tmp_path):
    """walk32: `--api-keys-file` naming an empty file (a secret not mounted yet, a file of comments) started the
    collector OPEN to anyone, with only the "no API keys" warning; given keys that hold none are an error now."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tokenmeter.settings import free_port

    root = Path(__file__).resolve().parents[2]
    keys = tmp_path / "keys.txt"
    keys.write_text("# the ingest keys\n\n")
    env = dict(os.environ, PYTHONPATH=str(root), TOKENMETER_DATA_DIR=str(tmp_path / "data"),
               TOKENMETER_KAFKA_BOOTSTRAP="127.0.0.1:1")
    env.pop("TOKENMETER_COLLECT_API_KEYS", None)
    for args, extra in ((["--api-keys-file", str(keys)], {}), ([], {"TOKENMETER_COLLECT_API_KEYS": "   "})):
        done = subprocess.run([sys.executable, "-m", "app", "collect", "http", "--port", str(free_port()), *args],
                              env={**env, **extra}, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
        assert "holds no key" in done.stderr and "listening" not in done.stderr
