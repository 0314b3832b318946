"""Attribution from what gateways really log (walk22): the default selectors must name fields the gateway writes.

APISIX's loggers (apisix/utils/log-util.lua `get_full_log`, apache/apisix f519a0f) write `consumer` as
`{username}` only, never its group, so the documented team default `consumer.group_id` never matched a real entry;
the consumer group reaches a log entry only as a field the operator adds (`log_format_extra` (3.18+) or `log_format`
with `$consumer_group_id`). ai-proxy's `llm_summary.end_user_id` (the request body's `safety_identifier` or `user`,
base.lua `set_logging`) is the caller's end user, which LiteLLM's payloads give as `end_user` and tokenmeter reads
there; APISIX's was dropped."""

from __future__ import annotations

import json
from pathlib import Path

import orjson

from collectors import parse_record
from collectors.encoded import EncodedEvent

CONFORMANCE = Path(__file__).parents[1] / "conformance" / "payloads"


def _event(record: dict, dialect: str) -> dict:
    """The event as the collectors write it (the batch form); the per-entry parser must agree."""
    [event] = parse_record(record, dialect, None, encoded=True)
    written = orjson.loads(event.json) if isinstance(event, EncodedEvent) \
        else event.model_dump(mode="json", exclude_none=True)
    [model] = parse_record(record, dialect)
    assert written["attribution"] == model.model_dump(mode="json", exclude_none=True)["attribution"]
    return written


def _apisix_entry() -> dict:
    entry = json.loads((CONFORMANCE / "apisix" / "after_openai_chat_end_user.json").read_text())
    entry["start_time"] = 1763164800000
    return entry


def test_apisix_end_user_id_is_the_user_when_no_consumer_is_authenticated():
    assert _event(_apisix_entry(), "apisix")["attribution"]["user"] == "alice"


def test_an_authenticated_apisix_consumer_still_wins_over_the_end_user_id():
    entry = _apisix_entry()
    entry["consumer"] = {"username": "svc-search"}
    assert _event(entry, "apisix")["attribution"]["user"] == "svc-search"


def test_apisix_consumer_group_added_by_log_format_extra_is_the_team():
    entry = _apisix_entry()
    entry.update(consumer={"username": "svc-search"}, consumer_group_id="search", route_name="chat")
    attribution = _event(entry, "apisix")["attribution"]
    assert (attribution["team"], attribution["route"]) == ("search", "chat")


def test_a_team_header_still_wins_over_the_consumer_group():
    entry = _apisix_entry()
    entry.update(consumer_group_id="search", request={"uri": "/v1/chat", "headers": {"x-tokenmeter-team": "ads"}})
    assert _event(entry, "apisix")["attribution"]["team"] == "ads"
