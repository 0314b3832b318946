"""OpenAI API responses: Chat Completions (`object: chat.completion`), Responses API (`object: response`),
embeddings (`object: list`), and streams: a chunk list (`chat.completion.chunk`) or Responses stream events.

A chat stream's usage is the extra last chunk (`choices: []`, sent with stream_options.include_usage); when
it never came (option off, stream cut) usage is None and the streamed text is kept as content for counting.
A Responses stream's usage is in `response.completed` (or `.incomplete`/`.failed`). Responses output items
web_search_call / file_search_call / code_interpreter_call (distinct containers) become tool_requests. Chat
Completions search models (gpt-4o-search-preview) bill a search per call that the response does not show.

OpenRouter's responses are this shape too (a `gen-` id, an upstream `provider`, `usage.cost`): they become events
of provider `openrouter` carrying the reported cost (see `openrouter`). So are xAI's (usage with `cost_in_usd_ticks`,
`num_sources_used`, ...): events of provider `xai` carrying the cost xAI billed (see `xai`).
"""

from __future__ import annotations

from typing import Any

from collectors.attribution import AttributionMapping
from collectors.coerce import as_dict, to_datetime, to_str
from collectors.dialects.base import Dialect, parse_batch
from collectors.dialects.common import completion_from_response, list_or_empty
from collectors.dialects import openrouter, xai
from collectors.dialects.openrouter import PROVIDER as OPENROUTER, is_openrouter_response
from collectors.dialects.response_envelope import Envelope, api_error, build_response_event, unwrap
from collectors.errors import DialectError, join_path
from collectors.usage import build_usage, openai_usage, responses_tool_requests
from tokenmeter.events import UsageEvent

NAME = "openai"
RESPONSE_DONE = ("response.completed", "response.incomplete", "response.failed")
FULL_OBJECTS = ("chat.completion", "text_completion", "response")


def is_chat_chunk(item: Any) -> bool:
    return isinstance(item, dict) and item.get("object") == "chat.completion.chunk"


def is_responses_event(item: Any) -> bool:
    return isinstance(item, dict) and str(item.get("type", "")).startswith("response.")


def _tier(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _provider(*responses: Any) -> str:
    if any(is_openrouter_response(r) for r in responses):
        return OPENROUTER
    if any(isinstance(r, dict) and xai.is_xai_usage(r.get("usage")) for r in responses):
        return xai.PROVIDER
    return NAME


def reported_cost(usage: Any, path: str):
    """What the provider billed, where its usage says: OpenRouter's `cost`, xAI's `cost_in_usd_ticks`."""
    cost = openrouter.reported_cost(usage, path)
    return cost if cost is not None else xai.reported_cost(usage, path)


def _chat(env: Envelope, response: dict[str, Any], mapping: AttributionMapping) -> UsageEvent:
    usage = openai_usage(response.get("usage"), join_path(env.path, "usage"))
    tier = _tier(response.get("service_tier"))
    operation = "embeddings" if response.get("object") == "list" else (
        "text_completion" if response.get("object") == "text_completion" else "chat")
    return build_response_event(
        env, NAME, mapping, response_id=response.get("id"),
        ts=to_datetime(response.get("created"), join_path(env.path, "created")), provider=_provider(response),
        model=to_str(response.get("model"), join_path(env.path, "model")),
        completion=completion_from_response(response), usage=usage, operation=operation, service_tier=tier,
        reported_cost_usd=reported_cost(response.get("usage"), join_path(env.path, "usage")))


def _responses(env: Envelope, response: dict[str, Any], mapping: AttributionMapping, path: str,
               streamed_text: str | None = None, trust_usage: bool = True) -> UsageEvent:
    usage = openai_usage(response.get("usage"), join_path(path, "usage")) if trust_usage else None
    # xAI counts its tool calls in usage (what it bills); its output items are not counted again.
    counted_in_usage = xai.is_xai_usage(response.get("usage"))
    tools = responses_tool_requests(response.get("output")) if usage is not None and not counted_in_usage else None
    if tools:  # per-call tool fees: web_search_call, file_search_call, code interpreter containers
        merged = usage.model_dump() | {"tool_requests": {**(usage.tool_requests or {}), **tools}}
        usage = build_usage(join_path(path, "output"), **merged)  # validated: counts are bounded
    return build_response_event(
        env, NAME, mapping, response_id=response.get("id"),
        ts=to_datetime(response.get("created_at"), join_path(path, "created_at")), provider=_provider(response),
        model=to_str(response.get("model"), join_path(path, "model")),
        completion=completion_from_response(response) or streamed_text, usage=usage,
        status="error" if response.get("status") == "failed" or response.get("error") else "ok",
        service_tier=_tier(response.get("service_tier")),
        reported_cost_usd=reported_cost(response.get("usage"), join_path(path, "usage")) if trust_usage else None)


def _chat_stream(env: Envelope, chunks: list[Any], mapping: AttributionMapping) -> UsageEvent:
    first = chunks[0]
    usage, cost = None, None
    text: list[str] = []
    tier = None
    for index, chunk in enumerate(chunks):
        if not is_chat_chunk(chunk):
            raise DialectError("expected a chat.completion.chunk", join_path(env.path, f"[{index}]"))
        if chunk.get("usage") is not None:  # only the final extra chunk has it; a later one would win
            usage = openai_usage(chunk["usage"], join_path(env.path, f"[{index}].usage"))
            cost = reported_cost(chunk["usage"], join_path(env.path, f"[{index}].usage"))
        tier = _tier(chunk.get("service_tier")) or tier
        for choice in list_or_empty(chunk.get("choices")):
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                text.append(delta["content"])
    model = next((c.get("model") for c in chunks if isinstance(c.get("model"), str) and c.get("model")), None)
    return build_response_event(
        env, NAME, mapping, response_id=first.get("id"),
        ts=to_datetime(first.get("created"), join_path(env.path, "[0].created")), provider=_provider(*chunks),
        model=model, completion="".join(text) or None, usage=usage, service_tier=tier, reported_cost_usd=cost)


def _responses_stream(env: Envelope, events: list[Any], mapping: AttributionMapping) -> UsageEvent:
    final_index, final, started = None, None, None
    text: list[str] = []
    for index, event in enumerate(events):
        if not is_responses_event(event):
            raise DialectError("expected a Responses API stream event (type response.*)",
                               join_path(env.path, f"[{index}]"))
        if event["type"] in RESPONSE_DONE and isinstance(event.get("response"), dict):
            final_index, final = index, event["response"]
        elif event["type"] == "response.created" and isinstance(event.get("response"), dict):
            started = event["response"]
        elif event["type"] == "response.output_text.delta" and isinstance(event.get("delta"), str):
            text.append(event["delta"])
    if final is not None:
        return _responses(env, final, mapping, join_path(env.path, f"[{final_index}].response"))
    if started is None:
        raise DialectError("stream has neither response.created nor response.completed", env.path or None)
    # Cut stream: response.created carries zero usage; count the streamed text instead.
    return _responses(env, started, mapping, env.path, "".join(text) or None, trust_usage=False)


def parse_response(record: Any, mapping: AttributionMapping, path: str) -> list[UsageEvent]:
    env = unwrap(record, path)
    response = env.response
    if isinstance(response, list):
        if not response:
            raise DialectError("empty stream", env.path or None)
        if all(is_responses_event(item) for item in response):
            return [_responses_stream(env, response, mapping)]
        if not env.meta and all(isinstance(item, dict) and item.get("object") in FULL_OBJECTS for item in response):
            # An array of complete responses is a batch, not a stream.
            return parse_batch(response, lambda item, item_path: parse_response(item, mapping, item_path), path)
        return [_chat_stream(env, response, mapping)]
    response = as_dict(response, env.path, optional=False)
    message = api_error(response)
    if message:
        raise DialectError(f"response is an API error, not a completed call: {message}", env.path or None)
    if is_responses_event(response) and isinstance(response.get("response"), dict):
        return [_responses(env, response["response"], mapping, join_path(env.path, "response"))]
    if response.get("object") == "response":
        return [_responses(env, response, mapping, env.path)]
    if response.get("object") in ("chat.completion", "text_completion", "list") or "choices" in response:
        return [_chat(env, response, mapping)]
    raise DialectError(f"not an OpenAI response (object={response.get('object')!r})", env.path or None)


DIALECT = Dialect(NAME, "OpenAI Chat Completions / Responses API responses and streams", parse_response,
                  arrays_are_batches=False)
