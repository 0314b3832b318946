"""Apache APISIX ai-proxy / ai-proxy-multi access-log entries (kafka-logger, http-logger, file-logger).

- usage: `llm_summary.prompt_tokens` / `completion_tokens` (numbers or numeric strings); since APISIX added
  them (apache/apisix df0a284, 2026-06) also `cache_read_input_tokens`, `cache_creation_input_tokens` and
  `reasoning_tokens`. APISIX fills the summary from the CLIENT protocol's usage: Anthropic Messages'
  `input_tokens` EXCLUDES cache tokens, OpenAI Chat's `prompt_tokens` INCLUDES them; see
  collectors.usage.apisix_usage for how the two are told apart. Older versions log no cache detail, so
  cached tokens then price as uncached input.
- content: `llm_request.messages` and `llm_response_text.content` (logging.payloads), used only when the
  summary has no token counts, or when a streamed answer has text but 0 completion tokens (not trusted).
- model: llm_summary.model (the model actually sent), else request_model. provider: llm_summary.provider when
  present, else the mapping's `provider`, else implied by the model name (gpt-* -> openai, claude* -> ...).
- event_id: an `x-request-id` request header (request-id plugin) or `request_id`, else a hash of the entry.
- ts: start_time (ms); latency_ms: latency; ttft_ms: llm_summary.duration; status: response.status >= 400.
- An entry without `llm_summary` (a non-AI route sharing the logger) yields no event.
Versions covered: llm_summary before the cache fields (2025-09) and after (df0a284, 2026-06). Cannot carry: a
cost, server-side tool fees, the 5m/1h split of cache writes; before 2026-06 cache and reasoning detail.
"""

from __future__ import annotations

from typing import Any

from collectors.attribution import AttributionMapping, RecordView
from collectors.coerce import as_dict, dig, epoch_to_datetime, to_datetime, to_float, to_str
from collectors.dialects.base import Dialect, derived_event_id, http_status_is_error, make_event, require_object
from collectors.dialects.common import ZERO_USAGE_COUNTED, ZERO_USAGE_UNCOUNTED, content_or_none, prompt_from_request, text_of, \
    zero_usage_is_not_a_count
from collectors.encoded import EXACT_EPOCH_MS_LIMIT, EncodedEvent, encoded_event, epoch_micros_text, plain_float, \
    plain_usage, token_count, utc_text
from collectors.errors import DialectError, join_path
from collectors.providers import guess_provider, normalize_provider
from collectors.usage import apisix_usage
from tokenmeter.events import UsageEvent

NAME = "apisix"


def parse_entry(entry: Any, mapping: AttributionMapping, path: str) -> list[UsageEvent]:
    entry = require_object(entry, path, "APISIX log entry")
    if entry.get("llm_summary") is None:
        return []
    summary_path = join_path(path, "llm_summary")
    summary = as_dict(entry.get("llm_summary"), summary_path)
    model = to_str(summary.get("model"), join_path(summary_path, "model")) or to_str(
        summary.get("request_model"), join_path(summary_path, "request_model"))
    if not model:
        raise DialectError("missing model (llm_summary.model and llm_summary.request_model are both absent)",
                           summary_path)
    provider = normalize_provider(to_str(summary.get("provider"), join_path(summary_path, "provider"))
                                  or mapping.provider) or guess_provider(model)
    if not provider:
        raise DialectError(f"no provider for model {model!r}: set `provider` in this source's mapping",
                           summary_path)
    ts = to_datetime(entry.get("start_time"), join_path(path, "start_time"))
    if ts is None:
        raise DialectError("missing start_time", path or None)

    request = as_dict(entry.get("llm_request"), join_path(path, "llm_request"))
    response_text = text_of(as_dict(entry.get("llm_response_text"), join_path(path, "llm_response_text"))
                            .get("content")) or None
    request_uri = to_str(dig(entry, "request.uri"), join_path(path, "request.uri"))
    usage = apisix_usage(summary, summary_path, provider, request_uri)
    status_error = http_status_is_error(dig(entry, "response.status"))
    assumption = None
    if usage is not None and usage.output_tokens == 0 and response_text:
        usage = None  # a logged answer with zero completion tokens: the count was lost (streaming), count text
    elif zero_usage_is_not_a_count(usage, "error" if status_error else "ok", "chat"):
        if prompt_from_request(request) is not None:
            usage, assumption = None, ZERO_USAGE_COUNTED  # all zeros beside a logged request: the count was lost
        else:
            assumption = ZERO_USAGE_UNCOUNTED  # nothing to count: the zeros as logged, marked
    content = content_or_none(prompt_from_request(request), response_text) if usage is None else None

    headers = as_dict(dig(entry, "request.headers"), join_path(path, "request.headers"))
    view = RecordView(entry, headers=headers)
    request_id = view.lookup("header:x-request-id") or to_str(entry.get("request_id"), join_path(path, "request_id"))
    return [make_event(
        path,
        event_id=request_id or derived_event_id(NAME, entry, path),
        ts=ts,
        source=NAME,
        provider=provider,
        model=model,
        status="error" if status_error else "ok",
        attribution=mapping.resolve(NAME, view),
        usage=usage,
        content=content,
        latency_ms=to_float(entry.get("latency"), join_path(path, "latency")),
        ttft_ms=to_float(summary.get("duration"), join_path(summary_path, "duration")),
        usage_assumption=assumption,
    )]


# --- the batch form ----------------------------------------------------------------------------------------

_CACHE_AND_REASONING = ("cache_read_input_tokens", "cache_creation_input_tokens", "reasoning_tokens")


def _common_entry(entry: Any, mapping: AttributionMapping) -> EncodedEvent | None:
    """The event of an entry of the common shape (int prompt/completion tokens without cache or reasoning parts,
    string model, epoch-ms `start_time`, no logged payloads, a request id), written as `parse_entry` would have it
    written; None for any other entry, which `parse_entry` then reads (and dead-letters, when it must)."""
    if type(entry) is not dict:
        return None
    summary, request, response = entry.get("llm_summary"), entry.get("request"), entry.get("response", {})
    if type(summary) is not dict or type(request) is not dict or type(response) is not dict \
            or entry.get("llm_response_text") is not None or type(entry.get("llm_request", {})) is not dict:
        return None
    prompt, completion = summary.get("prompt_tokens"), summary.get("completion_tokens")
    if not (token_count(prompt) and token_count(completion)) \
            or any(summary.get(key) is not None for key in _CACHE_AND_REASONING):
        return None  # without cache parts both readings of prompt_tokens (collectors.usage.apisix_usage) agree
    if prompt == 0 and completion == 0:
        return None  # all zeros: parse_entry counts a logged request instead
    model, provider_name = summary.get("model"), summary.get("provider")
    if model is None or (type(model) is str and not model.strip()):
        model = summary.get("request_model")
    if type(model) is not str or not model.strip() or (provider_name is not None and type(provider_name) is not str):
        return None
    model = model.strip()
    provider = normalize_provider((provider_name.strip() if provider_name else None) or mapping.provider) \
        or guess_provider(model)
    started, uri, headers, status = entry.get("start_time"), request.get("uri"), request.get("headers"), \
        response.get("status")
    if not provider or type(started) is not int or not 10**11 <= started < 10**14 \
            or (uri is not None and type(uri) is not str) or (headers is not None and type(headers) is not dict) \
            or (status is not None and type(status) is not int):
        return None
    view = RecordView(entry, headers=headers)
    request_id = view.lookup_split("header", "x-request-id")
    if request_id is None:
        request_id = entry.get("request_id")
        request_id = request_id.strip() if type(request_id) is str else None
    latency, duration = entry.get("latency"), summary.get("duration")
    latency_ms = None if latency is None else plain_float(latency)
    ttft_ms = None if duration is None else plain_float(duration)
    ts = epoch_micros_text(started * 1000) if started < EXACT_EPOCH_MS_LIMIT \
        else utc_text(epoch_to_datetime(started, "start_time"))
    if not request_id or len(request_id) > 512 or (latency_ms is None and latency is not None) \
            or (ttft_ms is None and duration is not None) or ts is None:
        return None
    fields: dict[str, Any] = {
        "event_id": request_id, "ts": ts, "source": NAME, "provider": provider, "model": model, "operation": "chat",
        "status": "error" if status is not None and status >= 400 else "ok",
        "attribution": mapping.resolve_values(NAME, view), "usage": plain_usage(prompt, completion),
    }
    if latency_ms is not None:
        fields["latency_ms"] = latency_ms
    if ttft_ms is not None:
        fields["ttft_ms"] = ttft_ms
    fields["batch"] = False
    return encoded_event(fields)



DIALECT = Dialect(NAME, "Apache APISIX ai-proxy log entries with llm_summary", parse_entry,
                  read_common=_common_entry)
