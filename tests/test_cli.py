"""The `tokenmeter` command root (app/cli.py): a stage's commands are imported only when asked for, so a child
process `up` starts (or a `report`) does not pay for every other stage's imports, and `tokenmeter --help` lists
them all without importing any."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from app.cli import _STAGE_COMMANDS, _STAGE_MODULES, main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("dash", "flask", "chdb", "polars", "pyarrow", "faust")


def test_every_stage_command_is_listed_and_answers_to_its_own_name():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for name in _STAGE_COMMANDS:
        command = main.get_command(None, name)
        assert command is not None and command.name == name, (name, command)
        assert f"\n  {name} " in result.output
    assert "rebuild" in main.get_command(None, "budget").commands  # added by the top-level package


def test_a_command_imports_no_other_stage():
    code = ("import sys\nfrom app.cli import main\n"
            "try:\n    main(['report', '--help'])\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]


WIDTHS = (60, 80, 200)  # click shortens each command's line to the terminal's width


def _fresh_help() -> tuple[dict[str, str], list[str]]:
    """`tokenmeter --help` at each of WIDTHS in a new process, and which stage modules and heavy libraries it
    imported."""
    stages = sorted({module for module, _ in _STAGE_MODULES})
    code = ("import json, sys\nfrom click.testing import CliRunner\nfrom app.cli import main\n"
            f"out = {{w: CliRunner().invoke(main, ['--help'], terminal_width=w).output for w in {WIDTHS!r}}}\n"
            f"print(json.dumps([out, sorted(m for m in {stages + list(HEAVY)!r} if m in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    listing, imported = json.loads(out.stdout.strip().splitlines()[-1])
    return {int(w): text for w, text in listing.items()}, imported


def test_help_lists_every_command_without_importing_a_stage():
    listing, imported = _fresh_help()
    assert imported == [], imported
    for name in _STAGE_COMMANDS:
        assert f"\n  {name} " in listing[80]


def test_the_listing_of_commands_not_imported_is_the_one_of_the_imported_commands():
    listing, _ = _fresh_help()
    for name in _STAGE_COMMANDS:
        main.get_command(None, name)  # imported: the listing below uses the commands' own help
    assert {w: CliRunner().invoke(main, ["--help"], terminal_width=w).output for w in WIDTHS} == listing
