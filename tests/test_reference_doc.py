"""docs/reference.md documents every field of the event contract: a field added to UsageEvent or PricedEvent
without its line in the reference is a contract users cannot see."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tokenmeter.events import PricedEvent, UsageEvent

REFERENCE = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text()


@pytest.mark.parametrize("field", sorted(set(UsageEvent.model_fields) | set(PricedEvent.model_fields)))
def test_every_contract_field_is_documented(field):
    assert f"`{field}`" in REFERENCE, f"docs/reference.md does not document the event field {field!r}"


def _commands_table() -> str:
    return REFERENCE.split("## Commands", 1)[1].split("\n## ", 1)[0]


def test_every_command_and_subcommand_is_in_the_commands_table():
    """walk20: `status`, the finance commands and `soak` were missing, `prices coverage` too, so a user reading the
    reference for "which commands are there" missed the ones the README's month close uses."""
    import click

    from app.cli import main

    table = _commands_table()
    ctx = click.Context(main)
    missing = []
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        row = next((line for line in table.splitlines() if line.startswith(f"| `tokenmeter {name}")), None)
        if row is None:
            missing.append(name)
            continue
        for sub in getattr(command, "commands", {}):
            if not re.search(rf"[ |]{re.escape(sub)}\b", re.split(r"(?<!\\)\|", row)[1]):  # cell 1: `a\|b`
                missing.append(f"{name} {sub}")
    assert missing == []


def test_the_commands_table_points_nowhere_it_cannot():
    # "(below)" once named sections this page does not have
    assert "(below)" not in _commands_table()


def test_every_setting_is_in_the_settings_table():
    """walk20: the demo inbox port (which the demo needs changed next to another stack), the dedup preference the
    README's month close names, and the finance checks' limits were settings without a line."""
    from tokenmeter.settings import Settings, env_name

    table = REFERENCE.split("## Settings", 1)[1]
    assert [env_name(f) for f in Settings.model_fields if f"`{env_name(f)}`" not in table] == []


def test_each_setting_has_one_row_and_a_default_not_a_pointer():
    """walk21: `TOKENMETER_WORKER_BATCH_SECONDS` and the alert backoffs had two rows each (one with another
    default's spelling), and `TOKENMETER_ANOMALY_NOTIFY`'s default read "see docs/anomalies.md", which gives none."""
    from tokenmeter.settings import Settings, env_name

    every = [env_name(f) for f in Settings.model_fields]
    table = REFERENCE.split("## Settings", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| `TOKENMETER_")]
    names = []
    for line in rows:  # `TOKENMETER_WORKER_BATCH_SIZE` / `_BATCH_SECONDS`: the short one shares the first word
        first, *short = re.findall(r"`(_?[A-Z0-9_]+)`", line.split("|")[1])
        head = "_".join(first.split("_")[:2]) + "_"
        names += [first] + [next((n for n in every if n.startswith(head) and n.endswith(s)), s) for s in short]
    assert sorted({n for n in names if names.count(n) > 1}) == []
    assert [line for line in rows if "| see " in line] == []
