"""LiteLLM StandardLoggingPayload (callbacks, spend-log exports, its generic/kafka loggers).

- event_id: `id`, else litellm_call_id / call_id, else a hash of the payload.
- ts: startTime, epoch seconds (float) or "YYYY-MM-DD HH:MM:SS.ffffff" read as UTC.
- model: response.model (the provider's dated snapshot) else `model`; provider: custom_llm_provider.
- status: "failure" -> error (the call is counted as an error; its usage, usually zero, is kept as reported).
- usage: response.usage, else metadata.usage_object / hidden_params.usage_object, else the top-level
  prompt_tokens/completion_tokens, read by `openai_usage`. LiteLLM's usage is OpenAI-shaped, but for Anthropic
  cache WRITES it changed: 1.72.x adds only cache reads to prompt_tokens, 1.110.x reads and writes. See
  `litellm_cache`: the payload's response_cost decides; an undecidable payload is metered with the current
  rule and marked with `usage_assumption`.
- OpenRouter (custom_llm_provider openrouter): LiteLLM keeps OpenRouter's usage.cost in response.usage (1.72.3 and
  1.110.2 alike); that is the event's reported_cost_usd (with a bring-your-own-key call's upstream cost added, see
  `openrouter`). LiteLLM's own response_cost is not used: for a BYOK call it is 0.0, not what was billed.
- cache_hit=true: answered from LiteLLM's cache, no provider call: usage is zero, tagged cache_hit.
- All-zero usage on a successful chat/completion/embedding call: LiteLLM writes zeros whenever the response object
  it logs has no `usage` (`StandardLoggingPayloadSetup.get_usage_from_response_obj`), i.e. the count was lost, not
  the call free. The logged messages and response are counted instead (marked `zero-usage-counted-from-text`);
  with no text at all the zeros stay (nothing says otherwise); with the text redacted by LiteLLM
  (`turn_off_message_logging`: "redacted-by-litellm") the payload is dead-lettered saying so. A failed call
  (status failure) keeps its zeros.
- latency_ms: endTime - startTime; ttft_ms: completionStartTime - startTime for streams.
- tags: request_tags ("k:v" / "k=v" -> k: v, plain "x" -> x: "true") and end_user.
- SpendLogs rows (the proxy's LiteLLM_SpendLogs table, its /spend/logs API, the GCS Pub/Sub logger) carry the same
  fields with the JSON columns (metadata, request_tags, messages, response) serialized as strings, the id as
  `request_id` and cache_hit as "True"/"False"/"None": read as the payload they were made from. Their `spend` is
  LiteLLM's own estimate, never the cost; like response_cost it only settles the cache-write convention.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from collectors.attribution import NO_ATTRIBUTES, AttributionMapping, RecordView, view_headers
from collectors.coerce import as_dict, as_list, to_datetime, to_str
from collectors.dialects.base import Dialect, correlation_of, derived_event_id, make_event, require_object
from collectors.dialects.openrouter import PROVIDER as OPENROUTER, is_openrouter_usage, reported_cost
from collectors.dialects.litellm_cache import ASSUMED_CACHE_WRITES_IN_PROMPT, resolve_cache_convention
from collectors.dialects.common import ZERO_USAGE_COUNTED, ZERO_USAGE_UNCOUNTED, completion_from_response, content_or_none, maybe_json, \
    normalize_operation, prompt_from_request, text_of, zero_usage_is_not_a_count
from collectors.encoded import EncodedEvent, encoded_event, naive_utc_text, plain_usage, token_count
from collectors.errors import DialectError, join_path
from collectors.providers import guess_provider, normalize_provider
from collectors.usage import OPENAI_DETAIL_KEYS, build_usage, openai_counts
from tokenmeter.events import Content, Usage, UsageEvent

NAME = "litellm"


def _usage(payload: dict[str, Any], path: str) -> tuple[Usage | None, str | None, Decimal | None]:
    """Usage, the assumption made when the payload's cache-write convention could not be settled, and the cost
    the provider reported in that usage (OpenRouter's usage.cost)."""
    sources: list[tuple[Any, str]] = []
    response = payload.get("response")
    if isinstance(response, dict) and isinstance(response.get("usage"), dict):
        sources.append((response["usage"], join_path(path, "response.usage")))
    for container in ("metadata", "hidden_params"):
        holder = as_dict(payload.get(container), join_path(path, container))
        if isinstance(holder.get("usage_object"), dict):
            sources.append((holder["usage_object"], join_path(path, f"{container}.usage_object")))
    sources.append(({k: payload.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}, path))
    zeros = None
    for raw, where in sources:
        counts = openai_counts(raw, where)
        if counts is None:
            continue
        if not any(counts[key] for key in ("input_tokens", "output_tokens")) and not counts["tool_requests"]:
            zeros = zeros or (counts, raw, where)  # LiteLLM's "no usage": a later place may hold the count
            continue
        counts, assumption = resolve_cache_convention(counts, payload)
        return build_usage(where, **counts), assumption, reported_cost(raw, where)
    if zeros is not None:
        counts, raw, where = zeros
        return build_usage(where, **counts), None, reported_cost(raw, where)
    return None, None, None


REDACTED = "redacted-by-litellm"  # LiteLLM's stand-in for messages and answers when message logging is off


def _logged_text(payload: dict[str, Any]) -> tuple[Content | None, bool]:
    """The call's text to count, and whether LiteLLM redacted any of it (its stand-in is no text to count)."""
    prompt = prompt_from_request({"messages": payload.get("messages")})
    completion = completion_from_response(payload.get("response"))
    redacted = False
    if isinstance(prompt, list) and all(text_of(m.get("content")) == REDACTED for m in prompt) \
            or prompt == REDACTED:
        prompt, redacted = None, True
    if completion is not None and not completion.replace(REDACTED, ""):
        completion, redacted = None, True
    return content_or_none(prompt, completion), redacted


def _tags(payload: dict[str, Any], path: str) -> dict[str, str]:
    return _tags_of(as_list(payload.get("request_tags"), join_path(path, "request_tags")), payload)


def _tags_of(raw_tags: list[Any], payload: dict[str, Any]) -> dict[str, str]:
    """LiteLLM's `request_tags` ("key:value", "key=value" or a bare word, which reads as "true"), its end user and
    a cache hit, as tags."""
    tags: dict[str, str] = {}
    for raw in raw_tags:
        if type(raw) is str and len(raw) <= _TAG_CACHED_CHARS:  # a gateway sends a handful of short tag texts:
            pair = _TAG_PAIRS.get(raw)  # each split once (a pure function of it)
            if pair is None:
                if len(_TAG_PAIRS) >= 4096:  # many distinct tags (ids in tags, hostile input): a bounded cache
                    _TAG_PAIRS.clear()
                pair = _TAG_PAIRS[raw] = _tag_pair(raw)
        elif isinstance(raw, str):
            pair = _tag_pair(raw)
        else:
            continue
        if pair:
            tags[pair[0]] = pair[1]
    end_user = payload.get("end_user")
    if isinstance(end_user, str) and end_user.strip():
        tags["end_user"] = end_user.strip()
    if payload.get("cache_hit") is True:
        tags["cache_hit"] = "true"
    return tags


def _tag_pair(raw: str) -> tuple[str, str] | tuple[()]:
    """A `request_tags` text as (key, value); () for a blank one (no tag)."""
    if not raw.strip():
        return ()
    if "=" in raw or ":" in raw:
        key, sep, value = raw.replace("=", ":", 1).partition(":")
        value = value.strip()
        return key.strip(), (value if sep and value else "true")
    return raw.strip(), "true"


_TAG_PAIRS: dict[str, tuple[str, str] | tuple[()]] = {}  # a tag's text -> _tag_pair of it
# Only texts this short are kept: 4,096 kept texts of a megabyte each (a hostile record's tags) would hold 4 GB.
_TAG_CACHED_CHARS = 256


def _millis_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None or end < start:
        return None
    return (end - start).total_seconds() * 1000.0


SPEND_LOG_JSON_COLUMNS = ("metadata", "request_tags", "messages", "response")


def _as_payload(row: dict[str, Any]) -> dict[str, Any]:
    """A SpendLogs row read as the StandardLoggingPayload it was made from (its JSON columns are strings)."""
    if "spend" not in row and "request_id" not in row:
        return row  # a StandardLoggingPayload: its `messages` may be a plain prompt string, never decoded here
    payload = dict(row)
    for key in SPEND_LOG_JSON_COLUMNS:
        payload[key] = maybe_json(row.get(key))
    if isinstance(row.get("cache_hit"), str):
        payload["cache_hit"] = row["cache_hit"].strip().lower() == "true"
    metadata = payload.get("metadata")
    if "model_map_information" not in payload and isinstance(metadata, dict):
        payload["model_map_information"] = metadata.get("model_map_information")
    if "response_cost" not in payload and "spend" in row:
        payload["response_cost"] = row["spend"]  # only to settle the cache convention (litellm_cache), never a cost
    return payload


def parse_payload(payload: Any, mapping: AttributionMapping, path: str) -> list[UsageEvent]:
    payload = _as_payload(require_object(payload, path, "LiteLLM StandardLoggingPayload"))
    start = to_datetime(payload.get("startTime"), join_path(path, "startTime"))
    if start is None:
        raise DialectError("missing startTime", path or None)
    end = to_datetime(payload.get("endTime"), join_path(path, "endTime"))
    first_token = to_datetime(payload.get("completionStartTime"), join_path(path, "completionStartTime"))

    response = payload.get("response") if isinstance(payload.get("response"), dict) else {}
    model = to_str(response.get("model"), join_path(path, "response.model")) or to_str(
        payload.get("model"), join_path(path, "model"))
    if not model:
        raise DialectError("missing model (model and response.model are both absent)", path or None)
    provider = normalize_provider(to_str(payload.get("custom_llm_provider"), join_path(path, "custom_llm_provider"))
                                  or mapping.provider) or guess_provider(model)
    if not provider:
        raise DialectError("missing custom_llm_provider", path or None)

    status = payload.get("status")
    if status not in (None, "success", "failure"):
        raise DialectError(f"expected 'success' or 'failure', got {status!r}", join_path(path, "status"))
    cache_hit = payload.get("cache_hit") is True
    usage, assumption, cost = (Usage(), None, None) if cache_hit else _usage(payload, path)
    if provider != OPENROUTER:
        cost = None  # LiteLLM adds its own computed `cost` to streamed usage: not a provider's bill
    event_status, operation = ("error" if status == "failure" else "ok"), normalize_operation(payload.get("call_type"))
    content = None
    lost_count = not cache_hit and zero_usage_is_not_a_count(usage, event_status, operation)
    if usage is None or lost_count:
        content, redacted = _logged_text(payload)
        if content is None and redacted and event_status == "ok":
            raise DialectError(f"{'zero' if lost_count else 'no'} usage logged for a successful call and its text "
                               f"redacted by LiteLLM ({REDACTED!r}, turn_off_message_logging): nothing to count "
                               "tokens from", join_path(path, "response.usage"))
        if lost_count and content is not None:
            usage, assumption = None, ZERO_USAGE_COUNTED  # the worker counts the text, marked estimated
        elif lost_count:
            assumption = ZERO_USAGE_UNCOUNTED  # no text to count: the zeros as logged, marked

    event_id = next((str(payload[k]) for k in ("id", "request_id", "litellm_call_id", "call_id")
                     if isinstance(payload.get(k), (str, int)) and str(payload[k]).strip()), None)
    metadata = as_dict(payload.get("metadata"), join_path(path, "metadata"))
    view = RecordView(payload, headers=metadata.get("requester_custom_headers"))
    return [make_event(
        path,
        event_id=event_id or derived_event_id(NAME, payload, path),
        ts=start,
        source=NAME,
        provider=provider,
        model=model,
        operation=operation,
        status=event_status,
        attribution=mapping.resolve(NAME, view, auto_tags=_tags(payload, path)),
        usage=usage,
        content=content,
        latency_ms=_millis_between(start, end),
        ttft_ms=_millis_between(start, first_token) if payload.get("stream") else None,
        usage_assumption=assumption,
        reported_cost_usd=cost,
        # LiteLLM's `id` is the provider's response id (chatcmpl-..., msg_...): the same call in an SDK event
        correlation=correlation_of(response_id=payload.get("id") or payload.get("request_id")),
    )]


# --- the batch form ----------------------------------------------------------------------------------------

# startTime / endTime / completionStartTime as LiteLLM writes them (naive, read as UTC):
# `YYYY-MM-DD HH:MM:SS.ffffff`, ASCII digits. Its separators, positions 4, 7, 10, 13, 16 and 19:
_LITELLM_TIME_SEPARATORS = "-- ::."


def _time(value: Any) -> datetime | None | bool:
    """`to_datetime` of LiteLLM's own time text, still naive (UTC; the differences between two such times are the
    same); None when absent; False for any other value.

    The text's shape is checked without a regex (the regex `fullmatch` that was here
    cost more than `fromisoformat` itself, ~10% of a LiteLLM payload's conversion): 26 ASCII characters with the
    separators in place, then `fromisoformat` reads each digit field (ASCII digits only) and refuses anything
    else there; what it could still take that the regex would not is a UTC offset or `Z` inside the last six
    characters, which gives an aware time: refused here too. `test_litellm_time_shape_without_the_regex` holds
    it to the regex."""
    if value is None:
        return None
    if type(value) is not str or len(value) != 26 or value[4:20:3] != _LITELLM_TIME_SEPARATORS \
            or not value.isascii():
        return False
    try:
        read = datetime.fromisoformat(value)
    except ValueError:
        return False
    return read if read.tzinfo is None else False


def _common_tags(payload: dict[str, Any]) -> dict[str, str] | None:
    """`_tags(payload, path)` without building the path of its error (None where it raises): ~10% of a payload's
    time went to that path."""
    raw_tags = payload.get("request_tags")
    if raw_tags is not None and not isinstance(raw_tags, list):
        return None
    return _tags_of(raw_tags or (), payload)


_NO_HEADERS: dict[str, Any] = {}  # read only: the resolver only looks names up in it
_LAST_RESOLVER: list[Any] = [None, None]  # [the mapping last read with, its resolve_parts(NAME)]


def _common_payload(payload: Any, mapping: AttributionMapping) -> EncodedEvent | None:
    """The event of a payload of the common shape (`response.usage` with int prompt/completion tokens and no
    detail parts, LiteLLM's time text, a string id, model and provider, not OpenRouter, not a cache hit), written
    as `parse_payload` would have it written; None for any other payload, which `parse_payload` then reads."""
    if type(payload) is not dict or payload.get("cache_hit") is True:
        return None
    start, end, first_token = _time(payload.get("startTime")), _time(payload.get("endTime")), \
        _time(payload.get("completionStartTime"))
    response, metadata, hidden = payload.get("response"), payload.get("metadata"), payload.get("hidden_params")
    if not start or end is False or first_token is False or type(response) is not dict \
            or (metadata is not None and type(metadata) is not dict) or (hidden is not None and type(hidden) is not dict):
        return None
    usage = response.get("usage")
    if type(usage) is not dict or is_openrouter_usage(usage):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not (token_count(prompt) and token_count(completion)) or not usage.keys().isdisjoint(OPENAI_DETAIL_KEYS):
        return None  # no cache writes: resolve_cache_convention keeps the counts
    if prompt == 0 and completion == 0:
        return None  # LiteLLM's "no usage": parse_payload looks elsewhere and at the text
    model, provider_name, status, call_id = response.get("model"), payload.get("custom_llm_provider"), \
        payload.get("status"), payload.get("id")
    if model is None or (type(model) is str and not model.strip()):
        model = payload.get("model")
    if type(model) is not str or not model.strip() or (provider_name is not None and type(provider_name) is not str) \
            or status not in (None, "success", "failure") or type(call_id) is not str or not call_id.strip() \
            or len(call_id) > 512:
        return None
    model = model.strip()
    provider = normalize_provider((provider_name.strip() if provider_name else None) or mapping.provider) \
        or guess_provider(model)
    if not provider or provider == OPENROUTER:
        return None
    tags = _common_tags(payload)
    if tags is None:
        return None
    # _millis_between and plain_float of a float, inline: a float in [1e-4, 1e15) or 0 is written as it is
    latency_ms = ttft_ms = None
    if end is not None and end >= start:
        latency_ms = (end - start).total_seconds() * 1000.0
        if not (latency_ms == 0 or 1e-4 <= latency_ms < 1e15):
            return None
    if first_token is not None and first_token >= start and payload.get("stream"):
        ttft_ms = (first_token - start).total_seconds() * 1000.0
        if not (ttft_ms == 0 or 1e-4 <= ttft_ms < 1e15):
            return None
    ts = naive_utc_text(start, payload["startTime"])  # the text `_time` read it from
    if ts is None:
        return None
    headers = metadata.get("requester_custom_headers") if metadata else None
    headers = view_headers(headers) if headers else _NO_HEADERS  # most payloads carry none: no call
    if _LAST_RESOLVER[0] is not mapping:  # one mapping per bridge: its resolver looked up once, not per payload
        _LAST_RESOLVER[:] = [mapping, mapping.resolve_parts(NAME)]
    fields: dict[str, Any] = {
        "event_id": call_id, "ts": ts, "source": NAME, "provider": provider, "model": model,
        "operation": normalize_operation(payload.get("call_type")), "status": "error" if status == "failure" else "ok",
        "attribution": _LAST_RESOLVER[1](payload, headers, NO_ATTRIBUTES, NO_ATTRIBUTES, tags),
        "usage": plain_usage(prompt, completion),
    }
    if latency_ms is not None:
        fields["latency_ms"] = latency_ms
    if ttft_ms is not None:
        fields["ttft_ms"] = ttft_ms
    fields["batch"] = False
    response_id = call_id.strip()  # correlation_of(response_id=call_id), inline: call_id is a non-blank string
    if len(response_id) <= 256:
        fields["correlation"] = {"response_id": response_id}
    return encoded_event(fields)



__all__ = ["ASSUMED_CACHE_WRITES_IN_PROMPT", "DIALECT", "parse_payload"]

DIALECT = Dialect(NAME, "LiteLLM StandardLoggingPayload", parse_payload, read_common=_common_payload)
