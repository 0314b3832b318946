"""Google Gemini `generateContent` responses (`usageMetadata`) and streams (a list of chunks).

Usage conversion (see collectors.usage.gemini_usage): promptTokenCount already includes cached content;
thoughtsTokenCount is billed as output but is not in candidatesTokenCount, so output = candidates + thoughts
and reasoning = thoughts. model: modelVersion (or tokenmeter.model); event_id: responseId when present.
provider: gemini unless the wrapper says otherwise (e.g. vertex_ai). Stream chunks repeat cumulative
usageMetadata: the last chunk that has it wins. A stream whose last chunk has no finishReason was cut: its
usage is not trusted and the streamed text is kept for counting. Grounding with Google Search:
candidates[].groundingMetadata.webSearchQueries -> tool_requests grounding_prompts (1) and grounding_queries.
Vertex AI responses also carry `createTime` (the event time when no wrapper ts is given) and
`usageMetadata.trafficType`: ON_DEMAND is the standard rate; ON_DEMAND_FLEX / ON_DEMAND_PRIORITY (Flex and Priority
PayGo) become service_tier flex / priority and PROVISIONED_THROUGHPUT provisioned_throughput, so a call billed at
another rate is never priced at the standard one (a tier the catalog lacks is unpriced with that reason).
"""

from __future__ import annotations

from typing import Any

from collectors.attribution import AttributionMapping
from collectors.coerce import as_dict, to_datetime, to_str
from collectors.dialects.base import Dialect
from collectors.dialects.common import completion_from_response, list_or_empty
from collectors.dialects.response_envelope import api_error, build_response_event, unwrap
from collectors.errors import DialectError, join_path
from collectors.usage import build_usage, gemini_grounding_requests, gemini_usage
from tokenmeter.events import UsageEvent

NAME = "gemini"
# Vertex AI usageMetadata.trafficType -> service tier (None: the standard on-demand rate).
_TRAFFIC_TIERS = {"ON_DEMAND": None, "ON_DEMAND_FLEX": "flex", "ON_DEMAND_PRIORITY": "priority",
                  "PROVISIONED_THROUGHPUT": "provisioned_throughput", "TRAFFIC_TYPE_UNSPECIFIED": None}


def _tier(metadata: Any) -> str | None:
    traffic = metadata.get("trafficType") if isinstance(metadata, dict) else None
    if not isinstance(traffic, str) or not traffic.strip():
        return None
    key = traffic.strip().upper()
    return _TRAFFIC_TIERS[key] if key in _TRAFFIC_TIERS else key.lower()


def is_gemini_response(item: Any) -> bool:
    return isinstance(item, dict) and ("usageMetadata" in item or ("candidates" in item and "modelVersion" in item))


def _finished(chunk: dict[str, Any]) -> bool:
    return any(isinstance(c, dict) and c.get("finishReason") for c in list_or_empty(chunk.get("candidates")))


def parse_response(record: Any, mapping: AttributionMapping, path: str) -> list[UsageEvent]:
    env = unwrap(record, path)
    chunks = env.response if isinstance(env.response, list) else [env.response]
    if not chunks:
        raise DialectError("empty stream", env.path or None)
    usage, model, response_id, text, grounding, tier, created = None, None, None, [], None, None, None
    for index, chunk in enumerate(chunks):
        chunk_path = join_path(env.path, f"[{index}]") if isinstance(env.response, list) else env.path
        chunk = as_dict(chunk, chunk_path, optional=False)
        message = api_error(chunk)
        if message:
            raise DialectError(f"response is an API error, not a completed call: {message}", chunk_path or None)
        if chunk.get("usageMetadata") is not None:
            usage = gemini_usage(chunk["usageMetadata"], join_path(chunk_path, "usageMetadata"))
            tier = _tier(chunk["usageMetadata"]) or tier
        created = created or to_datetime(chunk.get("createTime"), join_path(chunk_path, "createTime"))
        grounding = gemini_grounding_requests(chunk.get("candidates")) or grounding
        model = to_str(chunk.get("modelVersion"), join_path(chunk_path, "modelVersion")) or model
        response_id = chunk.get("responseId") or response_id
        text.append(completion_from_response(chunk) or "")
    if isinstance(env.response, list) and not _finished(chunks[-1]):
        usage = None  # cut stream: the counts stop short of what was billed
    if usage is not None and grounding:
        usage = build_usage(env.path, **(usage.model_dump() | {"tool_requests": grounding}))  # validated, bounded
    return [build_response_event(env, NAME, mapping, response_id=response_id, ts=created, provider=NAME,
                                 model=model, completion="".join(text) or None, usage=usage, service_tier=tier)]


DIALECT = Dialect(NAME, "Google Gemini generateContent responses (usageMetadata) and streams", parse_response,
                  arrays_are_batches=False)
