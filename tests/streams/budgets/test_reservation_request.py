"""What `POST /v1/reservations` accepts as attribution (reservations.py, `parse`), without processes.

walk21: a gateway that sent `"attribution": {"teem": "search"}` (or `"team": 7`) was admitted with 201 and no hold:
the key was dropped without a word, so no budget's scope matched and a hard budget held nothing, as a typo'd event
field would have priced as zero had the event contract not refused unknown fields."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from streams.budgets.reservations import ReservationError, ReservationService
from tokenmeter.settings import Settings


def _parse(tmp_path, attribution):
    service = SimpleNamespace(settings=Settings(data_dir=tmp_path))
    body = {"provider": "openai", "model": "gpt-4o", "attribution": attribution, "prompt_tokens": 10,
            "max_output_tokens": 10, "request_id": "req-1"}
    return ReservationService(service, book=None).parse(body, {}, {})


def test_the_attribution_fields_of_a_usage_event_are_read(tmp_path):
    call = _parse(tmp_path, {"org": "acme", "team": "search", "project": "p", "user": "ana", "api_key": "k",
                             "feature": "f", "route": "r", "tags": {"env": "prod"}})
    assert call["attributes"] == {"org": "acme", "team": "search", "project": "p", "user": "ana", "api_key": "k",
                                  "feature": "f", "route": "r", "tag:env": "prod", "model": "gpt-4o",
                                  "provider": "openai"}


@pytest.mark.parametrize(("attribution", "named"), [
    ({"teem": "search"}, "teem"),  # a typo
    ({"model": "gpt-4o-mini"}, "model"),  # the call's model is the top-level field, not an attribution
    ({"team": 7}, "team"),
    ({"tags": "env=prod"}, "tags"),
])
def test_an_attribution_it_cannot_match_budgets_with_is_a_400_naming_the_field(tmp_path, attribution, named):
    with pytest.raises(ReservationError) as refused:
        _parse(tmp_path, attribution)
    assert refused.value.status == 400 and f"attribution.{named}" in refused.value.message, refused.value.message
