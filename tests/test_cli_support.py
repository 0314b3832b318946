"""The command line helpers every CLI shares (tokenmeter/cli_support.py)."""

from __future__ import annotations

import socket
from datetime import datetime, timezone

import click
import pytest
from click.testing import CliRunner

from app.cli import main
from tokenmeter.cli_support import time_option


def test_time_option_reads_rfc3339_dates_and_offsets_and_assumes_utc():
    assert time_option(None, "--since") is None and time_option("", "--since") is None
    assert time_option("2026-11-01", "--since") == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert time_option(" 2026-11-01T08:00Z ", "--at") == datetime(2026, 11, 1, 8, tzinfo=timezone.utc)
    assert time_option("2026-11-01T09:00+01:00", "--at") == datetime(2026, 11, 1, 8, tzinfo=timezone.utc)
    with pytest.raises(click.BadParameter, match="not an ISO 8601"):
        time_option("yesterday", "--until")


@pytest.mark.parametrize("args, option", [(["report", "--since", "yesterday"], "--since"),
                                          (["reprice", "--since", "2026-13-01"], "--since"),
                                          (["prices", "show", "gpt-4o", "--at", "noon"], "--at")])
def test_every_cli_names_the_option_whose_time_it_cannot_read(args, option, tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENMETER_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for {option}:" in result.output and "is not an ISO 8601" in result.output


@pytest.mark.parametrize("command, variable", [("dash", "TOKENMETER_DASH_PORT"),
                                               ("worker", "TOKENMETER_API_PORT"),
                                               ("broker", "TOKENMETER_EMBEDDED_BROKER_PORT")])
def test_a_port_taken_is_one_clear_error_for_every_command(command, variable, tmp_path, monkeypatch):
    """The root command turns any SettingsError into `Error: ...` and exit 1 (no per-command except blocks)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("TOKENMETER_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("TOKENMETER_HOST", "127.0.0.1")
        port = taken.getsockname()[1]
        monkeypatch.setenv(variable, str(port))
        result = CliRunner().invoke(main, [command])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and "Traceback" not in result.output
    assert str(port) in result.output


def test_every_command_collects_young_objects_every_10000_allocations():
    """A `tokenmeter` process (each child `up` starts) runs its young collections, and so its full ones, less often
    than CPython's every 700 allocations (tokenmeter/cli_support.collect_young_objects_less_often)."""
    import subprocess
    import sys

    probe = ("import gc, click\nfrom app.cli import main\n"
             "@main.command('gc-probe')\ndef gc_probe():\n    click.echo(gc.get_threshold()[0])\n"
             "main(['gc-probe'])\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == 10_000
