"""Small readers shared by the gateway dialects: chat content from logged payloads, operation names."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from collectors.errors import DialectError
from tokenmeter.events import Content, Usage, UsageEvent, describe_validation_error

# Kong route types and LiteLLM call types, folded into the operation names OTel uses.
_OPERATIONS = {
    "llm/v1/chat": "chat",
    "llm/v1/completions": "text_completion",
    "llm/v1/embeddings": "embeddings",
    "llm/v1/responses": "chat",
    "completion": "chat",
    "acompletion": "chat",
    "chat": "chat",
    "responses": "chat",
    "aresponses": "chat",
    "text_completion": "text_completion",
    "atext_completion": "text_completion",
    "embedding": "embeddings",
    "aembedding": "embeddings",
    "embeddings": "embeddings",
    "image_generation": "image_generation",
    "aimage_generation": "image_generation",
    "transcription": "transcription",
    "atranscription": "transcription",
    "speech": "speech",
    "aspeech": "speech",
    "rerank": "rerank",
    "arerank": "rerank",
    "generate_content": "chat",
}


def normalize_operation(name: Any, default: str = "chat") -> str:
    if type(name) is str:  # a handful of names per source: each read once (None: blank, the default)
        found = _NORMALIZED.get(name, _UNSEEN)
        if found is not _UNSEEN:
            return default if found is None else found
    if not isinstance(name, str) or not name.strip():
        if type(name) is str:
            _remember(name, None)
        return default
    key = name.strip().lower()
    found = _OPERATIONS.get(key, key)
    if type(name) is str:
        _remember(name, found)
    return found


def _remember(name: str, operation: str | None) -> None:
    if len(_NORMALIZED) >= 1024:  # many distinct names (hostile input): a bounded cache
        _NORMALIZED.clear()
    _NORMALIZED[name] = operation


_NORMALIZED: dict[str, str | None] = {}
_UNSEEN = object()


def list_or_empty(value: Any) -> list[Any]:
    """For best-effort reading (text to count): a wrong-typed container reads as empty, not as an error."""
    return value if isinstance(value, list) else []


def maybe_json(value: Any) -> Any:
    """Logged payloads are often JSON encoded as a string; decode when it is, else return as is."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def prompt_from_request(request: Any) -> str | list[dict[str, Any]] | None:
    """Chat messages (or a plain prompt / Responses `input`) of a logged request body."""
    request = maybe_json(request)
    if isinstance(request, str):
        return request or None
    if isinstance(request, list) and all(isinstance(m, dict) for m in request):
        return request or None
    if not isinstance(request, dict):
        return None
    for key in ("messages", "input", "prompt", "contents"):
        value = request.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
            return value
    return None


def text_of(value: Any) -> str:
    """Concatenated text of a message content: string, or a list of {type:text, text} parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(text_of(part) for part in value)
    if isinstance(value, dict):
        for key in ("text", "content", "output_text"):
            if key in value:
                return text_of(value[key])
        if "parts" in value:
            return text_of(value["parts"])
    return ""


def completion_from_response(response: Any) -> str | None:
    """Assistant text of a logged response body (OpenAI chat/Responses, Anthropic, Gemini), or plain text."""
    response = maybe_json(response)
    if isinstance(response, str):
        return response or None
    if not isinstance(response, dict):
        return None
    parts: list[str] = []
    for choice in list_or_empty(response.get("choices")):
        if isinstance(choice, dict):
            message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
            parts.append(text_of(message.get("content")) or text_of(choice.get("text")))
    for item in list_or_empty(response.get("output")):  # Responses API
        if isinstance(item, dict) and item.get("type") == "message":
            parts.append(text_of(item.get("content")))
    if response.get("type") == "message":  # Anthropic
        parts.append(text_of(response.get("content")))
    for candidate in list_or_empty(response.get("candidates")):  # Gemini
        if isinstance(candidate, dict):
            parts.append(text_of(candidate.get("content")))
    if isinstance(response.get("content"), str):
        parts.append(response["content"])
    text = "".join(parts)
    return text or None


def content_or_none(prompt: Any, completion: Any) -> Content | None:
    if not prompt and not completion:
        return None
    try:
        return Content(prompt=prompt or None, completion=completion or None)
    except ValidationError as exc:  # a logged prompt nested deeper than MAX_CONTENT_DEPTH: this record's error
        raise DialectError(f"content.{describe_validation_error(exc)}") from None


# Operations priced per token, whose text the worker can count. Image, audio and rerank calls are billed per image,
# second or search: a zero token count there is no sign of a lost count, and counting their prompt would invent one.
TOKEN_BILLED_OPERATIONS = frozenset({"chat", "text_completion", "embeddings"})
ZERO_USAGE_COUNTED = "zero-usage-counted-from-text"
# The same zeros with no text to count: metered as logged ($0, a lower bound), marked so the call is never a silent
# free line (left24); dead-lettering it would drop a real call from request counts and tell no more.
ZERO_USAGE_UNCOUNTED = "zero-usage-no-text-to-count"


def zero_usage_is_not_a_count(usage: Usage | None, status: str, operation: str) -> bool:
    """A successful token-billed call logged with all counts zero: no provider bills a call with a prompt as
    zero tokens, so the zeros say the log lost the count (LiteLLM writes zeros when the response object carried no
    usage; Kong and APISIX for streams that lost theirs), not that the call was free. The caller counts the logged
    text instead (marking the event `ZERO_USAGE_COUNTED`) when there is text, else keeps the zeros marked
    `ZERO_USAGE_UNCOUNTED`; a failed call stays zero, unmarked (not billed)."""
    return (usage is not None and status == "ok" and operation in TOKEN_BILLED_OPERATIONS
            and usage.input_tokens == 0 and usage.output_tokens == 0 and not usage.tool_requests)


def count_lost_zero_usage(event: UsageEvent) -> UsageEvent:
    """`event` (a contract event: canonical, a CloudEvent's canonical-like body) with all-zero usage beside its
    `content` read as no usage, marked `ZERO_USAGE_COUNTED`: the worker counts the text, as for every gateway log."""
    if zero_usage_is_not_a_count(event.usage, event.status, event.operation):
        content = event.content
        if content is not None and (content.prompt or content.completion or content.tools):
            event.usage, event.usage_assumption = None, event.usage_assumption or ZERO_USAGE_COUNTED
        else:
            event.usage_assumption = event.usage_assumption or ZERO_USAGE_UNCOUNTED
    return event
