"""Anthropic Messages API responses (`type: message`) and streams (a list of SSE events).

Usage conversion (see collectors.usage.anthropic_usage): input = input_tokens + cache reads + cache writes;
cache_creation.ephemeral_1h_input_tokens -> cache_write_1h_tokens. usage.service_tier "batch" marks a batch
call. Streams: `message_start` carries message.usage (input side); each `message_delta` carries CUMULATIVE
usage, so the last one wins (fields it repeats replace those of message_start, never added). A stream
without any message_delta was cut: its usage is not trusted, the streamed text is kept for counting.
Versions covered: Messages API 2023-06-01 responses and streams, 5-minute and 1-hour cache writes, web search and
web fetch requests (server_tool_use); also Bedrock InvokeModel bodies (same shape: give tokenmeter.provider and
the profile as tokenmeter.model). Cannot carry: a time (read time unless the wrapper gives ts), code execution
container hours, the provider when it is not Anthropic.
"""

from __future__ import annotations

from typing import Any

from collectors.attribution import AttributionMapping
from collectors.coerce import as_dict, to_str
from collectors.dialects.base import Dialect, parse_batch
from collectors.dialects.common import completion_from_response
from collectors.dialects.response_envelope import Envelope, api_error, build_response_event, unwrap
from collectors.errors import DialectError, join_path
from collectors.usage import anthropic_usage
from tokenmeter.events import UsageEvent

NAME = "anthropic"
STREAM_EVENTS = frozenset({"message_start", "message_delta", "message_stop", "content_block_start",
                           "content_block_delta", "content_block_stop", "ping", "error"})


def is_stream_event(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("type"), str) and item["type"] in STREAM_EVENTS


def _event(env: Envelope, mapping: AttributionMapping, message: dict[str, Any], message_path: str,
           usage_raw: dict[str, Any] | None, usage_path: str, completion: str | None,
           failed: bool = False) -> UsageEvent:
    usage = anthropic_usage(usage_raw, usage_path) if usage_raw is not None else None
    tier = usage_raw.get("service_tier") if usage_raw else None
    tier = tier if isinstance(tier, str) and tier else None
    return build_response_event(
        env, NAME, mapping, response_id=message.get("id"), ts=None, provider=NAME,
        model=to_str(message.get("model"), join_path(message_path, "model")), completion=completion,
        usage=usage, status="error" if failed else "ok", service_tier=tier, batch=tier == "batch")


def _stream(env: Envelope, events: list[Any], mapping: AttributionMapping) -> UsageEvent:
    message: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    saw_delta, failed, start_index = False, False, 0
    text: list[str] = []
    for index, event in enumerate(events):
        path = join_path(env.path, f"[{index}]")
        if not is_stream_event(event):
            raise DialectError("expected an Anthropic stream event (message_start, message_delta, ...)", path)
        kind = event["type"]
        if kind == "message_start":
            start_index = index
            message = as_dict(event.get("message"), join_path(path, "message"), optional=False)
            usage = dict(as_dict(message.get("usage"), join_path(path, "message.usage")))
        elif kind == "message_delta":
            delta_usage = as_dict(event.get("usage"), join_path(path, "usage"))
            # Cumulative counts: the latest value of each field replaces the earlier one.
            usage.update({k: v for k, v in delta_usage.items() if v is not None})
            saw_delta = True
        elif kind == "content_block_delta":
            delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
            if isinstance(delta.get("text"), str):
                text.append(delta["text"])
        elif kind == "error":
            failed = True
    if not message:
        raise DialectError("stream has no message_start event", env.path or None)
    trusted = usage if saw_delta else None
    return _event(env, mapping, message, join_path(env.path, f"[{start_index}].message"), trusted,
                  join_path(env.path, "usage"), "".join(text) or None, failed)


def parse_response(record: Any, mapping: AttributionMapping, path: str) -> list[UsageEvent]:
    env = unwrap(record, path)
    response = env.response
    if isinstance(response, list):
        if not response:
            raise DialectError("empty stream", env.path or None)
        if not env.meta and all(isinstance(item, dict) and item.get("type") == "message" for item in response):
            # An array of complete messages is a batch, not a stream.
            return parse_batch(response, lambda item, item_path: parse_response(item, mapping, item_path), path)
        return [_stream(env, response, mapping)]
    response = as_dict(response, env.path, optional=False)
    message = api_error(response)
    if message:
        raise DialectError(f"response is an API error, not a completed call: {message}", env.path or None)
    if response.get("type") != "message":
        raise DialectError(f"not an Anthropic message (type={response.get('type')!r})", env.path or None)
    usage_raw = response.get("usage")
    usage_path = join_path(env.path, "usage")
    return [_event(env, mapping, response, env.path, as_dict(usage_raw, usage_path) if usage_raw is not None else None,
                   usage_path, completion_from_response(response))]


DIALECT = Dialect(NAME, "Anthropic Messages API responses and streams", parse_response, arrays_are_batches=False)
