"""trust34 (cap33 noticed): `source`, `provider`, `model`, `operation` and `service_tier` had no bound but the 256 KB
event limit: a 200 KB model name was accepted by every collector and priced by the worker (a key of every rollup,
budget scope and dashboard list). The one parser of every entry point (batch form and per entry alike) now refuses
such an entry naming the field, its size and the limit; the longest real ids (a Bedrock inference-profile ARN
behind LiteLLM's route prefix, Fireworks' account paths) and values at the bounds pass; `collect http` answers 400."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest
from test_collectors_mode_support import canonical_event, count_ids, events_of, read_to_end, start_http, stop_process

from collectors import DialectError, parse_record
from tokenmeter import topics
from tokenmeter.events import MAX_MODEL_CHARS, MAX_NAME_CHARS, TEXT_BOUNDS

pytestmark = pytest.mark.slow(seconds=8)
REAL_MODELS = ("bedrock/converse/arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/mi1dadi0g15f",
               "accounts/fireworks/models/llama-v3p1-405b-instruct")


def _over(tag: str) -> list[dict]:
    """One entry per bounded field, one character past its bound."""
    return [canonical_event(f"{tag}-{name}", **{name: "x" * (bound + 1)}) for name, bound in TEXT_BOUNDS.items()]


def _within(tag: str) -> list[dict]:
    return ([canonical_event(f"{tag}-real-{i}", model=model) for i, model in enumerate(REAL_MODELS)]
            + [canonical_event(f"{tag}-edge", source="s" * MAX_NAME_CHARS, provider="p" * MAX_NAME_CHARS,
                               model="m" * MAX_MODEL_CHARS, operation="o" * MAX_NAME_CHARS,
                               service_tier="t" * MAX_NAME_CHARS)])


@pytest.mark.parametrize("encoded", [True, False], ids=["batch form", "per entry"])
def test_names_past_their_bounds_are_refused_naming_field_size_and_limit(encoded):
    good = canonical_event("good")
    with pytest.raises(DialectError) as caught:
        parse_record(orjson.dumps([good, *_over("c"), *_within("c")]), "canonical", encoded=encoded)
    reason = caught.value.reason
    assert reason.startswith(f"{len(TEXT_BOUNDS)} of {len(TEXT_BOUNDS) + 4} entries failed"), reason
    for index, (name, bound) in enumerate(TEXT_BOUNDS.items(), start=1):
        assert f"[{index}]: invalid event: {name}: Value error, {bound + 1} characters, at most {bound}" in reason
    assert [e.event_id for e in caught.value.partial] == ["good", "c-real-0", "c-real-1", "c-edge"]


def test_collect_http_answers_400_naming_the_field_and_writes_the_good_events(kafka_bootstrap, tmp_path):
    url, proc = start_http(tmp_path, kafka_bootstrap)
    tag = uuid.uuid4().hex
    good = canonical_event(f"good-{tag}")
    try:
        response = httpx.post(url + "/v1/events", content=orjson.dumps([good, canonical_event(
            f"{tag}-model", model="m" * 200_000)]), headers={"content-type": "application/json"}, timeout=60)
        assert response.status_code == 400, response.text[:500]
        assert "m" * 100 not in response.text  # the answer names sizes, it does not echo the value
        reasons = " ".join(e["reason"] for e in response.json()["errors"])
        assert f"invalid event: model: Value error, 200000 characters, at most {MAX_MODEL_CHARS}" in reasons
        single = httpx.post(url + "/v1/events", content=orjson.dumps(good), timeout=60,
                            headers={"content-type": "application/json"})
        assert single.status_code in (200, 202), single.text[:500]
        assert count_ids(kafka_bootstrap, topics.USAGE, {good["event_id"]}) == {good["event_id"]: 1}
        assert f"{tag}-model" not in {e.get("event_id") for e in events_of(read_to_end(kafka_bootstrap, topics.USAGE))}
    finally:
        stop_process(proc)
