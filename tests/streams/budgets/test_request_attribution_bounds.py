"""trust34: a reservation's body attribution, provider, model and service tier, and a decision's query parameters,
are held to the event contract's bounds (tokenmeter/events.py) as its headers are: a 400 naming the field, its size
and the limit (the HTTP answers: tests/streams/test_budgets_worker.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from multidict import CIMultiDict, MultiDict

from streams.budgets.decisions import AttributeOutOfBounds, attribute_values
from streams.budgets.reservations import ReservationError, ReservationService
from tokenmeter.events import MAX_ATTRIBUTION_CHARS, MAX_MODEL_CHARS, MAX_TAGS
from tokenmeter.settings import Settings


def _reserve(tmp_path, headers: CIMultiDict | None = None, **body):
    service = SimpleNamespace(settings=Settings(data_dir=tmp_path))
    call = {"provider": "openai", "model": "gpt-4o", "attribution": {"team": "a"}, "prompt_tokens": 10,
            "max_output_tokens": 10, "request_id": "req-1", **body}
    return ReservationService(service, book=None).parse(call, MultiDict(), headers or CIMultiDict())


@pytest.mark.parametrize("body, said", [
    ({"attribution": {"team": "t" * 5000}}, f"attribution.team: 5000 characters, at most {MAX_ATTRIBUTION_CHARS}"),
    ({"attribution": {"tags": {f"k{i}": "v" for i in range(10_000)}}}, f"10000 tags, at most {MAX_TAGS}"),
    ({"attribution": {"tags": {"env": "v" * 2000}}}, f"attribution.tags.env: 2000 characters, at most "
                                                     f"{MAX_ATTRIBUTION_CHARS}"),
    ({"attribution": {"tags": {"k" * 200: "v"}}}, "a tag key of 200 characters, at most 128"),
    ({"model": "m" * 3000}, f"model: 3000 characters, at most {MAX_MODEL_CHARS}"),
    ({"service_tier": "s" * 300}, "service_tier: 300 characters, at most 256"),
])
def test_a_reservation_past_the_bounds_is_a_400_naming_it(tmp_path, body, said):
    with pytest.raises(ReservationError) as refused:
        _reserve(tmp_path, **body)
    assert refused.value.status == 400 and said in refused.value.message, refused.value.message
    assert "t" * 100 not in refused.value.message


def test_within_the_bounds_a_reservation_reads_as_before(tmp_path):
    call = _reserve(tmp_path, attribution={"team": "t" * MAX_ATTRIBUTION_CHARS,
                                           "tags": {f"k{i}": "v" for i in range(MAX_TAGS)}},
                    model="arn:aws:bedrock:eu-west-1:474668406012:inference-profile/eu.amazon.nova-lite-v1:0")
    assert call["attributes"]["team"] == "t" * MAX_ATTRIBUTION_CHARS


def test_a_decisions_query_parameters_are_bounded_like_its_headers():
    with pytest.raises(AttributeOutOfBounds, match=f"^team: 2000 characters, at most {MAX_ATTRIBUTION_CHARS}$"):
        attribute_values(MultiDict([("team", "t" * 2000)]), CIMultiDict(), "x-tokenmeter-")
    with pytest.raises(AttributeOutOfBounds, match=r"^x-tokenmeter-tag-k+: a tag key of 300 characters, at most 128$"):
        attribute_values(MultiDict(), CIMultiDict([("x-tokenmeter-tag-" + "k" * 300, "v")]), "x-tokenmeter-")
    # a tag given as a header and as a parameter is one tag
    headers = CIMultiDict([(f"x-tokenmeter-tag-k{i}", "v") for i in range(MAX_TAGS)])
    query = MultiDict([(f"tag:k{i}", "v") for i in range(MAX_TAGS)])
    assert len(attribute_values(query, headers, "x-tokenmeter-")) == MAX_TAGS


def test_header_and_body_tags_are_bounded_together_as_the_settled_event_is(tmp_path):
    """trust35: 100 tag headers and 100 body tags passed (128 each), though the event the call settles with may
    carry 128 tags; a tag named by both is one."""
    def headers(keys):
        return CIMultiDict([(f"x-tokenmeter-tag-{k}", "v") for k in keys])

    with pytest.raises(ReservationError) as refused:
        _reserve(tmp_path, headers([f"h{i}" for i in range(100)]),
                 attribution={"tags": {f"b{i}": "v" for i in range(100)}})
    assert refused.value.status == 400
    assert refused.value.message == (f"200 tags, at most {MAX_TAGS} (x-tokenmeter-tag-* headers, tag: parameters "
                                     "and attribution.tags together)")
    _reserve(tmp_path, headers([f"h{i}" for i in range(64)]), attribution={"tags": {f"b{i}": "v" for i in range(64)}})
    both = _reserve(tmp_path, headers([f"k{i}" for i in range(100)]),
                    attribution={"tags": {f"k{i}": "v" for i in range(100)}})
    assert len([k for k in both["attributes"] if k.startswith("tag:")]) == 100
