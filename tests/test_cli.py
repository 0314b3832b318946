"""The `tokenmeter` command root (app/cli.py): a stage's commands are imported only when asked for, so a child
process `up` starts (or a `report`) does not pay for every other stage's imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from app.cli import _STAGE_COMMANDS, main

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
