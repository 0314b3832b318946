"""How a raw provider response becomes a record, and the optional `tokenmeter` field that attributes it.

Accepted records (for `tokenmeter price` and any collector that captures provider traffic):
  1. the raw response object, as the provider returned it;
  2. a streamed response: a JSON array of its chunks/SSE events, or the SSE text itself;
  3. either of those with a top-level `tokenmeter` object added;
  4. a wrapper `{"tokenmeter": {...}, "request": <request body>, "response": <1 or 2>}`; the request body
     supplies the prompt text when the response carries no usage (e.g. an interrupted stream).
`tokenmeter` may hold: attribution {team, project, ...}, event_id, ts, provider, model, source, operation.
Without it a raw response has no attribution, event_id is the provider's response id, and ts is the
response's own creation time (OpenAI) or the time of reading (Anthropic, Gemini carry none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collectors.attribution import AttributionMapping, RecordView
from collectors.coerce import as_dict, to_datetime, to_str
from collectors.decode import decode
from collectors.dialects.base import correlation_of, derived_event_id, make_event, now_utc
from collectors.dialects.common import ZERO_USAGE_COUNTED, ZERO_USAGE_UNCOUNTED, content_or_none, \
    prompt_from_request, zero_usage_is_not_a_count
from collectors.errors import DialectError, join_path
from collectors.providers import normalize_provider
from tokenmeter.events import UsageEvent

WRAPPER_KEY = "tokenmeter"
_WRAPPER_FIELDS = {"attribution", "event_id", "ts", "provider", "model", "source", "operation"}


@dataclass
class Envelope:
    response: Any
    path: str  # where the response sits in the record, for error messages
    record: Any  # the whole record (for hashing and field selectors)
    request: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    meta_path: str = WRAPPER_KEY


def is_wrapper(record: Any) -> bool:
    return isinstance(record, dict) and isinstance(record.get(WRAPPER_KEY), dict) and "response" in record


def unwrap(record: Any, path: str) -> Envelope:
    if isinstance(record, dict) and WRAPPER_KEY in record:
        meta_path = join_path(path, WRAPPER_KEY)
        meta = as_dict(record[WRAPPER_KEY], meta_path, optional=False)
        unknown = set(meta) - _WRAPPER_FIELDS
        if unknown:
            raise DialectError(f"unknown field(s) {', '.join(sorted(unknown))} (known: "
                               f"{', '.join(sorted(_WRAPPER_FIELDS))})", meta_path)
        if "response" in record:
            try:
                response = decode(record["response"])
            except DialectError as exc:
                raise exc.under(join_path(path, "response")) from None
            return Envelope(response, join_path(path, "response"), record, record.get("request"), meta, meta_path)
        response = {k: v for k, v in record.items() if k != WRAPPER_KEY}
        return Envelope(response, path, record, None, meta, meta_path)
    return Envelope(record, path, record)


def build_response_event(env: Envelope, dialect: str, mapping: AttributionMapping, *, response_id: Any,
                         ts: Any, provider: str, model: Any, completion: str | None = None,
                         **fields: Any) -> UsageEvent:
    """Fill id/ts/provider/model/attribution from the wrapper first, then the response; validate."""
    meta, meta_path = env.meta, env.meta_path
    model = to_str(meta.get("model"), join_path(meta_path, "model")) or model
    if not model:
        raise DialectError("missing model (the response names none; add tokenmeter.model)", env.path or None)
    event_ts = to_datetime(meta.get("ts"), join_path(meta_path, "ts")) or ts or now_utc()
    event_id = to_str(meta.get("event_id"), join_path(meta_path, "event_id")) or (
        str(response_id).strip() if isinstance(response_id, (str, int)) and str(response_id).strip()
        else derived_event_id(dialect, env.record, env.path))
    native = as_dict(meta.get("attribution"), join_path(meta_path, "attribution"))
    if meta.get("operation"):
        fields["operation"] = str(meta["operation"])
    usage = fields.get("usage")
    lost_count = zero_usage_is_not_a_count(usage, fields.get("status", "ok"), fields.get("operation", "chat"))
    if usage is None or lost_count:
        content = content_or_none(prompt_from_request(env.request), completion)
        if lost_count and content is not None:
            # All zeros beside the call's text: no provider bills a call with text as zero tokens; an OpenAI-shaped
            # server or proxy that lost the count wrote them (collectors.dialects.common). A reported cost stays.
            fields["usage"], fields["usage_assumption"] = None, ZERO_USAGE_COUNTED
        elif lost_count:
            fields["usage_assumption"] = ZERO_USAGE_UNCOUNTED  # nothing to count: zeros as logged, marked
        if fields["usage"] is None:
            fields["content"] = content
    return make_event(
        env.path,
        event_id=event_id,
        ts=event_ts,
        source=to_str(meta.get("source"), join_path(meta_path, "source")) or dialect,
        provider=normalize_provider(to_str(meta.get("provider"), join_path(meta_path, "provider"))) or provider,
        model=model,
        attribution=mapping.resolve(dialect, RecordView(env.record), native=native),
        correlation=correlation_of(  # the same call in a gateway log or an OTel span
            response_id=str(response_id) if isinstance(response_id, (str, int)) else None,
            request_id=meta.get("request_id"), trace_id=meta.get("trace_id"), span_id=meta.get("span_id")),
        **fields,
    )


def api_error(response: Any) -> str | None:
    """The message of a provider error body ({"error": ...} or Anthropic's {"type": "error"})."""
    if isinstance(response, dict) and (response.get("type") == "error" or (
            "error" in response and response.get("error") and "usage" not in response
            and "usageMetadata" not in response)):
        error = response.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error.get("type") or error)
        return str(error)
    return None
