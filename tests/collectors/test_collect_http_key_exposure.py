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
