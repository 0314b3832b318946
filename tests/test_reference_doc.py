"""docs/reference.md documents every field of the event contract: a field added to UsageEvent or PricedEvent
without its line in the reference is a contract users cannot see."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenmeter.events import PricedEvent, UsageEvent

REFERENCE = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text()


@pytest.mark.parametrize("field", sorted(set(UsageEvent.model_fields) | set(PricedEvent.model_fields)))
def test_every_contract_field_is_documented(field):
    assert f"`{field}`" in REFERENCE, f"docs/reference.md does not document the event field {field!r}"
