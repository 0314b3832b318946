"""`tokenmeter reprice` while `tokenmeter up` runs: the loader owns the warehouse and re-prices the named events
with ITS price book (security.md: costs are never taken from a caller). walk31: a finance lead set
TOKENMETER_PRICE_OVERRIDES in a second shell to price a self-hosted model, ran `reprice`, and read "events changed 1
(0 event(s) rewritten)", "unpriced events 73 -> 72", a new total, exit 0: nothing had changed (the loader, started
without the overrides, still had no price for it)."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from streams import price_event
from streams.pricing import load_price_book
from tokenmeter.events import Attribution, Usage, UsageEvent
from tokenmeter.settings import Settings
from warehouse import open_warehouse
from warehouse_owner import warehouse_owner
from warehouse_template import empty_warehouse_in

pytestmark = pytest.mark.slow(seconds=15)  # rough seconds: longest files first (tests/suite_order.py)

OVERRIDES = """
custom_models:
  acme-hosted:
    source: internal GPU cost model
    models:
      walk31-internal-llm:
        versions:
          - {effective_from: 2025-01-01, input: "1.00", output: "2.00"}
"""


def test_a_reprice_the_owner_does_not_apply_fails_and_says_why(tmp_path, tmp_path_factory):
    day = datetime(2026, 11, 22, 10, tzinfo=timezone.utc)
    event = UsageEvent(event_id="walk31-unpriced", ts=day, source="sdk", provider="acme-hosted",
                       model="walk31-internal-llm", attribution=Attribution(team="growth"),
                       usage=Usage(input_tokens=5000, output_tokens=500))
    stored = price_event(event, load_price_book()).to_json()
    assert stored["pricing_status"] == "unpriced"
    data_dir = empty_warehouse_in(tmp_path / "data", tmp_path_factory)
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(OVERRIDES)
    env = dict(os.environ)
    env.pop("TOKENMETER_PRICE_OVERRIDES", None)  # the owner prices with its own settings: no overrides
    with warehouse_owner(data_dir, [stored], env) as (_, stored_count):
        assert stored_count == 1
        from app.reprice_cli import reprice

        shell = {"TOKENMETER_DATA_DIR": str(data_dir), "TOKENMETER_PRICE_OVERRIDES": str(overrides)}
        result = CliRunner().invoke(reprice, ["--since", "2026-11-01", "--until", "2026-12-01"], env=shell)
        assert result.exit_code == 1, (result.stdout, result.stderr)
        assert "events changed    1 (0 of them rewritten by the warehouse owner" in result.stdout
        assert "re-priced 0 of the 1 event(s)" in result.stderr
        assert f"TOKENMETER_PRICE_OVERRIDES={overrides}" in result.stderr  # what this shell prices with
        assert "tokenmeter up" in result.stderr  # what to do
        assert "Traceback" not in result.stderr
        reader = open_warehouse(Settings(data_dir=data_dir))
        try:
            row = reader.query("SELECT pricing_status FROM priced_events").to_dicts()
        finally:
            reader.close()
        assert row == [{"pricing_status": "unpriced"}]  # the owner's book has no price for it: nothing changed

        as_json = CliRunner().invoke(reprice, ["--since", "2026-11-01", "--format", "json"], env=shell)
        assert as_json.exit_code == 1
        shown = json.loads(as_json.stdout)
        assert (shown["changed"], shown["applied"]) == (1, 0)
