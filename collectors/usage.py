"""One converter per provider usage shape into the canonical `Usage` (OpenAI/OTel semantics).

Canonical: `input_tokens` includes cache reads and writes; `output_tokens` includes reasoning. Each converter
reads every spelling of a part from ONE place (first spelling present wins) so a cached token is never counted
twice, and returns None when the object carries no token counts at all (then the worker counts text).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from collectors.coerce import as_dict, first_present, to_tokens
from collectors.errors import DialectError, join_path
from tokenmeter.events import Usage, describe_validation_error


def build_usage(path: str, **counts: int) -> Usage:
    """Validate the parts-within-totals rule, reporting a violation against the source object's path."""
    try:
        return Usage(**counts)
    except ValidationError as exc:
        reason = describe_validation_error(exc).removeprefix("event: ")
        raise DialectError(reason, path) from None


def _count(usage: dict[str, Any], path: str, *keys: str) -> int:
    key, value = first_present(usage, *keys)
    return to_tokens(value, join_path(path, key)) if key else 0


def _detail(usage: dict[str, Any], path: str, container: str, *keys: str) -> tuple[bool, int]:
    raw = usage.get(container)
    if raw is None:  # usually absent: skip building the error path
        return False, 0
    details = as_dict(raw, join_path(path, container))
    key, value = first_present(details, *keys)
    if key is None:
        return False, 0
    return True, to_tokens(value, join_path(path, f"{container}.{key}"))


# Anthropic usage.server_tool_use counters -> canonical tool request kinds (also in LiteLLM's usage for Anthropic).
_SERVER_TOOL_USE = (("web_search_requests", "web_search"), ("web_fetch_requests", "web_fetch"))


# xAI usage.server_side_tool_usage_details counters -> kinds (docs.x.ai "Tools Pricing"; mcp calls are free and
# image generation is billed per image, neither is a per-call tool fee).
_XAI_TOOL_CALLS = (("web_search_calls", "web_search"), ("x_search_calls", "x_search"),
                   ("code_interpreter_calls", "code_interpreter"), ("file_search_calls", "file_search"),
                   ("document_search_calls", "attachment_search"))


def xai_tool_requests(usage: dict[str, Any], path: str) -> dict[str, int] | None:
    """xAI's server-side tool calls and Live Search sources (`num_sources_used`) as tool request counts."""
    counts: dict[str, int] = {}
    raw = usage.get("server_side_tool_usage_details")
    if raw is not None:
        where = join_path(path, "server_side_tool_usage_details")
        details = as_dict(raw, where)
        counts = {kind: to_tokens(details.get(key), join_path(where, key)) for key, kind in _XAI_TOOL_CALLS}
    if usage.get("num_sources_used") is not None:
        counts["live_search_sources"] = _count(usage, path, "num_sources_used")
    return {kind: n for kind, n in counts.items() if n} or None


def server_tool_requests(usage: dict[str, Any], path: str) -> dict[str, int] | None:
    """`server_tool_use` {web_search_requests, web_fetch_requests} as tool request counts (None when absent or 0),
    or xAI's tool calls. Anthropic's code execution is billed by container time, not per request, and is not read."""
    raw = usage.get("server_tool_use")
    if raw is None:
        return xai_tool_requests(usage, path)
    where = join_path(path, "server_tool_use")
    tools = as_dict(raw, where)
    counts = {kind: to_tokens(tools.get(key), join_path(where, key)) for key, kind in _SERVER_TOOL_USE}
    return {kind: n for kind, n in counts.items() if n} or None


# Every key besides prompt_tokens/completion_tokens that openai_counts reads a part from.
OPENAI_DETAIL_KEYS = frozenset({
    "prompt_tokens_details", "input_tokens_details", "cache_read_input_tokens", "prompt_cache_hit_tokens",
    "cache_creation_input_tokens", "cache_creation_token_details", "completion_tokens_details",
    "output_tokens_details", "server_tool_use", "server_side_tool_usage_details", "num_sources_used"})


def openai_usage(usage: Any, path: str = "usage") -> Usage | None:
    counts = openai_counts(usage, path)
    return build_usage(path, **counts) if counts is not None else None


def openai_counts(usage: Any, path: str = "usage") -> dict[str, int] | None:
    """OpenAI-shaped usage: Chat Completions, Responses API, and the OpenAI-shaped usage Kong and LiteLLM log.

    Chat: prompt_tokens (cache-inclusive), prompt_tokens_details.cached_tokens, completion_tokens (reasoning-
    inclusive), completion_tokens_details.reasoning_tokens. Responses: input_tokens/output_tokens with
    input_tokens_details (cached_tokens, cache_write_tokens)/output_tokens_details. Also read: Kong's older
    `prompt_token`/`completion_token`;
    LiteLLM's cache-inclusive prompt_tokens with `cache_read_input_tokens`/`cache_creation_input_tokens`,
    `prompt_tokens_details.cache_creation_tokens` and `cache_creation_token_details.ephemeral_1h_input_tokens`;
    DeepSeek's `prompt_cache_hit_tokens`.
    """
    if type(usage) is dict:  # the common shape, read at once: what the general reading below gives for it
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if type(prompt) is int and type(completion) is int and prompt >= 0 and completion >= 0 \
                and usage.keys().isdisjoint(OPENAI_DETAIL_KEYS):
            return dict(input_tokens=prompt, cached_input_tokens=0, cache_write_tokens=0, cache_write_1h_tokens=0,
                        output_tokens=completion, reasoning_tokens=0, tool_requests=None)
    usage = as_dict(usage, path)
    token_keys = ("prompt_tokens", "prompt_token", "input_tokens", "completion_tokens", "completion_token",
                  "output_tokens", "total_tokens")
    if not any(usage.get(key) is not None for key in token_keys):
        return None
    input_tokens = _count(usage, path, "prompt_tokens", "prompt_token", "input_tokens")
    output_tokens = _count(usage, path, "completion_tokens", "completion_token", "output_tokens")

    found, cached = _detail(usage, path, "prompt_tokens_details", "cached_tokens")
    if not found:
        found, cached = _detail(usage, path, "input_tokens_details", "cached_tokens")
    if not found:
        cached = _count(usage, path, "cache_read_input_tokens", "prompt_cache_hit_tokens")

    found, cache_write = _detail(usage, path, "prompt_tokens_details", "cache_creation_tokens", "cache_write_tokens")
    if not found:
        found, cache_write = _detail(usage, path, "input_tokens_details", "cache_write_tokens")
    if not found:
        cache_write = _count(usage, path, "cache_creation_input_tokens")
    _, cache_write_1h = _detail(usage, path, "cache_creation_token_details", "ephemeral_1h_input_tokens")

    found, reasoning = _detail(usage, path, "completion_tokens_details", "reasoning_tokens")
    if not found:
        _, reasoning = _detail(usage, path, "output_tokens_details", "reasoning_tokens")
    if reasoning and _reasoning_outside_output(usage, path, input_tokens, output_tokens, reasoning):
        output_tokens += reasoning
    return dict(input_tokens=input_tokens, cached_input_tokens=cached, cache_write_tokens=cache_write,
                cache_write_1h_tokens=cache_write_1h, output_tokens=output_tokens, reasoning_tokens=reasoning,
                tool_requests=server_tool_requests(usage, path))


def _reasoning_outside_output(usage: dict[str, Any], path: str, input_tokens: int, output_tokens: int,
                              reasoning: int) -> bool:
    """xAI counts reasoning OUTSIDE completion_tokens and adds it to total_tokens (its API reference: prompt 32,
    completion 9, reasoning 94, total 135); OpenAI counts it inside (total = prompt + completion). Only a total
    that adds up the xAI way, and not the OpenAI way, says so (LiteLLM's xAI transformation uses the same test);
    a missing or inconsistent total leaves the OpenAI reading."""
    if usage.get("total_tokens") is None:
        return False
    total = _count(usage, path, "total_tokens")
    return total == input_tokens + output_tokens + reasoning and total != input_tokens + output_tokens


def anthropic_usage(usage: Any, path: str = "usage") -> Usage | None:
    """Anthropic Messages usage. Its `input_tokens` EXCLUDES cache reads and writes, so canonical input is
    input_tokens + cache_read_input_tokens + cache_creation_input_tokens. The 5m/1h split of writes comes from
    `cache_creation.ephemeral_*_input_tokens` (summed only when the total is not given). `server_tool_use`
    web search / web fetch requests become tool_requests (billed per request)."""
    usage = as_dict(usage, path)
    keys = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    if not any(usage.get(key) is not None for key in keys):
        return None
    uncached = _count(usage, path, "input_tokens")
    cache_read = _count(usage, path, "cache_read_input_tokens")
    has_5m, write_5m = _detail(usage, path, "cache_creation", "ephemeral_5m_input_tokens")
    has_1h, write_1h = _detail(usage, path, "cache_creation", "ephemeral_1h_input_tokens")
    if usage.get("cache_creation_input_tokens") is not None:
        cache_write = _count(usage, path, "cache_creation_input_tokens")
    else:
        cache_write = write_5m + write_1h if (has_5m or has_1h) else 0
    return build_usage(path, input_tokens=uncached + cache_read + cache_write, cached_input_tokens=cache_read,
                       cache_write_tokens=cache_write, cache_write_1h_tokens=write_1h,
                       output_tokens=_count(usage, path, "output_tokens"), reasoning_tokens=0,
                       tool_requests=server_tool_requests(usage, path))


def gemini_usage(metadata: Any, path: str = "usageMetadata") -> Usage | None:
    """Gemini usageMetadata. promptTokenCount includes cachedContentTokenCount; thoughtsTokenCount is billed
    as output but NOT part of candidatesTokenCount, so output = candidates + thoughts and reasoning = thoughts.
    toolUsePromptTokenCount (tool results fed back, billed as input) is outside promptTokenCount and added."""
    metadata = as_dict(metadata, path)
    keys = ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "totalTokenCount")
    if not any(metadata.get(key) is not None for key in keys):
        return None
    prompt = _count(metadata, path, "promptTokenCount")
    tool_prompt = _count(metadata, path, "toolUsePromptTokenCount")
    thoughts = _count(metadata, path, "thoughtsTokenCount")
    return build_usage(path, input_tokens=prompt + tool_prompt,
                       cached_input_tokens=_count(metadata, path, "cachedContentTokenCount"),
                       output_tokens=_count(metadata, path, "candidatesTokenCount") + thoughts,
                       reasoning_tokens=thoughts)


OTEL_USAGE_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens",
                   "gen_ai.usage.completion_tokens")


OTEL_USAGE_PART_KEYS = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
                   "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens",
                   "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")


def otel_usage(attributes: dict[str, Any], path: str = "attributes") -> Usage | None:
    """OpenTelemetry GenAI span attributes (already decoded to plain values).

    input_tokens SHOULD include cached tokens (semconv). Cache reads: `gen_ai.usage.cache_read.input_tokens`
    or `gen_ai.usage.cache_read_input_tokens`; writes likewise with `cache_creation`. Some emitters copy
    Anthropic's exclusive input; when cache parts exceed input that is the only consistent reading, so they
    are added back. The 0.x `prompt_tokens`/`completion_tokens` names are read too.
    """
    input_tokens, output_tokens = attributes.get(OTEL_USAGE_KEYS[0]), attributes.get(OTEL_USAGE_KEYS[1])
    if type(input_tokens) is int and type(output_tokens) is int and input_tokens >= 0 and output_tokens >= 0 \
            and not any(key in attributes for key in OTEL_USAGE_PART_KEYS):  # the common span, read at once
        return build_usage(path, input_tokens=input_tokens, cached_input_tokens=0, cache_write_tokens=0,
                           output_tokens=output_tokens, reasoning_tokens=0)

    def count(*keys: str) -> int:
        key, value = first_present(attributes, *keys)
        return to_tokens(value, f"{path}[{key}]") if key else 0

    if not any(attributes.get(key) is not None for key in OTEL_USAGE_KEYS):
        return None
    input_tokens = count("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
    cache_read = count("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
    cache_write = count("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens")
    if cache_read + cache_write > input_tokens:
        input_tokens += cache_read + cache_write
    output_tokens = count("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
    reasoning = count("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")
    return build_usage(path, input_tokens=input_tokens, cached_input_tokens=cache_read,
                       cache_write_tokens=cache_write, output_tokens=output_tokens, reasoning_tokens=reasoning)


# APISIX builds llm_summary from the CLIENT protocol's usage (apisix/plugins/ai-providers/base.lua). These
# providers are reached through the Anthropic Messages protocol whenever the summary carries cache detail
# (Anthropic's OpenAI-compatible endpoint reports no cache tokens).
APISIX_EXCLUSIVE_PROVIDERS = frozenset({"anthropic"})


def apisix_usage(summary: dict[str, Any], path: str, provider: str, request_uri: str | None) -> Usage | None:
    """APISIX ai-proxy `llm_summary` (prompt_tokens, completion_tokens; since apache/apisix df0a284, 2026-06,
    also cache_read_input_tokens, cache_creation_input_tokens, reasoning_tokens).

    `prompt_tokens` is the client protocol's input count: Anthropic Messages' `input_tokens` (cache reads and
    writes EXCLUDED, ai-protocols/anthropic-messages.lua) or OpenAI Chat's `prompt_tokens` (cache INCLUDED,
    ai-protocols/openai-chat.lua). Exclusive when the upstream provider is Anthropic, when the client called an
    Anthropic Messages path (`.../messages`), or when the cache parts exceed prompt_tokens (the only consistent
    reading); otherwise inclusive.
    """
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    if not any(summary.get(key) is not None for key in keys):
        return None
    prompt = _count(summary, path, "prompt_tokens")
    cache_read = _count(summary, path, "cache_read_input_tokens")
    cache_write = _count(summary, path, "cache_creation_input_tokens")
    uri_path = (request_uri or "").split("?", 1)[0].rstrip("/")
    exclusive = (provider in APISIX_EXCLUSIVE_PROVIDERS or uri_path.endswith("/messages")
                 or cache_read + cache_write > prompt)
    return build_usage(path, input_tokens=prompt + cache_read + cache_write if exclusive else prompt,
                       cached_input_tokens=cache_read, cache_write_tokens=cache_write,
                       output_tokens=_count(summary, path, "completion_tokens"),
                       reasoning_tokens=_count(summary, path, "reasoning_tokens"))


def gemini_grounding_requests(candidates: Any) -> dict[str, int] | None:
    """Gemini grounding with Google Search: one grounded prompt when a candidate's groundingMetadata lists search
    queries, and the number of those queries (Gemini 2.x bills per grounded prompt, Gemini 3 per query; the
    catalog prices each kind per model)."""
    queries = 0
    for candidate in candidates if isinstance(candidates, list) else ():
        metadata = candidate.get("groundingMetadata") if isinstance(candidate, dict) else None
        found = metadata.get("webSearchQueries") if isinstance(metadata, dict) else None
        if isinstance(found, list):
            queries = max(queries, sum(1 for q in found if isinstance(q, str) and q.strip()))
    return {"grounding_prompts": 1, "grounding_queries": queries} if queries else None


_RESPONSES_TOOL_ITEMS = {"web_search_call": "web_search", "file_search_call": "file_search"}


def responses_tool_requests(output: Any) -> dict[str, int] | None:
    """OpenAI Responses `output` items billed per call: web_search_call (search actions; a page open or find in
    page is not a search), file_search_call, and code interpreter containers (distinct container_id of
    code_interpreter_call items, $0.03 each)."""
    counts: dict[str, int] = {}
    containers: set[str] = set()
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        item_type = item.get("type")  # anyone can write the log: a list or object here is no tool call
        kind = _RESPONSES_TOOL_ITEMS.get(item_type) if type(item_type) is str else None
        if kind == "web_search":
            action = item.get("action")
            if isinstance(action, dict) and action.get("type") not in (None, "search"):
                continue
        if kind:
            counts[kind] = counts.get(kind, 0) + 1
        elif item_type == "code_interpreter_call":
            container = item.get("container_id")
            containers.add(container if isinstance(container, str) and container else f"item:{item.get('id')}")
    if containers:
        counts["code_interpreter"] = len(containers)
    return counts or None
