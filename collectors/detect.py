"""Which dialect a record is in, decided from its shape alone (one record at a time)."""

from __future__ import annotations

from typing import Any

from collectors.decode import decode
from collectors.dialects.anthropic import is_stream_event as is_anthropic_event
from collectors.dialects.gemini import is_gemini_response
from collectors.dialects.openai import is_chat_chunk, is_responses_event
from collectors.dialects.response_envelope import WRAPPER_KEY, is_wrapper
from collectors.errors import DialectError

_OPENAI_OBJECTS = ("chat.completion", "text_completion", "response")


def _detect_object(record: dict[str, Any]) -> str | None:
    if is_wrapper(record):
        inner = decode(record["response"])
        return _detect_stream(inner) if isinstance(inner, list) else _detect_object(inner) if isinstance(
            inner, dict) else None
    if "resourceSpans" in record:
        return "otel"
    if "specversion" in record:
        return "cloudevents"
    if isinstance(record.get("ai"), dict):
        return "kong"
    if "llm_summary" in record:
        return "apisix"
    if "call_type" in record and ("startTime" in record or "response_cost" in record or "hidden_params" in record):
        return "litellm"
    if {"event_id", "ts", "source", "model"} <= record.keys():
        return "canonical"
    if record.get("object") in _OPENAI_OBJECTS or (record.get("object") == "list" and "usage" in record):
        return "openai"
    if is_responses_event(record) and isinstance(record.get("response"), dict):
        return "openai"
    if record.get("type") == "message" and "usage" in record:
        return "anthropic"
    if is_gemini_response(record):
        return "gemini"
    return None


def _detect_stream(items: list[Any]) -> str | None:
    """A provider stream: every element a chunk/event of the same provider."""
    if all(is_chat_chunk(item) for item in items) or all(is_responses_event(item) for item in items):
        return "openai"
    if all(is_anthropic_event(item) for item in items):
        return "anthropic"
    if all(is_gemini_response(item) for item in items):
        return "gemini"
    return None


def detect_dialect(record: Any) -> str:
    """The dialect name of a record (dict, array, JSON/SSE text, or bytes); DialectError when unknown."""
    record = decode(record)
    if isinstance(record, dict):
        dialect = _detect_object(record)
        if dialect:
            return dialect
        keys = ", ".join(sorted(record)[:8]) or "none"
        hint = " (a `tokenmeter` field needs a `response` beside it or a known response shape)" \
            if WRAPPER_KEY in record else ""
        raise DialectError(f"unknown record shape (top-level keys: {keys}){hint}")
    if isinstance(record, list):
        if not record:
            raise DialectError("empty array: nothing to detect")
        stream = _detect_stream(record)
        if stream:
            return stream
        found: dict[str, int] = {}
        for index, item in enumerate(record):
            if not isinstance(item, dict):
                raise DialectError(f"expected an object, got {type(item).__name__}", f"[{index}]")
            dialect = _detect_object(item)
            if dialect is None:
                raise DialectError("unknown record shape in array", f"[{index}]")
            found.setdefault(dialect, index)
        if len(found) > 1:
            mixed = ", ".join(f"[{i}] {d}" for d, i in found.items())
            raise DialectError(f"array mixes dialects ({mixed}); send one dialect per record")
        return next(iter(found))
    raise DialectError(f"expected a JSON object or array, got {type(record).__name__}")
