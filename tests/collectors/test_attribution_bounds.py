"""cap33: nothing bounded the number of tags of an event or the length of an attribution value, at any collector
entry point: a gateway's 5 MB team header or 100,000 request tags went on to the worker, which priced anything whose
priced JSON stayed under 256 KB (10,000 tags an event: 10,000 rows of each tag rollup). The one parser of every
entry point (`parse_record`, its batch form and its per-entry form alike) now refuses such an entry naming the
field, its size and the limit, keeping the record's other entries; `collect http` answers 400 naming it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from test_collectors_mode_support import canonical_event, count_ids, events_of, read_to_end, start_http, stop_process

from collectors import DialectError, parse_record
from tokenmeter import topics
from tokenmeter.events import MAX_ATTRIBUTION_CHARS, MAX_TAGS

pytestmark = pytest.mark.slow(seconds=8)
PAYLOADS = Path(__file__).parent / "payloads"
OVER = MAX_ATTRIBUTION_CHARS + 1


def _hostile(tag: str) -> list[dict]:
    return [canonical_event(f"{tag}-team", team="t" * OVER),
            canonical_event(f"{tag}-tags", attribution={"team": "a", "tags": {f"k{i}": "v" for i in range(MAX_TAGS + 1)}}),
            canonical_event(f"{tag}-value", attribution={"team": "a", "tags": {"env": "v" * OVER}})]


@pytest.mark.parametrize("encoded", [True, False], ids=["batch form", "per entry"])
def test_canonical_entries_past_the_bounds_are_refused_naming_field_size_and_limit(encoded):
    good, at_bounds = canonical_event("good"), canonical_event("edge", team="t" * MAX_ATTRIBUTION_CHARS)
    with pytest.raises(DialectError) as caught:
        parse_record(orjson.dumps([good, *_hostile("c"), at_bounds]), "canonical", encoded=encoded)
    reason = caught.value.reason
    assert reason.startswith("3 of 5 entries failed"), reason
    assert f"[1]: invalid event: attribution.team: Value error, {OVER} characters, at most {MAX_ATTRIBUTION_CHARS}" \
        in reason
    assert f"[2]: invalid event: attribution.tags: Value error, {MAX_TAGS + 1} tags, at most {MAX_TAGS}" in reason
    assert f"[3]: invalid event: attribution.tags: Value error, tag 'env': a value of {OVER} characters" in reason
    assert [e.event_id for e in caught.value.partial] == ["good", "edge"]


@pytest.mark.parametrize("encoded", [True, False], ids=["batch form", "per entry"])
def test_a_gateway_s_team_or_tags_past_the_bounds_are_refused_too(encoded):
    """The attribution a dialect reads from a gateway's record (LiteLLM's team id, its request tags) is held to the
    same bounds, by the attribution mapping's own check."""
    record = json.loads((PAYLOADS / "litellm_success.json").read_text())
    record["metadata"]["user_api_key_team_id"] = "t" * 5_000_000
    with pytest.raises(DialectError, match=rf"invalid event: attribution.team: Value error, 5000000 characters, at "
                                           rf"most {MAX_ATTRIBUTION_CHARS}"):
        parse_record(orjson.dumps(record), "litellm", encoded=encoded)
    record["metadata"]["user_api_key_team_id"] = "search"
    record["request_tags"] = [f"tag{i}" for i in range(100_000)]
    with pytest.raises(DialectError, match=rf"invalid event: attribution.tags: Value error, .*at most"):
        parse_record(orjson.dumps(record), "litellm", encoded=encoded)


def test_collect_http_answers_400_naming_the_field_and_writes_the_good_events(kafka_bootstrap, tmp_path):
    url, proc = start_http(tmp_path, kafka_bootstrap)
    tag = uuid.uuid4().hex
    good = canonical_event(f"good-{tag}")
    try:
        response = httpx.post(url + "/v1/events", content=orjson.dumps([good, *_hostile(tag)]),
                              headers={"content-type": "application/json"}, timeout=60)
        assert response.status_code == 400, response.text[:500]
        errors = response.json()["errors"]
        assert "t" * 100 not in response.text  # the answer names sizes, it does not echo the value
        reasons = " ".join(e["reason"] for e in errors)
        for field in ("attribution.team", "attribution.tags"):
            assert f"invalid event: {field}: Value error" in reasons, errors
        assert f"{OVER} characters, at most {MAX_ATTRIBUTION_CHARS}" in reasons
        # a single good event is written; the refused ones never reach the usage topic
        single = httpx.post(url + "/v1/events", content=orjson.dumps(good), timeout=60,
                            headers={"content-type": "application/json"})
        assert single.status_code in (200, 202), single.text[:500]
        assert count_ids(kafka_bootstrap, topics.USAGE, {good["event_id"]}) == {good["event_id"]: 1}
        written = {e.get("event_id") for e in events_of(read_to_end(kafka_bootstrap, topics.USAGE))}
        assert not written & {f"{tag}-team", f"{tag}-tags", f"{tag}-value"}
    finally:
        stop_process(proc)
